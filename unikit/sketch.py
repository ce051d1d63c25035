"""Box-and-arrow drawing on a matplotlib ``Figure`` in data coordinates: the primitives
:mod:`unikit.diagrams` draws its figures with."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def canvas(width: float, height: float, scale: float = 0.8):
    """A figure whose data coordinates run from ``(0, 0)`` to ``(width, height)``."""
    fig = Figure(figsize=(width * scale, height * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def box(ax, x, y, w, h, text="", face="white", edge="#444444", size=8.5, weight="normal",
        dashed=False, hatch=None, family=None, alpha=1.0):
    """A rounded box with its lower-left corner at ``(x, y)``, ``text`` centred in it."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=face, edgecolor=edge, lw=1.1, alpha=alpha,
                                hatch=hatch, linestyle="--" if dashed else "-"))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size,
                fontweight=weight, family=family, linespacing=1.3)


def arrow(ax, start, end, colour="#444444", label=None):
    """An arrow from ``start`` to ``end`` (``(x, y)`` pairs), ``label`` written above its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, lw=1.3,
                                 color=colour, shrinkA=1, shrinkB=1))
    if label:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, label,
                ha="center", va="bottom", fontsize=7, color=colour)


def title(ax, x, y, text):
    """Bold text starting at ``(x, y)``."""
    ax.text(x, y, text, fontsize=10, fontweight="bold", va="center")
