"""Probe: one method on a few concepts and seeds, with schedule overrides, scored like the bench.

    UNIKIT_THREADS=1 python benchmarks/probe_schedule.py --method unictokens --concepts bo --seeds 0 1 2 \
        [--set stage2_steps=300 lr=3e-3] [--base DIR] [--parts understanding generation]

Prints one line per concept and seed (rec, rec_hard, gen_identity, parg, text_qa) and the mean,
so that a change to a teach schedule can be tried on one concept in minutes before the full
bench (``unikit bench``) is re-run with it. The bench trains its twelve concepts together;
here only the named ones train, with the same per-concept batches.
"""

from __future__ import annotations

import argparse
import sys
import time


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="unictokens")
    ap.add_argument("--concepts", nargs="+", default=["bo"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--profile", default="teach")
    ap.add_argument("--base", default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="schedule overrides (profiles.Schedule)")
    ap.add_argument("--parts", nargs="+", default=["understanding", "generation"])
    args = ap.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: write KEY=VALUE, e.g. stage2_steps=300")
        overrides[key] = _value(value)
    import numpy as np

    from unikit import judge as J
    from unikit import model as M
    from unikit import runtime
    from unikit.evaluate import evaluate_personalized
    from unikit.methods import personalize
    from unikit.profiles import schedule

    runtime.setup(0, "cpu")
    judge = J.load_judge(progress=False)
    sched = schedule(args.profile, **overrides)
    keys = ("rec", "rec_hard", "text_qa", "gen_identity", "parg")
    print(f"{args.method} {args.profile} {overrides or '(schedule as it is)'}")
    rows = []
    for seed in args.seeds:
        t = time.time()
        um = M.load_model(args.base)
        pers = personalize(um, args.concepts, args.method, profile=args.profile, seed=seed, **overrides)
        for row in evaluate_personalized(um, pers, judge, n_images=sched.eval_images, guidance=sched.guidance,
                                         seed=1000 + seed, parts=args.parts):  # as unikit.benchmark.bench_job scores
            rows.append(row)
            print(f"  {row['concept']:>6} seed {seed}: " + "  ".join(f"{k} {row.get(k, float('nan')):.2f}" for k in keys)
                  + f"  ({time.time() - t:.0f} s)", flush=True)
    print("  mean: " + "  ".join(f"{k} {np.mean([r.get(k, np.nan) for r in rows]):.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
