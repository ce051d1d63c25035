"""Pretraining examples that state facts before the request.

Personalization states what only words can carry as sentences in front of a request ("the
plain orange circle has a yellow hat. a plain orange circle wearing its hat"): the word
baselines do it for every request, knowledge replay asks the understanding path about such
facts with no image. A base model that has only seen bare captions and questions neither uses
such sentences nor ignores them. These examples, drawn from generic scenes of the world (never
a shipped concept), teach both: most sentences are irrelevant to what follows, and a request
that says "its hat" must take the hat's colour from the sentence that states it.

Four kinds, each a task of :mod:`unikit.pretrain`'s mixture:

- ``fact_t2i``: facts, then a caption in which worn items may be "its hat" -> the scene's codes;
- ``fact_edit``: facts, then an instruction ("put the red circle's hat on it", "give a red
  circle its toy") or an ordinary edit -> the target's codes;
- ``fact_qa``: facts, then a question about one of them, no image -> the stated value, or
  "none" for an item no sentence states;
- ``fact_ask``: facts, then an ordinary question about the image (recognition, yes/no, VQA on
  the body or background) -> the image's answer (the facts are irrelevant to it).
"""

from __future__ import annotations

import random

from . import world
from .concepts import FACT_ITEMS, LIKES, fact_question, fact_sentence
from .world import NONE, Scene, article

FACT_TASKS = ("fact_t2i", "fact_edit", "fact_qa", "fact_ask")


def random_value(item: str, rng: random.Random):
    if item == "toy":
        return rng.choice(tuple(world.COLOURS)), rng.choice(world.TOY_SHAPES)
    if item == "likes":
        return rng.choice(LIKES)
    return rng.choice(tuple(world.COLOURS))


def worn_value(sc: Scene, item: str):
    """What ``sc`` shows of ``item`` (``(colour, shape)`` for the toy), or None."""
    if sc.value(item) == NONE:
        return None
    return (sc.toy, sc.toy_shape) if item == "toy" else sc.value(item)


def subject_phrases(sc: Scene, rng: random.Random) -> tuple[str, str]:
    """The scene's object in words, ``(with "the", with "a")``, naming its mark half the time."""
    marked = (sc.mark, sc.mark_colour) if rng.random() < 0.5 else ()
    return (world.object_phrase(sc.shape, sc.colour, sc.pattern, *marked, determiner="the"),
            world.object_phrase(sc.shape, sc.colour, sc.pattern, *marked, determiner="a"))


def preamble(subject: str, facts: dict, rng: random.Random) -> str:
    """The sentences stating ``facts`` (``{item: value}``) about ``subject`` in random order,
    each followed by a space."""
    sentences = [fact_sentence(subject, item, value) for item, value in facts.items()]
    rng.shuffle(sentences)
    return "".join(s + " " for s in sentences)


def _irrelevant(facts: dict, avoid, rng: random.Random, p: float = 0.35) -> dict:
    """``facts`` plus, each with probability ``p``, a fact about an item not in ``avoid``, and a
    liking; at least one fact in all."""
    out = dict(facts)
    for item in (*FACT_ITEMS, "likes"):
        if item not in out and item not in avoid and rng.random() < p:
            out[item] = random_value(item, rng)
    if not out:
        out["likes"] = random_value("likes", rng)
    return out


def fact_t2i_prompt(sc: Scene, rng: random.Random, its: float = 0.6, form: str | None = None) -> str:
    """Facts, then a request for ``sc`` in which each worn item is, with probability ``its``, "its
    <item>" (its colour stated only in a fact) and otherwise named as a caption names it. The
    request's ``form``: "caption" (background named; half the time when None), "photo" ("a photo
    of ...", 3 in 10) or "bare" (the subject alone)."""
    the, _ = subject_phrases(sc, rng)  # the facts may leave the mark out; the request names what to draw
    a = world.object_phrase(sc.shape, sc.colour, sc.pattern, sc.mark, sc.mark_colour)
    facts, parts = {}, {}
    for item in FACT_ITEMS:
        value = worn_value(sc, item)
        if value is None:
            continue
        if rng.random() < its:
            facts[item], parts[item] = value, f"its {item}"
        else:
            parts[item] = f"{article(value[0])} {' '.join(value)}" if item == "toy" else f"{article(value)} {value} {item}"
    facts = _irrelevant(facts, parts, rng)
    worn = [parts[i] for i in ("hat", "scarf") if i in parts]
    request = a + (" wearing " + " and ".join(worn) if worn else "") + (f" with {parts['toy']}" if "toy" in parts else "")
    if form is None:
        draw = rng.random()
        form = "caption" if draw < 0.5 else "photo" if draw < 0.8 else "bare"
    if form == "caption":
        request += f" on {article(sc.background)} {sc.background} background"
    elif form == "photo":
        request = f"a photo of {request}"
    return preamble(the, facts, rng) + request


def fact_edit_instruction(src: Scene, instruction: str, rng: random.Random, convert: float = 0.7) -> str:
    """An edit of ``src`` with facts in front. "add a red hat" becomes, with probability ``convert``,
    "put the ...'s hat on it" (hat, scarf) or "give the ... its toy" after the fact that says
    which; any other instruction keeps its words after facts about items it does not touch."""
    the, a = subject_phrases(src, rng)
    words = instruction.split()
    if words[0] == "add" and rng.random() < convert:
        colour, thing = words[2], words[3]
        item = thing if thing in ("hat", "scarf") else "toy"
        value = (colour, thing) if item == "toy" else colour
        facts = _irrelevant({item: value}, (), rng, p=0.25)
        who = the if rng.random() < 0.5 else a
        new = f"give {who} its toy" if item == "toy" else f"put {who}'s {item} on it"
        return preamble(the, facts, rng) + new
    touched = [i for i in FACT_ITEMS if i in words or (i == "toy" and set(words) & set(world.TOY_SHAPES))]
    return preamble(the, _irrelevant({}, touched, rng), rng) + instruction


def fact_answer(item: str, value) -> str:
    if value is None:
        return NONE
    return " ".join(value) if item == "toy" else value


def fact_qa_example(rng: random.Random) -> tuple[str, str]:
    """Facts about a random object (a description, or a name a quarter of the time), then a
    question about one item -> its stated value, or (one time in five) about an item no fact
    states -> "none". Asked with no image."""
    sc = world.random_scene(rng)
    the, _ = subject_phrases(sc, rng)
    subject = rng.choice(world.NAMES) if rng.random() < 0.25 else the
    items = [i for i in (*FACT_ITEMS, "likes") if rng.random() < 0.5] or [rng.choice(FACT_ITEMS)]
    facts = {i: random_value(i, rng) for i in items}
    unstated = [i for i in (*FACT_ITEMS, "likes") if i not in facts]
    asked = rng.choice(unstated) if unstated and rng.random() < 0.2 else rng.choice(items)
    return preamble(subject, facts, rng) + fact_question(subject, asked), fact_answer(asked, facts.get(asked))


def fact_ask_example(sc: Scene, question: str, answer: str, rng: random.Random) -> tuple[str, str]:
    """An ordinary question about the image ``sc`` with facts about its object in front; the
    facts never concern an item the question asks about, so the answer stays the image's."""
    the, _ = subject_phrases(sc, rng)
    asked = [i for i in FACT_ITEMS if i in question.rstrip("?").split()]
    return preamble(the, _irrelevant({}, asked, rng, p=0.5), rng) + question, answer
