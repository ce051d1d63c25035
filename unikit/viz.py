"""Figures for the lessons: image grids, and seeing inside the model.

Every function returns the matplotlib ``Figure`` it drew, so a notebook shows it and a
test can check it.

**Embedding maps.** Concept tokens are rows of the language model's input embedding
(``[k, D]`` per group). :func:`token_map` projects them to 2-D together with the model's own
vectors (word rows, and the VQ image tokens as the generation path embeds them) by PCA,
UMAP or t-SNE; :func:`plot_token_map` colours them by concept, group or stage. A
:class:`~unikit.stages.TokenRecorder` passed as ``on_step`` to the training functions keeps
snapshots (every UniCTokens run keeps one as ``trajectory``), so :func:`plot_token_trajectories`
draws each token's path through the stages.
:func:`nearest_neighbours` lists the closest words and image tokens of every learned token;
:func:`cosine_heatmap` and its helpers compare groups, concepts, stages and token sets.

**Attention maps** (eager attention). :func:`generation_attention` draws an image and
measures, for each of its 8x8 image tokens, how much attention went to the concept tokens
(per group, layer and head); :func:`understanding_attention` measures where an answer looked
in the input image. :func:`attention_rollout` (Abnar & Zuidema) follows attention through
the layers; :func:`attention_share_by_layer` summarises. Interactive versions:
:mod:`unikit.widgets`.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
import time
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import model as M
from .stages import TokenRecorder, TokenSnapshot  # noqa: F401  (the recorder lives with training)


def show_images(images, titles=None, ncols: int = 8, scale: float = 1.3, suptitle: str | None = None,
                title_width: int = 18):
    """A grid of images ``uint8[n, H, W, 3]`` with optional titles (wrapped). Returns the Figure."""
    images = np.asarray(images)
    n = len(images)
    if n == 0:
        raise ValueError("show_images: no images to show")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    lines = max((len(textwrap.wrap(t, title_width)) for t in titles), default=0) if titles else 0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * scale, nrows * (scale + 0.16 * lines) + (0.3 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            if titles:
                ax.set_title("\n".join(textwrap.wrap(str(titles[i]), title_width)), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def show_rows(rows: dict, scale: float = 1.2, ncols: int | None = None):
    """One labelled row per entry of ``{label: uint8[n, H, W, 3]}``, images drawn nearest-neighbour
    at ``scale`` inches each, labels in a left margin sized to the longest. Returns the Figure."""
    ncols = ncols or max(len(v) for v in rows.values())
    label_in = min(4.0, 0.052 * max(len(str(label)) for label in rows) + 0.2)  # inches of label margin
    width = ncols * scale + label_in
    fig, axes = plt.subplots(len(rows), ncols, figsize=(width, len(rows) * scale), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(imgs):
                ax.imshow(imgs[c], interpolation="nearest")
        axes[r, 0].set_ylabel("\n".join(textwrap.wrap(str(label), 56)), rotation=0, ha="right", va="center",
                              fontsize=8)
    fig.subplots_adjust(left=label_in / width, right=0.99, top=0.98, bottom=0.02, wspace=0.05, hspace=0.08)
    return fig


# =========================================================================== seeing inside: embeddings
#
# Every vector below lives in the language model's *input* space ``D``: the rows of the
# input embedding (words and concept tokens) and the VQ image tokens as the generation
# path feeds them in (``prepare_embeddings_for_image_generation``). So a concept token can
# be compared with both: does ``<bo_s0>`` sit among the words, or among the image tokens?


class VizError(ValueError):
    """A figure cannot be drawn as asked (bad layer, head, group, projection, empty input)."""


PROJECTIONS = ("pca", "umap", "tsne")
TOKEN_KINDS = ("word", "image token", "concept")


def _specials(um) -> set[str]:
    return set(um.tokenizer.all_special_tokens) | set(M.SPECIAL.values())


def vocabulary_rows(um, words: Sequence[str] | None = None) -> tuple[list[str], torch.Tensor]:
    """The input-embedding rows of base-vocabulary words: ``(words, Tensor[n, D])``.

    ``words`` None: every word of the base vocabulary (no special tokens, no concept tokens).
    """
    from .tokens import base_vocab_size

    tok = um.tokenizer
    if words is None:
        n = base_vocab_size(um)
        specials = _specials(um)
        names = tok.convert_ids_to_tokens(list(range(n)))
        words = [w for w in names if w not in specials]
    else:
        words = list(words)
        M.check_vocabulary(tok, words)
    ids = torch.tensor(tok.convert_tokens_to_ids(words), dtype=torch.long)
    return words, um.model.get_input_embeddings().weight.detach()[ids.to(um.device)].float().cpu()


def image_token_rows(um, n: int | None = None) -> tuple[list[str], torch.Tensor]:
    """The VQ image tokens in the LM's input space: ``(labels "img<i>", Tensor[n, D])``.

    ``n`` None: the whole codebook; else ``n`` codes evenly spaced over it.
    """
    size = um.codebook_size
    codes = torch.arange(size) if n is None or n >= size else torch.linspace(0, size - 1, n).round().long()
    with torch.no_grad():
        rows = um.model.prepare_embeddings_for_image_generation(codes[None].to(um.device))[0]
    return [f"img{int(c)}" for c in codes], rows.float().cpu()


def _concept_rows(tokens) -> tuple[list[dict], torch.Tensor]:
    """Meta rows (concept, group, label) and input rows ``[n, D]`` of ConceptTokens."""
    meta, rows = [], []
    for ct in tokens:
        for g, names in ct.groups.items():
            rows.append(ct.rows[g][0].detach().float().cpu())
            meta += [{"concept": ct.concept, "group": g, "label": name} for name in names]
    D = rows[0].shape[1] if rows else 0
    return meta, torch.cat(rows) if rows else torch.zeros(0, D)


def project_2d(x: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project ``x [N, D]`` to ``[N, 2]``: PCA (exact SVD, signs fixed), UMAP or t-SNE. Deterministic in ``seed``."""
    if method not in PROJECTIONS:
        raise VizError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    x = np.asarray(torch.as_tensor(x, dtype=torch.float64).cpu())
    if len(x) < 3:
        raise VizError(f"a 2-D map needs at least 3 vectors, got {len(x)}: add context words or image tokens")
    if method == "pca":
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        vt = vt[:2] * np.sign(vt[:2, [np.argmax(np.abs(v)) for v in vt[:2]]].diagonal())[:, None]
        return centred @ vt.T
    if method == "umap":
        import umap  # first import compiles with numba (~20 s)

        return umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed,
                         n_jobs=1).fit_transform(x)
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise VizError("t-SNE needs scikit-learn: `.venv/bin/pip install scikit-learn` (or use method='pca')") from None
    return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed,
                max_iter=500).fit_transform(x)


def _context(um, context_words, n_image_tokens) -> tuple[list[dict], torch.Tensor]:
    meta, rows = [], []
    if context_words is None or len(context_words):
        words, w = vocabulary_rows(um, context_words)
        meta += [{"kind": "word", "label": t} for t in words]
        rows.append(w)
    if n_image_tokens is None or n_image_tokens > 0:
        labels, r = image_token_rows(um, n_image_tokens)
        meta += [{"kind": "image token", "label": t} for t in labels]
        rows.append(r)
    return meta, torch.cat(rows) if rows else torch.zeros(0, um.config.text_config.hidden_size)


def token_map(um, tokens: Sequence = (), method: str = "pca", context_words: Sequence[str] | None = None,
              n_image_tokens: int | None = None, snapshots=None, seed: int = 0) -> pd.DataFrame:
    """2-D coordinates of concept tokens among the model's own embeddings.

    Args:
        tokens: ConceptTokens (their current input rows; ``stage`` "final").
        context_words: words shown as context (None: the whole base vocabulary; ``[]``: none).
        n_image_tokens: VQ image tokens shown (None: the whole codebook; 0: none).
        snapshots: a :class:`TokenRecorder`: its recorded rows join the map (``stage`` as recorded).
    Returns:
        DataFrame with columns ``x, y, kind`` (word / image token / concept), ``concept, group,
        stage, step, label``. The projection is fitted on all rows together.
    """
    meta, rows = _context(um, context_words, n_image_tokens)
    meta = [dict(m, concept="", group="", stage="", step=-1) for m in meta]
    cmeta, crows = _concept_rows(tokens)
    meta += [dict(m, kind="concept", stage="final", step=-1) for m in cmeta]
    rows = [rows, crows]
    if snapshots is not None:
        for snap in snapshots.snapshots:
            for g, r in snap.rows.items():
                rows.append(r.float())
                meta += [{"kind": "concept", "label": n, "concept": snap.concept, "group": g, "stage": snap.stage,
                          "step": snap.step} for n in snap.names[g]]
    x = torch.cat([r for r in rows if len(r)])
    xy = project_2d(x, method, seed)
    df = pd.DataFrame(meta, columns=["kind", "concept", "group", "stage", "step", "label"])
    df.insert(0, "y", xy[:, 1])
    df.insert(0, "x", xy[:, 0])
    return df


def plot_token_map(df: pd.DataFrame, color_by: str = "concept", ax=None, annotate: bool | None = None,
                   title: str | None = None):
    """Scatter a :func:`token_map` frame: words grey dots, image tokens pale crosses, concept
    tokens coloured by ``color_by`` (concept / group / stage). Returns the Figure."""
    import seaborn as sns

    if color_by not in ("concept", "group", "stage"):
        raise VizError(f"color_by={color_by!r}; choose concept, group or stage")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 5))
    words, images, concept = (df[df.kind == k] for k in TOKEN_KINDS)
    ax.scatter(words.x, words.y, s=8, c="0.6", alpha=0.6, label="words", linewidths=0)
    ax.scatter(images.x, images.y, s=10, c="tab:cyan", alpha=0.35, marker="x", label="image tokens", linewidths=0.8)
    if len(concept):
        sns.scatterplot(data=concept, x="x", y="y", hue=color_by, style="group", s=45, ax=ax, edgecolor="k",
                        linewidth=0.4)
        final = concept[concept.stage == "final"] if (concept.stage == "final").any() else concept
        if annotate or (annotate is None and len(final) <= 40):
            for r in final.itertuples():
                ax.annotate(r.label, (r.x, r.y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=7, loc="best", markerscale=0.8)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.set_title(title or f"concept tokens among words and image tokens (colour: {color_by})", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- trajectories


def plot_token_trajectories(um, recorder: TokenRecorder, method: str = "pca", context_words=None,
                            n_image_tokens: int | None = None, concept: str | None = None, seed: int = 0, ax=None):
    """Each token's path through training on the :func:`token_map` plane: a thin line through
    every snapshot, an arrow from the end of one stage to the end of the next, a marker per stage.
    Returns the Figure."""
    if not len(recorder):
        raise VizError("the recorder holds no snapshots: pass it as on_step= to a training function first")
    df = token_map(um, [], method, context_words, n_image_tokens, snapshots=recorder, seed=seed)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 5.5))
    ctx = df[df.kind != "concept"]
    ax.scatter(ctx.x, ctx.y, s=6, c=np.where(ctx.kind == "word", "0.7", "tab:cyan"), alpha=0.3, linewidths=0)
    tok = df[df.kind == "concept"]
    if concept is not None:
        tok = tok[tok.concept == concept]
    groups = list(dict.fromkeys(tok.group))
    colours = dict(zip(groups, plt.get_cmap("tab10").colors))
    stages = recorder.stages()
    markers = dict(zip(stages, "o^sDvP*X"))
    for (c, label), path in tok.groupby(["concept", "label"], sort=False):
        colour = colours[path.group.iloc[0]]
        ax.plot(path.x, path.y, lw=0.6, color=colour, alpha=0.5)
        ends = path.groupby("stage", sort=False).tail(1)
        for (_, a), (_, b) in zip(ends.iterrows(), list(ends.iterrows())[1:]):
            ax.annotate("", xy=(b.x, b.y), xytext=(a.x, a.y),
                        arrowprops=dict(arrowstyle="->", color=colour, lw=1.1))
        for r in ends.itertuples():
            ax.scatter([r.x], [r.y], marker=markers.get(r.stage, "o"), s=30, color=colour, edgecolor="k", lw=0.4)
        last = ends.iloc[-1]
        ax.annotate(label, (last.x, last.y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[g], lw=2, label=g) for g in groups]
    handles += [Line2D([], [], marker=markers[s], ls="", color="k", label=f"end of {s}") for s in stages]
    ax.legend(handles=handles, fontsize=7)
    ax.set_title(f"token trajectories through training ({method})", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- neighbours and similarity


def nearest_neighbours(um, tokens: Sequence, k: int = 5) -> pd.DataFrame:
    """For every learned token, the ``k`` closest words and image tokens (cosine of input rows).

    Returns a DataFrame: ``concept, group, token, words, word_cos, image_tokens, image_cos``
    (lists, best first).
    """
    words, w = vocabulary_rows(um)
    images, im = image_token_rows(um)
    meta, rows = _concept_rows(tokens)
    if not meta:
        raise VizError("no concept tokens given: pass a list of ConceptTokens")
    out = []
    for m, row in zip(meta, rows):
        sw = F.cosine_similarity(row[None], w, dim=1).topk(min(k, len(words)))
        si = F.cosine_similarity(row[None], im, dim=1).topk(min(k, len(images)))
        out.append({**m, "token": m["label"], "words": [words[i] for i in sw.indices],
                    "word_cos": [round(float(v), 3) for v in sw.values],
                    "image_tokens": [images[i] for i in si.indices],
                    "image_cos": [round(float(v), 3) for v in si.values]})
    return pd.DataFrame(out, columns=["concept", "group", "token", "words", "word_cos", "image_tokens", "image_cos"])


def _stack(rows: dict) -> tuple[list[str], torch.Tensor]:
    labels, mats = [], []
    for label, r in rows.items():
        r = torch.as_tensor(r).detach().float().cpu()
        r = r[None] if r.dim() == 1 else r
        labels += [str(label)] if len(r) == 1 else [f"{label}[{i}]" for i in range(len(r))]
        mats.append(r)
    if not mats:
        raise VizError("no rows to compare")
    return labels, torch.cat(mats)


def cosine_matrix(a_rows: dict, b_rows: dict | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Cosine similarities between the rows of ``{label: Tensor[k, D]}`` sets: ``(matrix [n_a, n_b],
    row labels, column labels)``; a label with k > 1 rows becomes ``label[0]..``."""
    la, a = _stack(a_rows)
    lb, b = _stack(b_rows) if b_rows is not None else (la, a)
    if a.shape[1] != b.shape[1]:
        raise VizError(f"rows of width {a.shape[1]} and {b.shape[1]} cannot be compared: use tokens of one model")
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    return sim.numpy(), la, lb


def cosine_heatmap(a_rows: dict, b_rows: dict | None = None, ax=None, title: str | None = None, annot=None):
    """A seaborn heatmap of :func:`cosine_matrix` (colour scale -1..1). Returns the Figure."""
    import seaborn as sns

    sim, la, lb = cosine_matrix(a_rows, b_rows)
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(1.2 + 0.32 * len(lb), 12), min(1.0 + 0.3 * len(la), 10)))
    fig = ax.figure
    annot = (sim.size <= 100) if annot is None else annot
    sns.heatmap(sim, xticklabels=lb, yticklabels=la, vmin=-1, vmax=1, cmap="vlag", square=sim.shape[0] < 30,
                annot=annot, fmt=".2f", annot_kws={"fontsize": 6}, ax=ax, cbar_kws={"shrink": 0.7})
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _tokens_by_group(ct, groups=None) -> dict:
    gs = [g for g in ct.groups if groups is None or g in groups]
    return {name: ct.rows[g][0][i] for g in gs for i, name in enumerate(ct.groups[g])}


def plot_group_similarity(tokens, ax=None):
    """Cosine similarity between every token of one concept, ordered by group. Returns the Figure."""
    return cosine_heatmap(_tokens_by_group(tokens), ax=ax, title=f"{tokens.identifier}: similarity between its tokens")


def plot_concept_similarity(tokens: Sequence, group: str = "identifier", ax=None):
    """Cosine similarity between concepts: every concept's tokens of ``group``. Returns the Figure."""
    rows = {}
    for ct in tokens:
        if group not in ct.groups:
            raise VizError(f"{ct.identifier} has no {group!r} tokens; its groups: {list(ct.groups)}")
        rows.update(_tokens_by_group(ct, [group]))
    return cosine_heatmap(rows, ax=ax, title=f"similarity between concepts ({group} tokens)")


def stage_similarity(recorder: TokenRecorder, concept: str | None = None) -> pd.DataFrame:
    """``[stages, stages]`` DataFrame: the mean cosine, over the tokens present in both, between
    each token's row at the end of one stage and at the end of another."""
    concept = concept or (recorder.concepts() or [None])[0]
    stages = [s for s in recorder.stages() if any(x.concept == concept for x in recorder.snapshots if x.stage == s)]
    if not stages:
        raise VizError(f"the recorder holds no snapshots of {concept!r}; concepts: {recorder.concepts()}")
    ends = {s: recorder.last_rows(s, concept) for s in stages}
    sim = np.zeros((len(stages), len(stages)))
    for i, a in enumerate(stages):
        for j, b in enumerate(stages):
            common = [g for g in ends[a] if g in ends[b]]
            sim[i, j] = float(torch.cat([F.cosine_similarity(ends[a][g], ends[b][g], dim=1) for g in common]).mean())
    return pd.DataFrame(sim, index=stages, columns=stages)


def plot_stage_similarity(recorder: TokenRecorder, concept: str | None = None, ax=None):
    """Heatmap of :func:`stage_similarity`: how much the tokens turned between stages. Returns the Figure."""
    import seaborn as sns

    df = stage_similarity(recorder, concept)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1.5 + 0.7 * len(df), 1.2 + 0.6 * len(df)))
    sns.heatmap(df, vmin=-1, vmax=1, cmap="vlag", annot=True, fmt=".2f", ax=ax, square=True)
    ax.set_title("mean cosine of each token between stage ends", fontsize=9)
    fig.tight_layout()
    return fig


def plot_similarity_side_by_side(a, b, titles: Sequence[str] = ("coupled", "decoupled")):
    """Two concepts' token-by-token similarity heatmaps side by side (e.g. coupled vs decoupled
    token sets). Returns the Figure."""
    n = max(sum(a.sizes().values()), sum(b.sizes().values()))
    fig, axes = plt.subplots(1, 2, figsize=(min(2 + 0.6 * n, 16), min(1.5 + 0.28 * n, 9)))
    for ax, ct, title in zip(axes, (a, b), titles):
        cosine_heatmap(_tokens_by_group(ct), ax=ax, title=f"{title}: {ct.identifier}", annot=False)
    fig.tight_layout()
    return fig


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


def plot_token_grids(images, codes, reconstructions, codebook_size: int | None = None, titles=None,
                     scale: float = 2.0):
    """The image tokenizer at work, one column per image.

    Rows: the image ``uint8[n, S, S, 3]``; its code grid ``[n, g, g]`` (each cell coloured by
    its code id, the id printed in it); the reconstruction ``uint8[n, S, S, 3]`` decoded from
    those codes alone. ``codebook_size`` fixes the colour scale (default: the largest id + 1).
    Returns the Figure.
    """
    images, reconstructions = np.asarray(images), np.asarray(reconstructions)
    codes = np.asarray(codes.cpu() if hasattr(codes, "cpu") else codes)
    n = len(images)
    if not (len(codes) == len(reconstructions) == n) or n == 0:
        raise ValueError(f"plot_token_grids: need as many code grids and reconstructions as images "
                         f"(got {n} images, {len(codes)} grids, {len(reconstructions)} reconstructions)")
    codes = codes.reshape(n, *codes.shape[1:]) if codes.ndim == 3 else codes.reshape(n, int(codes.shape[1] ** 0.5), -1)
    vmax = (codebook_size or int(codes.max()) + 1) - 1
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(3, n, figsize=(n * scale + 1.0, 3 * scale + (0.3 if titles else 0)), squeeze=False)
    for c in range(n):
        axes[0, c].imshow(images[c], interpolation="nearest")
        axes[1, c].imshow(codes[c], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        for (y, x), code in np.ndenumerate(codes[c]):
            light = np.mean(cmap(code / max(vmax, 1))[:3]) > 0.5
            axes[1, c].text(x, y, str(code), ha="center", va="center", fontsize=5.5,
                            color="black" if light else "white")
        axes[2, c].imshow(reconstructions[c], interpolation="nearest")
        if titles:
            axes[0, c].set_title("\n".join(textwrap.wrap(str(titles[c]), 22)), fontsize=7)
    g = codes.shape[1]
    for r, label in enumerate(("image", f"{g}x{g} codes", "decoded")):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


def judge_titles(readings, expected, max_listed: int = 2) -> list[str]:
    """One short verdict per image: ``"right"`` or ``"wrong: colour red (not blue)"``.

    ``readings``: the judge's ``read(images)`` (one ``{attribute: word}`` each); ``expected``:
    one ``{attribute: word}`` per image, only the attributes to check. At most ``max_listed``
    wrong attributes are spelled out, the rest counted ("+ 3 more").
    """
    titles = []
    for read, want in zip(readings, expected, strict=True):
        wrong = [f"{k} {read[k]} (not {v})" for k, v in want.items() if read[k] != v]
        more = f" + {len(wrong) - max_listed} more" if len(wrong) > max_listed else ""
        titles.append("right" if not wrong else "wrong: " + "; ".join(wrong[:max_listed]) + more)
    return titles


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_pretraining_curves(runs: dict, smooth: int = 25, scale: float = 3.2):
    """Pretraining loss curves, one row per run of ``{label: history}``.

    ``history`` is what :func:`unikit.pretrain.pretrain` returns (and writes to
    ``history.json``): ``"vq"`` rows ``[step, reconstruction MSE, embedding loss]``,
    ``"vision"`` rows ``[step, mean attribute cross-entropy]``, ``"lm"`` and ``"facts"`` rows
    ``[step, task, loss]``. Columns: the tokenizer's reconstruction error, the understanding
    encoder's attribute loss, the language model's loss per task, the facts phase (if any)
    continuing after a dashed line (moving averages over up to ``smooth`` steps). Each column shares its y axis across runs, so short and long runs
    compare at a glance. Returns the Figure.
    """
    from matplotlib.ticker import FuncFormatter

    if not runs:
        raise ValueError("plot_pretraining_curves: no runs to plot")
    tasks = sorted({row[1] for h in runs.values() for key in ("lm", "facts") for row in h.get(key, [])})
    colours = dict(zip(tasks, plt.get_cmap("tab20").colors))
    fig, axes = plt.subplots(len(runs), 3, figsize=(3 * scale + 1.5, len(runs) * scale * 0.75), squeeze=False,
                             sharey="col")
    for r, (label, history) in enumerate(runs.items()):
        for c, (key, title, ylabel) in enumerate((("vq", "tokenizer", "reconstruction MSE"),
                                                  ("vision", "understanding encoder", "attribute loss"))):
            rows = np.asarray([row[:2] for row in history.get(key, [])], dtype=float).reshape(-1, 2)
            ax = axes[r, c]
            if len(rows):
                w = max(1, min(smooth, len(rows) // 5))
                ax.plot(rows[w - 1:, 0], _moving_average(rows[:, 1], w), color="black", lw=1.2)
            ax.set_yscale("log")
            ax.set_title(f"{label}: {title} ({len(rows)} steps)", fontsize=9)
            ax.set_ylabel(ylabel, fontsize=8)
        ax = axes[r, 2]
        lm_rows, facts_rows = history.get("lm", []), history.get("facts", [])
        offset = len(lm_rows)
        rows = lm_rows + [[s + offset, t, loss] for s, t, loss in facts_rows]
        for task in tasks:
            pts = np.asarray([(s, loss) for s, t, loss in rows if t == task], dtype=float).reshape(-1, 2)
            if len(pts):
                w = max(1, min(smooth, len(pts) // 5))
                ax.plot(pts[w - 1:, 0], _moving_average(pts[:, 1], w), color=colours[task], lw=1.2, label=task)
        if facts_rows:
            ax.axvline(offset, color="grey", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{label}: model ({len(lm_rows)} steps)" + (f" + facts ({len(facts_rows)})" if facts_rows else ""),
                     fontsize=9)
        ax.set_ylabel("loss", fontsize=8)
        for a in axes[r]:
            a.tick_params(labelsize=7, which="both")
            a.grid(alpha=0.3, which="both", lw=0.4)
            a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            a.yaxis.set_minor_formatter(FuncFormatter(  # label 2x and 5x between the powers of ten
                lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
        if r == 0 and tasks:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    for a in axes[-1]:
        a.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    return fig
