"""Figures of a pretraining run's model phase (lesson 01): the loss of each task, and the
held-out yes/no accuracy per question kind as the run went.

Both read the ``history`` :func:`unikit.pretrain.pretrain` returns (``history.json``):
``"lm"`` rows ``[step, task, loss]`` and, when the run tracked them (``track_every``),
``"tracked"`` rows ``{"step", "attribute", "attribute_<kind>", "recognition", "same_object"}``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

PLATEAU = math.log(2) / 2
"""The loss per token of a yes/no answer guessed at random: log 2 on the word, 0 on ``<eos>``."""
CHANCE = 0.5
"""The accuracy of a yes/no answer guessed at random."""


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize)


def plot_task_losses(history: dict, window: int = 100, ax=None):
    """The model phase's loss per task over steps (moving average over ``window`` of that task's
    own steps, log scale), with the yes/no coin-flip plateau (:data:`PLATEAU`) as a dashed line.
    Returns the Figure."""
    from .pretrain import TASKS

    fig, ax = _axes(ax, (8, 4))
    rows = history.get("lm", [])
    tasks = [t for t in TASKS if any(r[1] == t for r in rows)]
    colours = dict(zip(TASKS, plt.get_cmap("tab10").colors))
    for task in tasks:
        pts = np.asarray([(s, loss) for s, t, loss in rows if t == task], dtype=float)
        w = max(1, min(window, len(pts) // 5))
        ax.plot(pts[w - 1:, 0], _smooth(pts[:, 1], w), color=colours[task], lw=1.2, label=task)
    ax.axhline(PLATEAU, color="black", ls="--", lw=1, label=f"yes/no guessed: log(2)/2 = {PLATEAU:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("model step")
    ax.set_ylabel(f"loss (moving average over {window} steps of the task)")
    ax.set_title(f"loss per task ({len(rows)} model steps)")
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


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


PHASE_NAMES = {"vq": "tokenizer", "vision": "encoder", "align": "alignment", "lm": "model"}


def steps_per_phase(history: dict) -> str:
    """``"4000 tokenizer + 8000 encoder + ..."``: how many steps each phase of a run recorded."""
    return " + ".join(f"{len(history.get(k, []))} {name}" for k, name in PHASE_NAMES.items())
