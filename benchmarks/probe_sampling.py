"""Probe: how much of the base model's text-to-image score is the sampler's?

    python benchmarks/probe_sampling.py [--base DIR] [--n 64] [--seed 0]
        [--guidance 1.25 1.5 2 3 5] [--temperature 0 0.5 1] [--top-k 8]

Draws ``n`` held-in captions (seen shape and colour pairs) with every combination of the given
sampler settings and prints, per setting, the share of drawings the judge reads right in every
attribute the caption names (the metric ``t2i_seen``), side by side. (Pretraining picks the
model's own setting the same way: ``unikit.pretrain.calibrate_sampling``.)
"""

from __future__ import annotations

import argparse
import random
import sys
import time



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.25, 1.5, 2.0, 3.0, 5.0])
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="0: greedy")
    ap.add_argument("--top-k", type=int, nargs="+", default=[0], help="0: no top-k cut")
    args = ap.parse_args()
    settings = [(f"g={g}, T={t}" + (f", top-k {k}" if k else ""), dict(guidance=g, temperature=t, top_k=k or None))
                for g in args.guidance for t in args.temperature for k in args.top_k]
    from unikit import judge as J
    from unikit import model as M
    from unikit import world

    um = M.load_model(args.base)
    judge = J.load_judge(progress=False)
    rng = random.Random(args.seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(args.n)]
    prompts = [world.caption(s) for s in scenes]
    checked = (*world.NAMEABLE, "present")
    expected = [{k: J.expected_reading(s)[k] for k in checked} for s in scenes]
    for name, kw in settings:
        t = time.time()
        drawn = M.generate_images(um, prompts, seed=args.seed, **kw)
        reads = judge.read(drawn)
        right = sum(all(r[k] == e[k] for k in e) for r, e in zip(reads, expected))
        per = {k: sum(r[k] == e[k] for r, e in zip(reads, expected)) / len(scenes) for k in checked}
        worst = sorted(per.items(), key=lambda kv: kv[1])[:3]
        print(f"{name:>20}: all right {right / len(scenes):.3f}  worst {', '.join(f'{k} {v:.2f}' for k, v in worst)}"
              f"  ({time.time() - t:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
