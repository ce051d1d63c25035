"""Measuring a pretrained model: judged quality on held-out examples (:func:`evaluate_base`),
the encoder's linear probe, the sampler's calibration, and the quick re-check of a shipped
model (:func:`quality_check`)."""

from __future__ import annotations

import random

import numpy as np
import torch

from .. import model as M
from .. import preamble as P
from .. import vq as V
from .. import world
from .config import CAPTION_Q, PretrainConfig, PretrainError, SAME_Q
from .data import YESNO_ORDER, attribute_example, recognition_example, same_object_pair


@torch.no_grad()
def encoder_features(um: M.UnifiedModel, images, batch: int = 250) -> torch.Tensor:
    """The mean over positions of the aligner's outputs (what the language model reads): ``[B, D]``."""
    janus = um.model.model
    out = []
    for i in range(0, len(images), batch):
        enc = janus.vision_model(M.pixel_values(um, images[i:i + batch])).last_hidden_state
        out.append(janus.aligner(enc).mean(1))
    return torch.cat(out)


def encoder_probe(um: M.UnifiedModel, n_train: int = 2000, n_test: int = 1000, seed: int = 4242) -> dict:
    """A linear probe per attribute of :data:`world.ATTRIBUTES` on the frozen understanding encoder:
    logistic regression fitted on ``n_train`` fresh renders, scored on ``n_test`` others (held-out
    shape+colour pairs excluded). Returns ``{"encoder_probe_<attribute>": accuracy}``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    was = um.model.training
    um.model.eval()
    rng = random.Random(seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(n_train + n_test)]
    feats = encoder_features(um, world.render_many(scenes)).double().numpy()
    scaler = StandardScaler().fit(feats[:n_train])
    feats = scaler.transform(feats)
    out = {}
    for a in world.ATTRIBUTES:
        y = np.array([sc.labels()[a] for sc in scenes])
        if len(set(y[:n_train])) < 2:
            out[f"encoder_probe_{a}"] = float(np.mean(y[n_train:] == y[0]))
            continue
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(feats[:n_train], y[:n_train])
        out[f"encoder_probe_{a}"] = float(clf.score(feats[n_train:], y[n_train:]))
    um.model.train(was)
    return out


def all_right(read: dict, expected: dict) -> bool:
    return all(read[k] == v for k, v in expected.items())


@torch.no_grad()
def tokenizer_quality(um: M.UnifiedModel, judge, n: int = 200, seed: int = 12345, batch: int = 50) -> dict:
    """The tokenizer's round trip on ``n`` fresh renders (held-out pairs included):
    ``vq_recon_judge`` (fraction the judge reads right in every attribute), its ceiling
    ``vq_original_judge`` (the same judge on the renders themselves), ``vq_recon_mse`` (pixels
    in [0, 1]) and ``vq_codes_used`` (codebook entries the renders use)."""
    from ..judge import expected_reading

    rng = random.Random(seed)
    pool = [world.random_scene(rng, allow_heldout=True, item_prob=0.35) for _ in range(n)]
    originals = world.render_many(pool)
    codes = torch.cat([V.vq_encode(um, originals[i:i + batch]) for i in range(0, n, batch)])
    recon = np.concatenate([V.vq_decode(um, codes[i:i + batch]) for i in range(0, n, batch)])
    reads, truth = judge.read(recon), [expected_reading(s) for s in pool]
    return {"vq_recon_judge": float(np.mean([all_right(r, t) for r, t in zip(reads, truth)])),
            "vq_original_judge": float(np.mean([all_right(r, t) for r, t in zip(judge.read(originals), truth)])),
            "vq_recon_mse": float(np.mean((recon.astype(np.float32) - originals) ** 2) / 255**2),
            "vq_codes_used": int((V.code_usage(codes, um.codebook_size) > 0).sum())}


@torch.no_grad()
def evaluate_base(um: M.UnifiedModel, judge, n: int = 200, seed: int = 12345, guidance: float | None = None,
                  batch: int = 50,
                  tasks=("vq", "caption", "vqa", "recognition", "same", "t2i", "edit", "attribute"),
                  temperature: float | None = None) -> dict:
    """Judge-scored quality on held-out examples (fresh seeds, never trained on). Fractions in [0, 1].
    Images are drawn with ``guidance`` / ``temperature``, by default the model's own (``model.sampling``)."""
    from ..judge import expected_reading

    rng = random.Random(seed)
    um.model.eval()
    out = {}
    chunks = lambda xs: [xs[i:i + batch] for i in range(0, len(xs), batch)]  # noqa: E731
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(n)]
    images = world.render_many(scenes)
    if "vq" in tasks:
        out.update(tokenizer_quality(um, judge, n, seed=rng.randrange(1 << 30), batch=batch))
    if "caption" in tasks:
        ans = sum((M.answer(um, images[i:i + batch], [CAPTION_Q] * len(images[i:i + batch]), max_new_tokens=24)
                   for i in range(0, n, batch)), [])
        out["caption"] = float(np.mean([a == world.caption(s) for a, s in zip(ans, scenes)]))
    if "vqa" in tasks:
        qa = [rng.choice(world.vqa_pairs(s)) for s in scenes]
        ans = sum((M.answer(um, images[i:i + batch], [q for q, _ in qa[i:i + batch]], max_new_tokens=4)
                   for i in range(0, n, batch)), [])
        out["vqa"] = float(np.mean([a == t for a, (_, t) in zip(ans, qa)]))
    if "recognition" in tasks:
        qa = [recognition_example(s, rng) for s in scenes]
        ans = sum((M.answer(um, images[i:i + batch], [q for q, _ in qa[i:i + batch]], max_new_tokens=2)
                   for i in range(0, n, batch)), [])
        out["recognition"] = float(np.mean([a == t for a, (_, t) in zip(ans, qa)]))
    if "same" in tasks:
        pairs = [same_object_pair(rng) for _ in range(n)]
        imgs = [np.stack([world.render(a), world.render(b)]) for a, b, _ in pairs]
        ans = sum((M.answer(um, imgs[i:i + batch], [SAME_Q] * len(imgs[i:i + batch]), max_new_tokens=2)
                   for i in range(0, n, batch)), [])
        out["same_object"] = float(np.mean([a == y for a, (_, _, y) in zip(ans, pairs)]))
    if "t2i" in tasks:
        for key, allow in (("t2i_seen", False), ("t2i_heldout", True)):
            if allow:
                pool = [world.random_scene(rng, item_prob=0.35, shape=s, colour=c, allow_heldout=True)
                        for s, c in sorted(world.HELDOUT_PAIRS) for _ in range(max(1, n // 4))][:n]
            else:
                pool = [world.random_scene(rng, item_prob=0.35) for _ in range(n)]
            gen = np.concatenate([M.generate_images(um, [world.caption(s) for s in c], guidance=guidance,
                                                    temperature=temperature,
                                                    seed=seed + i) for i, c in enumerate(chunks(pool))])
            reads = judge.read(gen)
            want = [{k: expected_reading(s)[k] for k in (*world.NAMEABLE, "present")} for s in pool]
            out[key] = float(np.mean([all_right(r, w) for r, w in zip(reads, want)]))

    def edits_right(pairs) -> float:  # (source scene, instruction, target scene) -> share judged right
        res = np.concatenate([M.edit_image(um, world.render_many([s for s, _, _ in c]), [e for _, e, _ in c],
                                           guidance=guidance, temperature=temperature, seed=seed + i)
                              for i, c in enumerate(chunks(pairs))])
        return float(np.mean([all_right(r, expected_reading(t)) for r, (_, _, t) in zip(judge.read(res), pairs)]))

    if "edit" in tasks:
        out["edit"] = edits_right([(s, *world.random_edit(s, rng)) for s in scenes])
    if "object_edit" in tasks:  # remove or replace the object (world.object_edit), on its own random stream
        orng = random.Random(f"object_edit|{seed}")
        out["edit_object"] = edits_right([(s, *world.object_edit(s, orng))
                                          for s in (world.random_scene(orng, item_prob=0.35) for _ in range(n))])
    if "attribute" in tasks:  # yes/no per attribute: n questions over YESNO_ORDER, half of each true
        which = [YESNO_ORDER[i % len(YESNO_ORDER)] for i in range(n)]
        pool = [world.random_scene(rng, item_prob=0.35, mark_prob=1.0 if w == "mark" else 0.5) for w in which]
        qa = [attribute_example(sc, rng, which=w, truth=(i // len(YESNO_ORDER)) % 2 == 0)
              for i, (w, sc) in enumerate(zip(which, pool))]
        imgs = world.render_many(pool)
        ans = sum((M.answer(um, imgs[i:i + batch], [q for q, _ in qa[i:i + batch]], max_new_tokens=2)
                   for i in range(0, n, batch)), [])
        hits = np.array([a == t for a, (_, t) in zip(ans, qa)])
        out["attribute"] = float(hits.mean())
        out.update({f"attribute_{a}": float(hits[[w == a for w in which]].mean()) for a in YESNO_ORDER})
    if "probe" in tasks:
        out.update(encoder_probe(um, n_train=max(100, 10 * n), n_test=max(50, 5 * n)))
    if "facts" in tasks:
        out.update(evaluate_facts(um, judge, n, rng, seed, guidance, temperature, batch))
    return out


def evaluate_facts(um: M.UnifiedModel, judge, n: int, rng: random.Random, seed: int, guidance, temperature,
                   batch: int = 50) -> dict:
    """The facts phase's skills (:mod:`unikit.preamble`) on ``n`` held-out examples each:
    ``fact_t2i`` (every worn item asked as "its <item>" after the fact, background named: every
    attribute right), ``fact_edit`` ("put the ...'s hat on it" / "give ... its toy": every attribute
    of the target right), ``fact_qa`` (a stated fact asked with no image, or "none") and
    ``fact_recognition`` (the conjunction question after irrelevant facts)."""
    from ..judge import expected_reading

    chunks = lambda xs: [xs[i:i + batch] for i in range(0, len(xs), batch)]  # noqa: E731
    out = {}
    worn = []
    while len(worn) < n:
        sc = world.random_scene(rng, item_prob=0.5)
        if any(P.worn_value(sc, i) for i in ("hat", "scarf", "toy")):
            worn.append(sc)
    prompts = [P.fact_t2i_prompt(s, rng, its=1.0, form="caption") for s in worn]
    gen = np.concatenate([M.generate_images(um, c, guidance=guidance, temperature=temperature, seed=seed + i)
                          for i, c in enumerate(chunks(prompts))])
    want = [{k: expected_reading(s)[k] for k in (*world.NAMEABLE, "present")} for s in worn]
    out["fact_t2i"] = float(np.mean([all_right(r, w) for r, w in zip(judge.read(gen), want)]))
    pairs = []
    for s in (world.random_scene(rng, item_prob=0.2) for _ in range(n)):
        item = rng.choice([i for i in ("hat", "scarf", "toy") if P.worn_value(s, i) is None] or ["hat"])
        colour = rng.choice(tuple(world.COLOURS))
        thing = rng.choice(world.TOY_SHAPES) if item == "toy" else item
        extra = {"toy_shape": thing} if item == "toy" else {}
        src = s.replace(**{item: world.NONE}, **({"toy_shape": world.NONE} if item == "toy" else {}))
        instr = P.fact_edit_instruction(src, f"add {world.article(colour)} {colour} {thing}", rng, convert=1.0)
        pairs.append((src, instr, src.replace(**{item: colour}, **extra)))
    res = np.concatenate([M.edit_image(um, world.render_many([s for s, _, _ in c]), [e for _, e, _ in c],
                                       guidance=guidance, temperature=temperature, seed=seed + i)
                          for i, c in enumerate(chunks(pairs))])
    out["fact_edit"] = float(np.mean([all_right(r, expected_reading(t)) for r, (_, _, t) in zip(judge.read(res), pairs)]))
    qa = [P.fact_qa_example(rng) for _ in range(n)]
    ans = sum((M.answer(um, None, [q for q, _ in c], max_new_tokens=4) for c in chunks(qa)), [])
    out["fact_qa"] = float(np.mean([a == t for a, (_, t) in zip(ans, qa)]))
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(n)]
    qa = [P.fact_ask_example(s, *recognition_example(s, rng), rng) for s in scenes]
    images = world.render_many(scenes)
    ans = sum((M.answer(um, images[i:i + batch], [q for q, _ in qa[i:i + batch]], max_new_tokens=2)
               for i in range(0, n, batch)), [])
    out["fact_recognition"] = float(np.mean([a == t for a, (_, t) in zip(ans, qa)]))
    return out


EVAL_TASKS = ("vq", "probe", "caption", "vqa", "attribute", "recognition", "same", "t2i", "edit", "object_edit",
              "facts")
FACT_KEYS = ("fact_t2i", "fact_edit", "fact_qa", "fact_recognition")  # reported, no target (evaluate_facts)
TARGETS = {**{f"encoder_probe_{a}": 0.97 for a in world.ATTRIBUTES}, **{f"attribute_{a}": 0.95 for a in YESNO_ORDER},
           "recognition": 0.90, "same_object": 0.85, "vqa": 0.95, "caption": 0.85, "vq_recon_judge": 0.95,
           "t2i_seen": 0.80, "edit": 0.60}
"""The base model's quality targets (``metrics.json`` keys; judge-scored on held-out scenes)."""

SAMPLING_GRID = {"guidance": (1.25, 1.5, 2.0, 3.0), "temperature": (0.1, 0.25, 0.5, 0.75, 1.0)}
"""What :func:`calibrate_sampling` tries (docs/notes/2026-12-03-sampling.md, 2026-12-04-cool-sampling.md).
Greedy decoding is left out: stage 3 draws several images of one prompt."""
CALIBRATION_SEED = 777  # validation scenes; the quality metrics use evaluate_base's 12345


CALIBRATED = ("t2i_seen", "edit", "edit_object")  # what calibrate_sampling maximises, summed


def calibrate_sampling(um: M.UnifiedModel, judge, n: int = 100, grid: dict | None = None) -> dict:
    """Choose the guidance and temperature the model draws best with and store them as its own
    (``um.info["sampling"]``, read by ``model.sampling``).

    Scores every setting of ``grid`` (default :data:`SAMPLING_GRID`) by text-to-image on seen
    pairs plus editing plus object edits (half of a concept's test edits remove or replace the
    object), ``n`` judged validation examples each (:data:`CALIBRATION_SEED`, never the scenes the
    quality metrics use). Returns ``{"guidance", "temperature", "n", "grid": [{"guidance",
    "temperature", "t2i_seen", "edit", "edit_object"}]}``; ties go to the higher temperature, then
    the lower guidance."""
    grid = grid or SAMPLING_GRID
    rows = []
    for g in grid["guidance"]:
        for t in grid["temperature"]:
            m = evaluate_base(um, judge, n=n, seed=CALIBRATION_SEED, guidance=g, temperature=t,
                              tasks=("t2i", "edit", "object_edit"))
            rows.append({"guidance": g, "temperature": t, **{k: m[k] for k in CALIBRATED}})
    best = max(rows, key=lambda r: (sum(r[k] for k in CALIBRATED), r["temperature"], -r["guidance"]))
    um.info["sampling"] = {"guidance": best["guidance"], "temperature": best["temperature"]}
    return {**um.info["sampling"], "n": n, "grid": rows}


DRAWING_TASKS = ("t2i", "edit")  # scored on cfg.eval_n_drawing examples when it is set
DRAWING_SEED = 54321


def calibrate_and_score(um: M.UnifiedModel, judge, cfg: PretrainConfig) -> dict:
    """How a finished model is measured: :func:`calibrate_sampling` on half as many validation
    examples as ``cfg.eval_n``, then :func:`evaluate_base` with that sampling, text-to-image and
    editing on ``cfg.eval_n_drawing`` examples of their own when it is set. Returns the metrics
    plus ``"drawing_n"`` (how many examples those two were scored on), ``"sampling"`` (the
    calibration) and ``"judge_hash"``."""
    sampling = calibrate_sampling(um, judge, n=max(8, cfg.eval_n // 2), grid=cfg.sampling_grid)
    drawing_n = cfg.eval_n_drawing or cfg.eval_n
    metrics = evaluate_base(um, judge, n=cfg.eval_n, tasks=EVAL_TASKS)
    if drawing_n != cfg.eval_n:  # again, on examples of their own (every other metric's examples stay the same)
        metrics.update(evaluate_base(um, judge, n=drawing_n, seed=DRAWING_SEED, tasks=DRAWING_TASKS))
    return {**metrics, "drawing_n": drawing_n, "sampling": sampling, "judge_hash": judge_hash_of(judge)}


def judge_hash_of(judge) -> str:
    from ..judge import judge_hash

    return judge_hash(judge.config)


QUALITY_KEYS = ("vq_recon_judge", "t2i_seen", "t2i_heldout", "caption", "vqa", "attribute", "recognition",
                "same_object", "edit")


def quality_check(um: M.UnifiedModel, judge, recorded: dict, n: int = 24, seed: int = 2024,
                  recorded_n: int | None = None, guidance: float | None = None) -> list[dict]:
    """Re-measure a model's recorded quality (``metrics.json``) on a fresh judged sample.

    Runs :func:`evaluate_base` with ``n`` examples per metric and a ``seed`` other than the
    one the recorded numbers used, and returns one row per metric of :data:`QUALITY_KEYS`
    ``{"metric", "recorded", "measured", "n",
    "tolerance", "ok"}`` with ``ok = measured >= recorded - tolerance``.

    The tolerance is what chance alone explains: 3 standard errors of the difference of
    two independent binomial estimates of the same rate ``p`` (``n`` here, ``recorded_n``
    there; default the run's ``eval_n`` from ``um.info``, else 200),
    ``3 * sqrt(p (1 - p) (1/n + 1/recorded_n))``, plus 0.05, which lets one extra miss
    through at ``n`` = 24 where ``p`` is near 0 or 1 and the standard error says nothing.
    A model that really got worse by more than that fails the row.
    """
    missing = [k for k in QUALITY_KEYS if k not in recorded]
    if missing:
        raise PretrainError(f"the recorded metrics lack {missing}; re-make the model with `unikit pretrain` "
                            f"(it writes every metric to metrics.json)")
    run = um.info.get("pretrain_config", {})
    recorded_n = recorded_n or int(run.get("eval_n", 200))
    keys = list(QUALITY_KEYS)
    measured = evaluate_base(um, judge, n=n, seed=seed, guidance=guidance)
    rows = []
    for key in keys:
        p = float(recorded[key])
        tolerance = 3 * float(np.sqrt(p * (1 - p) * (1 / n + 1 / recorded_n))) + 0.05
        rows.append({"metric": key, "recorded": p, "measured": measured[key], "n": n,
                     "tolerance": round(tolerance, 3), "ok": measured[key] >= p - tolerance})
    return rows
