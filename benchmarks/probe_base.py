"""The probe ladder: small, fast experiments on the base model's pretraining, one question each.

Each rung runs at one thread (two rungs side by side on a 2-core machine) and prints what it
measured as it goes; findings are kept in ``docs/notes/`` with the command that made them.

    python benchmarks/probe_base.py tokenizer --steps 4000 --every 500 --out /work/runs/probe_vq
    python benchmarks/probe_base.py encoder --steps 6000 --every 1000 --out /work/runs/probe_vision
    python benchmarks/probe_base.py yesno --vision /work/runs/probe_vision --steps 3000 --arm plain
    python benchmarks/probe_base.py drawing --size wide --steps 2000 --every 500 --out /work/runs/probe_wide

Rungs:

- ``tokenizer``: phase 1 (:func:`unikit.pretrain.train_vq`) for ``--steps``; every ``--every``
  steps the judge reads fresh reconstructions (``vq_recon_judge``, the generation ceiling);
- ``encoder``: phase 2 (:func:`unikit.pretrain.train_vision`) for ``--steps``; every ``--every``
  steps a linear probe per attribute on frozen features of fresh renders
  (:func:`unikit.pretrain.encoder_probe`);
- ``align``: phase 2b (:func:`unikit.pretrain.train_align`) on the encoder in ``--vision``;
- ``yesno``: a fresh language model on a trained encoder, only yes/no questions (one arm of
  :data:`ARMS`); prints accuracy per question kind every ``--every`` steps and the step at
  which each kind left the coin-flip plateau (first evaluation >= 0.75);
- ``drawing``: a fresh language model of ``--size`` (a :data:`unikit.model.janus.PROFILES` entry:
  ``teach``, ``deep`` or ``wide``) on the tokenizer the shipped model reused, text-to-image alone; every ``--every``
  steps the share of ``--eval-n`` captions drawn right in every attribute, the share with the
  mark wrong, and the recent training loss, against the CPU minutes its training took (process
  time, so a busy machine does not inflate them): drawing capacity per CPU-minute.

Each rung writes the weights it trained (``vq.safetensors`` / ``vision.safetensors``) and a
``log.json`` of its measurements into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from unikit import model as M
from unikit import pretrain as P
from unikit import runtime, world


def _log(out: Path, rows: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.json").write_text(json.dumps(rows, indent=1) + "\n")


def rung_tokenizer(args) -> None:
    from unikit.judge import load_judge

    judge = load_judge(progress=False)
    um = M.build_model("teach", seed=args.seed)
    cfg = P.pretrain_config("teach", seed=args.seed, vq_steps=args.steps, checkpoint_every=args.every,
                            vq_batch=args.batch, vq_lr=args.lr)
    rows, t0 = [], time.time()

    def every(phase, step, opt_state):
        um.vq.eval()
        q = P.tokenizer_quality(um, judge, n=200, seed=777)
        um.vq.train()
        rows.append({"step": step, "minutes": round((time.time() - t0) / 60, 2), **q})
        print(json.dumps(rows[-1]), flush=True)
        P.save_phase_weights(um, "tokenizer", args.out)
        _log(args.out, rows)
        if step == cfg.vq_steps:
            P.record_phase(args.out, cfg, "vq", command=" ".join(sys.argv))

    P.train_vq(um, cfg, {}, save=every, progress=False)


def rung_encoder(args) -> None:
    um = M.build_model("teach", seed=args.seed)
    rows, t0 = [], time.time()

    def every(step):
        probe = P.encoder_probe(um, n_train=2000, n_test=1000)
        rows.append({"step": step, "minutes": round((time.time() - t0) / 60, 2), **probe})
        print(json.dumps(rows[-1]), flush=True)
        P.save_phase_weights(um, "vision", args.out)
        _log(args.out, rows)

    cfg = P.pretrain_config("teach", seed=args.seed, vision_steps=args.steps, vision_batch=args.batch,
                            vision_lr=args.lr)
    P.train_vision(um, cfg, {}, progress=False, on_step=lambda s: every(s + 1) if (s + 1) % args.every == 0 else None)
    P.record_phase(args.out, cfg, "vision", command=" ".join(sys.argv))


def rung_align(args) -> None:
    """Phase 2b (:func:`unikit.pretrain.train_align`) on the encoder in ``--vision``; then the
    linear probe and the alignment's own accuracy per attribute."""
    um = M.build_model("teach", seed=args.seed)
    P.load_phase_weights(um, "vision", Path(args.vision) / "vision.safetensors")
    vision = json.loads((Path(args.vision) / "phase.json").read_text())[0]["settings"]
    cfg = P.pretrain_config("teach", seed=args.seed, align_steps=args.steps, align_lr=args.lr,
                            **{k: vision[k] for k in P.VISION_SETTINGS if k != "seed"})
    t0, history = time.time(), {}
    P.train_align(um, cfg, history, progress=False)
    rows = [{"step": args.steps, "minutes": round((time.time() - t0) / 60, 2), **history["align_accuracy"],
             **P.encoder_probe(um, n_train=2000, n_test=1000)}]
    print(json.dumps(rows[-1]), flush=True)
    P.save_phase_weights(um, "align", args.out)
    P.record_phase(args.out, cfg, "align", command=" ".join(sys.argv))
    _log(args.out, rows)


ARMS = {
    # arm -> (perception mix, PretrainConfig overrides)
    "plain": ({"attribute": 1, "recognition": 1}, {}),
    "paired": ({"attribute": 1, "recognition": 1}, {"yesno_paired": True}),
    "fan_in": ({"attribute": 1, "recognition": 1}, {"lm_init": "fan_in"}),
    "paired_fan_in": ({"attribute": 1, "recognition": 1}, {"yesno_paired": True, "lm_init": "fan_in"}),
    "mixed": ({"attribute": 3, "recognition": 3, "vqa": 1, "caption": 1, "same": 2}, {"yesno_paired": True}),
    # the yes/no curriculum alone over all --steps: one more kind of YESNO_ORDER every steps/5
    "curriculum": ({"attribute": 1}, {"yesno_paired": True, "yesno_steps": None}),
    # mixed, with the understanding encoder and aligner frozen (does phase 3 erase what phase 2 taught?)
    "frozen": ({"attribute": 3, "recognition": 3, "vqa": 1, "caption": 1, "same": 2},
               {"yesno_paired": True, "lm_train_vision": False}),
}


def rung_yesno(args) -> None:
    """A fresh language model on the encoder in ``--vision`` (its aligner and encoder keep training),
    understanding tasks only, as the arm says."""
    um = M.build_model("teach", seed=args.seed)
    phase = "align" if (Path(args.vision) / "align.safetensors").exists() else "vision"
    P.load_phase_weights(um, phase, Path(args.vision) / f"{phase}.safetensors")
    print(f"language model on the {phase} phase's encoder in {args.vision}", flush=True)
    mix, overrides = ARMS[args.arm]
    overrides = {k: (args.steps if v is None else v) for k, v in overrides.items()}  # None: the run's length
    cfg = P.pretrain_config("teach", seed=args.seed, lm_steps=args.steps, perception_steps=args.steps,
                            perception_mix=mix, lm_batch=args.batch, lm_lr=args.lr, checkpoint_every=args.every,
                            warmup=max(1, min(200, args.steps // 10)), **overrides)
    rng = random.Random(args.seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(6000)]
    images = world.render_many(scenes)
    corpus = P.Corpus(scenes, images, torch.zeros(len(scenes), 8, 8, dtype=torch.long), [], [], images[:0],
                      torch.zeros(0, 8, 8, dtype=torch.long))
    rows, t0, history = [], time.time(), {}

    def every(phase, step, opt_state):
        m = P.evaluate_base(um, None, n=args.eval_n, tasks=("recognition", "attribute", *args.also))
        um.model.train()
        recent = [loss for _, task, loss in history["lm"][-args.every:] if task in ("attribute", "recognition")]
        rows.append({"step": step, "minutes": round((time.time() - t0) / 60, 2),
                     "yesno_loss": round(sum(recent) / max(1, len(recent)), 4), **m})
        print(json.dumps(rows[-1]), flush=True)
        _log(args.out, rows)

    P.train_lm(um, corpus, cfg, history, save=every, progress=False)


def rung_drawing(args) -> None:
    """Text-to-image alone on a fresh language model of ``args.size``, with :data:`TOKENIZER` (the
    tokenizer the shipped model reused) frozen."""
    from unikit.judge import expected_reading, load_judge

    judge = load_judge(progress=False)
    um = M.build_model(args.size, seed=args.seed)
    P.load_phase_weights(um, "tokenizer", TOKENIZER)
    corpus = P.build_corpus(um, args.corpus, seed=args.seed)
    cfg = P.pretrain_config("teach", seed=args.seed, lm_steps=args.steps, perception_steps=0, mix={"t2i": 1},
                            lm_batch=args.batch, lm_lr=args.lr, checkpoint_every=args.every,
                            warmup=max(1, min(300, args.steps // 10)), lm_init="transformers")
    rng = random.Random(10_000 + args.seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(args.eval_n)]
    wants = [expected_reading(sc) for sc in scenes]
    keys = (*world.NAMEABLE, "present")
    lm_params = sum(p.numel() for p in um.model.model.language_model.parameters())
    print(f"{args.size}: language model of {lm_params:,} parameters", flush=True)
    rows, history = [], {}
    clock = {"train": 0.0, "since": time.process_time()}  # this process's CPU time, training only

    def every(phase, step, opt_state):
        clock["train"] += time.process_time() - clock["since"]
        um.model.eval()
        drawn = M.generate_images(um, [world.caption(sc) for sc in scenes], guidance=1.25, temperature=0.1,
                                  seed=args.seed)
        reads = judge.read(drawn)
        um.model.train()
        recent = [loss for _, _, loss in history["lm"][-args.every:]]
        rows.append({"step": step, "cpu_minutes": round(clock["train"] / 60, 2), "lm_parameters": lm_params,
                     "t2i_loss": round(sum(recent) / max(1, len(recent)), 4),
                     "t2i_seen": sum(all(r[k] == w[k] for k in keys) for r, w in zip(reads, wants)) / len(scenes),
                     "mark_wrong": sum(r["mark"] != w["mark"] or r["mark_colour"] != w["mark_colour"]
                                       for r, w in zip(reads, wants)) / len(scenes)})
        print(json.dumps(rows[-1]), flush=True)
        _log(args.out, rows)
        clock["since"] = time.process_time()

    P.train_lm(um, corpus, cfg, history, save=every, progress=False)


TOKENIZER = Path(__file__).resolve().parent.parent / "data" / "phases" / "tokenizer-4000" / "tokenizer.safetensors"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rung", choices=("tokenizer", "encoder", "align", "yesno", "drawing"))
    ap.add_argument("--size", default="teach", help="drawing: the model size (teach, deep or wide)")
    ap.add_argument("--corpus", type=int, default=6000, help="drawing: scenes in the training corpus")
    ap.add_argument("--vision", help="align, yesno: a directory holding vision.safetensors (yesno: or align.safetensors)")
    ap.add_argument("--arm", choices=tuple(ARMS), default="plain")
    ap.add_argument("--eval-n", type=int, default=250)
    ap.add_argument("--also", nargs="*", default=(), help="yesno: more evaluate_base tasks, e.g. vqa caption")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    runtime.set_threads(args.threads)
    defaults = {"tokenizer": (32, 2e-3), "encoder": (64, 2e-3), "align": (64, 2e-3), "yesno": (32, 1.5e-3),
                "drawing": (32, 1.5e-3)}[args.rung]
    args.batch = args.batch or defaults[0]
    args.lr = args.lr or defaults[1]
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    {"tokenizer": rung_tokenizer, "encoder": rung_encoder, "align": rung_align, "yesno": rung_yesno,
     "drawing": rung_drawing}[args.rung](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
