"""Image figures: grids of images, the image tokenizer at work, judged titles, pretraining curves."""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np


class VizError(ValueError):
    """A figure cannot be drawn as asked (bad layer, head, group, projection, empty input)."""


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
