"""A concept from a folder of one's own photos, trained and evaluated like a world card.

Three layouts are read:

- **UnifyBench's per-concept folder** (``info.json``, ``conversations.json``,
  ``positive_recognitions.json``, ``random_recognitions.json``, ``test/``...; see
  :mod:`unikit.unifybench`), read as is;
- **a plain folder**: the photos themselves, ``negatives/`` (photos of other things, the
  recognition negatives), optionally ``test/`` (held-out photos of the concept) and
  ``test/negatives/``, and ``card.json`` with what a user would write::

      {"name": "bo", "class": "dog", "facts": ["<bo> likes tea."],
       "questions": [{"question": "what does <bo> like?", "answer": "tea"}],
       "prompts": ["<bo> on a beach"]}

- **UniCTokens' training folder** (``concept/train/<name>/`` in its code): the photos,
  ``info.json`` (``class``, ``info``: "<bo> is ...") and ``negative/`` (same-class photos); mask
  files (``*mask*``) are skipped.

Either becomes a :class:`PhotoConcept`, which :func:`unikit.methods.personalize` takes where it
takes a card: :func:`photo_personal_data` builds the same :class:`unikit.stages.PersonalData`
a card's renders give, so every method and stage runs unchanged. Photos are padded to a square
(with their mean border colour, as Janus' processor pads) and resized to the model's size.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import unifybench

CARD_FILE = "card.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_PHOTOS = 3  # as for a world card: personalization needs at least 3 training images
CARD_KEYS = {"name": str, "class": str, "facts": list, "questions": list, "prompts": list, "description": str}


class PhotoError(ValueError):
    """A photo folder is empty, unreadable or in no known layout; the message says how to fix it."""


# --------------------------------------------------------------------------- images


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


# --------------------------------------------------------------------------- the concept


@dataclass(frozen=True, eq=False)
class PhotoConcept:
    """A concept from photos: what a card holds (name, class word, facts) plus its data.

    ``bench`` holds the images (``uint8[n, S, S, 3]`` per split) and the question lists.
    """

    name: str
    shape: str  # the class word ("dog"); named ``shape`` as a world card's class word is
    info: str  # the concept in words: "<bo> is a small brown dog."
    facts_text: tuple[str, ...]
    bench: unifybench.BenchConcept = field(repr=False)
    source: str = ""

    @property
    def token(self) -> str:
        return f"<{self.name}>"

    @property
    def items(self) -> dict[str, str]:
        """Photos carry no world fact items (their facts are text only)."""
        return {}

    def facts(self) -> list[str]:
        return list(self.facts_text)

    def description(self) -> str:
        """The concept in words (the text_prompt baseline's context)."""
        return " ".join([self.info, *self.facts_text]) if self.info else " ".join(self.facts_text)

    def in_words(self, text: str, article: str = "the", mark: bool = False) -> str:
        """``<bo>`` -> the card's own words for it: ``"the small brown dog"`` from an ``info`` of
        ``"<bo> is a small brown dog."``, else ``"the dog"`` (``mark`` is ignored: a photo
        concept has no nameable mark)."""
        phrase = self.shape
        lead = f"{self.token} is "
        if self.info.startswith(lead) and self.info.count(".") <= 1:
            words = self.info[len(lead):].rstrip(" .").split()
            phrase = " ".join(words[1:] if words and words[0] in ("a", "an", "the") else words) or self.shape
        return text.replace(self.token, f"{article} {phrase}")

    def identity(self) -> tuple[str, ...]:
        """A digest of the photos and words (what caches of trained tokens are keyed by)."""
        h = hashlib.sha256()
        for split in sorted(self.bench.images):
            h.update(split.encode())
            h.update(np.ascontiguousarray(self.bench.images[split]).tobytes())
        h.update(json.dumps([self.info, self.facts_text, self.bench.text_qa, self.bench.t2i]).encode())
        return ("photos", self.shape, h.hexdigest()[:16])


def _check_card(data, path: Path) -> dict:
    if not isinstance(data, dict):
        raise PhotoError(f"{path}: expected a JSON object like {{\"name\": \"bo\", \"class\": \"dog\"}}")
    for key in ("name", "class"):
        if key not in data:
            raise PhotoError(f"{path}: missing {key!r} (a card needs at least a name and a class word)")
    for key, typ in CARD_KEYS.items():
        if key in data and not isinstance(data[key], typ):
            raise PhotoError(f"{path}: {key!r} must be a {typ.__name__}, got {type(data[key]).__name__}")
    unknown = sorted(set(data) - set(CARD_KEYS))
    if unknown:
        raise PhotoError(f"{path}: unknown key(s) {unknown}; a photo card may hold {', '.join(CARD_KEYS)}")
    name = data["name"]
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise PhotoError(f"{path}: name {name!r} must be lower-case letters, digits or '_' (its token is <name>)")
    for q in data.get("questions", []):
        if not (isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("answer"), str)):
            raise PhotoError(f"{path}: each question must be {{\"question\": ..., \"answer\": ...}}, got {q!r}")
    return data


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PhotoError(f"{path}: not valid JSON ({e})") from None


def _training_folder_card(folder: Path) -> dict:
    """UniCTokens' training folder (``concept/train/<name>/``: photos, ``info.json`` with
    ``class`` and ``info``, same-class photos in ``negative/``) read as a card."""
    info = _read_json(folder / "info.json")
    if not isinstance(info, dict) or not isinstance(info.get("class"), str):
        raise PhotoError(f"{folder / 'info.json'}: needs a 'class' (the concept's class word, e.g. \"dog\")")
    facts = info.get("extra_info", [])
    return _check_card({"name": folder.name, "class": info["class"], "description": info.get("info", ""),
                        "facts": [facts] if isinstance(facts, str) else list(facts)}, folder / "info.json")


def _plain_concept(folder: Path, size: int) -> PhotoConcept:
    """A folder of photos + ``negatives/`` (or ``negative/``) + ``card.json`` (or UniCTokens'
    ``info.json``) as a :class:`PhotoConcept`."""
    card_path = folder / CARD_FILE
    card = _check_card(_read_json(card_path), card_path) if card_path.is_file() else _training_folder_card(folder)
    t = f"<{card['name']}>"
    train = photo_files(folder)
    if len(train) < MIN_PHOTOS:
        raise PhotoError(f"{folder}: {len(train)} photo(s) of the concept ({', '.join(IMAGE_SUFFIXES)}); "
                         f"personalization needs at least {MIN_PHOTOS}: add photos beside {CARD_FILE}")
    negatives = photo_files(folder / "negatives") or photo_files(folder / "negative")
    if not negatives:
        raise PhotoError(f"{folder}: no negatives/ photos; recognition needs photos of other things to say 'no' "
                         f"to: add a negatives/ folder (UnifyBench gives each concept 100)")
    test, test_neg = photo_files(folder / "test"), photo_files(folder / "test" / "negatives")
    images = {"train": read_photos(train, size), "random": read_photos(negatives, size),
              "test": read_photos(test, size), "test_random": read_photos(test_neg, size)}
    q_rec = f"is {t} in this image?"
    recognition = ([{"image": ("train", i), "question": q_rec, "answer": "yes"} for i in range(len(train))]
                   + [{"image": ("random", i), "question": q_rec, "answer": "no"} for i in range(len(negatives))])
    test_recognition = ([{"image": ("test", i), "question": q_rec, "answer": "yes"} for i in range(len(test))]
                        + [{"image": ("test_random", i), "question": q_rec, "answer": "no"}
                           for i in range(len(test_neg))])
    info = card.get("description", "")
    conversations = ([{"question": f"tell me about {t}.", "answer": " ".join([info, *card.get("facts", [])]).strip()}]
                     if info or card.get("facts") else [])
    conversations += [dict(q) for q in card.get("questions", [])]
    t2i = [{"prompt": f"a photo of {t}", "kind": "plain", "expect": {}}]
    t2i += [{"prompt": p, "kind": "context", "expect": {}} for p in card.get("prompts", [])]
    bench = unifybench.BenchConcept(card["name"], {"class": card["class"], "info": info,
                                                   "extra_info": card.get("facts", [])},
                                    images, conversations, recognition, test_recognition, [],
                                    [dict(q) for q in card.get("questions", [])], t2i, [])
    return PhotoConcept(card["name"], card["class"], info, tuple(card.get("facts", [])), bench, str(folder))


def _unifybench_concept(folder: Path, size: int) -> PhotoConcept:
    bench = unifybench.load_concept_folder(folder, image_size=size)
    info = bench.info
    facts = info.get("extra_info", [])
    facts = tuple([facts] if isinstance(facts, str) else facts)
    if "class" not in info:
        raise PhotoError(f"{folder / 'info.json'}: missing 'class' (the concept's class word, e.g. \"dog\")")
    return PhotoConcept(bench.name, info["class"], info.get("info", ""), facts, bench, str(folder))


def load_photo_concept(folder, image_size: int) -> PhotoConcept:
    """Read a concept folder in either layout, every image at ``image_size`` (the model's)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PhotoError(f"{folder}: no such folder; pass a folder of photos (with {CARD_FILE}) or a UnifyBench "
                         "concept folder")
    if (folder / "info.json").is_file() and (folder / "positive_recognitions.json").is_file():
        return _unifybench_concept(folder, image_size)
    if (folder / CARD_FILE).is_file() or (folder / "info.json").is_file():
        return _plain_concept(folder, image_size)
    n = len(photo_files(folder))
    raise PhotoError(f"{folder}: in no known layout ({n} photo(s), no {CARD_FILE}, no info.json); add {CARD_FILE} "
                     "(at least {\"name\": \"bo\", \"class\": \"dog\"}) beside the photos, or pass a UnifyBench "
                     "concept folder (info.json, positive_recognitions.json, ...)")


def is_concept_folder(name_or_path) -> bool:
    """Whether a ``--concept`` value names a folder (not a world card's name or ``.json`` card)."""
    p = Path(str(name_or_path)).expanduser()
    return p.is_dir()


# --------------------------------------------------------------------------- training data


def photo_personal_data(um, concept: PhotoConcept, schedule, seed: int = 0, n_edits: int = 0):
    """The :class:`unikit.stages.PersonalData` of a photo concept: augmented training photos
    VQ-encoded for generation, recognition pools from the recognition lists, conversations as
    text; editing triplets (``n_edits``) replace a negative photo's object with the concept
    (source: a negative photo, target: a training photo)."""
    import torch

    from . import model as M
    from . import vq as V
    from .stages import PersonalData, generation_codes, recognition_pools

    bc = concept.bench
    texts = [concept.in_words(x) for x in [concept.description(), *(c["question"] + " " + c["answer"]
                                                                     for c in bc.conversations)]]
    M.check_vocabulary(um.tokenizer, [concept.shape, *texts])
    rng = random.Random(f"{concept.name}|{seed}")
    train = bc.images["train"]
    with torch.no_grad():
        codes = generation_codes(um, train, schedule, rng)
    pos, neg, hard = recognition_pools(bc.recognition, bc.image)
    text = [(None, c["question"], c["answer"]) for c in bc.conversations]
    edits = []
    if n_edits:
        sources = bc.images.get("random", np.zeros((0,)))
        if not len(sources):
            raise PhotoError(f"{concept.source}: editing needs negative photos as sources; add negatives/")
        edit_rng = random.Random(f"edits|{concept.name}|{seed}")
        picks = [(edit_rng.randrange(len(sources)), edit_rng.randrange(len(train))) for _ in range(n_edits)]
        with torch.no_grad():
            tgt = V.vq_encode(um, np.stack([train[j] for _, j in picks]))
        edits = [(sources[i], f"replace the object with {concept.token}", tgt[k]) for k, (i, _) in enumerate(picks)]
    return PersonalData(concept, None, train, codes, pos, neg, hard, text, edits)
