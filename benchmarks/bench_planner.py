"""Benchmark: the planner's estimates beside measured training steps, and its estimates for Janus-Pro.

    python benchmarks/bench_planner.py [--steps 10]

Part 1 (measured here): for each method's heaviest step (``unictokens``: understanding +
generation; ``coupled``: + editing) on the shipped base model, one concept, teach schedule, each
in a fresh process: the planner's seconds per step and peak bytes beside the measured seconds
per step and the growth of the process's peak resident memory over the loaded model. The last
lines read ``time_ratio=<measured/estimated>`` and ``memory_ratio=<measured/estimated>``.

Part 2 (estimated only): Janus-Pro-1B and -7B at their published sizes (language model hidden
2048 / 4096, 24 / 30 layers, MLP 5632 / 11008, 16 / 32 heads, vocabulary 102400; SigLIP-L at
384 px; a 16384-code VQ on a 24 x 24 grid), gpu schedule, bf16, 1 concept, sdpa attention, with
an assumed sustained matmul throughput (``--gpu-tflops``, default 100, an A100's bf16 order)
and memory (``--gpu-gib``, default 24).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from unikit import model, planner, profiles, stages, tokens
from unikit.concepts import load_concept

method, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
um = model.load_model()
sched = profiles.schedule("teach")
card = load_concept("bo")
sizes = tokens.default_group_sizes(um)
est = planner.plan(um.model.config, sched, method, 1, "cpu", "float32", group_sizes=sizes)
pdata = [stages.personal_data(um, card, sched, 0, n_edits=sched.n_edits if method == "coupled" else 0)]
if method == "coupled":  # one set of tokens for every task
    groups, prompting = ("shared",), stages.Prompting(("shared",), ("shared",), ("shared",))
else:  # UniCTokens' stage 2
    groups, prompting = ("shared", "generation"), stages.Prompting()
ct = tokens.add_concept(um, card, groups={g: sizes[g] for g in groups}, init="class_word")
cts = {card.name: ct}
weights = ({"understanding": 1.0, "generation": sched.l_gen, "editing": sched.l_edit} if method == "coupled"
           else {"generation": 0.8, "understanding": 0.2})
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
stages.train_tokens(um, [cts[card.name]], pdata, steps=2, train_groups=("identifier", *groups), weights=weights,
                    prompting=prompting, sched=sched, seed=0)  # warm-up
t = time.perf_counter()
stages.train_tokens(um, [cts[card.name]], pdata, steps=steps, train_groups=("identifier", *groups),
                    weights=weights, prompting=prompting, sched=sched, seed=1)
sec = (time.perf_counter() - t) / steps
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
print(json.dumps({"method": method, "estimated_s": est.seconds_per_step, "measured_s": sec,
                  "estimated_bytes": est.activations + est.logits + est.optimizer, "measured_bytes": grown,
                  "throughput": est.throughput}))
"""

JANUS_PRO = {"1B": dict(hidden_size=2048, num_hidden_layers=24, intermediate_size=5632, num_attention_heads=16),
             "7B": dict(hidden_size=4096, num_hidden_layers=30, intermediate_size=11008, num_attention_heads=32)}


def janus_pro_config(size: str):
    from transformers import JanusConfig

    t = JANUS_PRO[size]
    return JanusConfig(text_config=dict(model_type="llama", vocab_size=102400, num_key_value_heads=
                                        t["num_attention_heads"], max_position_embeddings=16384, **t))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gpu-tflops", type=float, default=100.0)
    ap.add_argument("--gpu-gib", type=float, default=24.0)
    ap.add_argument("--estimates-only", action="store_true",
                    help="skip part 1; print part 2 for a 24 GiB GPU at 50 TFLOP/s and an 80 GiB one at 150 TFLOP/s "
                         "(sustained bf16 matmuls: an L4/A10/4090-class and an A100/H100-class card), one table")
    args = ap.parse_args()
    if args.estimates_only:
        return gpu_table()
    env = {**os.environ, "UNIKIT_THREADS": os.environ.get("UNIKIT_THREADS", "2")}
    rows = []
    for method in ("unictokens", "coupled"):
        out = subprocess.run([sys.executable, "-c", CHILD, method, str(args.steps)], env=env, check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'method':>12} {'est s/step':>11} {'measured':>9} {'est MiB':>8} {'measured':>9}")
    for r in rows:
        print(f"{r['method']:>12} {r['estimated_s']:>11.3f} {r['measured_s']:>9.3f} "
              f"{r['estimated_bytes'] / 2**20:>8.1f} {r['measured_bytes'] / 2**20:>9.1f}")
    print(f"matmul throughput measured: {rows[0]['throughput'] / 1e9:.1f} GFLOP/s")
    t_ratio = sum(r["measured_s"] for r in rows) / sum(r["estimated_s"] for r in rows)
    m_ratio = sum(r["measured_bytes"] for r in rows) / sum(r["estimated_bytes"] for r in rows)
    print(f"time_ratio={t_ratio:.2f}")
    print(f"memory_ratio={m_ratio:.2f}")

    from unikit import planner, profiles

    sched = profiles.schedule("gpu")
    for size in JANUS_PRO:
        for method in ("unictokens", "decoupled"):
            p = planner.plan(janus_pro_config(size), sched, method, 1, "meta", "bfloat16", "sdpa",
                             available=int(args.gpu_gib * 2**30), throughput=args.gpu_tflops * 1e12)
            p.device = f"a {args.gpu_gib:.0f} GiB GPU at {args.gpu_tflops:.0f} TFLOP/s"
            print(f"\nJanus-Pro-{size}, " + "\n".join(p.lines()))
    return 0


def gpu_table(gpus=((24, 50), (80, 150))) -> int:
    """Janus-Pro-1B/7B x every training method x two GPUs: peak GiB, s/step, minutes per run (gpu schedule)."""
    from unikit import planner, profiles
    from unikit.methods import METHODS

    sched = profiles.schedule("gpu")
    print(f"{'model':>14} {'method':>18} " + " ".join(f"{f'{g} GiB: peak GiB, s/step, min':>34}" for g, _ in gpus))
    for size in JANUS_PRO:
        for method in [m for m in METHODS if m not in ("text_prompt", "oracle_text")]:
            cells = []
            for gib, tflops in gpus:
                p = planner.plan(janus_pro_config(size), sched, method, 1, "meta", "bfloat16", "sdpa",
                                 available=int(gib * 2**30), throughput=tflops * 1e12)
                verdict = "" if p.fits else " (no)"
                cells.append(f"{p.peak / 2**30:>8.1f}{verdict:>5} {p.seconds_per_step:>8.2f} {p.seconds / 60:>9.1f}")
            print(f"{'Janus-Pro-' + size:>14} {method:>18} " + " ".join(f"{c:>34}" for c in cells))
    print("(no): the planner refuses the run on that card; it names a setting that fits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
