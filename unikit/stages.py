"""Training concept tokens: the data a concept brings, one training loop, UniCTokens' three stages.

The base model stays frozen; only concept-token rows train (:mod:`unikit.tokens`). Every
method of :mod:`unikit.methods` is a schedule of calls to :func:`train_tokens`, which mixes
up to three tasks in each step, each with its own prompt format and weight::

    understanding   "<c> is <shared..><und..>. " + question      -> answer        (text CE)
    generation      "a photo of <shared..><gen..> <c>"           -> VQ codes      (code CE)
    editing         source image + "put <c>'s hat on it" expanded -> target codes  (code CE)

Several concepts train in one loop: their tokens are disjoint rows, so a step's batch holds
examples of every concept and each concept's gradient comes from its own examples only.

UniCTokens' three stages (the UniCTokens paper, ``unictokens`` in book/references.bib), each a function
with its own loss curve and checkpoint:

1. :func:`train_stage_1_understanding` -- ``<c>`` + shared tokens on understanding data;
2. :func:`train_stage_2_generation` -- adds generation tokens; 0.8 * generation + 0.2 * understanding;
3. :func:`train_stage_3_understanding` -- understanding tokens seeded by k-means over the codes of
   images the stage-2 tokens generate (:func:`generated_codes`), then ``<c>`` + those trained
   on understanding data, the rest frozen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import model as M
from . import vq as V
from . import world
from .concepts import ConceptCard, ConceptData, concept_data, fact_question
from .photo_files import PhotoError
from .profiles import Schedule

TASKS = ("understanding", "generation", "editing")
OnStep = Callable[[str, int, float, object], None]
"""``on_step(stage, step, loss, tokens)``: called every ``record_every`` steps (e.g. a :class:`~unikit.trajectory.TokenRecorder`)."""


class StageError(ValueError):
    """A training request the concept's data or tokens cannot serve."""


# --------------------------------------------------------------------------- a concept's training data


@dataclass
class PersonalData:
    """What one concept brings to training. Images ``uint8[n, 32, 32, 3]``; codes ``long[m, g, g]``.

    Understanding pools are lists of ``(image or None, question, answer)`` with the concept
    written as its token (``"is <bo> in this image?"``).
    """

    card: ConceptCard  # or a unikit.photos.PhotoConcept
    data: ConceptData | None  # the card's generated data (None for a photo concept: its data is card.bench)
    train_images: np.ndarray
    gen_codes: torch.Tensor  # VQ codes of augmented training images
    positives: list = field(default_factory=list)
    negatives: list = field(default_factory=list)
    hard_negatives: list = field(default_factory=list)
    text: list = field(default_factory=list)  # conversations + questions about the training images
    edits: list = field(default_factory=list)  # (source uint8[32,32,3], instruction, target codes [g, g])
    facts: list = field(default_factory=list)  # text-only turns stating what no photo shows (items, liking)

    @property
    def token(self) -> str:
        return self.card.token


def augment(images: np.ndarray, rng: random.Random, scale: float = 1.1) -> np.ndarray:
    """UniCTokens' augmentation: random crop after upscaling by ``scale``, random horizontal flip.

    ``uint8[n, S, S, 3] -> uint8[n, S, S, 3]``. Marks are mirror-symmetric, so flips keep identity.
    """
    n, S = images.shape[0], images.shape[1]
    big = int(round(S * scale))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(big, big), mode="nearest")
    out = []
    for i in range(n):
        dx, dy = rng.randint(0, big - S), rng.randint(0, big - S)
        im = x[i, :, dy:dy + S, dx:dx + S]
        if rng.random() < 0.5:
            im = im.flip(-1)
        out.append(im)
    return torch.stack(out).permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def edit_triplets(card: ConceptCard, n: int, seed: int) -> list[tuple]:
    """Training editing triplets ``(source Scene, instruction, target Scene)`` about the concept,
    drawn apart from the test edits of :func:`concept_data` (other layouts). Kinds as in the
    test set: put an item on it, replace an object with it, remove it."""
    rng = random.Random(f"edits|{card.name}|{seed}")
    bgs = tuple(world.BACKGROUNDS)
    out = []
    for i in range(n):
        layout = dict(background=rng.choice(bgs), **world.random_layout(rng))
        kind = i % 3
        t = card.token
        if kind == 0:
            item = rng.choice(list(card.items))
            instr = f"give {t} its toy" if item == "toy" else f"put {t}'s {item} on it"
            out.append((card.scene(**layout), instr, card.with_items(item, **layout)))
        elif kind == 1:
            generic = world.random_scene(rng, item_prob=0.0)
            out.append((generic, f"replace the object with {t}",
                        card.scene(background=generic.background, x=generic.x, y=generic.y, size=generic.size)))
        else:
            src = card.scene(**layout)
            out.append((src, f"remove {t}", src.replace(present=False)))
    return out


@torch.no_grad()
def generation_codes(um: M.UnifiedModel, train: np.ndarray, schedule: Schedule, rng: random.Random) -> torch.Tensor:
    """VQ codes ``[n * augment_copies, g, g]``: the ``n`` training images first, then their augmented copies."""
    variants = [train] + [augment(train, rng) for _ in range(max(0, schedule.augment_copies - 1))]
    return V.vq_encode(um, np.concatenate(variants))


def recognition_pools(recognition: list[dict], image) -> tuple[list, list, list]:
    """``(positives, random negatives, hard negatives)`` of ``(image, question, answer)`` from
    recognition items ``{"image": (split, i), ...}``; ``image((split, i))`` gives the pixels."""
    pos, neg, hard = [], [], []
    for r in recognition:
        ex = (image(r["image"]), r["question"], r["answer"])
        (pos if r["answer"] == "yes" else hard if r["image"][0] == "hard" else neg).append(ex)
    return pos, neg, hard


@torch.no_grad()
def personal_data(um: M.UnifiedModel, card: ConceptCard, schedule: Schedule, seed: int = 0,
                  n_edits: int = 0) -> PersonalData:
    """Render a concept's training data and VQ-encode what generation trains on (once); a photo
    concept's data comes from its folder (:func:`photo_personal_data`)."""
    if not isinstance(card, ConceptCard):
        return photo_personal_data(um, card, schedule, seed, n_edits)
    data = concept_data(card)
    rng = random.Random(f"{card.name}|{seed}")
    train = data.images("train")
    codes = generation_codes(um, train, schedule, rng)
    images = {split: data.images(split) for split in ("train", "random", "hard")}
    pos, neg, hard = recognition_pools(data.recognition, lambda ref: images[ref[0]][ref[1]])
    text = [(None, c["question"], c["answer"]) for c in data.conversations]
    facts = [(None, fact_question(card.token, item), value) for item, value in card.fact_answers.items()]
    for i, sc in enumerate(data.train_scenes):  # questions about the training images themselves
        for q, a in world.vqa_pairs(sc, subject=card.token):
            if not set(q.rstrip("?").split()) & {"hat", "scarf", "toy"}:
                text.append((train[i], q, a))
    edits = []
    if n_edits:
        triplets = edit_triplets(card, n_edits, seed)
        src = world.render_many([s for s, _, _ in triplets])
        tgt = V.vq_encode(um, world.render_many([t for _, _, t in triplets]))
        edits = [(src[i], triplets[i][1], tgt[i]) for i in range(len(triplets))]
    return PersonalData(card, data, train, codes, pos, neg, hard, text, edits, facts=facts)


def photo_personal_data(um, concept, schedule: Schedule, seed: int = 0, n_edits: int = 0) -> PersonalData:
    """The :class:`PersonalData` of a :class:`unikit.photos.PhotoConcept`: augmented training photos
    VQ-encoded for generation, recognition pools from the recognition lists, conversations as
    text; editing triplets (``n_edits``) replace a negative photo's object with the concept
    (source: a negative photo, target: a training photo)."""
    bc = concept.bench
    texts = [concept.in_words(x) for x in [concept.description(), *(c["question"] + " " + c["answer"]
                                                                     for c in bc.conversations)]]
    M.check_vocabulary(um.tokenizer, [concept.shape, *texts])
    rng = random.Random(f"{concept.name}|{seed}")
    train = bc.images["train"]
    with torch.no_grad():
        codes = generation_codes(um, train, schedule, rng)
    pos, neg, hard = recognition_pools(bc.recognition, bc.image)
    text = [(None, c["question"], c["answer"]) for c in bc.conversations]
    facts = [(None, q["question"], q["answer"]) for q in bc.text_qa]  # the card's own questions
    edits = []
    if n_edits:
        sources = bc.images.get("random", np.zeros((0,)))
        if not len(sources):
            raise PhotoError(f"{concept.source}: editing needs negative photos as sources; add negatives/")
        edit_rng = random.Random(f"edits|{concept.name}|{seed}")
        picks = [(edit_rng.randrange(len(sources)), edit_rng.randrange(len(train))) for _ in range(n_edits)]
        with torch.no_grad():
            tgt = V.vq_encode(um, np.stack([train[j] for _, j in picks]))
        edits = [(sources[i], f"replace the object with {concept.token}", tgt[k]) for k, (i, _) in enumerate(picks)]
    return PersonalData(concept, None, train, codes, pos, neg, hard, text, edits, facts=facts)


def _draw(pool: list, k: int, rng: random.Random) -> list:
    return [pool[rng.randrange(len(pool))] for _ in range(k)] if pool else []


UNDERSTANDING_MIX = {"pos": 3, "neg": 2, "hard": 2, "text": 3, "facts": 1}
"""Weights of an understanding batch's pools: positive recognition, random and hard negatives,
text (conversations, questions about the training images) and the facts no photo shows, about
one example in eleven (docs/notes/2026-12-05-facts-share.md says why)."""


def understanding_batch(pd: PersonalData, k: int, rng: random.Random) -> list:
    """``k`` understanding examples drawn from the pools by :data:`UNDERSTANDING_MIX`; a concept
    with no hard negatives or no facts draws random negatives or text in their place."""
    kinds = rng.choices(list(UNDERSTANDING_MIX), weights=list(UNDERSTANDING_MIX.values()), k=k)
    pools = {"pos": pd.positives, "neg": pd.negatives, "hard": pd.hard_negatives or pd.negatives, "text": pd.text,
             "facts": pd.facts or pd.text}
    return [_draw(pools[kind], 1, rng)[0] for kind in kinds]


# --------------------------------------------------------------------------- the loop


@dataclass
class Prompting:
    """Which token groups each task's prompts use (UniCTokens, coupled, decoupled differ only here)."""

    understanding: tuple[str, ...] = ("shared",)
    generation: tuple[str, ...] = ("shared", "generation")
    editing: tuple[str, ...] = ("shared", "editing")


def _und_loss(um, items, cts, prompting: Prompting):
    images, prompts, answers = [], [], []
    for ct, examples in zip(cts, items):
        for image, q, a in examples:
            images.append(image)
            prompts.append(ct.understanding_prompt(q, groups=prompting.understanding))
            answers.append(a)
    return M.understanding_loss(um, images, prompts, answers)


def train_tokens(um: M.UnifiedModel, cts: Sequence, pdata: Sequence[PersonalData], *, steps: int,
                 train_groups: Sequence[str], weights: dict[str, float], prompting: Prompting,
                 sched: Schedule, seed: int = 0, stage: str = "train", on_step: OnStep | None = None,
                 record_every: int = 10, progress: bool = False) -> list[float]:
    """Train ``train_groups`` of every concept's tokens for ``steps`` steps; returns the loss curve.

    ``weights``: task -> loss weight (``{"generation": 0.8, "understanding": 0.2}``); each step
    draws ``sched.batch`` examples per concept for every task with a positive weight. Only the
    named groups' rows are given to AdamW; every other parameter keeps its value bit for bit.
    """
    unknown = set(weights) - set(TASKS)
    if unknown:
        raise StageError(f"unknown task(s) {sorted(unknown)}; tasks: {', '.join(TASKS)}")
    params = [p for ct in cts for p in ct.parameters(groups=tuple(train_groups))]
    if not params:
        raise StageError(f"nothing to train: groups {list(train_groups)} do not exist in these tokens")
    opt = torch.optim.AdamW(params, lr=sched.lr, weight_decay=sched.weight_decay)
    rng = random.Random(f"{stage}|{seed}")
    gen = torch.Generator().manual_seed(seed)
    curve = []
    um.model.eval()  # no dropout; the base model is frozen
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(bar, desc=stage)
    for step in bar:
        loss = 0.0
        if weights.get("understanding", 0) > 0:
            items = [understanding_batch(pd, sched.batch, rng) for pd in pdata]
            loss = loss + weights["understanding"] * _und_loss(um, items, cts, prompting)
        if weights.get("generation", 0) > 0:
            prompts, codes = [], []
            for ct, pd in zip(cts, pdata):
                idx = [rng.randrange(len(pd.gen_codes)) for _ in range(sched.batch)]
                prompts += [ct.generation_prompt(f"a photo of {ct.identifier}", groups=prompting.generation)] * len(idx)
                codes.append(pd.gen_codes[idx])
            loss = loss + weights["generation"] * M.t2i_loss(um, prompts, torch.cat(codes), caption_dropout=0.0,
                                                             generator=gen)
        if weights.get("editing", 0) > 0:
            src, instr, codes = [], [], []
            for ct, pd in zip(cts, pdata):
                if not pd.edits:
                    raise StageError(f"{pd.card.name}: no editing triplets; build PersonalData with n_edits > 0")
                for s, i, c in _draw(pd.edits, sched.batch, rng):
                    src.append(s)
                    instr.append(ct.generation_prompt(i, groups=prompting.editing))
                    codes.append(c)
            loss = loss + weights["editing"] * M.edit_loss(um, np.stack(src), instr, torch.stack(codes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
        if on_step is not None and (step % record_every == 0 or step == steps - 1):
            for ct in cts:
                on_step(stage, step, curve[-1], ct)
    return curve


# --------------------------------------------------------------------------- UniCTokens' stages


def train_stage_1_understanding(um, cts, pdata, sched: Schedule, seed: int = 0, on_step: OnStep | None = None,
                                progress: bool = False) -> list[float]:
    """Stage 1, understanding warm-up: ``<c>`` + shared tokens on recognition, VQA and conversations;
    prompts ``"<c> is <shared>. " + question``."""
    return train_tokens(um, cts, pdata, steps=sched.stage1_steps, train_groups=("identifier", "shared"),
                        weights={"understanding": 1.0}, prompting=Prompting(understanding=("shared",)),
                        sched=sched, seed=seed, stage="stage1", on_step=on_step, progress=progress)


def train_stage_2_generation(um, cts, pdata, sched: Schedule, seed: int = 0, on_step: OnStep | None = None,
                             progress: bool = False) -> list[float]:
    """Stage 2, bootstrapping generation from understanding: generation tokens join; loss
    0.8 * generation of the (augmented) training images + 0.2 * stage-1 understanding data;
    prompt ``"a photo of <shared><generation> <c>"``. Needs the ``generation`` group added."""
    for ct in cts:
        if "generation" not in ct.groups:
            raise StageError(f"{ct.identifier} has no generation tokens; add them first: "
                             f"ct.add_group(um, 'generation', n)")
    return train_tokens(um, cts, pdata, steps=sched.stage2_steps, train_groups=("identifier", "shared", "generation"),
                        weights={"generation": 0.8, "understanding": 0.2},
                        prompting=Prompting(understanding=("shared",), generation=("shared", "generation")),
                        sched=sched, seed=seed + 1, stage="stage2", on_step=on_step, progress=progress)


@torch.no_grad()
def generated_codes(um, ct, n: int, guidance: float | None = None, seed: int = 0,
                    groups: Sequence[str] = ("shared", "generation")) -> torch.Tensor:
    """Generation as perception: ``n`` images drawn with the concept's generation prompt;
    returns their VQ codes ``long[n, g, g]``.

    UniCTokens (a masked-token model) keeps the image tokens that settle early in decoding;
    an autoregressive model settles every token the moment it draws it, so all codes are kept.
    """
    prompt = ct.generation_prompt(f"a photo of {ct.identifier}", groups=tuple(g for g in groups if g in ct.groups))
    _, codes = M.generate_images(um, [prompt], n=n, guidance=guidance, seed=seed, return_codes=True)
    return codes


def train_stage_3_understanding(um, cts, pdata, sched: Schedule, seed: int = 0, on_step: OnStep | None = None,
                                progress: bool = False) -> list[float]:
    """Stage 3, deepening understanding from generation: ``<c>`` + understanding tokens (seeded from
    generated images' codes) on understanding data; shared and generation tokens frozen;
    prompts ``"<c> is <shared><understanding>. " + question``."""
    for ct in cts:
        if "understanding" not in ct.groups:
            raise StageError(f"{ct.identifier} has no understanding tokens; add them first (seeded by "
                             f"generated_codes): ct.add_group(um, 'understanding', n, init='kmeans_codes', codes=...)")
    return train_tokens(um, cts, pdata, steps=sched.stage3_steps, train_groups=("identifier", "understanding"),
                        weights={"understanding": 1.0}, prompting=Prompting(understanding=("shared", "understanding")),
                        sched=sched, seed=seed + 2, stage="stage3", on_step=on_step, progress=progress)
