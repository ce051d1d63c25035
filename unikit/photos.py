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
takes a card: :func:`unikit.stages.personal_data` builds the same :class:`unikit.stages.PersonalData`
a card's renders give, so every method and stage runs unchanged. Photos are padded to a square
(with their mean border colour, as Janus' processor pads) and resized to the model's size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import unifybench, world
from .concepts import ConceptCard, load_concept
from .photo_files import IMAGE_SUFFIXES, PhotoError, photo_files, read_photos

CARD_FILE = "card.json"
MIN_PHOTOS = 3  # as for a world card: personalization needs at least 3 training images
CARD_KEYS = {"name": str, "class": str, "facts": list, "questions": list, "prompts": list, "description": str}


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


def as_concept(concept, image_size: int = world.IMAGE_SIZE):
    """A card or photo concept from what a user passes: a :class:`ConceptCard` or
    :class:`PhotoConcept` as is, a folder path as a photo concept (images at
    ``image_size``: the model's), anything else as a card's name or path (:func:`load_concept`)."""
    if isinstance(concept, (ConceptCard, PhotoConcept)):
        return concept
    if is_concept_folder(concept):
        return load_photo_concept(concept, image_size)
    return load_concept(concept)
