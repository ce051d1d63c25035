"""Benchmark: issue 6's two speed targets, on this machine. Prints its figures.

    python benchmarks/bench_viz.py [--profile teach] [--concept bo] [--repeats 3] [--skip-lesson]

1. attention extraction for one generated image (``unikit.viz.generation_attention``: the
   sampling loop with eager attention on every step, plus the rollout's teacher-forced pass),
   with a UniCTokens concept on the shipped base model (target <= 2 s); the plain generation of
   one image and one understanding-attention extraction are timed beside it for scale;
2. the embedding lesson (``09_token_embeddings``, its default ``MAP_METHOD="umap"``) executed
   with papermill in a fresh kernel, as ``unikit run`` does (target <= 90 s). Whether the
   lesson found its concepts in the cache (trained by lessons 03-07 or an earlier run) or had
   to train them is printed, and so is whether numba had compiled UMAP before (its cache
   lives beside umap's sources; the first import in a new venv compiles for ~20 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path



def attention_timing(profile: str, concept: str, repeats: int) -> dict:
    import numpy as np

    from unikit import concepts, methods, model, viz

    um = model.load_model()
    card = concepts.load_concept(concept)
    t = time.perf_counter()
    pers = methods.personalize(um, [card], "unictokens", profile, seed=0, checkpoint="cache")
    personalize_s = time.perf_counter() - t
    ct = pers.tokens[card.name]
    prompt = pers.generation_prompt(card.name, f"a photo of {card.token}")
    question = pers.understanding_prompt(card.name, f"is {card.token} in this image?")
    viz.generation_attention(um, prompt, tokens=ct, seed=0)  # warm-up (first-call allocations)
    gen_att, plain, und_att = [], [], []
    image = None
    for r in range(repeats):
        ga = viz.generation_attention(um, prompt, tokens=ct, seed=r)
        gen_att.append(ga.seconds)
        image = ga.image
        t = time.perf_counter()  # the concept's tokens are attached to the model: plain calls see them
        model.generate_images(um, [prompt], seed=r)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        viz.understanding_attention(um, np.asarray(image), question, tokens=ct)
        und_att.append(time.perf_counter() - t)
    return {"prompt": prompt, "personalize_s": personalize_s, "generation_attention": gen_att,
            "plain_generation": plain, "understanding_attention": und_att}


def umap_compiled_before() -> bool:
    """Whether numba's on-disk cache for umap already holds compiled functions."""
    import importlib.util

    spec = importlib.util.find_spec("umap")
    root = Path(spec.origin).parent if spec and spec.origin else None
    return bool(root and any(root.rglob("*.nbi")))


def lesson_timing(profile: str) -> dict:
    from unikit import run

    compiled = umap_compiled_before()
    with tempfile.TemporaryDirectory(prefix="unikit-bench-viz-") as tmp:
        t = time.perf_counter()
        results = run.run_notebooks(profile, only=["09"], out_dir=Path(tmp) / "notebooks", quiet=True)
        wall = time.perf_counter() - t
    return {"seconds": results[0]["seconds"], "wall": wall, "ok": results[0]["ok"], "umap_compiled_before": compiled}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="teach")
    ap.add_argument("--concept", default="bo")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-lesson", action="store_true")
    args = ap.parse_args(argv)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, profile {args.profile}")
    a = attention_timing(args.profile, args.concept, args.repeats)
    print(f"concept {args.concept} (unictokens) ready in {a['personalize_s']:.1f} s (cache or trained now)")
    print(f"prompt: {a['prompt']}")
    for key, label in (("generation_attention", "attention extraction, one generated image"),
                       ("plain_generation", "plain generation, one image (for scale)"),
                       ("understanding_attention", "understanding attention, one answer")):
        xs = a[key]
        print(f"{label:<45} mean {statistics.mean(xs):.2f} s  max {max(xs):.2f} s  over {len(xs)}")
    if not args.skip_lesson:
        lesson = lesson_timing(args.profile)
        print(f"lesson 09 ({args.profile}, MAP_METHOD=umap): {lesson['seconds']:.1f} s in its kernel "
              f"({lesson['wall']:.1f} s with kernel start); ok={lesson['ok']}; "
              f"umap compiled before: {lesson['umap_compiled_before']}")
        print(f"attention_s={max(a['generation_attention']):.2f} lesson09_s={lesson['seconds']:.1f}")
    else:
        print(f"attention_s={max(a['generation_attention']):.2f}")


if __name__ == "__main__":
    sys.exit(main())
