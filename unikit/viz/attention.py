"""Seeing inside: where generation and understanding attend (concept-token groups, layers, heads,
rollout), and figures of it. Attention weights need eager attention."""

from __future__ import annotations

import contextlib
import textwrap
import time
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import model as M
from .images import VizError


# =========================================================================== seeing inside: attention
#
# Attention weights need *eager* attention: fused kernels (sdpa, flash) never materialise
# them. ``unikit.model.attention_maps`` switches an sdpa model to eager for its call and
# back afterwards; :func:`eager_attention` does the same for the forwards written here.
#
# Key positions are sorted into groups: each concept-token group present in the prompt
# ("identifier", "shared", ...), "concept" (all of them), "words" (the other prompt words),
# "image" (image positions: placeholders being read, or codes already drawn) and "special"
# (<bos>, <begin_of_image>, ...). For one query the groups' masses sum to 1.


class AttentionIndexError(VizError):
    """A layer, head or group that does not exist."""


@contextlib.contextmanager
def eager_attention(um):
    """Run the block with eager attention (switching an sdpa model and restoring it afterwards);
    raises :class:`unikit.model.ModelError` saying how to reload the model if it cannot switch."""
    previous = M.ensure_eager_attention(um)
    try:
        yield
    finally:
        if previous is not None:
            um.model.set_attn_implementation(previous)


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) through the layers.

    Each layer's ``[B, heads, N, N]`` weights are averaged over heads, the identity is added for
    the residual stream (``0.5 A + 0.5 I``), rows are renormalised, and the layers multiplied:
    ``R_l = A_l R_{l-1}``. Returns ``Tensor[layers, B, N, N]``: ``R_l[b, q, k]`` is how much
    position ``k`` flows into query ``q`` up to layer ``l``.
    """
    out, rolled = [], None
    for a in attentions:
        a = a.float().mean(1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rolled = a if rolled is None else a @ rolled
        out.append(rolled)
    return torch.stack(out)


def _key_groups(um, ids: Sequence[int], tokens=None, focus_words: Sequence[str] = ()) -> dict[str, list[int]]:
    """Positions of ``ids`` (one prompt) sorted into the groups described above."""
    ids = list(map(int, ids))
    special_ids = set(um.tokenizer.all_special_ids) - {um.ids["image"]}
    concept_of = {i: g for g, gi in (tokens.ids.items() if tokens is not None else ()) for i in gi}
    focus = {um.tokenizer.convert_tokens_to_ids(w): w for w in focus_words}
    groups: dict[str, list[int]] = {}
    for p, i in enumerate(ids):
        if i in concept_of:
            keys = [concept_of[i], "concept"]
        elif i == um.ids["image"]:
            keys = ["image"]
        elif i in special_ids:
            keys = ["special"]
        else:
            keys = ["words"] + ([f"'{focus[i]}'"] if i in focus else [])
        for k in keys:
            groups.setdefault(k, []).append(p)
    order = ["concept", "identifier", "shared", "understanding", "generation", "editing"]
    order += [k for k in groups if k.startswith("'")] + ["words", "image", "special"]
    return {k: groups[k] for k in order if k in groups}


def _check_index(what: str, value, n: int) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                              or not 0 <= value < n):
        raise AttentionIndexError(f"{what} {value!r} does not exist: this model has {n} {what}s, valid "
                                  f"{what}s are 0..{n - 1} (or None for the mean over all {what}s)")


def _select(arr: np.ndarray, layer, head, n_layers: int, n_heads: int) -> np.ndarray:
    """``[layers, heads, ...]`` -> ``[...]``: one layer/head, or the mean when None."""
    _check_index("layer", layer, n_layers)
    _check_index("head", head, n_heads)
    arr = arr[layer] if layer is not None else arr.mean(0)
    return arr[head] if head is not None else arr.mean(0)


def _check_group(group, available) -> None:
    if group not in available:
        raise AttentionIndexError(f"no key group {group!r} here; available: {', '.join(available)}")


@dataclass
class GenerationAttention:
    """Where each generated image token looked while the model drew one image.

    ``mass[group]``: ``float[layers, heads, g, g]``: attention of the query that predicted the
    code at grid cell (r, c) on the key positions of ``group`` (see the groups above);
    ``rollout[group]``: ``float[layers, g, g]``, the same through :func:`attention_rollout`.
    """

    prompt: str
    image: np.ndarray  # uint8 [S, S, 3]
    codes: torch.Tensor  # [g, g]
    labels: list[str]  # the prompt's tokens (key positions 0..P-1)
    positions: dict[str, list[int]]  # group -> prompt positions
    mass: dict[str, np.ndarray]
    rollout: dict[str, np.ndarray]
    n_layers: int
    n_heads: int
    seconds: float = 0.0

    @property
    def groups(self) -> list[str]:
        return list(self.mass)

    def grid(self, group: str = "concept", layer: int | None = None, head: int | None = None) -> np.ndarray:
        """``float[g, g]``: the mass on ``group`` for one layer/head (None: mean over them)."""
        _check_group(group, self.groups)
        return _select(self.mass[group], layer, head, self.n_layers, self.n_heads)


def generation_attention(um, prompt: str, tokens=None, seed: int = 0, guidance: float | None = None,
                         temperature: float = 1.0, focus_words: Sequence[str] = ()) -> GenerationAttention:
    """Generate one image for ``prompt`` and measure, for each of its image tokens, the
    attention on the concept tokens (total and per group), per layer and head.

    Pass the prompt as the method writes it (``tokens.generation_prompt("a photo of <bo>")``).
    The codes and their attention come from :func:`unikit.model.attention_maps` (the sampling
    loop itself, conditional half); the rollout from one teacher-forced forward of the prompt
    plus the drawn codes. ``focus_words`` adds a group per listed prompt word.
    """
    start = time.perf_counter()
    T, g = um.num_gen_tokens, um.gen_grid
    maps = M.attention_maps(um, prompts=[prompt], steps=range(T), guidance=guidance, seed=seed,
                            temperature=temperature)
    ids = M.generation_inputs(um, [prompt])["input_ids"][0]
    P = len(ids)
    positions = _key_groups(um, ids.tolist(), tokens, focus_words)
    layers, heads = len(maps.generation[0]), maps.generation[0][0].shape[1]
    # rows[step][layer]: [heads, keys]; keys are the prompt then codes 0..step-1
    keys = {k: v for k, v in positions.items() if k != "image"}
    mass = {k: np.zeros((layers, heads, T), dtype=np.float32) for k in keys}
    mass["image"] = np.zeros((layers, heads, T), dtype=np.float32)
    for step in range(T):
        att = torch.stack([a[0] for a in maps.generation[step]])  # [layers, heads, P + step]
        for k, pos in keys.items():
            mass[k][:, :, step] = att[:, :, pos].sum(-1).numpy()
        mass["image"][:, :, step] = att[:, :, P:].sum(-1).numpy()
    codes = maps.codes.reshape(1, -1)
    with torch.no_grad(), eager_attention(um):
        full = torch.cat([M.embed(um, ids[None]), um.model.prepare_embeddings_for_image_generation(codes[:, :-1])], 1)
        mask = torch.ones(full.shape[:2], dtype=torch.long, device=full.device)
        out = M.run_language_model(um, full, mask, output_attentions=True)
    rolled = attention_rollout(out.attentions)[:, 0, P - 1:]  # [layers, T, P + T - 1]
    rollout = {k: rolled[:, :, pos].sum(-1).numpy() for k, pos in keys.items()}
    rollout["image"] = rolled[:, :, P:].sum(-1).numpy()
    return GenerationAttention(
        prompt=prompt, image=maps.images[0], codes=maps.codes[0], labels=maps.tokens[0][:P],
        positions=positions, mass={k: v.reshape(layers, heads, g, g) for k, v in mass.items()},
        rollout={k: v.reshape(layers, g, g) for k, v in rollout.items()}, n_layers=layers, n_heads=heads,
        seconds=time.perf_counter() - start)


def _heat_panels(axes, image, heat, title, vmax=None, cmap="magma"):
    """[image, heatmap over the grid, overlay] on three axes; returns the heatmap's image artist."""
    g = heat.shape[0]
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title(title, fontsize=8)
    im = axes[1].imshow(heat, cmap=cmap, vmin=0, vmax=vmax or max(float(heat.max()), 1e-8), interpolation="nearest")
    for r in range(g):
        for c in range(g):
            if g <= 8:
                axes[1].text(c, r, f"{heat[r, c]:.2f}"[1:] if heat[r, c] < 1 else "1", ha="center", va="center",
                             fontsize=5, color="w" if heat[r, c] < 0.6 * (vmax or heat.max() or 1) else "k")
    axes[1].set_title("attention mass per image token", fontsize=8)
    axes[2].imshow(image, interpolation="nearest")
    S = image.shape[0]
    axes[2].imshow(heat, cmap=cmap, alpha=0.55, extent=(-0.5, S - 0.5, S - 0.5, -0.5), interpolation="bilinear",
                   vmin=0, vmax=vmax or max(float(heat.max()), 1e-8))
    axes[2].set_title("overlay", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return im


def _where(layer, head) -> str:
    return (f"layer {layer}" if layer is not None else "mean over layers") + ", " + \
        (f"head {head}" if head is not None else "mean over heads")


def plot_generation_attention(ga: GenerationAttention, layer: int | None = None, head: int | None = None,
                              group: str | None = None):
    """The generated image, the attention mass of its image tokens on ``group`` (default the
    concept tokens, else the prompt words) as an 8x8 heatmap, and the overlay. Returns the Figure."""
    group = group or ("concept" if "concept" in ga.mass else "words")
    heat = ga.grid(group, layer, head)
    fig, axes = plt.subplots(1, 3, figsize=(8.5, 3.1), layout="constrained")
    im = _heat_panels(axes, ga.image, heat, textwrap.shorten(ga.prompt, 36))
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    fig.suptitle(f"attention of each image token on {group} ({_where(layer, head)})", fontsize=9)
    return fig


@dataclass
class UnderstandingAttention:
    """Where the model looked while it answered a question about an image.

    ``to_image``: ``float[layers, heads, g, g]``, attention from the answer's queries (the
    positions that predict each answer token, averaged) to the image placeholders;
    ``to_groups[group]``: ``float[layers, heads]`` mass on each key group;
    ``rollout_to_image``: ``float[layers, g, g]``.
    """

    question: str
    answer: str
    image: np.ndarray
    labels: list[str]
    positions: dict[str, list[int]]
    to_image: np.ndarray
    to_groups: dict[str, np.ndarray]
    rollout_to_image: np.ndarray
    n_layers: int
    n_heads: int

    @property
    def groups(self) -> list[str]:
        return list(self.to_groups)

    def grid(self, layer: int | None = None, head: int | None = None) -> np.ndarray:
        return _select(self.to_image, layer, head, self.n_layers, self.n_heads)


def understanding_attention(um, image, question: str, answer_tokens: str | None = None, tokens=None,
                            focus_words: Sequence[str] = ()) -> UnderstandingAttention:
    """Attention of an answer about ``image`` (``uint8[S, S, 3]``) to the image and to the concept tokens.

    ``answer_tokens``: the answer to examine (e.g. "yes"); None: the model's own greedy answer.
    Pass the question as the method writes it (``tokens.understanding_prompt(...)``).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise VizError(f"one image uint8[S, S, 3] expected, got shape {image.shape}")
    answer_text = answer_tokens if answer_tokens is not None else M.answer(um, image[None], [question])[0]
    if not answer_text.strip():
        raise VizError("the model answered nothing (it stopped at once); pass answer_tokens='...' to examine "
                       "a given answer")
    batch = M.understanding_inputs(um, image[None], [question], [answer_text])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    answer_pos = [p for p in range(len(ids)) if labels[p] != -100 and labels[p] != um.ids["eos"]]
    queries = [p - 1 for p in answer_pos]
    context = min(answer_pos)
    positions = _key_groups(um, ids[:context].tolist(), tokens, focus_words)
    with torch.no_grad(), eager_attention(um):
        emb = M.embed(um, batch["input_ids"], batch["pixel_values"])
        out = M.run_language_model(um, emb, batch["attention_mask"], output_attentions=True)
    att = torch.stack([a[0, :, queries] for a in out.attentions]).mean(2)  # [layers, heads, L]
    layers, heads = att.shape[:2]
    img = positions["image"]
    g = int(round(len(img) ** 0.5))
    rolled = attention_rollout(out.attentions)[:, 0, queries].mean(1)  # [layers, L]
    return UnderstandingAttention(
        question=question, answer=answer_text, image=image,
        labels=um.tokenizer.convert_ids_to_tokens(ids.tolist()), positions=positions,
        to_image=att[:, :, img].reshape(layers, heads, g, g).numpy(),
        to_groups={k: att[:, :, pos].sum(-1).numpy() for k, pos in positions.items()},
        rollout_to_image=rolled[:, img].reshape(layers, g, g).numpy(), n_layers=layers, n_heads=heads)


def plot_understanding_attention(ua: UnderstandingAttention, layer: int | None = None, head: int | None = None):
    """The input image, the answer's attention on its 8x8 patches, the overlay, and the mass on
    each key group (concept tokens, words, image, special). Returns the Figure."""
    heat = ua.grid(layer, head)
    fig, axes = plt.subplots(1, 4, figsize=(11.5, 3.1), gridspec_kw={"width_ratios": [1, 1, 1, 1.3]},
                             layout="constrained")
    im = _heat_panels(axes[:3], ua.image, heat, textwrap.shorten(ua.question, 36))
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    axes[1].set_title("attention on image patches", fontsize=8)
    shares = {k: float(_select(v[..., None], layer, head, ua.n_layers, ua.n_heads)[0]) for k, v in ua.to_groups.items()}
    axes[3].barh(list(shares), list(shares.values()), color="tab:purple")
    axes[3].invert_yaxis()
    axes[3].set_xlim(0, 1)
    axes[3].tick_params(labelsize=7)
    axes[3].set_title("attention mass by key group", fontsize=8)
    fig.suptitle(f"answer '{ua.answer}': attention of the answer ({_where(layer, head)})", fontsize=9)
    return fig


def plot_rollout(ua: UnderstandingAttention):
    """The answer's attention on the image patches in the last layer alone (mean over heads)
    beside attention rollout through all layers (``ua.rollout_to_image[-1]``), each with its
    overlay. Returns the Figure."""
    last = ua.grid(ua.n_layers - 1, None)
    rolled = np.asarray(ua.rollout_to_image[-1])
    fig, axes = plt.subplots(2, 3, figsize=(8.4, 5.6), layout="constrained")
    _heat_panels(axes[0], ua.image, last, "last layer only")
    _heat_panels(axes[1], ua.image, rolled, "rollout through every layer")
    fig.suptitle(f"answer '{ua.answer}': one layer's attention vs attention rollout", fontsize=9)
    return fig


def attention_share_by_layer(att, groups: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-layer attention share of each key group (mean over heads and queries): a DataFrame
    ``layer, group, share, rollout`` from a GenerationAttention or UnderstandingAttention."""
    rows = []
    if isinstance(att, GenerationAttention):
        per = {k: v.mean(axis=(1, 2, 3)) for k, v in att.mass.items()}
        roll = {k: v.mean(axis=(1, 2)) for k, v in att.rollout.items()}
    elif isinstance(att, UnderstandingAttention):
        per = {k: v.mean(1) for k, v in att.to_groups.items()}
        roll = {"image": att.rollout_to_image.sum(axis=(1, 2))}
    else:
        raise VizError(f"expected a GenerationAttention or UnderstandingAttention, got {type(att).__name__}")
    for k in groups or per:
        _check_group(k, list(per))
        for layer, share in enumerate(per[k]):
            rows.append({"layer": layer, "group": k, "share": float(share),
                         "rollout": float(roll[k][layer]) if k in roll else float("nan")})
    return pd.DataFrame(rows, columns=["layer", "group", "share", "rollout"])


def plot_attention_share_by_layer(*atts, titles: Sequence[str] | None = None, groups: Sequence[str] | None = None):
    """One panel per attention result: share of each key group per layer. Returns the Figure."""
    import seaborn as sns

    titles = list(titles or [getattr(a, "prompt", None) or getattr(a, "question", "") for a in atts])
    fig, axes = plt.subplots(1, len(atts), figsize=(4 * len(atts), 3), squeeze=False, sharey=True)
    for ax, att, title in zip(axes[0], atts, titles):
        sns.lineplot(data=attention_share_by_layer(att, groups), x="layer", y="share", hue="group", marker="o", ax=ax)
        ax.set_title(textwrap.shorten(title, 45), fontsize=8)
        ax.set_xticks(range(att.n_layers))
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_attention_comparison(ga_a: GenerationAttention, ga_b: GenerationAttention,
                              titles: Sequence[str] = ("coupled", "decoupled"), layer: int | None = None,
                              head: int | None = None, group: str = "concept"):
    """Two generations side by side (one row each: image, heatmap, overlay) on one colour scale.
    Returns the Figure."""
    heats = [ga.grid(group, layer, head) for ga in (ga_a, ga_b)]
    vmax = max(float(h.max()) for h in heats) or 1e-8
    fig, axes = plt.subplots(2, 3, figsize=(8.5, 5.8), layout="constrained")
    for row, ga, heat, title in zip(axes, (ga_a, ga_b), heats, titles):
        im = _heat_panels(row, ga.image, heat, f"{title}: {textwrap.shorten(ga.prompt, 30)}", vmax=vmax)
    fig.colorbar(im, ax=axes[:, 2], shrink=0.6)
    fig.suptitle(f"attention on {group} ({_where(layer, head)})", fontsize=9)
    return fig


# --- lesson 01
