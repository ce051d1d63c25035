"""Personalization speed on this machine (teach profile, the shipped base model). Prints its figures.

    python benchmarks/bench_personalize.py [--profile teach] [--concept bo] [--skip-workers]

1. UniCTokens' three stages for one concept, each stage timed (target: <= 60 s in all, 2 cores);
2. one concept's joint decoupled training (coupled/decoupled layouts; target <= 60 s);
3. two 1-thread worker processes vs one 2-thread process on the same two jobs, side by side
   (the choice behind ``unikit bench --workers``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time


def timed_stages(profile: str, concept: str, threads: int) -> dict:
    import torch

    from unikit import methods, model, profiles, stages, tokens
    from unikit.concepts import load_concept

    torch.set_num_threads(threads)
    um = model.load_model()
    sched = profiles.schedule(profile)
    card = load_concept(concept)
    out = {}
    t = time.time()
    pdata = [stages.personal_data(um, card, sched)]
    out["data (render + VQ-encode)"] = time.time() - t
    sizes = tokens.default_group_sizes(um)
    t = time.time()
    ct = tokens.add_concept(um, card, groups={"shared": sizes["shared"]}, init="kmeans_images", images=pdata[0].train_images)
    out["add tokens (k-means init)"] = time.time() - t
    t = time.time()
    stages.train_stage_1_understanding(um, [ct], pdata, sched)
    out[f"stage 1 ({sched.stage1_steps} steps)"] = time.time() - t
    t = time.time()
    ct.add_group(um, "generation", sizes["generation"])
    stages.train_stage_2_generation(um, [ct], pdata, sched)
    out[f"stage 2 ({sched.stage2_steps} steps)"] = time.time() - t
    t = time.time()
    codes = stages.generated_codes(um, ct, sched.n_generated, sched.guidance)
    ct.add_group(um, "understanding", sizes["understanding"], init="kmeans_codes", codes=codes)
    out[f"generate {sched.n_generated} images + k-means"] = time.time() - t
    t = time.time()
    stages.train_stage_3_understanding(um, [ct], pdata, sched)
    out[f"stage 3 ({sched.stage3_steps} steps)"] = time.time() - t
    return out


def timed_joint(profile: str, concept: str, threads: int) -> float:
    import torch

    from unikit import methods, model

    torch.set_num_threads(threads)
    um = model.load_model()
    t = time.time()
    methods.personalize(um, [concept], "decoupled", profile)
    return time.time() - t


def job(args) -> float:
    profile, concept, method, threads = args
    import torch

    from unikit import methods, model

    torch.set_num_threads(threads)
    um = model.load_model()
    t = time.time()
    methods.personalize(um, [concept], method, profile)
    return time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="teach")
    ap.add_argument("--concept", default="bo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-workers", action="store_true")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")

    with ctx.Pool(1) as pool:
        stages_s = pool.apply(timed_stages, (args.profile, args.concept, args.threads))
    total = sum(stages_s.values())
    print(f"UniCTokens, one concept ({args.concept}), {args.threads} threads, profile {args.profile}:")
    for k, v in stages_s.items():
        print(f"  {k:<32} {v:6.1f} s")
    print(f"  {'total':<32} {total:6.1f} s   (target <= 60 s)")

    with ctx.Pool(1) as pool:
        joint = pool.apply(timed_joint, (args.profile, args.concept, args.threads))
    print(f"joint decoupled training, one concept: {joint:.1f} s (target <= 60 s)")

    if not args.skip_workers:
        jobs = [(args.profile, args.concept, "separate", 1), (args.profile, "kiki", "separate", 1)]
        t = time.time()
        with ctx.Pool(2) as pool:
            pool.map(job, jobs)
        two_workers = time.time() - t
        t = time.time()
        with ctx.Pool(1) as pool:
            for j in jobs:
                pool.apply(job, ((*j[:3], 2),))
        one_process = time.time() - t
        print(f"two jobs: two 1-thread workers {two_workers:.1f} s | one 2-thread process {one_process:.1f} s "
              f"-> workers are {one_process / two_workers:.2f}x faster")
    print(f"stages_seconds={total:.1f} joint_seconds={joint:.1f}")


if __name__ == "__main__":
    main()
