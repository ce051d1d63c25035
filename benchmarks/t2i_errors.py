"""What a base model draws wrong: text-to-image on seen shape+colour pairs, error per attribute.

    python benchmarks/t2i_errors.py data/base_model [--n 1000] [--seed 777]

Draws one image per caption of ``n`` fresh scenes (the model's own sampling), has the judge read
each, and prints: the share right in every attribute (``t2i_seen``'s definition) with a 95%
binomial interval, the share wrong per attribute, beside the same for the tokenizer's round
trip of the renders (what generation can never beat), and the most common confusions of the
object's colour, the mark and the mark's colour ("swap" when the wrong value is the other
colour of the same scene). One thread; about 30 s for 1000 scenes on the shipped model.
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import time

import numpy as np
import torch


def wrong_per_attribute(reads, wants, keys) -> tuple[float, dict]:
    """(share right in every key, {key: share wrong}) over paired judge readings and expectations."""
    from unikit.pretrain import all_right

    wrong = collections.Counter(k for r, w in zip(reads, wants) for k in keys if r[k] != w[k])
    right = np.mean([all_right(r, w) for r, w in zip(reads, wants)])
    return float(right), {k: wrong[k] / len(wants) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default=None, help="a model directory (default: the shipped one)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=777)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from unikit import model as M
    from unikit import vq as V
    from unikit import world
    from unikit.judge import expected_reading, load_judge

    t = time.time()
    um, judge = M.load_model(args.model), load_judge(progress=False)
    rng = random.Random(args.seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(args.n)]
    keys = (*world.NAMEABLE, "present")
    wants = [{k: expected_reading(s)[k] for k in keys} for s in scenes]
    batches = range(0, args.n, 50)
    drawn = np.concatenate([M.generate_images(um, [world.caption(s) for s in scenes[i:i + 50]], seed=args.seed + i)
                            for i in batches])
    renders = world.render_many(scenes)
    recon = np.concatenate([V.vq_decode(um, V.vq_encode(um, renders[i:i + 50])) for i in batches])
    drawn_reads, recon_reads = judge.read(drawn), judge.read(recon)
    right, wrong = wrong_per_attribute(drawn_reads, wants, keys)
    recon_right, recon_wrong = wrong_per_attribute(recon_reads, wants, keys)
    half = 1.96 * math.sqrt(right * (1 - right) / args.n)
    print(f"{args.model or 'the shipped model'}: {args.n} captions, sampling {M.sampling(um)}")
    print(f"every attribute right: drawn {right:.3f} [{right - half:.3f}, {right + half:.3f}], "
          f"tokenizer round trip {recon_right:.3f}")
    print(f"{'attribute':<13}{'drawn wrong':>12}{'round trip wrong':>18}")
    for k in sorted(keys, key=lambda k: -wrong[k]):
        print(f"{k:<13}{wrong[k]:>12.3f}{recon_wrong[k]:>18.3f}")
    confusions = collections.Counter()
    other = {"colour": "mark_colour", "mark_colour": "colour"}
    for r, w in zip(drawn_reads, wants):
        for k in ("colour", "mark", "mark_colour"):
            if r[k] != w[k]:
                swap = k in other and r[k] == w[other[k]]
                confusions[f"{k} {w[k]} -> {r[k]}{' (swap)' if swap else ''}"] += 1
    print("most common confusions:", "; ".join(f"{c} x{n}" for c, n in confusions.most_common(10)))
    print(f"{time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
