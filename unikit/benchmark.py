"""The bench: every method x seed over the concepts, as worker jobs (processes, or ranks under
``accelerate launch``), resumable from partial files, written atomically as ``<profile>.json``
and ``.csv``; and the results files the lessons read (:func:`load_results`).

Each row is :func:`unikit.evaluate.evaluate_personalized`'s; the summary is
:func:`unikit.stats.summary`'s (the concept as the unit, seeds nested in it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import model as M
from .cache import atomic_path, write_json

from . import stats
from .evaluate import INFERENCE_VARIANTS, METRICS, BenchError, evaluate_personalized
from .methods import token_layout
from .replay import TASKS as REPLAY_TASKS



def bench_job(profile: str, method: str, seed: int, concepts: Sequence[str], base=None, judge=None,
              threads: int | None = None, also: Sequence[str] = (), device=None) -> list[dict]:
    """One (method, seed) of the bench: a fresh base model, personalize ``concepts`` together, score them.
    ``also``: inference variants of ``method`` (:data:`INFERENCE_VARIANTS`) scored on the same tokens."""
    from .judge import load_judge
    from .methods import personalize
    from .profiles import schedule

    if threads:
        torch.set_num_threads(threads)
    judge = judge or load_judge(progress=False)
    sched = schedule(profile)
    t = time.time()
    um = M.load_model(base, device=device or "cpu")
    pers = personalize(um, concepts, method, profile, seed=seed, progress=False)
    rows = evaluate_personalized(um, pers, judge, n_images=sched.eval_images, guidance=sched.guidance, seed=1000 + seed)
    for variant in also:
        if INFERENCE_VARIANTS.get(variant) != method:
            raise BenchError(f"{variant} is not an inference variant of {method}")
        pers.method, pers.replay = variant, variant.endswith("_replay")
        rows += evaluate_personalized(um, pers, judge, n_images=sched.eval_images, guidance=sched.guidance,
                                      seed=1000 + seed)
    for r in rows:
        r.update(seed=seed, train_seconds=round(pers.seconds, 1), job_seconds=round(time.time() - t, 1))
    return rows


def exit_with_parent(parent_pid: int) -> None:
    """Bench worker initializer: exit when the bench process is gone (killed, not interrupted), so an
    abandoned bench does not leave workers computing for minutes on a 2-core machine."""
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _resumed_rows(partial: Path, run_id: dict) -> tuple[list[dict], float]:
    """The finished rows an interrupted bench left in ``partial`` and the seconds it had run, if
    it ran what this bench runs (same profile, base model and concepts); otherwise a
    :class:`BenchError` naming the difference."""
    saved = json.loads(partial.read_text())
    if not isinstance(saved, dict) or "rows" not in saved:
        raise BenchError(f"{partial} was written by an older unikit and does not say which base model it "
                         f"scored; delete it (or run with --fresh) to start the bench afresh")
    if "concepts_per_job" not in saved and isinstance(saved.get("concepts"), list):
        saved["concepts_per_job"] = len(saved["concepts"])  # written before shards: every concept in one job
    differ = [k for k in run_id if saved.get(k) != run_id[k]]
    if differ:
        raise BenchError(f"{partial} holds an interrupted bench with another {' and '.join(differ)} "
                         f"({', '.join(f'{k}={saved.get(k)!r}' for k in differ)}); delete it (or run with "
                         f"--fresh) to start afresh, or resume it with its own settings")
    return saved["rows"], float(saved.get("seconds", 0.0))


def _launched() -> tuple[int, int, object]:
    """``(rank, world size, accelerate.PartialState or None)``: under ``accelerate launch`` (or
    torchrun) with several processes, this process's place; otherwise ``(0, 1, None)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from accelerate import PartialState

    # without a GPU, accelerate only forms a process group when asked for CPU (then gloo)
    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state


def _partial_files(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.stem + ".partial*.json"))


def bench(profile: str = "teach", methods: Sequence[str] | None = None, concepts: Sequence[str] | None = None,
          seeds: int = 3, out=None, base=None, judge=None, resume: bool = True, progress: bool = True,
          command: str = "", workers: int = 1, concepts_per_job: int | None = None) -> dict:
    """Run ``methods`` x ``seeds`` over ``concepts`` (names of shipped cards, or paths of card
    files) on a fresh copy of the base model each time.

    A job is one (method, seed) and a shard of ``concepts_per_job`` concepts (default: all of
    them), which train together in one loop. ``workers`` > 1 runs that many jobs at once in
    separate 1-thread processes (on 2 cores, two 1-thread workers beat one 2-thread process for
    models this small: ``benchmarks/bench_personalize.py``). Under ``accelerate launch --multi_gpu
    --num_processes N`` (N GPUs on NCCL, or N CPU processes on gloo) process r runs jobs r, r+N, ... on its own
    device; the first merges them. Results depend on the shards, never on how many processes ran them.

    Writes ``out`` (``results.json``: ``{"profile", "rows", "summary", ...}``) and ``out`` with
    suffix ``.csv`` (one row per method, concept and seed). Finished jobs are kept in
    ``<out>.partial.json`` (``.partial.rank<r>.json`` per launched process); with ``resume`` a
    re-run skips them. Returns the result (on a launched process other than the first: ``{}``).
    """
    from .concepts import available_concepts, load_concepts
    from .methods import METHODS, check_method

    methods = list(methods or METHODS)
    for m in methods:
        check_method(m)
    concepts = list(concepts or available_concepts())
    if not concepts:
        raise BenchError("no concepts to bench")
    names = [c.name for c in load_concepts(concepts)]  # unknown names and bad cards fail here, before training
    if seeds < 1:
        raise BenchError(f"seeds={seeds}: need at least 1")
    if workers < 1:
        raise BenchError(f"workers={workers}: need at least 1")
    if concepts_per_job is not None and concepts_per_job < 1:
        raise BenchError(f"concepts_per_job={concepts_per_job}: need at least 1 (or None: all together)")
    rank, world_size, state = _launched()
    if state is not None and workers > 1:
        raise BenchError("under accelerate launch each process runs its jobs itself: drop --workers "
                         "(the launcher's --num_processes sets the parallelism)")
    if state is not None and state.device.type == "cpu":
        torch.set_num_threads(1)  # CPU processes side by side: one thread each, as the bench's workers
    out = Path(out) if out else Path("results.json")
    if out.suffix != ".json":
        raise BenchError(f"--out {out}: give a .json path (the CSV is written beside it)")
    from .tokens import base_model_hash
    base_um = M.load_model(base)
    base_hash, base_metrics = base_model_hash(base_um), M.base_metrics(base_um)
    partial = out.with_suffix(".partial.json" if state is None else f".partial.rank{rank}.json")
    k = concepts_per_job or len(concepts)
    shards = [(concepts[i:i + k], names[i:i + k]) for i in range(0, len(concepts), k)]
    run_id = {"profile": profile, "base_model_hash": base_hash, "tokens": token_layout(base_um),
              "replay": list(REPLAY_TASKS), "concepts": concepts, "concepts_per_job": k}
    rows, before = [], 0.0
    for f in (_partial_files(out) if resume else []):
        got, secs = _resumed_rows(f, run_id)
        rows += got
        before = max(before, secs)
    rows = list({(r["method"], r["seed"], r["concept"]): r for r in rows}.values())
    done = {(r["method"], r["seed"], r["concept"]) for r in rows}
    if state is not None:
        # every process reads the partial files before any writes one, so all derive the same job list
        state.wait_for_everyone()

    def is_done(m, s, shard_names):
        return all((m, s, n) in done for n in shard_names)

    # one job per training: inference variants ride along with the method they share training with
    jobs = []
    for s in range(seeds):
        for m in methods:
            for shard, shard_names in shards:
                base_of = INFERENCE_VARIANTS.get(m)
                if is_done(m, s, shard_names) or (base_of in methods and not is_done(base_of, s, shard_names)):
                    continue
                also = [v for v, b in INFERENCE_VARIANTS.items()
                        if b == m and v in methods and not is_done(v, s, shard_names)]
                jobs.append((m, s, shard, also))
    jobs = jobs[rank::world_size]
    t0 = time.time()

    def finished(method, seed, new):
        rows.extend(new)
        write_json(partial, {**run_id, "rows": rows, "seconds": round(before + time.time() - t0, 1)})
        if progress:
            for m in dict.fromkeys(r["method"] for r in new):
                mine = [r for r in new if r["method"] == m]
                print(f"[bench] {m:>24} seed {seed}: {mine[0]['job_seconds']:.0f} s "
                      f"(rec {np.mean([r['rec'] for r in mine]):.2f}, parg {np.mean([r['parg'] for r in mine]):.2f}, "
                      f"edit {np.mean([r.get('edit', 0) for r in mine]):.2f})", flush=True)

    if workers == 1:
        from .judge import load_judge
        judge = judge or load_judge(progress=False)
        device = state.device if state is not None else None
        for method, seed, shard, also in jobs:
            finished(method, seed, bench_job(profile, method, seed, shard, base, judge, also=also, device=device))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(bench_job, profile, m, s, shard, base, None, 1, also): (m, s)
                       for m, s, shard, also in jobs}
            for f in as_completed(futures):
                finished(*futures[f], f.result())
    if state is not None:
        write_json(partial, {**run_id, "rows": rows, "seconds": round(before + time.time() - t0, 1)})
        state.wait_for_everyone()
        if not state.is_main_process:
            return {}
        rows = []
        for f in _partial_files(out):
            rows += _resumed_rows(f, run_id)[0]
        rows = list({(r["method"], r["seed"], r["concept"]): r for r in rows}.values())
    order = {(m, s): i for i, (m, s) in enumerate((m, s) for s in range(seeds) for m in methods)}
    rows.sort(key=lambda r: (order.get((r["method"], r["seed"]), 1 << 30), names.index(r["concept"])))
    result = {"profile": profile, "methods": methods, "concepts": concepts, "seeds": seeds,
              "base_model": str(base or M.DEFAULT_MODEL_DIR.name),
              "base_model_hash": base_hash, "tokens": run_id["tokens"], "replay": run_id["replay"], "rows": rows,
              "summary": stats.summary(rows, base_metrics),
              "seconds": round(before + time.time() - t0, 1),  # interrupted runs included, up to their last job
              "command": command, "workers": workers, "processes": world_size, "concepts_per_job": k,
              "torch_threads": 1 if workers > 1 else torch.get_num_threads()}
    write_json(out, result)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        tmp.write_text(rows_to_csv(rows))
    for f in _partial_files(out):
        f.unlink(missing_ok=True)
    return result


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    cols = ["method", "concept", "seed", *METRICS, "train_seconds", "job_seconds"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in cols})
    return buf.getvalue()


def compare(rows: list[dict], a: str, b: str, metric: str, **options) -> dict:
    """Does method ``a`` beat method ``b`` on ``metric``? :func:`unikit.stats.compare`: paired on the
    (concept, seed) cells both have, a hierarchical bootstrap interval of the mean difference and a
    sign-flip p-value over concepts; "not measurable here" when both sit at the metric's floor.

    Returns ``{"a", "b", "metric", "a_mean", "b_mean", "diff", "ci", "verdict", "sentence", ...}``
    (``verdict``: "a > b", "a < b", "no clear difference" or "not measurable here"); ``options``
    go to :func:`unikit.stats.compare` (``base_metrics``, ``alpha``, ``n_boot``, ``seed``, ...).
    For the k claims of a lesson, :func:`unikit.stats.compare_claims` applies Holm's correction.
    """
    return stats.compare(rows, a, b, metric, **options)


SHIPPED_RESULTS = Path(__file__).resolve().parent.parent / "data" / "bench"


def results_path(profile: str) -> Path:
    """Where ``unikit bench`` writes by default: ``<cache>/bench/<profile>.json``."""
    from .cache import cache_root
    return cache_root() / "bench" / f"{profile}.json"


def load_results(profile: str = "teach", base=None) -> dict | None:
    """The latest full bench results for ``profile``: the cache's, else the copy shipped in
    ``data/bench/`` (made by the command in its ``"command"`` field), else None.

    With ``base`` (a :class:`~unikit.model.UnifiedModel`) only results made on that base model
    count (its :func:`~unikit.tokens.base_model_hash`); stale ones are named and passed over,
    so a lesson never quotes a table made on another model."""
    from .tokens import base_model_hash

    want = base_model_hash(base) if base is not None else None
    now_made = None if base is None else {  # what a result records of how it was made: (now, what differs)
        "tokens": (token_layout(base), "its concept tokens were laid out or started otherwise"),
        "replay": (list(REPLAY_TASKS), "its replay served other tasks")}
    for path in (results_path(profile), SHIPPED_RESULTS / f"{profile}.json"):
        if path.is_file():
            data = json.loads(path.read_text())
            if want is not None and data.get("base_model_hash") != want:
                print(f"(passing over {path}: made on base model {data.get('base_model_hash', 'unrecorded')}, "
                      f"not on this one, {want}; re-run `{data.get('command') or 'unikit bench'}`)")
                continue
            stale = [(what, k) for k, (now, what) in (now_made or {}).items() if data.get(k) != now]
            if stale:
                print(f"(passing over {path}: " + "; ".join(f"{what} ({data.get(k, 'unrecorded')}, now "
                                                            f"{now_made[k][0]})" for what, k in stale)
                      + f"; re-run `{data.get('command') or 'unikit bench'}`)")
                continue
            data["path"] = str(path)
            return data
    return None


