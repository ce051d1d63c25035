"""What a bench results file says: the table, the science targets per token method, every claim.

    python benchmarks/bench_report.py [data/bench/teach.json] [--base data/base_model]

Prints where the results come from (base model, token layout, wall time against the 60-minute
budget), the summary table (mean over concepts with seeds nested, and its bootstrap interval),
then for every method that trains tokens whether it meets the kit's science targets (``*`` marks a
miss), which one is best (most targets met, then the mean of the targeted metrics), and every
paper claim judged together (Holm over all of them) with the sentence a lesson would print.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TARGETS = {"rec": 0.90, "rec_hard": 0.80, "vqa": 0.90, "text_qa": 0.80, "gen_identity": 0.60,
           "parg": 0.60, "parg_identity": 0.40, "edit": 0.50}
WORD_BASELINES = ("text_prompt", "oracle_text")
BUDGET_MIN = 60


def target_rows(summary: dict) -> list[tuple[str, int, float, list[str]]]:
    """Per token method: (method, targets met, mean of the targeted metrics, cells with ``*``)."""
    out = []
    for method, per in summary.items():
        if method in WORD_BASELINES:
            continue
        cells, met, vals = [], 0, []
        for metric, goal in TARGETS.items():
            v = per.get(metric, {}).get("mean")
            if v is None:
                cells.append("-")
                continue
            vals.append(v)
            met += v >= goal
            cells.append(f"{v:.2f}{'' if v >= goal else '*'}")
        out.append((method, met, sum(vals) / max(1, len(vals)), cells))
    return sorted(out, key=lambda r: (-r[1], -r[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default="data/bench/teach.json")
    ap.add_argument("--base", default=None, help="base model dir whose metrics.json sets floors and ceilings "
                                                   "(default: the shipped one)")
    args = ap.parse_args()
    path = Path(args.results)
    if not path.is_file():
        sys.exit(f"{path}: no results file; run `unikit bench --profile teach --seeds 3 --out {path}` first")
    res = json.loads(path.read_text())
    from unikit import claims, stats
    from unikit.model import base_metrics

    levels_from = base_metrics(args.base)
    rows = res["rows"]
    minutes = res.get("seconds", 0) / 60
    print(f"{path}: {len(res.get('concepts', []))} concepts x {res.get('seeds')} seeds x "
          f"{len(res.get('methods', []))} methods, {len(rows)} rows")
    print(f"base model {res.get('base_model_hash', '?')[:12]}, layout {res.get('tokens', '?')}")
    print(f"wall time {minutes:.1f} min (budget {BUDGET_MIN}: {'within' if minutes <= BUDGET_MIN else 'OVER'})\n")

    summary = stats.summary(rows, levels_from)
    print(stats.table(summary))

    print("\nscience targets, token methods, best first; * = misses its target")
    print(f"{'method':26s}" + "".join(f"{m:>14s}" for m in TARGETS) + "   met")
    print(f"{'target':26s}" + "".join(f"{g:>14.2f}" for g in TARGETS.values()))
    ranked = target_rows(summary)
    for method, met, _, cells in ranked:
        print(f"{method:26s}" + "".join(f"{c:>14s}" for c in cells) + f"   {met}/{len(TARGETS)}")
    if ranked and "text_prompt" in summary:
        best = ranked[0][0]
        cmp = stats.compare(rows, best, "text_prompt", "rec_hard", levels_from)
        print(f"\nbest token method {best} vs text_prompt on rec_hard (the last target): {stats.sentence(cmp)}")

    print("\nclaims, judged together (Holm over all of them)")
    for r in claims.judge(rows, list(claims.CLAIMS), levels_from):
        print(f"[{r['finding']}] {r['explanation']}")


if __name__ == "__main__":
    main()
