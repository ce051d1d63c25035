"""Benchmark: how many threads, and how OpenMP's idle threads wait, on models this small.

    python benchmarks/bench_threads.py [--steps 20]

Each setting runs in a fresh process (``OMP_WAIT_POLICY`` must be set before torch starts),
one after the other on a quiet machine, and times the same work (the shipped base model for
personalization, a fresh teach model for pretraining):

- personalization: one concept's joint decoupled training (teach schedule: understanding +
  generation + editing losses, only the concept rows train), timed as
  ``bench_personalize.py`` times it;
- pretraining: seconds per teach-profile model step of text-to-image and of VQA (batch 32,
  every part but the tokenizer training), timed as ``bench_pretrain.py`` times them.

Settings: 1 thread; 2 threads with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once);
2 threads with the default policy (idle threads spin a little before sleeping). The last
line reads ``passive_slowdown=<x>`` (personalization, 2 passive / 2 default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = (("1 thread", 1, None), ("2 threads, passive", 2, "PASSIVE"), ("2 threads, default", 2, ""))


def work(threads: int, steps: int) -> dict:
    """Time the work of one setting (in this process), with the other benchmarks' own timers."""
    import torch
    from bench_personalize import timed_joint
    from bench_pretrain import lm_step_figures

    from unikit import model as M
    from unikit import pretrain as P

    out = {"personalize": timed_joint("teach", "bo", threads)}  # sets the threads too
    torch.set_num_threads(threads)
    um = M.build_model("teach")
    corpus = P.build_corpus(um, 256, seed=0)
    cfg = P.pretrain_config("teach")
    for task in ("t2i", "vqa"):
        out[task] = lm_step_figures(um, corpus, cfg, task, steps, seed=0)["seconds"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--_child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(work(*args._child)))
        return
    results = {}
    for label, threads, policy in SETTINGS:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--_child", str(threads),
                              str(args.steps)], env=env, capture_output=True, text=True, check=True)
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"teach sizes; personalization: seconds in all; pretraining: seconds per step ({args.steps} timed)")
    print(f"{'setting':<22} {'personalize':>12} {'pretrain t2i':>13} {'pretrain vqa':>13}")
    for label, r in results.items():
        print(f"{label:<22} {r['personalize']:>12.1f} {r['t2i']:>13.3f} {r['vqa']:>13.3f}")
    slow = results["2 threads, passive"]["personalize"] / results["2 threads, default"]["personalize"]
    print(f"passive_slowdown={slow:.2f}")


if __name__ == "__main__":
    sys.exit(main())
