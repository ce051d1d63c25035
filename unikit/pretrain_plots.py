"""What lesson 01 shows of a pretraining run beyond its loss curves (those are
:func:`unikit.viz.plot_pretraining_curves`): the held-out yes/no accuracy per question kind as
the run went, and the steps of each phase.

Both read the ``history`` :func:`unikit.pretrain.pretrain` returns (``history.json``); when the
run tracked yes/no (``track_every``), ``"tracked"`` rows ``{"step", "attribute", "attribute_<kind>", "recognition", "same_object"}``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

PLATEAU = math.log(2) / 2
"""The loss per token of a yes/no answer guessed at random: log 2 on the word, 0 on ``<eos>``."""
CHANCE = 0.5
"""The accuracy of a yes/no answer guessed at random."""


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize)


def plot_yes_no_tracking(history: dict, targets: dict | None = None, ax=None):
    """Held-out yes/no accuracy per question kind over the model phase (``history["tracked"]``),
    with chance (:data:`CHANCE`) dotted and each kind's target in ``targets`` (e.g.
    :data:`unikit.pretrain.TARGETS`) dashed. A run that did not track says so in the figure.
    Returns the Figure."""
    fig, ax = _axes(ax, (8, 4))
    tracked = history.get("tracked") or []
    if not tracked:
        ax.text(0.5, 0.5, "this run did not track yes/no", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    steps = [row["step"] for row in tracked]
    kinds = [k for k in tracked[0] if k != "step"]
    colours = iter(plt.get_cmap("tab10").colors)
    for kind in kinds:
        overall = kind == "attribute"
        ax.plot(steps, [row.get(kind, np.nan) for row in tracked], marker="o", ms=3,
                lw=2.2 if overall else 1.2, color="black" if overall else next(colours),
                label="attribute (all kinds)" if overall else kind)
    ax.axhline(CHANCE, color="grey", ls=":", lw=1.2, label=f"chance {CHANCE:.2f}")
    by_target = {}
    for kind in kinds:
        if targets and kind in targets:
            by_target.setdefault(targets[kind], []).append(kind.removeprefix("attribute_"))
    for value, names in sorted(by_target.items(), reverse=True):
        ax.axhline(value, color="grey", ls="--", lw=0.9)
        ax.text(steps[0], value, f" target {value:.2f}: {', '.join(names)}", fontsize=7, va="bottom",
                color="dimgrey")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("model step")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"yes/no accuracy per question kind ({len(tracked)} trackings)")
    ax.grid(alpha=0.3, lw=0.4)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


PHASE_NAMES = {"vq": "tokenizer", "vision": "encoder", "align": "alignment", "lm": "model", "facts": "facts",
               "drawing": "drawing"}


def steps_per_phase(history: dict) -> str:
    """``"4000 tokenizer + 8000 encoder + ..."``: how many steps each phase of a run recorded."""
    return " + ".join(f"{len(history.get(k, []))} {name}" for k, name in PHASE_NAMES.items())
