"""Benchmark: how many threads, and how OpenMP's idle threads wait, on models this small.

    python benchmarks/bench_threads.py [--steps 20]

Each setting runs in a fresh process (``OMP_WAIT_POLICY`` must be set before torch starts),
one after the other on a quiet machine, and times the same work with the shipped base model:

- personalization: ``--steps`` joint decoupled steps for one concept (understanding +
  generation + editing losses, only the concept rows train), the lessons' and the bench's
  inner loop;
- pretraining: ``--steps`` teach-profile model steps of text-to-image and of VQA (batch 32,
  every part but the tokenizer training).

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
    import random
    import time

    import torch

    from unikit import methods, model, stages
    from unikit import pretrain as P

    torch.set_num_threads(threads)
    um = model.load_model()
    sched = stages.schedule("teach", joint_steps=steps)
    card = methods.load_concept("bo")
    pdata = [stages.personal_data(um, card, sched, 0, n_edits=sched.n_edits)]
    t = time.perf_counter()
    methods.run_decoupled(um, [card], pdata, sched, 0)
    out = {"personalize": (time.perf_counter() - t) / steps}
    base = model.load_model()
    corpus = P.build_corpus(base, 256, 0)
    params = P._lm_parameters(base)
    for p in base.vq.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=1e-4)
    base.model.train()
    for task in ("t2i", "vqa"):
        rng = random.Random(0)
        times = []
        for _ in range(steps + 2):
            batch = P.task_batch(task, corpus, 32, rng)
            t = time.perf_counter()
            loss = P.task_loss(base, task, batch, 0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        out[task] = sum(times[2:]) / steps  # the first two steps warm up
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
    print(f"seconds per step ({args.steps} steps each, shipped base model, teach sizes)")
    print(f"{'setting':<22} {'personalize':>12} {'pretrain t2i':>13} {'pretrain vqa':>13}")
    for label, r in results.items():
        print(f"{label:<22} {r['personalize']:>12.3f} {r['t2i']:>13.3f} {r['vqa']:>13.3f}")
    slow = results["2 threads, passive"]["personalize"] / results["2 threads, default"]["personalize"]
    print(f"passive_slowdown={slow:.2f}")


if __name__ == "__main__":
    sys.exit(main())
