"""UnifyBench-mini on disk: export the world's concepts in UnifyBench's per-concept layout, and read it back.

Training and evaluation consume a :class:`BenchConcept` (images + QA lists), never
the world's scenes, so the same loader can read real UnifyBench-style folders.

Layout written by :func:`export_world` (one folder per concept)::

    <dir>/<name>/info.json                   class, info (visual description), extra_info (facts), generation_type
    <dir>/<name>/conversations.json          text turns stating the facts
    <dir>/<name>/positive_recognitions.json  "is <c> in this image?" -> yes, on train/ images
    <dir>/<name>/random_recognitions.json    -> no, on negative_example/random_*.png
    <dir>/<name>/hard_recognitions.json      -> no, on negative_example/hard_*.png (same class, other mark)
    <dir>/<name>/train/*.png
    <dir>/<name>/negative_example/*.png
    <dir>/<name>/test/*.png                  test images (+ test negatives)
    <dir>/<name>/test/vqa.json, text_only.json, t2i_conditions.json, recognition.json
    <dir>/<name>/edit/*.png, edit/edits.json source image, instruction, target image (+ its attributes)

Conversations and recognitions use LLaVA-style turns
(``{"image": [...], "conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import concepts as concepts_mod
from . import world
from .cache import atomic_path
from .photo_files import PhotoError, read_photos

BENCH_FILES = ("info.json", "conversations.json", "positive_recognitions.json", "random_recognitions.json",
               "test/vqa.json", "test/text_only.json", "test/t2i_conditions.json")


class BenchLayoutError(ValueError):
    """A UnifyBench folder is missing files or holds something unexpected."""


@dataclass
class BenchConcept:
    """One concept's benchmark data. Images are ``uint8[n, H, W, 3]``.

    QA lists refer to images by ``(split, index)`` where split is one of the keys of
    ``images`` (``train``, ``random``, ``hard``, ``test``, ``test_random``, ``test_hard``,
    ``edit_source``, ``edit_target``).
    """

    name: str
    info: dict
    images: dict[str, np.ndarray]
    conversations: list[dict]
    recognition: list[dict]  # training recognition QA: {"image", "question", "answer"}
    test_recognition: list[dict]
    vqa: list[dict]
    text_qa: list[dict]
    t2i: list[dict]  # {"prompt", "kind", "expect"}
    edits: list[dict]  # {"source": index, "instruction", "target": index, "target_attributes"}
    card: concepts_mod.ConceptCard | None = field(default=None, repr=False)

    @property
    def token(self) -> str:
        return f"<{self.name}>"

    def image(self, ref) -> np.ndarray:
        split, i = ref
        return self.images[split][i]


def _scene_words(sc: world.Scene) -> dict[str, str]:
    return {k: sc.value(k) for k in world.ATTRIBUTES}


def bench_concept(card: concepts_mod.ConceptCard, image_size: int = world.IMAGE_SIZE, **sizes) -> BenchConcept:
    """A card's data as a :class:`BenchConcept`, in memory (what the export writes)."""
    d = concepts_mod.concept_data(card, **sizes)
    images = {s: d.images(s, image_size) for s in ("train", "test", "random", "hard", "test_random", "test_hard")}
    images["edit_source"] = world.render_many([e["source"] for e in d.edits], image_size)
    images["edit_target"] = world.render_many([e["target"] for e in d.edits], image_size)
    edits = [{"source": ("edit_source", i), "instruction": e["instruction"], "target": ("edit_target", i),
              "target_attributes": _scene_words(e["target"])} for i, e in enumerate(d.edits)]
    info = {
        "class": card.shape,
        "info": f"{card.token} is {world.article(card.pattern)} {card.pattern} {card.colour} {card.shape}.",
        "extra_info": card.facts(),
        "generation_type": "object",
    }
    return BenchConcept(card.name, info, images, d.conversations, d.recognition, d.test_recognition, d.vqa, d.text_qa,
                        d.t2i, edits, card)


# --------------------------------------------------------------------------- export

_IMAGE_DIRS = {"train": "train", "random": "negative_example", "hard": "negative_example", "test": "test",
               "test_random": "test", "test_hard": "test", "edit_source": "edit", "edit_target": "edit"}


def _image_path(split: str, i: int) -> str:
    stem = {"train": "", "test": "", "random": "random_", "hard": "hard_", "test_random": "random_",
            "test_hard": "hard_", "edit_source": "source_", "edit_target": "target_"}[split]
    return f"{_IMAGE_DIRS[split]}/{stem}{i:03d}.png"


def _turns(question: str, answer: str, images: list[str]) -> dict:
    return {"image": images, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def _qa_with_image(items: list[dict]) -> list[dict]:
    return [{"image": _image_path(*q["image"]), "question": q["question"], "answer": q["answer"]} for q in items]


def write_concept(bc: BenchConcept, folder: Path) -> None:
    """Write one concept's folder (``folder`` must not exist yet)."""
    folder.mkdir(parents=True)
    for split, arr in bc.images.items():
        for i, img in enumerate(arr):
            p = folder / _image_path(split, i)
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p)

    def dump(rel, data):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(data, indent=1) + "\n")

    dump("info.json", bc.info)
    dump("conversations.json", [_turns(c["question"], c["answer"], []) for c in bc.conversations])
    for fname, split in (("positive_recognitions.json", "train"), ("random_recognitions.json", "random"),
                         ("hard_recognitions.json", "hard")):
        dump(fname, [_turns(q["question"], q["answer"], [_image_path(*q["image"])]) for q in bc.recognition
                     if q["image"][0] == split])
    dump("test/recognition.json", _qa_with_image(bc.test_recognition))
    dump("test/vqa.json", _qa_with_image(bc.vqa))
    dump("test/text_only.json", bc.text_qa)
    dump("test/t2i_conditions.json", bc.t2i)
    dump("edit/edits.json", [{"source": _image_path(*e["source"]), "instruction": e["instruction"],
                              "target": _image_path(*e["target"]), "target_attributes": e["target_attributes"]}
                             for e in bc.edits])


def export_world(directory, concepts=None, overwrite: bool = False, image_size: int = world.IMAGE_SIZE) -> list[Path]:
    """Write the concepts (all by default) in UnifyBench's layout under ``directory``.

    Refuses a non-empty ``directory`` unless ``overwrite``; writes into a temporary
    folder and moves it into place, so an interrupted export leaves nothing half-written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise BenchLayoutError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise BenchLayoutError(f"{directory} is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
    cards = concepts_mod.load_concepts(concepts)
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for card in cards:
            write_concept(bench_concept(card, image_size), tmp / card.name)
        (tmp / "README.txt").write_text("UnifyBench-mini, exported by `unikit world export`. One folder per concept.\n")
    return [directory / c.name for c in cards]


# --------------------------------------------------------------------------- load


def _read_json(folder: Path, rel: str):
    p = folder / rel
    if not p.is_file():
        raise BenchLayoutError(f"{folder}: missing {rel} (a UnifyBench concept folder needs {', '.join(BENCH_FILES)})")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BenchLayoutError(f"{p}: not valid JSON ({e})") from None


def load_concept_folder(folder, image_size: int | None = None) -> BenchConcept:
    """Read one concept folder written by :func:`export_world` (or laid out the same way).
    ``image_size``: every image padded to a square and resized to it (:func:`unikit.photo_files.read_photo`);
    None keeps the files' sizes, which must then all be equal."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchLayoutError(f"{folder}: no such concept folder")
    paths: dict[str, list[str]] = {}
    refs: dict[str, tuple[str, int]] = {}

    def ref(path: str, split: str) -> tuple[str, int]:
        if path not in refs:
            if not (folder / path).is_file():
                raise BenchLayoutError(f"{folder}: {path} is named in a JSON file but missing")
            paths.setdefault(split, []).append(path)
            refs[path] = (split, len(paths[split]) - 1)
        return refs[path]

    def turns(rel, split):
        out = []
        for t in _read_json(folder, rel):
            conv = t["conversations"]
            img = ref(t["image"][0], split) if t.get("image") else None
            question = conv[0]["value"].replace("<image>", "").strip()  # LLaVA's image marker: the kit places images itself
            out.append({"image": img, "question": question, "answer": conv[1]["value"]})
        return out

    info = _read_json(folder, "info.json")
    conversations = [{"question": q["question"], "answer": q["answer"]} for q in turns("conversations.json", None)]
    recognition = turns("positive_recognitions.json", "train") + turns("random_recognitions.json", "random")
    if (folder / "hard_recognitions.json").is_file():
        recognition += turns("hard_recognitions.json", "hard")

    def split_of_test(path: str) -> str:
        name = Path(path).name
        return "test_random" if name.startswith("random_") else "test_hard" if name.startswith("hard_") else "test"

    test_recognition = []
    if (folder / "test/recognition.json").is_file():
        test_recognition = [{"image": ref(q["image"], split_of_test(q["image"])), "question": q["question"],
                             "answer": q["answer"]} for q in _read_json(folder, "test/recognition.json")]
    vqa = [{"image": ref(q["image"], "test"), "question": q["question"], "answer": q["answer"]}
           for q in _read_json(folder, "test/vqa.json")]
    text_qa = _read_json(folder, "test/text_only.json")
    t2i = _read_json(folder, "test/t2i_conditions.json")
    edits = []
    if (folder / "edit/edits.json").is_file():
        for e in _read_json(folder, "edit/edits.json"):
            edits.append({"source": ref(e["source"], "edit_source"), "instruction": e["instruction"],
                          "target": ref(e["target"], "edit_target"), "target_attributes": e.get("target_attributes", {})})
    images = {split: _read_images(folder, ps, image_size) for split, ps in paths.items()}
    for split in ("train", "test"):
        if split not in images:
            raise BenchLayoutError(f"{folder}: no {split} images referenced")
    return BenchConcept(folder.name, info, images, conversations, recognition, test_recognition, vqa, text_qa, t2i, edits)


def _read_images(folder: Path, paths: list[str], image_size: int | None) -> np.ndarray:
    """The named images as ``uint8[n, S, S, 3]``: resized to ``image_size``, or as stored (then all of one size)."""
    if image_size is not None:
        return read_photos([folder / p for p in paths], image_size)
    out, sizes = [], {}
    for p in paths:
        try:
            with Image.open(folder / p) as im:
                out.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise PhotoError(f"{folder / p}: not a readable image ({e}); remove it or convert it to PNG/JPEG") from None
        sizes.setdefault(out[-1].shape[:2], p)
    if len(sizes) > 1:
        shown = ", ".join(f"{p}: {w}x{h}" for (h, w), p in sizes.items())
        raise BenchLayoutError(f"{folder}: images of mixed sizes ({shown}); pass image_size to resize them all "
                               "(unikit personalize --concept FOLDER uses the model's size)")
    return np.stack(out)


def load_bench(directory, names=None) -> list[BenchConcept]:
    """Every concept folder under ``directory`` (or the named ones)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BenchLayoutError(f"{directory}: no such directory")
    found = sorted(p.name for p in directory.iterdir() if (p / "info.json").is_file())
    names = names or found
    missing = [n for n in names if n not in found]
    if missing:
        raise BenchLayoutError(f"{directory}: no concept folders for {missing}; available: {', '.join(found)}")
    return [load_concept_folder(directory / n) for n in names]
