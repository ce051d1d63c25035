"""Training the judge: degradation augmentation, the scene pool, the training loop, and its
evaluation on held-out clean and degraded renders."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from .. import world
from ..world import ATTRIBUTES, NONE, Scene
from .reading import JUDGE_CONFIG, Judge, expected_reading, readable_identities, to_tensor

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
    from ..concepts import load_concepts

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
    from ..concepts import concept_data, load_concepts

    cards = load_concepts()
    by_identity = {ident: c.name for c in cards for ident in readable_identities(c.identity())}
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
    from ..concepts import load_concepts

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


