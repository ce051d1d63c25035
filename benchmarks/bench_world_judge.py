"""Benchmark: world rendering speed, and training a fresh judge on 2 threads.

    python benchmarks/bench_world_judge.py [--threads 2] [--seed 0] [--steps N]

Prints images/s for 32px and 64px renders, the judge's training time, and its accuracy
per attribute on held-out clean and degraded renders. The shipped judge
(``data/judge/``) is not touched.
"""

from __future__ import annotations

import argparse
import time


import torch

from unikit import judge as J
from unikit import world


def render_speed(image_size: int, n: int = 3000) -> float:
    scenes = world.generic_scenes(n, seed=0, allow_heldout=True, item_prob=0.5)
    t = time.perf_counter()
    world.render_many(scenes, image_size)
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the judge config's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for size in (32, 64):
        print(f"render {size}px: {render_speed(size):,.0f} images/s")

    judge, metrics = J.train_judge(seed=args.seed, steps=args.steps, progress=False)
    print(f"judge: trained in {metrics['train_seconds']:.1f} s on {args.threads} threads "
          f"({judge.config['steps'] if args.steps is None else args.steps} steps)")
    print(J.format_metrics(metrics))
    worst = min(metrics["clean"], key=metrics["clean"].get)
    print(f"worst clean attribute: {worst} {metrics['clean'][worst]:.4f}; "
          f"identity over {metrics['n_identity']} concept images: {metrics['identity_clean']:.4f}")


if __name__ == "__main__":
    main()
