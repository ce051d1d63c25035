"""The judge itself: its config and hash, the CNN, what it should read of a scene, and scoring."""

from __future__ import annotations

import functools
import hashlib
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import cache, world
from ..world import ATTRIBUTES, NONE, Scene

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "judge"
WEIGHTS_FILE = "judge.safetensors"
META_FILE = "judge.json"
SUBJECT_ATTRIBUTES = ("shape", "colour", "pattern", "mark", "mark_colour", "hat", "scarf")  # unseen when absent

# Everything that decides the judge's weights. Its hash (with the world's definition)
# is stored beside the weights; a mismatch means the shipped judge is stale.
JUDGE_CONFIG: dict = {
    "channels": [16, 32, 96],  # conv widths at 32px, 16px and 8px (then 4px)
    "hidden": 128,  # width of the feature vector (Judge.features)
    "pool_scenes": 40000,  # pre-rendered training renders
    "steps": 6000,  # at 2000 it read 0.950 of the tokenizer metric's renders, at 6000 0.975 (docs/notes/2026-12-03-judge-ceiling.md)
    "batch": 64,
    "lr": 6e-3,
    "weight_decay": 1e-4,
    "warmup": 50,
    "degrade_frac": 0.25,  # fraction of each batch that is degraded
    "concept_frac": 0.3,  # fraction of the pool built from concept cards (+ hard negatives)
    "absent_frac": 0.08,  # fraction of the pool with no subject
}


class JudgeError(ValueError):
    """A judge file is missing, stale or malformed; the message says how to fix it."""


@functools.lru_cache(maxsize=1)
def _render_fingerprint() -> str:
    """Hash of reference renders (every shape, mark, pattern, item; varied layouts): changes if drawing changes."""
    rng = random.Random(1234)
    scenes = [world.random_scene(rng, allow_heldout=True, item_prob=0.5, mark_prob=0.8, present=i % 16 != 0) for i in range(256)]
    return hashlib.sha256(world.render_many(scenes).tobytes()).hexdigest()[:16]


def world_definition() -> dict:
    """The parts of :mod:`unikit.world` the judge's weights depend on (vocabulary, palette, drawing)."""
    return {"attributes": {k: list(v) for k, v in ATTRIBUTES.items()}, "colours": world.COLOURS,
            "backgrounds": world.BACKGROUNDS, "pattern_colour": world.PATTERN_COLOUR, "image_size": world.IMAGE_SIZE,
            "renders": _render_fingerprint()}


def judge_hash(config: dict | None = None) -> str:
    """Hash of a judge config plus the current world definition."""
    return cache.config_hash({"judge": config or JUDGE_CONFIG, "world": world_definition()})


# --------------------------------------------------------------------------- model


def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Judge(nn.Module):
    """A small CNN with one softmax head per attribute of :data:`world.ATTRIBUTES`.

    ``uint8[B, 32, 32, 3]`` -> conv trunk (32px -> 16px -> 8px -> 4px) -> flatten ->
    ``features: [B, hidden]`` -> one linear head per attribute.
    """

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.config = dict(config or JUDGE_CONFIG)
        c1, c2, c3 = self.config["channels"]
        hidden = self.config["hidden"]
        self.trunk = nn.Sequential(
            _conv(3, c1, 1),  # 32px
            _conv(c1, c2, 2), _conv(c2, c2, 1),  # 16px
            _conv(c2, c3, 2), _conv(c3, c3, 1),  # 8px
            _conv(c3, c3, 2),  # 4px
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(c3 * 16, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(values)) for name, values in ATTRIBUTES.items()})

    # -- tensors in, tensors out ------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """``float[B, 3, 32, 32]`` in [0, 1] -> ``float[B, hidden]``."""
        return self.embed(self.trunk((x - 0.5) * 4.0))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``float[B, 3, 32, 32]`` in [0, 1] -> ``{attribute: logits[B, n_values]}``."""
        h = self._embed(x)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def _run(self, images, fn, batch: int = 512) -> list:
        x = to_tensor(images)
        was_training = self.training
        self.eval()
        try:
            return [fn(x[i:i + batch]) for i in range(0, len(x), batch)]
        finally:
            self.train(was_training)

    # -- images in, answers out -------------------------------------------------------

    def probabilities(self, images) -> dict[str, torch.Tensor]:
        """``uint8[B, 32, 32, 3]`` -> ``{attribute: probs[B, n_values]}`` (softmax per head)."""
        parts = self._run(images, lambda x: {k: v.softmax(-1) for k, v in self(x).items()})
        return {k: torch.cat([p[k] for p in parts]) if parts else torch.zeros(0, len(ATTRIBUTES[k])) for k in ATTRIBUTES}

    def read(self, images) -> list[dict[str, str]]:
        """``uint8[B, 32, 32, 3]`` -> one ``{attribute: word}`` per image.

        With no subject visible, the subject's attributes read ``"none"``.
        """
        probs = self.probabilities(images)
        idx = {k: p.argmax(-1).tolist() for k, p in probs.items()}
        out = []
        for i in range(len(idx["present"])):
            reading = {k: ATTRIBUTES[k][idx[k][i]] for k in ATTRIBUTES}
            if reading["present"] == "no":
                reading.update({k: NONE for k in SUBJECT_ATTRIBUTES})
            out.append(reading)
        return out

    def features(self, images) -> torch.Tensor:
        """``uint8[B, 32, 32, 3]`` -> ``float[B, hidden]``: the vector every head reads."""
        parts = self._run(images, self._embed)
        return torch.cat(parts) if parts else torch.zeros(0, self.config["hidden"])

    def identify(self, images, cards) -> list[str | None]:
        """``uint8[B, 32, 32, 3]`` -> the name of the card whose ``identity()`` matches, else None.

        Identity is (shape, colour, pattern, mark, mark_colour) as read; a hard negative
        that differs only in its mark is not the concept.
        """
        by_identity = {ident: card.name for card in cards for ident in readable_identities(card.identity())}
        names = []
        for r in self.read(images):
            key = tuple(r[k] for k in world.IDENTITY)
            names.append(by_identity.get(key) if r["present"] == "yes" else None)
        return names


def to_tensor(images) -> torch.Tensor:
    """``uint8[B, 32, 32, 3]`` (NumPy or torch; one ``[32, 32, 3]`` image is a batch of 1)
    -> ``float[B, 3, 32, 32]`` in [0, 1]. Raises :class:`world.WorldError` for anything else."""
    if isinstance(images, (list, tuple)):
        images = np.stack([world.check_image(np.asarray(im)) for im in images]) if images else np.zeros((0, 32, 32, 3), np.uint8)
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise world.WorldError(f"expected uint8 pixels (0-255), got {images.dtype}; "
                                   "convert with (x * 255).round().clamp(0, 255).to(torch.uint8)")
        x = images.detach().cpu()
    else:
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise world.WorldError(f"expected uint8 pixels (0-255), got {arr.dtype}; "
                                   "convert with (x * 255).round().clip(0, 255).astype(np.uint8)")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.ndim == 3:
        x = x[None]
    s = world.IMAGE_SIZE
    if x.ndim != 4 or x.shape[-1] != 3:
        raise world.WorldError(f"expected RGB images of shape [B, {s}, {s}, 3] (channels last), got shape {list(x.shape)}")
    h, w = x.shape[1:3]
    if h != w or h % s:
        raise world.WorldError(
            f"images are {w}x{h} but the judge reads {s}x{s} (or square multiples of it, averaged down); "
            f"resize them first, e.g. PIL.Image.fromarray(img).resize(({s}, {s}))")
    x = x.permute(0, 3, 1, 2).float().div(255.0)
    if h != s:  # a model's larger images (Janus-Pro draws 384 px): block means, exact for upscaled renders
        x = F.avg_pool2d(x, h // s)
    return x


def similarity(judge: Judge, images_a, images_b) -> float:
    """Mean cosine similarity of judge features over all pairs (a_i, b_j): the kit's CLIP-I / DINO stand-in.

    ``images_a: uint8[A, 32, 32, 3]``, ``images_b: uint8[B, 32, 32, 3]`` -> a float in [-1, 1].
    """
    fa = F.normalize(judge.features(images_a), dim=-1)
    fb = F.normalize(judge.features(images_b), dim=-1)
    if len(fa) == 0 or len(fb) == 0:
        raise ValueError("similarity needs at least one image on each side")
    return float((fa @ fb.T).mean())


def _canonical(scene: Scene, image: np.ndarray | None = None) -> Scene:
    """The scene a perfect judge reads from ``render(scene)``: ``scene`` itself, unless its mark
    is hidden (by items or pattern). (No two identities render alike: ``tests/test_world.py``.)"""
    if not scene.present or scene.mark == NONE:
        return scene
    image = world.render(scene) if image is None else image
    unmarked = scene.replace(mark=NONE, mark_colour=NONE)
    # Only the mark and same-coloured items can paint the mark colour: a quick test before rendering.
    surely_visible = (scene.mark_colour not in (scene.hat, scene.scarf, scene.toy)
                      and bool(np.all(image == world.COLOURS[scene.mark_colour], axis=-1).any()))
    if not surely_visible and np.array_equal(image, world.render(unmarked)):
        return unmarked
    return scene


def expected_reading(scene: Scene, image: np.ndarray | None = None) -> dict[str, str]:
    """What a perfect judge reads from ``render(scene)``.

    Subject attributes are "none" when the subject is absent; the mark is "none" when
    items and pattern hide it completely. ``image`` (``render(scene)``, if at hand) saves a render.
    """
    scene = _canonical(scene, image)
    out = {k: scene.value(k) for k in ATTRIBUTES}
    if not scene.present:
        out.update({k: NONE for k in SUBJECT_ATTRIBUTES})
    return out


@functools.lru_cache(maxsize=1024)
def readable_identities(identity: tuple) -> frozenset:
    """The identity readings a render of a concept with ``identity`` can have: its own, plus
    "no mark" at sizes where items or pattern hide the mark (see :func:`expected_reading`)."""
    shape, colour, pattern, mark, mark_colour = identity
    out = {identity}
    for size in range(13, 18):
        sc = Scene(shape=shape, colour=colour, pattern=pattern, mark=mark, mark_colour=mark_colour, size=size)
        r = expected_reading(sc)
        out.add((r["shape"], r["colour"], r["pattern"], r["mark"], r["mark_colour"]))
    return frozenset(out)


def score_scenes(judge: Judge, images, expected: dict[str, str]) -> list[bool]:
    """For each image of ``uint8[B, 32, 32, 3]``: does the judge read every attribute named in ``expected``?

    ``expected`` maps attribute -> word, e.g. ``{"hat": "yellow", "background": "gray"}``.
    """
    for k, v in expected.items():
        if k not in ATTRIBUTES:
            raise JudgeError(f"unknown attribute {k!r}; the judge reads {', '.join(ATTRIBUTES)}")
        if v not in ATTRIBUTES[k] and v != NONE:
            raise JudgeError(f"{k}={v!r} is not one of {list(ATTRIBUTES[k])}")
    return [all(r[k] == v for k, v in expected.items()) for r in judge.read(images)]


# --------------------------------------------------------------------------- reporting


def format_metrics(m: dict) -> str:
    """:func:`evaluate_judge`'s accuracies as a table: per attribute, clean and degraded renders."""
    lines = [f"{'attribute':<12} {'clean':>7} {'degraded':>9}"]
    for k in ATTRIBUTES:
        lines.append(f"{k:<12} {m['clean'][k]:>7.4f} {m['degraded'][k]:>9.4f}")
    lines.append(f"{'all':<12} {m['clean_all']:>7.4f} {m['degraded_all']:>9.4f}")
    lines.append(f"{'identity':<12} {m['identity_clean']:>7.4f} {m['identity_degraded']:>9.4f}")
    return "\n".join(lines)
