"""The ``unikit`` command.

Each subcommand is one ``add_<name>(subparsers)`` function that adds its parser and
sets ``handler`` (a function ``handler(args) -> int | None``); :data:`SUBCOMMANDS`
lists them. A unikit error (any ``ValueError`` subclass raised by unikit) prints
``error: <message>`` and exits 2, with no traceback; a failing lesson exits 1.

    unikit run --profile smoke --only 00 03
    unikit book
"""

from __future__ import annotations

import argparse
import os
import sys

from .profiles import PROFILES
from .runtime import set_threads


# --------------------------------------------------------------------------- run


def add_run(subparsers) -> None:
    from .run import EXECUTED_DIR, NOTEBOOKS_DIR

    p = subparsers.add_parser("run", help="execute the lessons (notebooks/NN_*.ipynb) with papermill",
                              description="Execute the lessons in order with papermill, injecting PROFILE "
                                          "(and SEED when given); executed copies go to build/notebooks/.")
    p.add_argument("--profile", choices=PROFILES, default="teach",
                   help="smoke: seconds per lesson (CI); teach: meaningful on a laptop CPU (default); gpu: real Janus-Pro; "
                        "gpu-smoke: the gpu path on a tiny random Janus-Pro-shaped model (CPU, CI)")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these lessons, by number prefix (e.g. --only 00 03)")
    p.add_argument("--seed", type=int, help="inject SEED into every lesson (default: each lesson's own)")
    p.add_argument("--out", default=str(EXECUTED_DIR), metavar="DIR", help="where the executed notebooks go (default build/notebooks)")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), metavar="DIR", help="where the lessons are (default notebooks/)")
    p.add_argument("--workers", type=int, default=1, help="lessons run side by side, one thread each (default 1; "
                                                          "2 on 2 cores roughly halves a smoke run, mostly kernel starts)")
    p.set_defaults(handler=handle_run)


def handle_run(args) -> int:
    from .run import NotebookFailed, run_notebooks

    try:
        run_notebooks(args.profile, only=args.only, seed=args.seed, out_dir=args.out, notebooks_dir=args.notebooks_dir,
                      workers=args.workers)
    except NotebookFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- book


def add_book(subparsers) -> None:
    from .run import BUILD_DIR, EXECUTED_DIR

    p = subparsers.add_parser("book", help="build the HTML book from the executed lessons (offline)",
                              description="Build the Jupyter Book from book/ and the executed lessons "
                                          "(run `unikit run --profile teach` first).")
    p.add_argument("--executed", default=str(EXECUTED_DIR), metavar="DIR", help="the executed notebooks (default build/notebooks)")
    p.add_argument("--out", default=str(BUILD_DIR / "book"), metavar="DIR", help="where the book goes (default build/book)")
    p.set_defaults(handler=handle_book)


def handle_book(args) -> int:
    from .book import build_book

    build_book(executed_dir=args.executed, out_dir=args.out)
    return 0


# --------------------------------------------------------------------------- world


def add_world(subparsers) -> None:
    p = subparsers.add_parser("world", help="the concept world (UnifyBench-mini)")
    sub = p.add_subparsers(dest="world_command", required=True)
    e = sub.add_parser("export", help="write the concepts in UnifyBench's per-concept layout",
                       description="Write every concept (or --concept ...) as UnifyBench-style folders: info.json, "
                                   "conversations.json, recognitions, test/ QA and t2i conditions, images, edits.")
    e.add_argument("directory", help="where to write (must be empty unless --overwrite)")
    e.add_argument("--concept", nargs="+", metavar="NAME|CARD", help="concept names or card paths (default: all)")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty directory")
    e.add_argument("--image-size", type=int, default=32, help="image size in pixels (default 32)")
    e.set_defaults(handler=handle_world_export)


def handle_world_export(args) -> int:
    from .unifybench import export_world

    folders = export_world(args.directory, args.concept, overwrite=args.overwrite, image_size=args.image_size)
    print(f"wrote {len(folders)} concepts to {args.directory}: {', '.join(f.name for f in folders)}")
    return 0


# --------------------------------------------------------------------------- judge


def add_judge(subparsers) -> None:
    p = subparsers.add_parser("judge", help="train or evaluate the world's exact judge",
                              description="The judge reads every attribute of a render; it is shipped in data/judge/.")
    sub = p.add_subparsers(dest="judge_command", required=True)
    t = sub.add_parser("train", help="retrain the judge and write judge.safetensors + judge.json")
    t.add_argument("--out", default=None, help="output directory (default: the shipped data/judge)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(handler=handle_judge_train)
    e = sub.add_parser("eval", help="evaluate a saved judge on fresh held-out renders (clean and degraded)")
    e.add_argument("--path", default=None, help="judge directory (default: the shipped one)")
    e.add_argument("--seed", type=int, default=1)
    e.set_defaults(handler=handle_judge_eval)


def handle_judge_train(args) -> int:
    from . import judge as J

    model, metrics = J.train_judge(seed=args.seed)
    out = J.save_judge(model, args.out or J.DEFAULT_DIR, metrics, seed=args.seed,
                       command="unikit " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("unikit") else
                       f"unikit judge train --seed {args.seed}")
    print(J.format_metrics(metrics))
    print(f"trained in {metrics['train_seconds']} s; wrote {out / J.WEIGHTS_FILE} and {out / J.META_FILE}")
    return 0


def handle_judge_eval(args) -> int:
    from . import judge as J

    print(J.format_metrics(J.evaluate_judge(J.load_judge(args.path), seed=args.seed)))
    return 0


# --------------------------------------------------------------------------- pretrain


def add_pretrain(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain the base model (image tokenizer, then the rest) on the world",
                              description="Pretrain a small Janus on the world's generic objects; writes the model, "
                                          "metrics.json, history.json and MODEL_CARD.md to --out.")
    p.add_argument("--profile", default="teach",
                   help="smoke (seconds), teach (lesson 01's demonstration, minutes), ship (hours), "
                        "ship2 (ship with the encoder frozen in phase 3), ship3 (ship2 with a language model twice "
                        "as deep), ship4 (ship2 with twice the model steps), ship5 (ship4's finished model, "
                        "--phases-from it, then the facts phase), ship6 (ship5's recipe from nothing in "
                        "bfloat16 autocast, 36000 model steps), ship7 (ship6 that also learns to remove and "
                        "replace the object) or ship8 (ship7, then the drawing phase)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the cache)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="data-parallel one-thread workers (default: 2 on a machine with 2 cores or more)")
    p.add_argument("--finish", action="store_true",
                   help="score and write an interrupted run's last checkpoint as it is (no more training)")
    p.add_argument("--rescore", action="store_true",
                   help="no training: re-measure the finished model in --out with the current judge (after the "
                        "judge was retrained) and rewrite its metrics.json and MODEL_CARD.md")
    p.add_argument("--phases-from", nargs="+", metavar="DIR", default=(),
                   help="reuse finished phases from these directories when their settings match: tokenizer, "
                        "vision, align (benchmarks/probe_base.py writes them), or a finished model (every phase "
                        "it ran, e.g. ship7's model for ship8, which adds the drawing phase)")
    p.set_defaults(handler=handle_pretrain)


def handle_pretrain(args) -> int:
    from .distributed import default_workers
    from .pretrain import TARGETS, pretrain, rescore

    if args.rescore:
        if not args.out:
            raise SystemExit("--rescore needs --out DIR: the finished model to re-measure")
        metrics = rescore(args.out)
        print(f"re-measured {args.out} with the current judge; metrics.json and MODEL_CARD.md rewritten")
    else:
        workers = args.workers if args.workers is not None else default_workers()
        _, metrics, _ = pretrain(args.profile, out=args.out, resume=args.resume, seed=args.seed, workers=workers,
                                 phases_from=args.phases_from, finish=args.finish)
    for k, v in metrics.items():
        if isinstance(v, float):
            target = f"  (target >= {TARGETS[k]})" if k in TARGETS else ""
            print(f"{k:>16}: {v:.3f}{target}")
    print(f"wall time: {metrics['seconds'] / 60:.1f} min")
    return 0


# --------------------------------------------------------------------------- personalize and bench


def add_personalize(subparsers) -> None:
    p = subparsers.add_parser("personalize", help="teach the base model a concept with one method",
                              description="Train concept tokens for --concept with --method on the base model; "
                                          "writes one token file per concept (safetensors) and metrics.json.")
    p.add_argument("--concept", nargs="+", required=True, metavar="NAME|CARD|FOLDER",
                   help="concept names, card paths, or folders of your own photos (UnifyBench's per-concept layout, "
                        "or photos + negatives/ + card.json: see unikit.photos)")
    p.add_argument("--method", required=True, help="text_prompt, understanding_only, generation_only, separate, unictokens, ...")
    p.add_argument("--profile", choices=PROFILES, default="teach")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", metavar="DIR", help="base model directory (default: the shipped data/base_model)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: personalized/<method>-seed<seed>)")
    p.add_argument("--no-eval", action="store_true", help="skip the UnifyBench-mini evaluation")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:1, mps or cpu")
    p.add_argument("--dtype", default="float32", help="the model's weights: float32, bfloat16 or float16 "
                                                      "(concept rows and their optimizer state stay float32)")
    p.add_argument("--plan", action="store_true", help="print the memory and time estimate and stop")
    p.add_argument("--scorer-path", nargs="+", default=[], metavar="KIND=DIR",
                   help="local scorer checkpoints for photo concepts: clip=DIR (CLIP-I, CLIP-T), dino=DIR (DINO)")
    p.set_defaults(handler=handle_personalize)


def handle_personalize(args) -> int:
    import json
    from pathlib import Path

    from .cache import write_json
    from .methods import check_method, personalize
    from .concepts import load_concept
    from .photos import as_concept
    from .model import load_model
    from .photos import is_concept_folder
    from .planner import check, plan
    from .runtime import parse_dtype, pick_device
    from .profiles import schedule
    from .token_files import save_concept_tokens
    from .tokens import default_group_sizes

    check_method(args.method)
    cards = [c if is_concept_folder(c) else load_concept(c) for c in args.concept]  # bad names fail first
    device, dtype = pick_device(args.device), parse_dtype(args.dtype)
    out = Path(args.out or f"personalized/{args.method}-seed{args.seed}")
    scorers = {}
    if args.scorer_path:
        from .scorers import load_scorers
        scorers = load_scorers(args.scorer_path, device)
    um = load_model(args.base, device=device, dtype=dtype)
    cards = [as_concept(c, um.image_size) for c in cards]  # photo folders read at the model's size
    estimate = plan(um.model.config, schedule(args.profile), args.method, len(cards), device, dtype,
                    group_sizes=default_group_sizes(um))
    print(estimate)
    if args.plan:
        return 0
    check(estimate)
    pers = personalize(um, cards, args.method, args.profile, seed=args.seed, checkpoint=out / "checkpoint",
                       progress=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, ct in pers.tokens.items():
        save_concept_tokens(ct, out / f"{name}.safetensors",
                            extra={"method": args.method, "seed": args.seed, "profile": args.profile,
                                   "prompting": vars(pers.prompting)})
    metrics = {"method": args.method, "seed": args.seed, "profile": args.profile, "train_seconds": round(pers.seconds, 1),
               "curves": pers.curves}
    if not args.no_eval:
        from .evaluate import evaluate_personalized
        from .judge import load_judge
        sched = schedule(args.profile)
        rows = evaluate_personalized(um, pers, load_judge(progress=False), n_images=sched.eval_images,
                                     guidance=sched.guidance, seed=1000 + args.seed, scorers=scorers)
        metrics["rows"] = rows
        for r in rows:
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
    write_json(out / "metrics.json", metrics)
    print(f"wrote {out}")
    return 0


def add_bench(subparsers) -> None:
    p = subparsers.add_parser("bench", help="UnifyBench-mini: methods x concepts x seeds, with 95%% intervals (concept as the unit)",
                              description="Personalize every concept with every method for each seed (a fresh base "
                                          "model each time) and score them; writes results.json and a CSV beside it.")
    p.add_argument("--profile", choices=PROFILES, default="teach")
    p.add_argument("--methods", nargs="+", metavar="M", help="default: all methods")
    p.add_argument("--concepts", nargs="+", metavar="NAME", help="default: all concepts in data/concepts")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--base", metavar="DIR", help="base model directory (default: the shipped data/base_model)")
    p.add_argument("--out", metavar="FILE.json", help="default: <cache>/bench/<profile>.json (the lessons read it)")
    p.add_argument("--fresh", action="store_true", help="ignore finished runs kept from an interrupted bench")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel 1-thread worker processes (default 2: faster than one 2-thread process on 2 cores; "
                        "1 = in this process; under accelerate launch, 1: each launched process runs its own jobs)")
    p.add_argument("--concepts-per-job", type=int, default=None, metavar="K",
                   help="concepts trained together in one job (default: all); 1 spreads concepts over processes")
    p.set_defaults(handler=handle_bench)


def handle_bench(args) -> int:
    from .benchmark import bench, results_path
    from .stats import table

    out = args.out or results_path(args.profile)
    command = "unikit " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("unikit") else \
        f"unikit bench --profile {args.profile} --seeds {args.seeds}"
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    workers = args.workers if args.workers is not None else (1 if launched else 2)
    result = bench(args.profile, args.methods, args.concepts, args.seeds, out=out, base=args.base,
                   resume=not args.fresh, command=command, workers=workers, concepts_per_job=args.concepts_per_job)
    if not result:  # a launched process other than the first: the first prints and writes
        return 0
    print(table(result["summary"]))
    print(f"wrote {out} and its .csv ({result['seconds'] / 60:.1f} min)")
    return 0


# --------------------------------------------------------------------------- registry
# To add a subcommand: write `add_<name>(subparsers)` (it adds a parser and calls
# `set_defaults(handler=...)`), keep heavy imports inside the functions so that
# `unikit --help` stays fast, and append it to SUBCOMMANDS below.

SUBCOMMANDS = [
    add_run,
    add_book,
    add_world,
    add_judge,
    add_pretrain,
    add_personalize,
    add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unikit", description="Teach and probe personalized unified multimodal models.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def _is_unikit_error(e: BaseException) -> bool:
    """The kit's own errors (their messages name the fix); anything else is a bug and keeps its traceback."""
    return isinstance(e, (ValueError, RuntimeError)) and type(e).__module__.split(".")[0] == "unikit"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        set_threads()  # UNIKIT_THREADS, if set
        code = args.handler(args)
    except (ValueError, RuntimeError) as e:
        if not _is_unikit_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
