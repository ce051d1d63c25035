"""The run-to-run spread of the shipped recipe: the base model's metrics beside those of runs of
the same profile with other seeds, kept in ``data/replicates/<name>/`` (each run's
``metrics.json`` and ``MODEL_CARD.md``, not its weights)."""

from __future__ import annotations

import json
from pathlib import Path

from ..concepts import DATA_DIR
from .config import PretrainError
from .quality import FACT_KEYS, TARGETS

REPLICATES_DIR = DATA_DIR / "replicates"
REPORTED = ("t2i_heldout", "edit_object", *FACT_KEYS)


def wall_minutes(metrics: dict) -> float:
    """Every phase's wall time in minutes, reused phases' own time included."""
    return sum((metrics.get("phase_seconds") or {}).values()) / 60


def load_replicates(base_dir=None, replicates_dir=None) -> dict[str, dict]:
    """``{"seed S": metrics}``: the base model in ``base_dir`` (default: the shipped one) first,
    then every ``replicates_dir/*/metrics.json`` (default ``data/replicates``) made with its
    profile, in seed order. Raises :class:`PretrainError` when ``base_dir`` holds no metrics or
    two runs share a seed."""
    from ..model.janus import DEFAULT_MODEL_DIR

    base = Path(base_dir or DEFAULT_MODEL_DIR) / "metrics.json"
    if not base.is_file():
        raise PretrainError(f"{base.parent} holds no metrics.json; give a directory `unikit pretrain --out` wrote")
    first = json.loads(base.read_text())
    runs = [first]
    for path in sorted(Path(replicates_dir or REPLICATES_DIR).glob("*/metrics.json")):
        m = json.loads(path.read_text())
        if m.get("profile") == first.get("profile"):
            runs.append(m)
    seeds = [m.get("seed") for m in runs]
    if len(set(seeds)) < len(seeds):
        raise PretrainError(f"two runs of profile {first.get('profile')!r} share a seed ({seeds}); a replicate "
                            f"must use another seed than the shipped model (`unikit pretrain --seed N`)")
    runs = [first, *sorted(runs[1:], key=lambda m: m["seed"])]
    return {f"seed {m.get('seed')}": m for m in runs}


def spread_table(runs: dict[str, dict], targets: dict | None = None):
    """One row per metric (``targets``' keys, default :data:`TARGETS`, then the reported ones and
    ``wall minutes``): each run's value, the target, ``spread`` (largest minus smallest value)
    and ``met by`` (how many runs meet the target). ``runs`` as :func:`load_replicates` returns."""
    import pandas as pd

    targets = TARGETS if targets is None else targets
    keys = [k for k in (*targets, *REPORTED) if any(k in m for m in runs.values())]
    rows = []
    for k in [*keys, "wall minutes"]:
        values = {name: (wall_minutes(m) if k == "wall minutes" else m.get(k, float("nan")))
                  for name, m in runs.items()}
        known = [v for v in values.values() if v == v]
        target = targets.get(k, float("nan"))
        rows.append({"metric": k, **values, "target": target,
                     "spread": max(known) - min(known) if known else float("nan"),
                     "met by": (f"{sum(v >= target for v in known)} of {len(known)}" if target == target else "")})
    return pd.DataFrame(rows).set_index("metric")


def spread_sentences(runs: dict[str, dict], table, n_eval: int) -> list[str]:
    """What :func:`spread_table`'s ``table`` of ``runs`` says, as sentences: the runs, the spread
    that scoring on ``n_eval`` examples alone gives a metric near 0.75 (95% binomial half-width;
    also for the runs' ``drawing_n`` when text-to-image and editing were scored on more),
    the targets some seeds meet and others miss, and those every seed misses."""
    half = lambda n: 1.96 * (0.75 * 0.25 / n) ** 0.5  # noqa: E731
    profile = next(iter(runs.values())).get("profile")
    drawing = {m.get("drawing_n", n_eval) for m in runs.values()} - {n_eval}
    out = [f"{len(runs)} run(s) of the {profile} profile: {', '.join(runs)}. Each metric is scored on "
           f"{n_eval} held-out examples, so the examples alone move a metric near 0.75 by up to +-{half(n_eval):.2f}"
           + "".join(f" (text-to-image and editing on {n}: +-{half(n):.2f})" for n in sorted(drawing)) + "."]
    if len(runs) < 2:
        return out + ["No other seed of this profile is in data/replicates/: one run, no spread to show."]
    met = {k: [v >= t for v in table.loc[k, list(runs)] if v == v]
           for k, t in table["target"].items() if t == t}
    split = [k for k, m in met.items() if 0 < sum(m) < len(m)]
    missed = [k for k, m in met.items() if m and not any(m)]
    return out + [f"Targets some seeds meet and others miss: {', '.join(split) or 'none'}.",
                  f"Targets every seed misses: {', '.join(missed) or 'none'}."]
