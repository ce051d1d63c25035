"""Reading photos from disk: one image file as a square ``uint8`` array at the model's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class PhotoError(ValueError):
    """A photo folder is empty, unreadable or in no known layout; the message says how to fix it."""


def read_photo(path: Path, size: int) -> np.ndarray:
    """One photo as ``uint8[size, size, 3]``: padded to a square with its mean border colour, resized."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise PhotoError(f"{path}: not a readable image ({e}); remove it or convert it to PNG/JPEG") from None
    w, h = im.size
    if w != h:
        arr = np.asarray(im)
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(0)
        square = Image.new("RGB", (max(w, h), max(w, h)), tuple(int(round(c)) for c in border))
        square.paste(im, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
        im = square
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def photo_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (sorted by name), segmentation masks (``*mask*``) left out."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "mask" not in p.name.lower())


def read_photos(paths: list[Path], size: int) -> np.ndarray:
    """``uint8[n, size, size, 3]`` (``n`` may be 0)."""
    if not paths:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([read_photo(p, size) for p in paths])
