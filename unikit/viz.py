"""Figures for the lessons: image grids first; embedding and attention maps join later.

Every function returns the matplotlib ``Figure`` it drew, so a notebook shows it and a
test can check it.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np


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
    """One labelled row per entry of ``{label: uint8[n, H, W, 3]}``. Returns the Figure."""
    ncols = ncols or max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(ncols * scale + 1.2, len(rows) * scale), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(imgs):
                ax.imshow(imgs[c], interpolation="nearest")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig
