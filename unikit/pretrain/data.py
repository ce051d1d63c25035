"""Pretraining's task examples, drawn from generic scenes (yes/no and recognition questions,
same-object pairs, text-to-image prompts, the facts tasks of :mod:`unikit.preamble`), the
corpus rendered and VQ-encoded once, and one task's batch and loss."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import model as M
from .. import preamble as P
from .. import vq as V
from .. import world
from ..distributed import Context
from ..world import Scene
from .config import CAPTION_Q, GENERATION_TASKS, SAME_Q, TASKS


YESNO_ORDER = ("background", "colour", "shape", "pattern", "mark")  # the yes/no curriculum, easiest first


def _true_value(sc: Scene, which: str):
    return (sc.mark, sc.mark_colour) if which == "mark" else getattr(sc, which)


def _false_value(sc: Scene, which: str, rng: random.Random):
    if which == "mark":
        pairs = [(m, c) for m in world.MARKS for c in world.COLOURS if c != sc.colour]
        return rng.choice([p for p in pairs if p != (sc.mark, sc.mark_colour)])
    return rng.choice([v for v in world.ATTRIBUTES[which] if v != getattr(sc, which) and v != world.NONE])


def attribute_question(which: str, value) -> str:
    """"is the background black?", "is the object red?", "is the object a circle?", "is the
    object striped?", "does the object have a blue top?" (``value`` of a mark: ``(mark, colour)``)."""
    if which == "background":
        return f"is the background {value}?"
    if which == "mark":
        return f"does the object have {world.mark_phrase(*value).removeprefix('with ')}?"
    return f"is the object {world.article(value) + ' ' if which == 'shape' else ''}{value}?"


def attribute_example(sc: Scene, rng: random.Random, attributes=YESNO_ORDER, newest: float = 0.0,
                      truth: bool | None = None, which: str | None = None) -> tuple[str, str]:
    """Recognition's building block, one attribute at a time (:func:`attribute_question`) -> yes/no.
    The attribute is ``which``, else drawn from ``attributes`` (the last of them with probability
    ``newest``, else uniformly). The answer is "yes" with probability 1/2 (or as ``truth`` asks)
    when it can be: an empty scene's object questions and an unmarked object's mark questions are
    always "no".

    A yes/no answer is an *equality* between a word of the question and what the image shows:
    neither alone predicts it, so the loss sits on the coin-flip plateau until a comparison forms
    (``docs/notes/`` has the measurements)."""
    if which is None:
        which = attributes[-1] if rng.random() < newest else rng.choice(attributes)
    possible = which == "background" or (sc.present and (which != "mark" or sc.mark != world.NONE))
    truth = possible and (rng.random() < 0.5 if truth is None else truth)
    value = _true_value(sc, which) if truth else _false_value(sc, which, rng)
    return attribute_question(which, value), "yes" if truth else "no"


def yesno_attributes(step: int, yesno_steps: int) -> tuple[str, ...]:
    """The attributes the yes/no curriculum asks about at model step ``step``: one more of
    :data:`YESNO_ORDER` every ``yesno_steps / len(YESNO_ORDER)`` steps (the newest drawn with
    probability ``PretrainConfig.yesno_newest``)."""
    k = min(len(YESNO_ORDER), 1 + step * len(YESNO_ORDER) // max(1, yesno_steps))
    return YESNO_ORDER[:k]


def recognition_question(shape: str, colour: str, pattern: str, mark: str = world.NONE,
                         mark_colour: str = world.NONE) -> str:
    """"is the striped red circle with a blue top in this image?" (the mark part only if given)."""
    return f"is {world.object_phrase(shape, colour, pattern, mark, mark_colour, determiner='the')} in this image?"


def recognition_example(sc: Scene, rng: random.Random, truth: bool | None = None,
                        with_mark: bool | None = None, named: bool | None = None) -> tuple[str, str]:
    """The conjunction question (:func:`recognition_question`) -> yes/no. Half the descriptions name
    a mark (``with_mark``); a true one names the object's own (unmarked objects are then described
    without), a false one has one attribute off: shape, colour, pattern, or the named mark (another
    part or colour: the hard negative a text without the mark cannot reject). Half the questions
    (``named``) first give the object a name, personalization's format: "ada is a plain red circle
    with a blue top. is ada in this image?"."""
    with_mark = rng.random() < 0.5 if with_mark is None else with_mark
    truth = sc.present and (rng.random() < 0.5 if truth is None else truth)
    desc = dict(shape=sc.shape, colour=sc.colour, pattern=sc.pattern, mark=sc.mark, mark_colour=sc.mark_colour)
    if truth and sc.mark == world.NONE:
        with_mark = False
    if not truth:
        which = rng.choice(("shape", "colour", "pattern") + (("mark",) if with_mark else ()))
        if with_mark and sc.mark == world.NONE:
            which = "mark"  # naming any mark is what is off
        if which == "mark":
            desc["mark"], desc["mark_colour"] = _false_value(sc, "mark", rng)
        if which != "mark":
            desc[which] = _false_value(sc, which, rng)
            if desc["colour"] == desc["mark_colour"]:  # keep the description drawable
                desc["mark_colour"] = rng.choice([c for c in world.COLOURS if c != desc["colour"]])
    if not with_mark:
        desc["mark"] = desc["mark_colour"] = world.NONE
    if named if named is not None else rng.random() < 0.5:
        name = rng.choice(world.NAMES)
        return f"{name} is {world.object_phrase(**desc)}. is {name} in this image?", "yes" if truth else "no"
    return recognition_question(**desc), "yes" if truth else "no"


def t2i_prompt(sc: Scene, rng: random.Random) -> str:
    """A text-to-image prompt: the caption, or (3 times in 10) "a photo of <the subject>" with no
    background named (personalization's "a photo of <bo>")."""
    if sc.present and rng.random() < 0.3:
        return f"a photo of {world.describe_subject(sc)}"
    return world.caption(sc)


def same_object_pair(rng: random.Random) -> tuple[Scene, Scene, str]:
    """Two scenes of the same object (new layout, background, items) or of a look-alike that differs in mark."""
    a = world.random_scene(rng, mark_prob=0.8, item_prob=0.2)
    layout = dict(background=rng.choice(tuple(world.BACKGROUNDS)), **world.random_layout(rng))
    b = world.random_scene(rng, mark_prob=0.8, item_prob=0.2, shape=a.shape, colour=a.colour, pattern=a.pattern,
                           mark=a.mark, mark_colour=a.mark_colour, **layout)
    if rng.random() < 0.5:
        return a, b, "yes"
    marks = [(world.NONE, world.NONE)] + [(m, c) for m in world.MARKS for c in world.COLOURS if c != a.colour]
    marks.remove((a.mark, a.mark_colour))
    m, c = rng.choice(marks)
    return a, b.replace(mark=m, mark_colour=c), "no"


@dataclass
class Corpus:
    """Generic scenes with their renders ``uint8[N, 32, 32, 3]`` and VQ codes ``long[N, 8, 8]``,
    plus edit pairs (source index, instruction, target render, target codes)."""

    scenes: list[Scene]
    images: np.ndarray
    codes: torch.Tensor
    edit_src: list[int]
    edit_instr: list[str]
    edit_images: np.ndarray
    edit_codes: torch.Tensor
    # removing or replacing the object (world.object_edit): source index, instruction, target codes
    object_src: list[int] = field(default_factory=list)
    object_instr: list[str] = field(default_factory=list)
    object_codes: torch.Tensor | None = None


@torch.no_grad()
def build_corpus(um: M.UnifiedModel, n: int, seed: int, batch: int = 512) -> Corpus:
    """Render ``n`` generic scenes (no held-out pairs), half as many edits and a quarter as many
    object edits (their own random stream, so the rest does not depend on them); VQ-encode them once."""
    rng = random.Random(seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(n)]
    edit_src = list(range(n // 2))
    edits = [world.random_edit(scenes[i], rng) for i in edit_src]
    object_rng = random.Random(f"object_edit|{seed}")
    object_src = list(range(n // 4))
    object_edits = [world.object_edit(scenes[i], object_rng) for i in object_src]
    images = world.render_many(scenes)
    targets = world.render_many([t for _, t in edits])
    enc = lambda x: torch.cat([V.vq_encode(um, x[i:i + batch]) for i in range(0, len(x), batch)])  # noqa: E731
    return Corpus(scenes, images, enc(images), edit_src, [e for e, _ in edits], targets, enc(targets),
                  object_src, [e for e, _ in object_edits],
                  enc(world.render_many([t for _, t in object_edits])) if object_edits else None)


def task_batch(task: str, corpus: Corpus, size: int, rng: random.Random, attributes=YESNO_ORDER, newest: float = 0.0,
               paired: bool = False):
    """One batch of one task: ``(images, prompts, answers_or_codes)`` (``attributes``/``newest``:
    what the ``attribute`` task asks about, see :func:`attribute_example`). With ``paired``, a
    yes/no batch asks each of ``size // 2`` images twice about the same thing, once true and once
    false (balanced contrastive batches)."""
    idx = [rng.randrange(len(corpus.scenes)) for _ in range(size // 2 if paired else size)]
    if paired and task in ("attribute", "recognition"):
        idx = [i for i in idx for _ in (0, 1)]
        scenes = [corpus.scenes[i] for i in idx]
        qa = []
        for k in range(0, len(scenes), 2):
            if task == "attribute":
                which = attributes[-1] if rng.random() < newest else rng.choice(attributes)
                qa += [attribute_example(scenes[k], rng, which=which, truth=t) for t in (True, False)]
            else:
                with_mark, named = rng.random() < 0.5, rng.random() < 0.5
                qa += [recognition_example(scenes[k], rng, truth=t, with_mark=with_mark, named=named)
                       for t in (True, False)]
        return corpus.images[idx], [q for q, _ in qa], [a for _, a in qa]
    idx += [rng.randrange(len(corpus.scenes)) for _ in range(size - len(idx))]
    scenes = [corpus.scenes[i] for i in idx]
    if task == "caption":
        return corpus.images[idx], [CAPTION_Q] * size, [world.caption(s) for s in scenes]
    if task == "vqa":
        qa = [rng.choice(world.vqa_pairs(s)) for s in scenes]
        return corpus.images[idx], [q for q, _ in qa], [a for _, a in qa]
    if task == "attribute":
        qa = [attribute_example(s, rng, attributes, newest) for s in scenes]
        return corpus.images[idx], [q for q, _ in qa], [a for _, a in qa]
    if task == "recognition":
        qa = [recognition_example(s, rng) for s in scenes]
        return corpus.images[idx], [q for q, _ in qa], [a for _, a in qa]
    if task == "same":
        pairs = [same_object_pair(rng) for _ in range(size)]
        images = [np.stack([world.render(a), world.render(b)]) for a, b, _ in pairs]
        return images, [SAME_Q] * size, [y for _, _, y in pairs]
    if task == "t2i":
        return None, [t2i_prompt(s, rng) for s in scenes], corpus.codes[idx]
    if task == "edit":
        e = [rng.randrange(len(corpus.edit_src)) for _ in range(size)]
        src = corpus.images[[corpus.edit_src[i] for i in e]]
        return src, [corpus.edit_instr[i] for i in e], corpus.edit_codes[e]
    if task == "object_edit":
        if not corpus.object_src:
            raise ValueError("this corpus has no object edits; build it with build_corpus")
        e = [rng.randrange(len(corpus.object_src)) for _ in range(size)]
        src = corpus.images[[corpus.object_src[i] for i in e]]
        return src, [corpus.object_instr[i] for i in e], corpus.object_codes[e]
    if task == "fact_t2i":
        return None, [P.fact_t2i_prompt(s, rng) for s in scenes], corpus.codes[idx]
    if task == "fact_edit":
        e = [rng.randrange(len(corpus.edit_src)) for _ in range(size)]
        src = [corpus.edit_src[i] for i in e]
        return (corpus.images[src], [P.fact_edit_instruction(corpus.scenes[j], corpus.edit_instr[i], rng)
                                     for i, j in zip(e, src)], corpus.edit_codes[e])
    if task == "fact_qa":
        qa = [P.fact_qa_example(rng) for _ in range(size)]
        return None, [q for q, _ in qa], [a for _, a in qa]
    if task == "fact_ask":
        qa = [P.fact_ask_example(s, *fact_ask_base(s, rng), rng) for s in scenes]
        return corpus.images[idx], [q for q, _ in qa], [a for _, a in qa]
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def fact_ask_base(sc: Scene, rng: random.Random) -> tuple[str, str]:
    """The image question ``fact_ask`` puts facts in front of: recognition, yes/no or VQA."""
    kind = rng.random()
    if kind < 0.4:
        return recognition_example(sc, rng)
    if kind < 0.7:
        return attribute_example(sc, rng)
    return rng.choice(world.vqa_pairs(sc))


def task_loss(um: M.UnifiedModel, task: str, batch, caption_dropout: float, generator=None,
              drop: torch.Tensor | None = None) -> torch.Tensor:
    """The mean loss of one task batch, per example (so the mean over workers' equal shards is the
    global batch's mean). ``drop``: which examples lose their prompt (caption dropout) when the
    caller drew it, else drawn from ``generator``."""
    images, prompts, target = batch
    if GENERATION_TASKS.get(task) == "t2i":
        return M.t2i_loss(um, prompts, target, caption_dropout=caption_dropout, generator=generator, drop=drop)
    if GENERATION_TASKS.get(task) == "edit":
        return M.edit_loss(um, images, prompts, target, caption_dropout=caption_dropout, generator=generator, drop=drop)
    return M.understanding_loss(um, images, prompts, target, reduction="none").mean()


def shard_batch(ctx: Context, batch):
    """A task batch ``(images, prompts, targets)`` cut to this worker's shard."""
    return tuple(None if part is None else ctx.shard(part) for part in batch)
