"""Seeing inside: concept-token rows beside the model's own vectors (maps, trajectories, neighbours,
similarity heatmaps)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import model as M
from ..trajectory import TokenRecorder
from .images import VizError


PROJECTIONS = ("pca", "umap", "tsne")
TOKEN_KINDS = ("word", "image token", "concept")


def _specials(um) -> set[str]:
    return set(um.tokenizer.all_special_tokens) | set(M.SPECIAL.values())


def vocabulary_rows(um, words: Sequence[str] | None = None) -> tuple[list[str], torch.Tensor]:
    """The input-embedding rows of base-vocabulary words: ``(words, Tensor[n, D])``.

    ``words`` None: every word of the base vocabulary (no special tokens, no concept tokens).
    """
    from ..tokens import base_vocab_size

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


