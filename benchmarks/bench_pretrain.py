"""Benchmark: pretraining speed against what this machine's CPU can do.

    python benchmarks/bench_pretrain.py [--threads 2] [--seed 0] [--steps 10] [--quick]

Prints, in one run:

- the machine's fp32 matmul throughput (square matmuls of 1024..2048, best of a few): the
  ceiling every achieved FLOP/s below is compared with;
- the teach config, per task of the mixture, for the tokenizer and for the vision phase: seconds per training
  step, training tokens/s (positions the language model reads, padding excluded; images/s
  for the tokenizer) and achieved FLOP/s (FLOPs of one step counted with
  ``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions, forward and
  backward), as a percentage of the matmul ceiling (aim: >= 30%);
- peak memory (``ru_maxrss``) before and after the teach steps;
- the smoke profile's pretraining wall time per phase (target <= 60 s);
- the shipped model's recorded phase times (``data/base_model/metrics.json``), if present.

``--quick`` shrinks everything (a few steps, a tiny smoke run) to check the script itself;
its figures are not the profile's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from unikit import judge as J
from unikit import model as M
from unikit import pretrain as P
from unikit import vq as V
from unikit import world


def matmul_throughput(sizes=(1024, 1536, 2048), repeats: int = 3) -> dict[int, float]:
    """Best fp32 FLOP/s of ``[n, n] @ [n, n]`` per size (``2 n^3`` FLOPs each)."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for n in sizes:
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[n] = 2 * n**3 / best
    return out


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class TokenCounter:
    """Counts the non-padding positions the language model reads (a forward pre-hook)."""

    def __init__(self, um: M.UnifiedModel):
        self.tokens = 0
        self.handle = um.model.model.language_model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        embeds = kwargs.get("inputs_embeds")
        self.tokens += int(mask.sum()) if mask is not None else int(embeds.shape[0] * embeds.shape[1])

    def close(self) -> None:
        self.handle.remove()


def lm_step_figures(um, corpus, cfg, task: str, steps: int, seed: int) -> dict:
    """FLOPs of one step of ``task`` (forward + backward) and the timing of ``steps`` more, with AdamW."""
    params = P.lm_parameters(um)
    opt = torch.optim.AdamW(params, lr=1e-4)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    um.model.train()
    um.vq.eval()

    def step() -> None:
        loss = P.task_loss(um, task, P.task_batch(task, corpus, cfg.lm_batch, rng), cfg.caption_dropout, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    tokens = TokenCounter(um)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t) / steps
    tokens.close()
    return {"flops": flops, "seconds": seconds, "tokens_per_step": tokens.tokens / steps}


def vq_step_figures(um, cfg, steps: int, seed: int) -> dict:
    """The tokenizer's training step (as in ``pretrain.train_vq``): FLOPs of one, timing of ``steps``."""
    vq = um.vq
    for p in vq.parameters():
        p.requires_grad_(True)
    vq.train()
    opt = torch.optim.Adam(vq.parameters(), lr=1e-4)
    rng = random.Random(seed)
    batches = [world.render_many([world.random_scene(rng, allow_heldout=True) for _ in range(cfg.vq_batch)])
               for _ in range(steps + 1)]

    def step(images) -> None:
        loss, _ = V.vq_loss(vq, images)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops()
    t = time.perf_counter()
    for images in batches[1:]:
        step(images)
    seconds = (time.perf_counter() - t) / steps
    vq.eval()
    return {"flops": flops, "seconds": seconds, "images_per_step": cfg.vq_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10, help="timed teach steps per task (after one counted step)")
    parser.add_argument("--quick", action="store_true", help="a few steps and a tiny smoke run: checks the script")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    steps = 2 if args.quick else args.steps
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}" + ("  [--quick: figures are indicative]" if args.quick else ""))

    peak = matmul_throughput((512, 1024) if args.quick else (1024, 1536, 2048))
    ceiling = max(peak.values())
    print("fp32 matmul: " + ", ".join(f"{n}: {f / 1e9:.1f} GFLOP/s" for n, f in peak.items())
          + f"  -> ceiling {ceiling / 1e9:.1f} GFLOP/s")

    rss_before = max_rss_mb()
    cfg = P.pretrain_config("teach")
    um = M.build_model("teach", seed=args.seed)
    corpus = P.build_corpus(um, 64 if args.quick else 256, seed=args.seed)
    print(f"\nteach config ({sum(p.numel() for p in um.model.parameters()) / 1e6:.2f}M parameters), "
          f"batch {cfg.lm_batch} (model) / {cfg.vq_batch} (tokenizer), {steps} timed steps each:")
    print(f"{'phase/task':>12} {'s/step':>8} {'tokens/s':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of ceiling':>10}")
    vq_fig = vq_step_figures(um, cfg, steps, args.seed)
    rate = vq_fig["flops"] / vq_fig["seconds"]
    print(f"{'tokenizer':>12} {vq_fig['seconds']:>8.3f} {vq_fig['images_per_step'] / vq_fig['seconds']:>7.0f}im "
          f"{vq_fig['flops'] / 1e9:>11.2f} {rate / 1e9:>8.2f} {rate / ceiling:>10.1%}")
    for p in um.vq.parameters():
        p.requires_grad_(False)
    with FlopCounterMode(display=False) as counter:  # the understanding encoder's phase (pretrain.train_vision)
        P.train_vision(um, dataclasses.replace(cfg, vision_steps=1), {}, progress=False)
    t = time.perf_counter()
    P.train_vision(um, dataclasses.replace(cfg, vision_steps=steps), {}, progress=False)
    vision_seconds = (time.perf_counter() - t) / steps
    rate = counter.get_total_flops() / vision_seconds
    print(f"{'vision':>12} {vision_seconds:>8.3f} {cfg.vision_batch / vision_seconds:>7.0f}im "
          f"{counter.get_total_flops() / 1e9:>11.2f} {rate / 1e9:>8.2f} {rate / ceiling:>10.1%}")
    total_flops = total_seconds = total_tokens = 0.0
    weights = cfg.mix
    for task in P.TASKS:
        fig = lm_step_figures(um, corpus, cfg, task, steps, args.seed)
        rate = fig["flops"] / fig["seconds"]
        print(f"{task:>12} {fig['seconds']:>8.3f} {fig['tokens_per_step'] / fig['seconds']:>9.0f} "
              f"{fig['flops'] / 1e9:>11.2f} {rate / 1e9:>8.2f} {rate / ceiling:>10.1%}")
        w = weights.get(task, 0)
        total_flops += w * fig["flops"]
        total_seconds += w * fig["seconds"]
        total_tokens += w * fig["tokens_per_step"]
    mix_rate = total_flops / total_seconds
    print(f"{'mixture':>12} {total_seconds / sum(weights.values()):>8.3f} {total_tokens / total_seconds:>9.0f} "
          f"{total_flops / sum(weights.values()) / 1e9:>11.2f} {mix_rate / 1e9:>8.2f} {mix_rate / ceiling:>10.1%}"
          f"  (weighted by the teach mix {weights})")
    print(f"teach model phase at this speed: {cfg.lm_steps} steps ~ {cfg.lm_steps * total_seconds / sum(weights.values()) / 60:.1f} min; "
          f"tokenizer {cfg.vq_steps} steps ~ {cfg.vq_steps * vq_fig['seconds'] / 60:.1f} min; "
          f"vision {cfg.vision_steps} steps ~ {cfg.vision_steps * vision_seconds / 60:.1f} min")
    print(f"peak memory (ru_maxrss): {rss_before:.0f} MB before the teach steps, {max_rss_mb():.0f} MB after")

    overrides = dict(vq_steps=4, vision_steps=2, lm_steps=6, corpus=64, eval_n=2) if args.quick else {}
    judge = J.load_judge(progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        _, metrics, _ = P.pretrain("smoke", out=os.path.join(tmp, "smoke"), seed=args.seed, progress=False,
                                   judge=judge, **overrides)
        wall = time.perf_counter() - t
    label = "smoke pretraining" + (" (--quick: shrunk)" if args.quick else "")
    print(f"\n{label}: {wall:.1f} s wall (target <= 60 s): phases {metrics['phase_seconds']}")

    shipped = M.DEFAULT_MODEL_DIR / "metrics.json"
    if shipped.is_file():
        m = json.loads(shipped.read_text())
        print(f"shipped model ({m.get('profile')}): {m['seconds'] / 60:.1f} min total (target <= 60 min), "
              f"phases (s) {m.get('phase_seconds')}")
    else:
        print(f"shipped model: no {shipped} yet")


if __name__ == "__main__":
    main()
