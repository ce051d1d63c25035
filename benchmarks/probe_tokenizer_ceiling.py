"""Probe: how much of the tokenizer's shortfall is the judge's own?

    python benchmarks/probe_tokenizer_ceiling.py [--base DIR] [--n 400] [--seed 12345]

On ``n`` fresh renders (item probability 0.35, as ``pretrain.tokenizer_quality`` draws them)
it prints, side by side, the share the judge reads right in every attribute on the renders
themselves and on their VQ reconstructions, per attribute, and the commonest misreadings.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter

import numpy as np
import torch


def misreadings(reads, truth) -> Counter:
    out = Counter()
    for r, t in zip(reads, truth):
        out.update((k, t[k], r[k]) for k in t if r[k] != t[k])
    return out


def main() -> int:
    from unikit import judge as J
    from unikit import model as M
    from unikit import vq as V
    from unikit import world

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=None)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    torch.set_num_threads(1)
    um, judge = M.load_model(args.base), J.load_judge(progress=False)
    rng = random.Random(args.seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(args.n)]
    renders = world.render_many(scenes)
    recon = V.vq_decode(um, V.vq_encode(um, renders))
    truth = [J.expected_reading(s) for s in scenes]
    on_renders, on_recon = judge.read(renders), judge.read(recon)
    right = lambda reads: float(np.mean([r == t for r, t in zip(reads, truth)]))  # noqa: E731
    print(f"every attribute right: renders {right(on_renders):.3f}, reconstructions {right(on_recon):.3f}")
    ok = [i for i, (r, t) in enumerate(zip(on_renders, truth)) if r == t]
    print(f"reconstructions right where the render is read right: "
          f"{np.mean([on_recon[i] == truth[i] for i in ok]):.3f} (of {len(ok)})")
    print(f"{'attribute':>12} {'renders':>8} {'recon':>8}")
    for k in truth[0]:
        per = [np.mean([r[k] == t[k] for r, t in zip(reads, truth)]) for reads in (on_renders, on_recon)]
        print(f"{k:>12} {per[0]:>8.3f} {per[1]:>8.3f}")
    print("misread on renders:", misreadings(on_renders, truth).most_common(8))
    print("misread on reconstructions:", misreadings(on_recon, truth).most_common(8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
