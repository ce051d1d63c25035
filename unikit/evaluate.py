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

:func:`unikit.benchmark.bench` runs methods x seeds over concepts and scores them with
:func:`evaluate_personalized`; :mod:`unikit.stats` summarises its rows and :mod:`unikit.claims`
judges the papers' claims on them.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

from . import model as M
from . import world
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
            requests = [pers.request(um, card.name, e["instruction"], "editing") for e in d.edits]
            out = M.edit_image(um, src, [r[0] for r in requests], guidance=guidance, seed=seed)
            reads = judge.read(out)
            row["edit"] = float(np.mean([r == expected_reading(e["target"]) for r, e in zip(reads, d.edits)]))
            if with_images:
                row["edits"] = {"source": src, "result": out,
                                "target": world.render_many([e["target"] for e in d.edits], um.image_size),
                                "instruction": [e["instruction"] for e in d.edits],
                                "replay": [r[1] for r in requests]}
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
    requests = [pers.request(um, card.name, p) for p in prompts]
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
        gen = generate_batched(um, [pers.request(um, concept.name, p)[0] for p in prompts],
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
