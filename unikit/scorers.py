"""Scorers for real images: the field's metrics, from transformers checkpoints on local disk.

The world's judge reads rendered scenes exactly; photographs need the metrics the papers use:

- **CLIP-I** and **DINO**: the mean cosine similarity between every generated image and every
  reference photo of the concept, in CLIP's or DINOv2's image-embedding space (DreamBooth's
  definitions; DINO uses the class token);
- **CLIP-T**: the mean cosine similarity between a generated image and its prompt, in CLIP's
  joint space;
- :func:`parse_yes_no` reads a chat model's answer ("Yes, it is.") as ``"yes"`` / ``"no"``.

Checkpoints load from a local directory only (``local_files_only``: nothing downloads at run
time), with safetensors or ``torch.load(weights_only=True)`` as transformers does by default and
never ``trust_remote_code``. Each scorer records where it came from (:attr:`ImageScorer.source`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch


class ScorerError(ValueError):
    """A scorer checkpoint is missing or is not the kind asked for; the message says what to pass."""


YES = {"yes", "yeah", "yep", "correct", "true"}
NO = {"no", "nope", "not", "incorrect", "false"}


def parse_yes_no(answer: str) -> str | None:
    """``"Yes, it is."`` -> ``"yes"``; ``"No. The image shows..."`` -> ``"no"``; None when the
    answer's first word is neither (a chat model that hedges is scored wrong, not guessed)."""
    words = re.findall(r"[a-z]+", answer.lower())
    if not words:
        return None
    return "yes" if words[0] in YES else "no" if words[0] in NO else None


def _check_dir(path, kind: str, flag: str) -> Path:
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ScorerError(f"{kind} scorer: {p} holds no config.json; pass {flag} a local directory with a "
                          f"{kind} checkpoint (e.g. one saved by save_pretrained, or a Hugging Face snapshot folder)")
    return p


def _pixels(images) -> list:
    """``uint8[N, H, W, 3]`` or a sequence of PIL images / arrays -> a list the image processors take."""
    return list(images)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


@dataclass
class ImageScorer:
    """An image-embedding model (CLIP's vision tower or DINOv2) and its image processor."""

    name: str  # "clip" or "dino"
    model: torch.nn.Module
    image_processor: object
    tokenizer: object | None  # CLIP's, for CLIP-T; None for DINO
    source: str
    device: torch.device = torch.device("cpu")

    @torch.no_grad()
    def embed_images(self, images, batch: int = 32) -> torch.Tensor:
        """Unit-length image embeddings ``float[N, D]``."""
        out = []
        items = _pixels(images)
        for i in range(0, len(items), batch):
            px = self.image_processor(images=items[i:i + batch], return_tensors="pt")["pixel_values"]
            px = px.to(self.device, next(self.model.parameters()).dtype)
            if self.name == "clip":
                feats = self.model.get_image_features(pixel_values=px)
                feats = getattr(feats, "pooler_output", feats)
            else:
                feats = self.model(pixel_values=px).last_hidden_state[:, 0]  # the class token
            out.append(_unit(feats))
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-length text embeddings ``float[N, D]`` (CLIP only)."""
        if self.tokenizer is None:
            raise ScorerError(f"{self.name} has no text tower: CLIP-T needs a CLIP checkpoint (--scorer-path clip=DIR)")
        batch = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        feats = self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return _unit(getattr(feats, "pooler_output", feats))

    def image_similarity(self, generated, references) -> float:
        """CLIP-I / DINO: mean cosine over every (generated, reference) pair."""
        return float((self.embed_images(generated) @ self.embed_images(references).T).mean())

    def text_similarity(self, generated, prompts: list[str]) -> float:
        """CLIP-T: mean cosine between each generated image and its own prompt (``len`` equal)."""
        if len(prompts) != len(_pixels(generated)):
            raise ScorerError(f"CLIP-T pairs each image with its prompt: {len(_pixels(generated))} images, "
                              f"{len(prompts)} prompts")
        return float((self.embed_images(generated) * self.embed_texts(prompts)).sum(-1).mean())


def load_clip(path, device="cpu") -> ImageScorer:
    """A CLIP checkpoint (``CLIPModel``) from a local directory: CLIP-I and CLIP-T."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel

    p = _check_dir(path, "CLIP", "--scorer-path clip=DIR")
    config = CLIPConfig.from_pretrained(p, local_files_only=True) if _model_type(p) == "clip" else None
    if config is None:
        raise ScorerError(f"{p} holds a {_model_type(p)!r} model, not CLIP; pass a CLIPModel checkpoint "
                          "(e.g. openai/clip-vit-large-patch14 downloaded beforehand)")
    model = CLIPModel.from_pretrained(p, local_files_only=True).to(device).eval()
    return ImageScorer("clip", model, AutoImageProcessor.from_pretrained(p, local_files_only=True),
                       AutoTokenizer.from_pretrained(p, local_files_only=True), str(p), torch.device(device))


def load_dino(path, device="cpu") -> ImageScorer:
    """A DINOv2 checkpoint (``Dinov2Model``) from a local directory: DINO image similarity."""
    from transformers import AutoImageProcessor, Dinov2Model

    p = _check_dir(path, "DINOv2", "--scorer-path dino=DIR")
    if _model_type(p) != "dinov2":
        raise ScorerError(f"{p} holds a {_model_type(p)!r} model, not DINOv2; pass a Dinov2Model checkpoint "
                          "(e.g. facebook/dinov2-base downloaded beforehand)")
    model = Dinov2Model.from_pretrained(p, local_files_only=True).to(device).eval()
    return ImageScorer("dino", model, AutoImageProcessor.from_pretrained(p, local_files_only=True), None, str(p),
                       torch.device(device))


def _model_type(p: Path) -> str:
    import json

    return json.loads((p / "config.json").read_text()).get("model_type", "?")


LOADERS = {"clip": load_clip, "dino": load_dino}


def load_scorers(specs, device="cpu") -> dict[str, ImageScorer]:
    """``["clip=DIR", "dino=DIR"]`` (the CLI's ``--scorer-path``) -> ``{"clip": ..., "dino": ...}``."""
    out = {}
    for spec in specs or []:
        kind, sep, path = str(spec).partition("=")
        if not sep or kind not in LOADERS or not path:
            raise ScorerError(f"--scorer-path {spec!r}: write KIND=DIR with KIND one of {', '.join(LOADERS)} "
                              "(e.g. --scorer-path clip=~/models/clip-vit-large-patch14 dino=~/models/dinov2-base)")
        if kind in out:
            raise ScorerError(f"--scorer-path names {kind} twice")
        out[kind] = LOADERS[kind](path, device)
    return out
