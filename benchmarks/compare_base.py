"""Compare pretrained base models: their ``metrics.json`` side by side, with the targets.

    python benchmarks/compare_base.py data/base_model /work/runs/ship7 [--names ship5 ship7]
    python benchmarks/compare_base.py data/replicates/ship7-seed0 data/replicates/ship7-seed1 --spread

Each argument is a model directory (``unikit pretrain --out``) or a ``metrics.json``. Prints one
row per metric (the targets of ``unikit.pretrain.TARGETS`` first, then every other number the
files share), the target, each model's value with ``*`` where it misses its target, then the
wall time (every phase, reused ones too), its phase split and how many targets each model misses.
``--spread`` adds a column with the largest minus the smallest value of each row: for runs of one
recipe with different seeds, the run-to-run spread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_metrics(path: str) -> dict:
    p = Path(path)
    p = p / "metrics.json" if p.is_dir() else p
    if not p.is_file():
        sys.exit(f"{path}: no metrics.json there; give a model directory written by unikit pretrain, "
                 f"or its metrics.json")
    return json.loads(p.read_text())


def rows(models: list[dict], targets: dict) -> list[tuple[str, float | None, list]]:
    shared = [k for k in models[0] if all(isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                                          for m in models)]
    order = [k for k in targets if any(k in m for m in models)] + [k for k in shared if k not in targets]
    return [(k, targets.get(k), [m.get(k) for m in models]) for k in order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--names", nargs="+")
    ap.add_argument("--spread", action="store_true", help="add max - min per row (runs of one recipe, other seeds)")
    args = ap.parse_args()
    from unikit.pretrain import TARGETS, wall_minutes

    models = [load_metrics(p) for p in args.models]
    names = args.names or [m.get("profile") or Path(p).name for m, p in zip(models, args.models)]
    if len(names) != len(models):
        sys.exit(f"--names gives {len(names)} names for {len(models)} models")
    width = max(len(k) for k in [*TARGETS, *models[0]]) + 2
    if args.spread and len(models) < 2:
        sys.exit("--spread needs at least two models (runs of one recipe with different seeds)")
    print("metric".ljust(width) + "target".rjust(8) + "".join(n.rjust(12) for n in names)
          + ("spread".rjust(10) if args.spread else ""))
    misses = [0] * len(models)
    for k, target, values in rows(models, TARGETS):
        cells = []
        for i, v in enumerate(values):
            if v is None:
                cells.append("-".rjust(12))
                continue
            miss = target is not None and v < target
            misses[i] += miss
            cells.append(f"{v:.3f}{'*' if miss else ' '}".rjust(12))
        known = [v for v in values if v is not None]
        spread = f"{max(known) - min(known):.3f}".rjust(10) if args.spread and len(known) > 1 else ""
        print(k.ljust(width) + (f"{target:.2f}" if target is not None else "").rjust(8) + "".join(cells) + spread)
    print("targets missed".ljust(width) + "".rjust(8) + "".join(str(n).rjust(11) + " " for n in misses))
    print("wall minutes".ljust(width) + "".rjust(8) + "".join(f"{wall_minutes(m):.1f}".rjust(11) + " " for m in models))
    for name, m in zip(names, models):
        split = ", ".join(f"{k} {v / 60:.1f}" for k, v in (m.get("phase_seconds") or {}).items())
        sampling = {k: v for k, v in (m.get("sampling") or {}).items() if k in ("guidance", "temperature")}
        print(f"{name}: phases (min) {split}; sampling {sampling}")


if __name__ == "__main__":
    main()
