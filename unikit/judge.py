"""The exact judge: a small CNN that reads every attribute of a rendered scene.

Generated images in this kit are scored by this classifier, the exact stand-in for
the GPT-4o / CLIP judges of the papers. It reads each field of
:data:`unikit.world.ATTRIBUTES` (one softmax head each) from a ``uint8[B, 32, 32, 3]``
image, so "is this <bo>?" becomes "do the shape, colour, pattern, mark and mark colour
it reads match <bo>'s card?" (:meth:`Judge.identify`), and "did the model draw the
hat?" becomes ``judge.read(images)[i]["hat"]``.

It is trained on renders with *degradation augmentation* (blur, down-up sampling,
noise, colour jitter, sub-pixel shifts), so the blur of a VQ tokenizer's round trip
does not fool it. :func:`evaluate_judge` reports its accuracy on held-out clean and
degraded renders.

When no subject is visible (``present == "no"``) there is nothing to read about it:
the subject's attributes (shape, colour, pattern, mark, mark_colour, hat, scarf) are
reported as ``"none"``; :func:`expected_reading` gives the words a perfect judge reads.

Usage::

    judge = load_judge()                      # the shipped data/judge/, hash-checked
    judge.read(images)                        # [{"shape": "circle", "hat": "none", ...}, ...]
    judge.identify(images, cards)             # ["bo", None, ...]
    similarity(judge, gen_images, ref_images) # CLIP-I / DINO stand-in

Retrain (and rewrite the shipped files) with ``unikit judge train``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cache, world
from .world import ATTRIBUTES, NONE, Scene

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data" / "judge"
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
        by_identity = {ident: card.name for card in cards for ident in _readable_identities(card.identity())}
        names = []
        for r in self.read(images):
            key = (r["shape"], r["colour"], r["pattern"], r["mark"], r["mark_colour"])
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
def _readable_identities(identity: tuple) -> frozenset:
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


# --------------------------------------------------------------------------- degradation


def _degrade_tensor(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A VQ-round-trip-like corruption of ``float[B, 3, H, W]`` in [0, 1], random per image.

    Sub-pixel shift (up to 1 px), then either a Gaussian blur (sigma 0.4-1.2) or a
    bilinear down-up sampling (to 8, 10, 12 or 16 px), then noise and colour jitter.
    """
    b, _, h, w = x.shape
    if b == 0:
        return x

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(b, *shape, generator=gen)

    # shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = u(-1.0, 1.0, 2) * 2.0 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # blur or down-up
    use_blur = torch.rand(b, generator=gen) < 0.5
    sizes = torch.tensor([8, 10, 12, 16])[torch.randint(0, 4, (b,), generator=gen)]
    out = x.clone()
    if use_blur.any():
        xb = x[use_blur]
        sigma = u(0.4, 1.2)[use_blur]
        r = torch.arange(-2, 3, dtype=torch.float32)
        k1 = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
        k1 = k1 / k1.sum(1, keepdim=True)  # [n, 5]
        n = len(xb)
        kern = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(3, 0)[:, None]  # [3n, 1, 5, 5]
        xp = F.pad(xb.reshape(1, 3 * n, h, w), (2, 2, 2, 2), mode="replicate")
        out[use_blur] = F.conv2d(xp, kern, groups=3 * n).reshape(n, 3, h, w)
    for s in sizes.unique().tolist():
        sel = (~use_blur) & (sizes == s)
        if sel.any():
            small = F.interpolate(x[sel], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            out[sel] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    x = out
    # noise and colour jitter
    x = x * u(0.9, 1.1, 1, 1, 1) + u(-0.03, 0.03, 3, 1, 1)
    x = x + torch.randn(x.shape, generator=gen) * u(0.0, 0.04, 1, 1, 1)
    return x.clamp(0.0, 1.0)


def degrade(images, seed: int = 0) -> np.ndarray:
    """Corrupt ``uint8[B, 32, 32, 3]`` images like a VQ round trip might; returns ``uint8[B, 32, 32, 3]``.

    Deterministic in ``seed``; this is the distribution of the "degraded" accuracy.
    """
    x = _degrade_tensor(to_tensor(images), torch.Generator().manual_seed(seed))
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------- data


def _concept_scene(card, rng: random.Random) -> Scene:
    """A concept card's subject (or one of its hard negatives) with random items, background, layout."""
    changes = dict(background=rng.choice(tuple(world.BACKGROUNDS)), **world.random_layout(rng))
    if rng.random() < 0.5:  # hard negative: same class, colour and pattern, another mark (or none)
        options = [(NONE, NONE)] + [(m, c) for m in world.MARKS for c in world.COLOURS if c != card.colour]
        changes["mark"], changes["mark_colour"] = rng.choice(options)
    for item in ("hat", "scarf"):
        r = rng.random()
        if r < 0.3:
            changes[item] = getattr(card, item) if getattr(card, item) != NONE else rng.choice(tuple(world.COLOURS))
        elif r < 0.45:
            changes[item] = rng.choice(tuple(world.COLOURS))
    if rng.random() < 0.4:
        if card.toy != NONE and rng.random() < 0.5:
            changes["toy"], changes["toy_shape"] = card.toy, card.toy_shape
        else:
            changes["toy"], changes["toy_shape"] = rng.choice(tuple(world.COLOURS)), rng.choice(world.TOY_SHAPES)
    return card.scene(**changes)


def sample_scenes(n: int, seed: int, config: dict | None = None) -> list[Scene]:
    """``n`` scenes of the judge's mix, deterministic in ``seed``: generic scenes (held-out
    pairs included, varied item and mark rates), scenes with no subject, and the concept
    cards' subjects with and without items plus their hard negatives."""
    from .concepts import load_concepts

    cfg = config or JUDGE_CONFIG
    cards = load_concepts()
    rng = random.Random(seed)
    scenes = []
    for _ in range(n):
        r = rng.random()
        kw = dict(allow_heldout=True, item_prob=rng.choice((0.0, 0.2, 0.35, 0.6, 0.9)), mark_prob=rng.choice((0.3, 0.6, 0.9)))
        if r < cfg["absent_frac"]:
            scenes.append(world.random_scene(rng, present=False, **kw))
        elif r < cfg["absent_frac"] + cfg["concept_frac"] and cards:
            scenes.append(_concept_scene(rng.choice(cards), rng))
        else:
            scenes.append(world.random_scene(rng, **kw))
    return scenes


def _targets(scenes: list[Scene], images: np.ndarray) -> dict[str, torch.Tensor]:
    """``{attribute: long[N]}`` for ``images = render_many(scenes)``; shape/colour/pattern of an absent subject are ignored (-100)."""
    out = {k: [] for k in ATTRIBUTES}
    for sc, image in zip(scenes, images):
        reading = expected_reading(sc, image)
        for k in ATTRIBUTES:
            v = reading[k]
            out[k].append(ATTRIBUTES[k].index(v) if v in ATTRIBUTES[k] else -100)
    return {k: torch.tensor(v) for k, v in out.items()}


# --------------------------------------------------------------------------- training


def train_judge(seed: int = 0, steps: int | None = None, progress: bool = True, config: dict | None = None,
                evaluate: bool = True):
    """Train a judge from scratch. Returns ``(judge, metrics)``.

    Deterministic in ``seed`` on the CPU (for a fixed thread count). ``steps`` overrides
    the config's step count (short runs for tests; the config hash then no longer fits,
    so such a judge is not saved as the default). ``metrics`` is :func:`evaluate_judge`
    (skipped with ``evaluate=False``) plus ``train_seconds``.
    """
    cfg = dict(config or JUDGE_CONFIG)
    if steps is not None:
        cfg["steps"] = int(steps)
    t0 = time.time()
    pool_n = min(cfg["pool_scenes"], cfg["steps"] * cfg["batch"])
    scenes = sample_scenes(pool_n, seed=seed, config=cfg)
    images = world.render_many(scenes)
    pool = torch.from_numpy(images).permute(0, 3, 1, 2)  # uint8[N, 3, 32, 32]
    targets = _targets(scenes, images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = Judge(cfg)
    judge = judge.to(memory_format=torch.channels_last)  # faster CPU convolutions
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    def lr_at(step):
        if step < cfg["warmup"]:
            return (step + 1) / cfg["warmup"]
        t = (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"])
        return 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg["steps"], desc="training judge", unit="step")
    judge.train()
    for step in range(cfg["steps"]):
        idx = torch.randint(0, len(pool), (cfg["batch"],), generator=gen)
        x = pool[idx].float().div(255.0)
        n_deg = int(round(cfg["degrade_frac"] * len(x)))
        if n_deg:
            x[:n_deg] = _degrade_tensor(x[:n_deg], gen)
        logits = judge(x.contiguous(memory_format=torch.channels_last))
        loss = sum(F.cross_entropy(logits[k], targets[k][idx], ignore_index=-100) for k in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    judge.eval()
    train_seconds = time.time() - t0
    metrics = evaluate_judge(judge, seed=seed) if evaluate else {}
    metrics["train_seconds"] = round(train_seconds, 1)
    return judge, metrics


# --------------------------------------------------------------------------- evaluation


def _identity_scenes(seed: int) -> tuple[list[Scene], list[str | None]]:
    """Each card's test images, test hard and random negatives, and fresh positives and hard negatives."""
    from .concepts import concept_data, load_concepts

    cards = load_concepts()
    by_identity = {ident: c.name for c in cards for ident in _readable_identities(c.identity())}
    rng = random.Random(seed)
    scenes = []
    for card in cards:
        data = concept_data(card)
        scenes += data.test_scenes + data.test_hard_negatives + data.test_random_negatives + data.hard_negatives
        for _ in range(20):
            items = [i for i in card.items if rng.random() < 0.5]
            scenes.append(card.with_items(*items, background=rng.choice(tuple(world.BACKGROUNDS)), **world.random_layout(rng)))
    names = []
    for s in scenes:  # who a perfect judge sees (a concept whose mark its items hide is nobody)
        r = expected_reading(s)
        names.append(by_identity.get((r["shape"], r["colour"], r["pattern"], r["mark"], r["mark_colour"])))
    return scenes, names


def evaluate_judge(judge: Judge, seed: int = 0, n: int = 3000) -> dict:
    """Accuracy on held-out renders (a fresh stream of the training mix), clean and degraded.

    Returns ``{"clean": {attribute: acc}, "degraded": {attribute: acc}, "clean_all": ...,
    "degraded_all": ..., "identity_clean": acc, "identity_degraded": acc, "n_images": n,
    "n_identity": m}``. ``*_all`` is the fraction of images with every attribute right;
    identity is scored with :meth:`Judge.identify` over all concept cards on each
    card's test images, hard negatives and random negatives.
    """
    from .concepts import load_concepts

    scenes = sample_scenes(n, seed=10_007 + 7919 * seed)
    images = world.render_many(scenes)
    truth = [expected_reading(s, im) for s, im in zip(scenes, images)]
    out: dict = {"n_images": n}
    for name, imgs in (("clean", images), ("degraded", degrade(images, seed=seed + 1))):
        reads = judge.read(imgs)
        out[name] = {k: round(float(np.mean([r[k] == t[k] for r, t in zip(reads, truth)])), 4) for k in ATTRIBUTES}
        out[f"{name}_all"] = round(float(np.mean([r == t for r, t in zip(reads, truth)])), 4)
    id_scenes, names = _identity_scenes(seed)
    id_images = world.render_many(id_scenes)
    cards = load_concepts()
    for name, imgs in (("clean", id_images), ("degraded", degrade(id_images, seed=seed + 2))):
        got = judge.identify(imgs, cards)
        out[f"identity_{name}"] = round(float(np.mean([g == e for g, e in zip(got, names)])), 4)
    out["n_identity"] = len(id_scenes)
    return out


# --------------------------------------------------------------------------- files


def save_judge(judge: Judge, out_dir, metrics: dict | None = None, seed: int | None = None, command: str = "") -> Path:
    """Write ``judge.safetensors`` and ``judge.json`` (config, hash, seed, metrics) atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in judge.state_dict().items()}
    with cache.atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
        os.chmod(tmp, 0o644)
    meta = {"config": judge.config, "config_hash": judge_hash(judge.config), "seed": seed, "metrics": metrics or {},
            "train_seconds": (metrics or {}).get("train_seconds"), "threads": torch.get_num_threads(), "command": command,
            "torch": torch.__version__}
    cache.write_json(out_dir / META_FILE, meta)
    return out_dir


def _load_dir(directory: Path, config: dict) -> Judge:
    from safetensors.torch import load_file

    retrain = "retrain it with `unikit judge train`"
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise JudgeError(f"{directory}: no judge here (needs {META_FILE} and {WEIGHTS_FILE}); {retrain}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise JudgeError(f"{meta_path}: not valid JSON ({e}); {retrain}") from None
    want = judge_hash(config)
    if meta.get("config_hash") != want:
        raise JudgeError(
            f"{directory}: this judge was trained for another judge config or world definition "
            f"(stored hash {meta.get('config_hash')!r}, current {want!r}); {retrain}")
    judge = Judge(config)
    try:
        judge.load_state_dict(load_file(str(weights_path)), strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise JudgeError(f"{weights_path}: cannot load weights ({e}); {retrain}") from None
    judge.eval()
    return judge


def load_judge(path=None, progress: bool = True) -> Judge:
    """Load a trained judge (in eval mode).

    ``path`` is a directory holding ``judge.json`` + ``judge.safetensors``. By default:
    the shipped ``data/judge/``; if nothing is shipped, the cache
    (``unikit.cache.artifact_dir("judge", "default", config)``), training and saving
    one there first if needed. The stored config hash must match the current judge
    config and world definition, else :class:`JudgeError` says how to retrain.
    """
    if path is not None:
        return _load_dir(Path(path), JUDGE_CONFIG)
    if (DEFAULT_DIR / META_FILE).is_file():
        return _load_dir(DEFAULT_DIR, JUDGE_CONFIG)
    cached = cache.artifact_dir("judge", "default", {"judge": JUDGE_CONFIG, "world": world_definition()})
    if not (cached / META_FILE).is_file():
        judge, metrics = train_judge(seed=0, progress=progress)
        save_judge(judge, cached, metrics, seed=0, command="unikit.judge.load_judge()")
    return _load_dir(cached, JUDGE_CONFIG)


# --------------------------------------------------------------------------- reporting


def format_metrics(m: dict) -> str:
    """:func:`evaluate_judge`'s accuracies as a table: per attribute, clean and degraded renders."""
    lines = [f"{'attribute':<12} {'clean':>7} {'degraded':>9}"]
    for k in ATTRIBUTES:
        lines.append(f"{k:<12} {m['clean'][k]:>7.4f} {m['degraded'][k]:>9.4f}")
    lines.append(f"{'all':<12} {m['clean_all']:>7.4f} {m['degraded_all']:>9.4f}")
    lines.append(f"{'identity':<12} {m['identity_clean']:>7.4f} {m['identity_degraded']:>9.4f}")
    return "\n".join(lines)
