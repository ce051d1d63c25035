"""Every bench metric's chance level, floor and ceiling, computed (not typed) from the world, the
concept cards and the base model's tokenizer, each with the reason for it (:func:`levels`).

A comparison of two methods that both sit at a metric's floor is "not measurable here"
(:func:`unikit.stats.compare`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from . import world
from .evaluate import METRICS, BenchError

TOKENIZER_CAPPED = ("gen_identity", "parg", "parg_identity", "edit")
"""Metrics that read images decoded from the VQ tokenizer with the judge."""


class StatsError(BenchError):
    """A comparison or level that cannot be computed (no shared rows, unknown metric,
    a replay variant compared where replay changes nothing); the message names the fix."""


def _subjects() -> int:
    """Subjects the world can draw: shape x colour x pattern x (no mark, or a part in another colour)."""
    return len(world.SHAPES) * len(world.COLOURS) * len(world.PATTERNS) * (
        1 + len(world.MARKS) * (len(world.COLOURS) - 1))


def _guess(attributes) -> float:
    """Chance of guessing each named attribute among its values other than "none" (or other than
    the value it is changed from): ``prod 1 / (len(ATTRIBUTES[k]) - 1)``."""
    return float(np.prod([1 / (len(world.ATTRIBUTES[k]) - 1) for k in attributes]))


@functools.lru_cache(maxsize=1)
def _answer_counts() -> dict[str, int]:
    """Question template (subject written ``{c}``) -> how many answers the world allows. An item
    question presupposes the item, so its answers are its colours (and toy shapes)."""
    probe = world.Scene(shape="circle", colour="red", pattern="striped", background="gray", mark="top",
                        mark_colour="blue", hat="yellow", scarf="green", toy="purple", toy_shape="ball")
    n_colours = len(world.COLOURS)
    by_answer = {probe.shape: len(world.SHAPES), probe.colour: n_colours, probe.pattern: len(world.PATTERNS),
                 probe.background: len(world.BACKGROUNDS), probe.hat: n_colours, probe.scarf: n_colours,
                 f"{probe.mark_colour} {probe.mark}": 1 + len(world.MARKS) * n_colours,
                 f"{probe.toy} {probe.toy_shape}": n_colours * len(world.TOY_SHAPES)}
    return {q: by_answer[a] for q, a in world.vqa_pairs(probe, subject="{c}")}


def _qa_chance(card, qa: dict) -> float:
    """A uniform guess's chance on one exact-answer question; 0 when its answers are not countable."""
    from .concepts import LIKES

    n = _answer_counts().get(qa["question"].replace(card.token, "{c}"))
    if n is None and qa["answer"] in LIKES:
        n = len(LIKES)
    return 1 / n if n else 0.0


def _edit_guess(edit: dict) -> float:
    """Chance that an editor which does what the instruction names guesses the rest: every
    attribute the edit changes is drawn among the values other than the source's ("remove"
    changes only ``present``: 1; "put its hat on" leaves the hat's colour: 1/6)."""
    src, tgt = edit["source"], edit["target"]
    return _guess([k for k in world.ATTRIBUTES if src.value(k) != tgt.value(k)])


@functools.lru_cache(maxsize=32)
def _concept_chances(names: tuple[str, ...]) -> dict[str, float]:
    """Per metric, the mean over the named concepts of each concept's chance level."""
    from .concepts import concept_data, load_concepts

    per: dict[str, list[float]] = {m: [] for m in ("vqa", "text_qa", "parg", "edit")}
    for card in load_concepts(list(names)):
        d = concept_data(card)
        per["vqa"].append(np.mean([_qa_chance(card, q) for q in d.vqa]))
        per["text_qa"].append(np.mean([_qa_chance(card, q) for q in d.text_qa]))
        per["parg"].append(np.mean([_guess(t["expect"]) for t in d.t2i if t["kind"] == "knowledge"]))
        per["edit"].append(np.mean([_edit_guess(e) for e in d.edits]))
    return {m: float(np.mean(v)) for m, v in per.items()}


def _known_concepts(concepts) -> tuple[str, ...]:
    """The names among ``concepts`` that have a card; all cards when none has (or None given)."""
    from .concepts import available_concepts

    cards = available_concepts()
    names = tuple(sorted({str(c) for c in concepts or ()} & set(cards)))
    return names or tuple(cards)


def levels(metric: str, base_metrics: dict | None = None, concepts: Sequence[str] | None = None) -> dict:
    """Chance, floor and ceiling of ``metric``, with a reason for each:
    ``{"chance": float | None, "floor": float | None, "ceiling": float, "why": {level: str}}``.

    Chance is what a uniform guess scores; the floor is what a method scores without knowing
    the concept (a comparison where both methods reach down to it is "not measurable here");
    the ceiling is the best score the pipeline allows. Concept-dependent levels average over
    ``concepts`` (names with a card; default every card). ``base_metrics``: the base model's
    metrics dict; its ``vq_recon_judge`` caps the metrics that read tokenizer-decoded images.
    """
    if metric not in METRICS:
        raise StatsError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    n_sub = _subjects()
    per = _concept_chances(_known_concepts(concepts)) if metric in ("vqa", "text_qa", "parg",
                                                                     "parg_identity", "edit") else {}
    blind_yes = "an image-blind answerer scores anything from 0 to 1 here by its yes-rate"
    if metric == "rec":
        chance = floor = 0.5
        why = {"chance": "mean of recall on positives and on negatives: any image-blind answerer scores "
                         "p + (1 - p) over 2 = 0.5 whatever its yes-rate p",
               "floor": "the same 0.5: nothing below it needs the concept"}
    elif metric in ("rec_pos", "rec_neg", "rec_hard"):
        chance, floor = 0.5, 0.0
        side = "positives" if metric == "rec_pos" else "negatives"
        why = {"chance": f"a coin flip on each yes/no question (recall on {side} only)",
               "floor": f"{blind_yes} (always 'yes': rec_pos 1, rec_neg 0); read it with "
                        + ("rec_neg" if metric == "rec_pos" else "rec_pos") + ", or use rec"}
        if metric == "rec_hard":
            why["floor"] += ("; the hard negatives match everything the card states, so an answerer blind to "
                             "the mark scores 1 - rec_pos")
    elif metric in ("vqa", "text_qa"):
        chance = floor = per[metric]
        why = {"chance": "a uniform guess among the answers the world allows per question (shape 1/4, "
                         "colour 1/6, mark 1/25, ...), averaged over questions and concepts",
               "floor": "chance: below it a method answers worse than guessing"}
        if metric == "vqa":
            why["floor"] += " (a concept-blind model that reads the image answers these too)"
    elif metric == "gen_identity":
        chance = floor = 1 / n_sub
        why = {"chance": f"a random subject of this world is the concept once in {n_sub}",
               "floor": "chance"}
    elif metric == "gen_similarity":
        chance = floor = None
        why = {"chance": "none: a cosine of judge features, not a rate",
               "floor": "none: unrelated renders of this world already score high (shared backgrounds "
                        "and layouts); compare methods with each other"}
    elif metric == "parg":
        chance = floor = per["parg"]
        why = {"chance": "the prompt names the item, so only its colour (a toy's colour and shape) is "
                         "left to guess: 1/6 (1/12), averaged over the knowledge prompts",
               "floor": "chance: a competent generator that does not know the fact"}
    elif metric == "parg_identity":
        chance = floor = per["parg"] / n_sub
        why = {"chance": f"parg's guess times the chance of drawing the concept (1 in {n_sub})",
               "floor": "chance"}
    elif metric in ("tok_identity", "tok_mark"):
        chance = floor = 0.0
        words = "shape, colour and pattern" if metric == "tok_identity" else "mark and mark colour"
        why = {"chance": f"rows unrelated to words lean equally toward the concept's own {words} words and "
                         f"toward the other values': a difference of 0",
               "floor": "0: tokens that carry nothing of the concept's identity in word space"}
    else:  # edit
        chance = floor = per["edit"]
        why = {"chance": "an editor that does what the instruction names and guesses the rest: "
                         "'remove' 1, an item's colour 1/6, a toy 1/12, the concept's look ~0",
               "floor": "chance: a competent editor that does not know the concept"}
    if metric in TOKENIZER_CAPPED and base_metrics and base_metrics.get("vq_recon_judge") is not None:
        ceiling = float(base_metrics["vq_recon_judge"])
        why["ceiling"] = (f"the generator draws through the tokenizer: the judge reads every attribute of "
                          f"{ceiling:.0%} of its reconstructions")
    elif metric in TOKENIZER_CAPPED:
        ceiling = 1.0
        why["ceiling"] = "1 here; pass the base model's metrics (vq_recon_judge) for the tokenizer's cap"
    elif metric == "gen_similarity":
        ceiling = 1.0
        why["ceiling"] = "a cosine"
    elif metric in ("tok_identity", "tok_mark"):
        ceiling = None
        why["ceiling"] = "none: a difference of mean cosines (at most 2), not a rate"
    else:
        ceiling = 1.0
        why["ceiling"] = "exact answers: nothing caps them below 1"
    return {"chance": chance, "floor": floor, "ceiling": ceiling, "why": why}


