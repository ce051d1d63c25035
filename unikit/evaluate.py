"""UnifyBench-mini: every method scored the same way, by exact answers and the judge.

Per concept (test data never trained on, :func:`unikit.concepts.concept_data`):

========================= ===================================================================
``rec_pos``, ``rec_neg``  recognition recall on test positives / on random + hard negatives
``rec``                   their mean (UnifyBench's "weighted" accuracy)
``rec_hard``              recall on the hard negatives alone (same class, colour, pattern; other mark)
``vqa``                   exact-match answers to questions about test images
``text_qa``               exact-match answers to text-only questions (the facts)
``gen_identity``          generated images the judge reads as *this* concept (plain and context prompts)
``gen_similarity``        judge-feature cosine between generated and training images (CLIP-I stand-in)
``parg``                  knowledge-driven generation: the item the fact names is drawn right
``parg_identity``         ... and the subject is the concept
``edit``                  personalized editing: the edited image reads exactly as the target
========================= ===================================================================

:func:`bench` runs methods x seeds over concepts; its summary (:func:`unikit.stats.summary`)
gives each mean a 95% interval with the concept as the unit (seeds nested in it) and the
metric's floor and ceiling; :mod:`unikit.claims` judges the papers' claims on its rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import model as M
from . import world
from .cache import atomic_path, write_json
from .judge import expected_reading

METRICS = ("rec_pos", "rec_neg", "rec", "rec_hard", "vqa", "text_qa", "gen_identity", "gen_similarity", "parg",
           "parg_identity", "edit", "tok_identity", "tok_mark")
CHUNK = 64


def answers(um, images: list, prompts: list[str], max_new_tokens: int = 4) -> list[str]:
    out = []
    for i in range(0, len(prompts), CHUNK):
        ims = images[i:i + CHUNK]
        out += M.answer(um, ims if any(x is not None for x in ims) else None, prompts[i:i + CHUNK],
                        max_new_tokens=max_new_tokens)
    return out


def generate_batched(um, prompts: list[str], n: int, guidance: float | None, seed: int) -> np.ndarray:
    per = max(1, CHUNK // max(1, n))
    parts = [M.generate_images(um, prompts[i:i + per], n=n, guidance=guidance, seed=seed + i)
             for i in range(0, len(prompts), per)]
    return np.concatenate(parts) if parts else np.zeros((0, um.image_size, um.image_size, 3), np.uint8)


@torch.no_grad()
def evaluate_personalized(um, pers, judge, n_images: int = 4, guidance: float | None = None, seed: int = 0,
                          with_images: bool = False,
                          parts: Sequence[str] = ("understanding", "generation", "editing"),
                          scorers: dict | None = None) -> list[dict]:
    """One row per concept: ``{"method", "concept", <metric>: value}`` (metrics in [0, 1],
    ``gen_similarity`` in [-1, 1]). World concepts are scored by ``judge``; photo concepts by
    ``scorers`` (:func:`evaluate_photo_concept`). With ``with_images`` each row also carries ``"images"``:
    ``{prompt: uint8[n, 32, 32, 3]}`` for the lessons' grids (and ``"replay"`` traces, with replay).
    ``parts`` limits the evaluation (understanding alone takes a second or two)."""
    from .concepts import ConceptCard, concept_data

    rows = []
    for card in pers.cards:
        if not isinstance(card, ConceptCard):
            rows.append(evaluate_photo_concept(um, pers, card, scorers or {}, n_images, guidance, seed, parts))
            continue
        d = concept_data(card)
        imgs = {s: d.images(s, um.image_size) for s in ("train", "test", "test_random", "test_hard")}
        row = {"method": pers.method, "concept": card.name}
        if "understanding" in parts:
            row.update(_understanding_metrics(um, pers, card, d, imgs))
            if card.name in pers.tokens:
                from .semantics import token_semantics
                row.update(token_semantics(um, pers.tokens[card.name], card))
        if "generation" in parts:
            row.update(_generation_metrics(um, pers, card, d, imgs, judge, n_images, guidance, seed, with_images))
        if "editing" in parts and d.edits:
            src = world.render_many([e["source"] for e in d.edits], um.image_size)
            out = M.edit_image(um, src, [pers.editing_prompt(card.name, e["instruction"]) for e in d.edits],
                               guidance=guidance, seed=seed)
            reads = judge.read(out)
            row["edit"] = float(np.mean([r == expected_reading(e["target"]) for r, e in zip(reads, d.edits)]))
            if with_images:
                row["edits"] = {"source": src, "result": out,
                                "target": world.render_many([e["target"] for e in d.edits], um.image_size),
                                "instruction": [e["instruction"] for e in d.edits]}
        rows.append(row)
    return rows


def _understanding_metrics(um, pers, card, d, imgs) -> dict:
    row = {}
    rec = d.test_recognition
    ans = answers(um, [imgs[r["image"][0]][r["image"][1]] for r in rec],
                   [pers.understanding_prompt(card.name, r["question"]) for r in rec], 2)
    right = np.array([a == r["answer"] for a, r in zip(ans, rec)])
    pos = np.array([r["answer"] == "yes" for r in rec])
    hard = np.array([r["image"][0] == "test_hard" for r in rec])
    row["rec_pos"], row["rec_neg"] = float(right[pos].mean()), float(right[~pos].mean())
    row["rec"] = (row["rec_pos"] + row["rec_neg"]) / 2
    row["rec_hard"] = float(right[hard].mean())
    ans = answers(um, [imgs["test"][q["image"][1]] for q in d.vqa],
                   [pers.understanding_prompt(card.name, q["question"]) for q in d.vqa])
    row["vqa"] = float(np.mean([a == q["answer"] for a, q in zip(ans, d.vqa)]))
    ans = answers(um, [None] * len(d.text_qa), [pers.understanding_prompt(card.name, q["question"]) for q in d.text_qa])
    row["text_qa"] = float(np.mean([a == q["answer"] for a, q in zip(ans, d.text_qa)]))
    return row


def _generation_metrics(um, pers, card, d, imgs, judge, n_images, guidance, seed, with_images) -> dict:
    from .judge import similarity

    row = {}
    prompts = [t["prompt"] for t in d.t2i]
    requests = [pers.generation_request(um, card.name, p) for p in prompts]
    gen = generate_batched(um, [r[0] for r in requests], n_images, guidance, seed)
    gen = gen.reshape(len(prompts), n_images, *gen.shape[1:])
    plain = [i for i, t in enumerate(d.t2i) if t["kind"] in ("plain", "context")]
    know = [i for i, t in enumerate(d.t2i) if t["kind"] == "knowledge"]
    ident = [judge.identify(gen[i], [card]) for i in plain]
    row["gen_identity"] = float(np.mean([x == card.name for xs in ident for x in xs]))
    row["gen_similarity"] = similarity(judge, gen[0], imgs["train"])
    hits, hits_id = [], []
    for i in know:
        reads = judge.read(gen[i])
        names = judge.identify(gen[i], [card])
        for r, name in zip(reads, names):
            ok = all(r[k] == v for k, v in d.t2i[i]["expect"].items())
            hits.append(ok)
            hits_id.append(ok and name == card.name)
    row["parg"], row["parg_identity"] = float(np.mean(hits)), float(np.mean(hits_id))
    if with_images:
        row["images"] = {p: gen[i] for i, p in enumerate(prompts)}
        row["replay"] = {p: r[1] for p, r in zip(prompts, requests) if r[1] is not None}
    return row


# --------------------------------------------------------------------------- the bench


class BenchError(ValueError):
    """A bench request that cannot run (unknown method, empty concept list, bad output path)."""


INFERENCE_VARIANTS = {"decoupled_replay": "decoupled", "coupled_replay": "coupled"}
"""Methods that differ from another only at inference (replay): the bench trains once, scores both."""


def bench_job(profile: str, method: str, seed: int, concepts: Sequence[str], base=None, judge=None,
              threads: int | None = None, also: Sequence[str] = (), device=None) -> list[dict]:
    """One (method, seed) of the bench: a fresh base model, personalize ``concepts`` together, score them.
    ``also``: inference variants of ``method`` (:data:`INFERENCE_VARIANTS`) scored on the same tokens."""
    from .judge import load_judge
    from .methods import personalize
    from .stages import schedule

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


def _exit_with_parent(parent_pid: int) -> None:
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
    run_id = {"profile": profile, "base_model_hash": base_hash, "concepts": concepts, "concepts_per_job": k}
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
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent,
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
    from .stats import summary
    result = {"profile": profile, "methods": methods, "concepts": concepts, "seeds": seeds,
              "base_model": str(base or M.DEFAULT_MODEL_DIR.name),
              "base_model_hash": base_hash, "rows": rows, "summary": summary(rows, base_metrics),
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
    from . import stats

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
    for path in (results_path(profile), SHIPPED_RESULTS / f"{profile}.json"):
        if path.is_file():
            data = json.loads(path.read_text())
            if want is not None and data.get("base_model_hash") != want:
                print(f"(passing over {path}: made on base model {data.get('base_model_hash', 'unrecorded')}, "
                      f"not on this one, {want}; re-run `{data.get('command') or 'unikit bench'}`)")
                continue
            data["path"] = str(path)
            return data
    return None


# --------------------------------------------------------------------------- photo concepts


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def answer_matches(answer: str, expected: str) -> bool:
    """A free-text answer is right when it contains every word of the expected one
    (``"It is brown."`` answers ``"brown"``); yes/no answers are read by :func:`parse_yes_no`."""
    from .scorers import parse_yes_no

    if expected.lower() in ("yes", "no"):
        return parse_yes_no(answer) == expected.lower()
    got = set(_words(answer))
    return bool(_words(expected)) and all(w in got for w in _words(expected))


def evaluate_photo_concept(um, pers, concept, scorers: dict, n_images: int = 4, guidance: float | None = None,
                           seed: int = 0, parts: Sequence[str] = ("understanding", "generation")) -> dict:
    """A photo concept's row, with the bench's metric names where they apply:

    - ``rec_pos``, ``rec_neg``, ``rec`` (and ``rec_hard`` when the folder has hard negatives) on
      its held-out ``test/`` photos; ``vqa`` and ``text_qa`` when it has such questions; answers
      read by :func:`answer_matches`;
    - with ``scorers`` (``{"clip": ImageScorer, "dino": ImageScorer}``, either or both):
      ``gen_similarity`` (DINO if given, else CLIP-I: the generated images of its plain and
      context prompts against its training photos), ``clip_i``, ``dino`` and ``clip_t`` (each
      image against its own prompt, the concept named by its class word). ``row["scorers"]``
      records which checkpoint made which metric. Editing is not scored (no truth for a photo).
    """
    bc = concept.bench
    row = {"method": pers.method, "concept": concept.name, "source": concept.source}
    if "understanding" in parts and bc.test_recognition:
        rec = bc.test_recognition
        ans = answers(um, [bc.image(r["image"]) for r in rec],
                      [pers.understanding_prompt(concept.name, r["question"]) for r in rec], 4)
        right = np.array([answer_matches(a, r["answer"]) for a, r in zip(ans, rec)])
        pos = np.array([r["answer"] == "yes" for r in rec])
        hard = np.array([r["image"][0] == "test_hard" for r in rec])
        if pos.any() and (~pos).any():
            row["rec_pos"], row["rec_neg"] = float(right[pos].mean()), float(right[~pos].mean())
            row["rec"] = (row["rec_pos"] + row["rec_neg"]) / 2
        if hard.any():
            row["rec_hard"] = float(right[hard].mean())
    if "understanding" in parts:
        for key, qs, with_image in (("vqa", bc.vqa, True), ("text_qa", bc.text_qa, False)):
            if qs:
                ans = answers(um, [bc.image(q["image"]) if with_image else None for q in qs],
                              [pers.understanding_prompt(concept.name, q["question"]) for q in qs], 8)
                row[key] = float(np.mean([answer_matches(a, q["answer"]) for a, q in zip(ans, qs)]))
    if "generation" in parts and scorers:
        prompts = [t["prompt"] for t in bc.t2i if t.get("kind", "plain") in ("plain", "context")]
        gen = generate_batched(um, [pers.generation_request(um, concept.name, p)[0] for p in prompts],
                               n_images, guidance, seed)
        made = {}
        for name, scorer in scorers.items():
            made[name] = scorer.source
            sim = scorer.image_similarity(gen, bc.images["train"])
            row["clip_i" if name == "clip" else name] = sim
            if name == "clip":
                captions = [concept.in_words(p, "a") for p in prompts for _ in range(n_images)]
                row["clip_t"] = scorer.text_similarity(gen, captions)
        ident = "dino" if "dino" in scorers else "clip"
        row["gen_similarity"] = row["dino" if ident == "dino" else "clip_i"]
        row["scorers"] = {"gen_similarity": f"{ident}:{made[ident]}", **made}
    return row
