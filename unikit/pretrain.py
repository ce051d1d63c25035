"""Pretraining the kit's base model on the world's generic objects.

Three phases, each resumable from its last checkpoint:

1. **The image tokenizer** (``JanusVQVAE``), trained from scratch by running its parts
   (:mod:`unikit.vq`), with dead-code restarts. Its reconstructions cap what generation
   can ever show, so a gate (:func:`gate_tokenizer`) stops the run if the judge reads too
   few of them right.
2. **The understanding encoder** (vision model + aligner) on the renderer's attribute
   labels (:func:`train_vision`): the stand-in for the pretrained SigLIP encoder Janus-Pro
   starts from, so that the language model reads features that already show the object.
3. **Everything else** (vision encoder, aligners, language model, heads) on a mixture of
   tasks, the tokenizer frozen and the corpus's VQ codes cached once; understanding tasks
   alone for the first ``perception_steps``:

   - understanding: captioning, VQA, yes/no recognition ("is there a red circle in this
     image?") and *same object?* on image pairs (the pairs differ by the mark alone half
     the time, so the understanding path learns to see the mark);
   - text-to-image: caption -> VQ codes through the generation head, with caption dropout
     matching the unconditional prompt ``generate`` builds for guidance;
   - instruction editing: source image through the understanding path + instruction ->
     target codes ("make the hat blue", "remove the toy").

Held-out shape+colour pairs (:data:`unikit.world.HELDOUT_PAIRS`) never appear in any task.

Output directory: the model (``save_pretrained``, safetensors) with its processor,
``metrics.json`` (judge-scored quality on held-out data), ``history.json`` (loss curves)
and ``MODEL_CARD.md`` (config, seed, command, wall time).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import model as M
from . import vq as V
from . import world
from .cache import atomic_path, write_json
from .distributed import Context, LossModule
from .world import Scene

TASKS = ("caption", "vqa", "attribute", "recognition", "same", "t2i", "edit")
CAPTION_Q = "describe the image."
SAME_Q = "is the object in both images the same?"


@dataclass
class PretrainConfig:
    """Sizes and schedules of one pretraining run."""

    profile: str
    model: str = ""  # the model's sizes (unikit.model.PROFILES); default: the profile's own name
    seed: int = 0
    vq_steps: int = 3000
    vq_batch: int = 64
    vq_lr: float = 2e-3
    vq_restart_every: int = 50
    vq_gate: float = 0.0  # the model phase starts only if the judge reads this fraction of reconstructions right
    vision_steps: int = 0  # phase 2: the understanding encoder on the world's attribute labels (SigLIP's stand-in)
    vision_batch: int = 64
    vision_lr: float = 2e-3
    # How phase 2 starts and what its heads read (see :func:`train_vision`): "transformers" keeps
    # the library's normal(0, 0.02) init, "fan_in" re-initialises the encoder and aligner at
    # PyTorch's fan-in scale (Xavier for attention q/k/v); the heads read the mean of the
    # "aligner" outputs, of the "encoder"'s own outputs (the aligner then learns in phase 3 only),
    # or "both" (one set of heads each, losses summed).
    vision_init: str = "transformers"
    vision_readout: str = "aligner"
    corpus: int = 12000  # generic scenes rendered and VQ-encoded once
    # How phase 3 starts: "transformers" keeps the library's init of the language model,
    # "fan_in" re-initialises its linear layers and text head (:func:`init_language_fan_in`:
    # faster on yes/no alone, worse in a full teach run, measured there).
    lm_init: str = "transformers"
    lm_steps: int = 6000
    lm_batch: int = 32
    lm_lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    mix: dict = field(default_factory=lambda: {"caption": 1, "vqa": 1, "attribute": 1, "recognition": 1, "same": 1,
                                               "t2i": 3, "edit": 2})
    # Understanding first: the first ``perception_steps`` model steps draw from ``perception_mix``
    # only, so the vision path learns to see objects before generation's larger losses share the
    # language model (yes/no questions need more: see ``yesno_steps`` and :func:`attribute_example`).
    perception_steps: int = 0
    perception_mix: dict = field(default_factory=lambda: {"caption": 1, "vqa": 2, "attribute": 2, "recognition": 2,
                                                          "same": 1})
    # Before everything else, ``yesno_steps`` steps of the yes/no curriculum alone (see
    # :func:`attribute_example`): one attribute more every quarter, background first.
    yesno_steps: int = 0
    yesno_newest: float = 0.5  # how often the curriculum asks about its newest attribute
    yesno_paired: bool = False  # yes/no batches ask each image twice, once true, once false
    lm_train_vision: bool = True  # phase 3 trains the understanding encoder and aligner too (False: frozen)
    align_steps: int = 0  # phase 2b: image-text alignment (:func:`train_align`); 0 skips it
    align_lr: float = 2e-3
    caption_dropout: float = 0.1
    checkpoint_every: int = 500
    track_every: int = 0  # every so many model steps, score yes/no per question kind (history["tracked"]); 0: off
    track_n: int = 100  # held-out questions per tracking
    eval_n: int = 200  # held-out examples per metric

    def __post_init__(self) -> None:
        self.model = self.model or self.profile

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


CONFIGS = {
    "smoke": PretrainConfig("smoke", vq_steps=30, vq_batch=16, corpus=256, lm_steps=24, lm_batch=8,
                            warmup=5, checkpoint_every=12, eval_n=8, yesno_steps=4, perception_steps=8, vision_steps=6,
                            vision_batch=8, align_steps=3, track_every=12, track_n=10),
    # teach: lesson 01's live demonstration (minutes on 2 cores): every phase, a few hundred steps
    "teach": PretrainConfig("teach", vq_steps=60, vq_batch=32, vision_steps=60, align_steps=40, corpus=512,
                            lm_steps=120, yesno_steps=20, perception_steps=40, lm_batch=32, lm_lr=1.5e-3, warmup=20,
                            eval_n=8, checkpoint_every=60, vision_init="fan_in", vision_readout="both"),
    # v1: the recipe of the base model shipped before the ship run finished (one thread setup, no
    # alignment, unpaired yes/no); the shipped weights carry its run, moved onto today's vocabulary
    "v1": PretrainConfig("v1", model="teach", vq_steps=1500, vq_batch=32, corpus=12000, lm_steps=6000, lm_batch=32,
                         lm_lr=1.5e-3, checkpoint_every=250, perception_steps=500, vq_gate=0.7, vision_steps=1000,
                         vision_init="fan_in", vision_readout="both",
                         perception_mix={"caption": 1, "vqa": 2, "recognition": 1, "same": 1},
                         mix={"caption": 1, "vqa": 1, "recognition": 1, "same": 1, "t2i": 4, "edit": 2}),
    # ship: the settings the next shipped base model is made with (a test holds them equal to its record)
    "ship": PretrainConfig("ship", model="teach", vq_steps=4000, vq_batch=32, vq_lr=2e-3, vq_gate=0.8,
                           vision_steps=8000, vision_batch=64, vision_lr=2e-3, vision_init="fan_in",
                           vision_readout="both", align_steps=1500, align_lr=2e-3, corpus=20000, lm_steps=12000,
                           lm_batch=32, lm_lr=1.5e-3, warmup=300, checkpoint_every=250, yesno_paired=True,
                           track_every=500,
                           perception_steps=3000,
                           perception_mix={"attribute": 3, "recognition": 3, "vqa": 1, "caption": 1, "same": 2},
                           mix={"attribute": 1, "recognition": 1, "vqa": 1, "caption": 1, "same": 1, "t2i": 4,
                                "edit": 2}),
}
# ship2: the next shipped model's recipe. The ship run's phase 3 erased what phase 2 taught the
# encoder (linear probe, 2000 renders: shape 0.988 -> 0.446, mark 0.976 -> 0.481; see
# docs/notes/2026-12-03-ship-run.md), so phase 3 keeps the understanding encoder frozen.
CONFIGS["ship2"] = dataclasses.replace(CONFIGS["ship"], profile="ship2", lm_train_vision=False)
# ship3: ship2 with a language model twice as deep (the "deep" sizes). ship2 met every
# understanding target and drew poorly with its text-to-image loss still falling; at 35 training
# tokens per parameter it is past the compute-optimal size, so the extra compute goes to depth
# (docs/notes/2026-12-03-ship3-run.md). Its tokenizer and encoder phases are ship2's.
CONFIGS["ship3"] = dataclasses.replace(CONFIGS["ship2"], profile="ship3", model="deep")
# ship4: ship2 with twice the model steps. Stopped at step 6300, ship3 had not lowered the
# text-to-image loss at equal steps (mean over steps 5000-5999: 3.62 against ship2's 3.56) while
# its understanding losses were lower: generation is limited by steps, not depth, at this size.
CONFIGS["ship4"] = dataclasses.replace(CONFIGS["ship2"], profile="ship4", lm_steps=24000)


class PretrainError(ValueError):
    """Bad pretraining input (unknown profile, an output directory holding something else)."""


def recorded_config(saved: dict) -> dict:
    """A run's recorded config with settings added to the kit since then filled in by their
    defaults (which reproduce the behaviour before the setting existed, e.g. ``yesno_steps=0``)."""
    known = PretrainConfig.__dataclass_fields__  # settings the kit has since dropped (guidance) are left out
    return {**dataclasses.asdict(PretrainConfig(saved.get("profile", ""))),
            **{k: v for k, v in saved.items() if k in known}}


def pretrain_config(profile: str, **overrides) -> PretrainConfig:
    if profile not in CONFIGS:
        raise PretrainError(f"no pretraining profile {profile!r}; choose one of {', '.join(CONFIGS)} "
                            f"(the gpu profile loads Janus-Pro instead of pretraining)")
    cfg = dataclasses.replace(CONFIGS[profile], **overrides)
    for name, allowed in (("vision_init", VISION_INITS), ("vision_readout", tuple(VISION_READS)),
                          ("lm_init", LM_INITS)):
        if getattr(cfg, name) not in allowed:
            raise PretrainError(f"{name}={getattr(cfg, name)!r}; choose one of {', '.join(allowed)}")
    return cfg


# --------------------------------------------------------------------------- task examples


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


@torch.no_grad()
def build_corpus(um: M.UnifiedModel, n: int, seed: int, batch: int = 512) -> Corpus:
    """Render ``n`` generic scenes (no held-out pairs) and half as many edits; VQ-encode both once."""
    rng = random.Random(seed)
    scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(n)]
    edit_src = list(range(n // 2))
    edits = [world.random_edit(scenes[i], rng) for i in edit_src]
    images = world.render_many(scenes)
    targets = world.render_many([t for _, t in edits])
    enc = lambda x: torch.cat([V.vq_encode(um, x[i:i + batch]) for i in range(0, len(x), batch)])  # noqa: E731
    return Corpus(scenes, images, enc(images), edit_src, [e for e, _ in edits], targets, enc(targets))


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
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def task_loss(um: M.UnifiedModel, task: str, batch, caption_dropout: float, generator=None,
              drop: torch.Tensor | None = None) -> torch.Tensor:
    """The mean loss of one task batch, per example (so the mean over workers' equal shards is the
    global batch's mean). ``drop``: which examples lose their prompt (caption dropout) when the
    caller drew it, else drawn from ``generator``."""
    images, prompts, target = batch
    if task == "t2i":
        return M.t2i_loss(um, prompts, target, caption_dropout=caption_dropout, generator=generator, drop=drop)
    if task == "edit":
        return M.edit_loss(um, images, prompts, target, caption_dropout=caption_dropout, generator=generator, drop=drop)
    return M.understanding_loss(um, images, prompts, target, reduction="none").mean()


def shard_batch(ctx: Context, batch):
    """A task batch ``(images, prompts, targets)`` cut to this worker's shard."""
    return tuple(None if part is None else ctx.shard(part) for part in batch)


# --------------------------------------------------------------------------- phases


PHASES = ("vq", "vision", "align", "lm")  # in order; a checkpoint's "phase" is the one it is in
VISION_SETTINGS = ("seed", "vision_steps", "vision_batch", "vision_lr", "vision_init", "vision_readout")
# The settings each reusable phase's result depends on (besides the model's sizes and the world).
PHASE_SETTINGS = {
    "vq": ("seed", "vq_steps", "vq_batch", "vq_lr", "vq_restart_every"),
    "vision": VISION_SETTINGS,
    "align": (*VISION_SETTINGS, "align_steps", "align_lr"),  # it continues from the vision phase
}
PHASE_FILES = {"vq": "tokenizer", "vision": "vision", "align": "align"}  # phase -> save_phase_weights name
# The model sizes each reusable phase's modules have (the language model's depth is in none:
# no phase before the model phase runs its layers).
VISION_SIZES = ("hidden", "vision_hidden", "vision_layers", "vision_heads")
PHASE_SIZES = {"vq": ("vq_base", "vq_mult", "vq_res_blocks", "vq_latent", "codebook", "vq_embed_dim"),
               "vision": VISION_SIZES, "align": VISION_SIZES}


def world_version(words: bool = True) -> str:
    """A hash of the world a run trains on: its renders and attributes (what the judge checks) and,
    with ``words``, the language's vocabulary. A checkpoint from another version is not resumed."""
    from . import cache
    from .judge import world_definition

    return cache.config_hash({"world": world_definition(), **({"words": M.base_words()} if words else {})})


def phase_settings(cfg: dict, phase: str) -> dict:
    """What a phase's result depends on: its settings, the sizes of the modules it trains
    (:data:`PHASE_SIZES`), the world's renders."""
    sizes = M.PROFILES[cfg["model"]]
    settings = {"phase": phase, **{k: cfg[k] for k in PHASE_SETTINGS[phase]},
                "model": {k: sizes[k] for k in PHASE_SIZES[phase]}, "world": world_version(words=False)}
    return json.loads(json.dumps(settings))  # as a record on disk reads back (tuples as lists)


def recorded_phase_settings(settings: dict) -> dict:
    """A ``phase.json`` record's settings as :func:`phase_settings` writes them today (records
    written before :data:`PHASE_SIZES` hold every model size; only the phase's own count)."""
    phase = settings["phase"]
    return {**settings, "model": {k: v for k, v in settings["model"].items() if k in PHASE_SIZES[phase]}}


def _differences(saved: dict, wanted: dict) -> list[str]:
    return [f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
            if saved.get(k) != wanted.get(k)]


def _checkpoint(out: Path) -> Path:
    return out / "checkpoint"


def _save_state(um, path: Path, state: dict) -> None:
    """Model (safetensors) + optimizer/schedule state (torch.save of tensors and plain data), atomically."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        M.save_model(um, path=tmp / "model")
        torch.save(state, tmp / "state.pt")


def _load_state(path: Path):
    um = M.load_model(path / "model")
    return um, torch.load(path / "state.pt", weights_only=True)


def train_vq(um: M.UnifiedModel, cfg: PretrainConfig, history: dict, start: int = 0, opt_state=None,
             save=None, progress: bool = True, ctx: Context = Context()) -> None:
    """Phase 1: the tokenizer on fresh renders each step (generic scenes, held-out pairs included:
    the tokenizer is not part of the compositional test). Data-parallel over ``ctx``: each worker
    encodes its shard of the ``cfg.vq_batch`` renders; code usage and latents for dead-code
    restarts are pooled over the workers, so every worker restarts the same codes."""
    vq = um.vq
    vq.train()
    stats = {}
    trainer = ctx.wrap(LossModule(lambda images: V.vq_loss(vq, images, stats=stats)[0], vq=vq))
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.vq_lr)
    if opt_state:
        opt.load_state_dict(opt_state)
    gen = torch.Generator().manual_seed(cfg.seed)
    usage = torch.zeros(um.codebook_size, dtype=torch.long)
    latents = []
    bar = tqdm(range(start, cfg.vq_steps), desc="tokenizer", disable=not (progress and ctx.is_main), initial=start,
               total=cfg.vq_steps)
    for step in bar:
        rng = random.Random(cfg.seed * 1_000_003 + step)
        scenes = [world.random_scene(rng, allow_heldout=True, item_prob=0.35) for _ in range(cfg.vq_batch)]
        images = world.render_many(ctx.shard(scenes))
        lr = float(cfg.vq_lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / cfg.vq_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = trainer(images)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += ctx.sum_(V.code_usage(stats["ids"], um.codebook_size))
        latents.append(ctx.gather(stats["latents"]))
        history.setdefault("vq", []).append([step, ctx.mean(stats["recon_loss"]), ctx.mean(stats["embedding_loss"])])
        if (step + 1) % cfg.vq_restart_every == 0 and step + 1 < cfg.vq_steps * 0.8:
            restarted = V.restart_dead_codes(vq, torch.cat(latents), usage, generator=gen)
            history.setdefault("vq_restarts", []).append([step, restarted, int((usage > 0).sum())])
            usage.zero_()
            latents = []
        if progress and ctx.is_main:
            bar.set_postfix(recon=f"{stats['recon_loss']:.4f}")
        if save and (step + 1) % cfg.checkpoint_every == 0:
            save("vq", step + 1, opt.state_dict())
    vq.eval()


VISION_ATTRIBUTES = tuple(world.ATTRIBUTES)  # every field the judge reads, mark included


VISION_INITS = ("transformers", "fan_in")
LM_INITS = ("transformers", "fan_in")
VISION_READS = {"aligner": ("aligner",), "encoder": ("encoder",), "both": ("aligner", "encoder")}
"""``vision_readout`` -> the outputs phase 2's heads read (the first is what ``vision_accuracy`` reports)."""


@torch.no_grad()
def _init_fan_in(modules, attentions, seed: int) -> None:
    """Every linear and conv layer of ``modules`` at PyTorch's default fan-in scale, the q/k/v
    projections of ``attentions`` with Xavier (biases zero); deterministic in ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in modules:
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                mod.reset_parameters()
        for attn in attentions:
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
                torch.nn.init.xavier_uniform_(lin.weight)
                if lin.bias is not None:
                    torch.nn.init.zeros_(lin.bias)


def init_vision_fan_in(um: M.UnifiedModel, seed: int) -> None:
    """Re-initialise the understanding encoder (vision model + aligner) for training from scratch
    at this small width: every linear and conv layer at PyTorch's default fan-in scale, attention
    q/k/v with Xavier, position embeddings as the library set them.

    Why (measured in this kit, 1000 phase-2 steps, 1000 fresh renders): transformers'
    normal(0, 0.02) suits widths of 1000 and more; at width 128 it leaves the attention logits
    near zero and the residual branches small. With it, heads on the aligner read shape 36% of
    the time (chance 25%); with this init they read 42%, and heads on the encoder's own outputs
    70% (see ``vision_readout``)."""
    janus = um.model.model
    _init_fan_in([*janus.vision_model.modules(), *janus.aligner.modules()],
                 [layer.self_attn for layer in janus.vision_model.encoder.layers], seed + 7)


def init_language_fan_in(um: M.UnifiedModel, seed: int) -> None:
    """Re-initialise the language model's linear layers and its text head (``lm_head``) the
    same way as :func:`init_vision_fan_in` (fan-in scale, Xavier q/k/v); the token embeddings,
    norms and the generation path keep the library's init.

    Why (measured in this kit: a fresh language model on the shipped understanding encoder,
    yes/no questions only, batch 32, lr 1.5e-3): with transformers' init the answers stayed on
    the coin-flip plateau except "is the background X?"; with this init "is the background X?"
    left it after 84 steps and "is the object <colour>?" after 321 (0.72 right at step 750),
    while with transformers' init colour was still at 0.47 after 1000 steps. Shape stayed near
    chance with either init. In a full teach run, though (with ``yesno_steps=1000``,
    ``yesno_newest=0.75``, ``perception_steps=1500``, ``lm_steps=6500``, "attribute" in both
    mixes), every other task fell behind the shipped model's run: mean losses over steps
    4500-5000 were VQA 0.50 vs 0.15, caption 0.52 vs 0.16, text-to-image 3.37 vs 2.70, while
    recognition and same-object stayed on the plateau (0.349 vs 0.347). So the teach profile
    keeps transformers' init for the language model."""
    lm = um.model.model.language_model
    _init_fan_in([*lm.modules(), um.model.lm_head], [layer.self_attn for layer in lm.layers], seed + 13)


def vision_parameters(um: M.UnifiedModel) -> list[torch.nn.Parameter]:
    """The understanding path's own parameters: vision encoder + aligner."""
    janus = um.model.model
    return [*janus.vision_model.parameters(), *janus.aligner.parameters()]


def train_vision(um: M.UnifiedModel, cfg: PretrainConfig, history: dict, progress: bool = True,
                 on_step=None, ctx: Context = Context()) -> None:
    """Phase 2: the understanding encoder (vision model + aligner) learns to see the world.

    Janus-Pro's understanding encoder is a pretrained SigLIP; here it starts from scratch,
    and the language model's answer loss alone teaches it slowly (measured in this kit: after
    1000 understanding steps, a linear probe read the body colour from the aligner's output of
    the body's own patch only 75% of the time, against 100% from the raw patch embedding). So
    the encoder first learns on its own: the *mean* of its outputs ``[B, D]`` (the aligner's,
    or the encoder's own with ``vision_readout="encoder"``) feeds one linear head per attribute
    of :data:`VISION_ATTRIBUTES` (shape, colour, pattern, background, mark, mark colour, items),
    cross-entropy on the renderer's exact labels. The heads are thrown away; what stays is an
    encoder whose every output summarises the scene, mark included. Fresh generic renders each
    step, held-out shape+colour pairs excluded.

    Measured here (1000 steps, 1000 fresh renders): with transformers' init and the aligner
    read, shape 0.36, mark 0.49 (chance 0.25 and 0.2); with ``vision_init="fan_in"``
    (:func:`init_vision_fan_in`) and the encoder read, shape 0.70, mark 0.74; with both read
    (the teach profile: the aligner learns too), the aligner's heads read shape 0.62, mark 0.68.
    ``history["vision"]``: ``[step, loss]`` rows; ``history["vision_accuracy"]``: per attribute,
    the fraction the heads read right over the last 50 steps (a probe of what the encoder sees).
    """
    janus = um.model.model
    if cfg.vision_init == "fan_in":
        init_vision_fan_in(um, cfg.seed)
    reads = VISION_READS[cfg.vision_readout]
    widths = {"aligner": int(um.config.text_config.hidden_size), "encoder": int(um.config.vision_config.hidden_size)}
    gen = torch.Generator().manual_seed(cfg.seed + 99)
    heads = torch.nn.ModuleDict({r: torch.nn.ModuleDict({a: torch.nn.Linear(widths[r], len(v))
                                                         for a, v in world.ATTRIBUTES.items()}) for r in reads})
    with torch.no_grad():
        for r in reads:
            for h in heads[r].values():
                h.weight.normal_(0, widths[r] ** -0.5, generator=gen)
                h.bias.zero_()
    params = vision_parameters(um)

    def head_loss(pixels, labels):
        encoded = janus.vision_model(pixels).last_hidden_state
        pooled = {r: (encoded if r == "encoder" else janus.aligner(encoded)).mean(1) for r in reads}
        loss, first = 0.0, None
        for r in reads:  # the first readout's logits are what ``vision_accuracy`` reports
            out = {a: heads[r][a](pooled[r]) for a in VISION_ATTRIBUTES}
            first = first or out
            loss = loss + sum(F.cross_entropy(out[a], labels[a]) for a in VISION_ATTRIBUTES) / len(out)
        return loss, first

    trainer = ctx.wrap(LossModule(head_loss, vision=janus.vision_model, aligner=janus.aligner, heads=heads))
    opt = torch.optim.AdamW([*params, *heads.parameters()], lr=cfg.vision_lr, betas=(0.9, 0.98), weight_decay=0.01)
    janus.vision_model.train()
    janus.aligner.train()
    right, seen = dict.fromkeys(VISION_ATTRIBUTES, 0), 0
    bar = tqdm(range(cfg.vision_steps), desc="vision", disable=not (progress and ctx.is_main))
    for step in bar:
        rng = random.Random(cfg.seed * 1_000_003 + 31 * step + 5)
        scenes = ctx.shard([world.random_scene(rng, item_prob=0.35) for _ in range(cfg.vision_batch)])
        labels = {a: torch.tensor([sc.labels()[a] for sc in scenes]) for a in VISION_ATTRIBUTES}
        lr = float(cfg.vision_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / cfg.vision_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, logits = trainer(M.pixel_values(um, world.render_many(scenes)), labels)
        if step >= cfg.vision_steps - 50:  # what the heads read right at the end, per attribute
            for a in VISION_ATTRIBUTES:
                right[a] += int((logits[a].argmax(-1).cpu() == labels[a]).sum())
            seen += len(scenes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.setdefault("vision", []).append([step, ctx.mean(float(loss.detach()))])
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if on_step is not None:
            on_step(step)
            janus.vision_model.train()
            janus.aligner.train()
    counts = ctx.sum_(torch.tensor([right[a] for a in VISION_ATTRIBUTES] + [seen], dtype=torch.float64))
    history["vision_accuracy"] = {a: float(counts[i] / max(1.0, float(counts[-1])))
                                  for i, a in enumerate(VISION_ATTRIBUTES)}
    um.model.eval()


# Phase 2b: which words name each attribute's values, and whether the pooled image feature meets
# them directly (tied) or through a learned projection (colours of a mark or an item share the
# body colour's words, so they need their own view of the image).
ALIGN_WORDS = {
    "shape": (world.SHAPES, True), "colour": (tuple(world.COLOURS), True), "pattern": (world.PATTERNS, True),
    "background": (tuple(world.BACKGROUNDS), True), "mark": ((world.NONE, *world.MARKS), True),
    "toy_shape": ((world.NONE, *world.TOY_SHAPES), True),
    "mark_colour": ((world.NONE, *world.COLOURS), False), "hat": ((world.NONE, *world.COLOURS), False),
    "scarf": ((world.NONE, *world.COLOURS), False), "toy": ((world.NONE, *world.COLOURS), False),
}


def train_align(um: M.UnifiedModel, cfg: PretrainConfig, history: dict, progress: bool = True,
                ctx: Context = Context()) -> None:
    """Phase 2b, image-text alignment: the words that name an attribute's values become its
    classifier on the image. For each attribute of :data:`ALIGN_WORDS`, logits are the cosine
    between the mean of the aligner's outputs ``[B, D]`` (through a learned projection for mark and
    item colours) and the language model's input embeddings of the value words ``[V, D]``, times a
    learned temperature; cross-entropy on the renderer's labels. Trains the vision encoder, the
    aligner and those embedding rows, so that in the language model a word and the image showing
    it point the same way (a match is then a direction the residual stream already holds).
    ``history["align"]``: ``[step, loss]``; ``history["align_accuracy"]``: per attribute, last 50 steps."""
    janus = um.model.model
    emb = janus.language_model.embed_tokens
    tok = um.tokenizer
    word_ids = {a: torch.tensor(tok.convert_tokens_to_ids(list(words))) for a, (words, _) in ALIGN_WORDS.items()}
    D = emb.weight.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 29)
        projections = torch.nn.ModuleDict({a: torch.nn.Linear(D, D) for a, (_, tied) in ALIGN_WORDS.items() if not tied})
    scale = torch.nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))

    def align_loss(pixels, labels):
        pooled = janus.aligner(janus.vision_model(pixels).last_hidden_state).mean(1)
        loss, logits = 0.0, {}
        for a, ids in word_ids.items():
            view = projections[a](pooled) if a in projections else pooled
            logits[a] = F.normalize(view, dim=-1) @ F.normalize(emb(ids), dim=-1).t() * scale.exp()
            loss = loss + F.cross_entropy(logits[a], labels[a])
        return loss / len(word_ids), logits

    holder = torch.nn.Module()
    holder.scale = scale
    trainer = ctx.wrap(LossModule(align_loss, vision=janus.vision_model, aligner=janus.aligner, embed=emb,
                                  projections=projections, scale=holder))
    params = [*vision_parameters(um), emb.weight]
    opt = torch.optim.AdamW([{"params": vision_parameters(um), "weight_decay": 0.01},
                             {"params": [emb.weight, scale, *projections.parameters()], "weight_decay": 0.0}],
                            lr=cfg.align_lr, betas=(0.9, 0.98))
    janus.vision_model.train()
    janus.aligner.train()
    right, seen = dict.fromkeys(word_ids, 0), 0
    bar = tqdm(range(cfg.align_steps), desc="align", disable=not (progress and ctx.is_main))
    for step in bar:
        rng = random.Random(cfg.seed * 1_000_003 + 37 * step + 11)
        scenes = ctx.shard([world.random_scene(rng, item_prob=0.35) for _ in range(cfg.vision_batch)])
        labels = {a: torch.tensor([ALIGN_WORDS[a][0].index(sc.value(a)) for sc in scenes]) for a in word_ids}
        lr = float(cfg.align_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / cfg.align_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, logits = trainer(M.pixel_values(um, world.render_many(scenes)), labels)
        if step >= cfg.align_steps - 50:
            for a in word_ids:
                right[a] += int((logits[a].argmax(-1) == labels[a]).sum())
            seen += len(scenes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.setdefault("align", []).append([step, ctx.mean(float(loss.detach()))])
        if progress and ctx.is_main and step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    counts = ctx.sum_(torch.tensor([right[a] for a in word_ids] + [seen], dtype=torch.float64))
    history["align_accuracy"] = {a: float(counts[i] / max(1.0, float(counts[-1]))) for i, a in enumerate(word_ids)}
    um.model.eval()


PHASE_MODULES = {"tokenizer": ("vqmodel",), "vision": ("vision_model", "aligner"),
                 "align": ("vision_model", "aligner", "language_model.embed_tokens")}
"""The modules (paths under ``JanusModel``) whose weights each phase's file holds."""


def _module(um: M.UnifiedModel, path: str) -> torch.nn.Module:
    return functools.reduce(getattr, path.split("."), um.model.model)


def phase_state(um: M.UnifiedModel, phase: str) -> dict[str, torch.Tensor]:
    """The weights one phase trains (:data:`PHASE_MODULES`), keyed ``<module>.<parameter>``."""
    return {f"{m}.{k}": v.detach().clone().contiguous() for m in PHASE_MODULES[phase]
            for k, v in _module(um, m).state_dict().items()}


def save_phase_weights(um: M.UnifiedModel, phase: str, directory) -> Path:
    """Write :func:`phase_state` to ``directory/<phase>.safetensors`` atomically."""
    from safetensors.torch import save_file

    path = Path(directory) / f"{phase}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(phase_state(um, phase), str(tmp))
    return path


def record_phase(directory, cfg: PretrainConfig, phase: str, **extra) -> None:
    """Add ``phase``'s settings (:func:`phase_settings`) to ``directory/phase.json``, so that
    ``pretrain(..., phases_from=[directory])`` can reuse the weights saved beside it."""
    path = Path(directory) / "phase.json"
    records = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if r["settings"]["phase"] != phase]
    records.append({"settings": phase_settings(cfg.as_dict(), phase), **extra})
    write_json(path, records)


def load_phase_state(um: M.UnifiedModel, phase: str, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`phase_state`-keyed weights into ``um``'s modules of ``phase`` (shapes must match)."""
    for m in PHASE_MODULES[phase]:
        _module(um, m).load_state_dict({k[len(m) + 1:]: v for k, v in state.items() if k.startswith(m + ".")})


def load_phase_weights(um: M.UnifiedModel, phase: str, path) -> None:
    """Load a phase's weights written by :func:`save_phase_weights` into ``um``."""
    from safetensors.torch import load_file

    load_phase_state(um, phase, load_file(str(path)))


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


def lm_parameters(um: M.UnifiedModel) -> list[torch.nn.Parameter]:
    """Every parameter of the model but the tokenizer's (what phase 3 trains)."""
    vq_ids = {id(p) for p in um.vq.parameters()}
    return [p for p in um.model.parameters() if id(p) not in vq_ids]


def train_lm(um: M.UnifiedModel, corpus: Corpus, cfg: PretrainConfig, history: dict, start: int = 0,
             opt_state=None, save=None, progress: bool = True, ctx: Context = Context(),
             stop: int | None = None) -> None:
    """Phase 3: every part but the tokenizer, on the task mixture (one task per step, drawn by
    weight): first ``cfg.yesno_steps`` of the yes/no curriculum alone, then understanding tasks
    alone up to ``cfg.perception_steps``, then the full mixture ``cfg.mix``. With
    ``cfg.lm_init="fan_in"`` a fresh run (not a resumed one) first re-initialises the language
    model (:func:`init_language_fan_in`). Data-parallel over ``ctx``: every worker draws the same
    global batch of ``cfg.lm_batch`` and trains on its shard. ``stop``: end before that step (the
    schedule stays the one for ``cfg.lm_steps``)."""
    if cfg.lm_init == "fan_in" and start == 0 and not opt_state:
        init_language_fan_in(um, cfg.seed)
    for p in um.vq.parameters():
        p.requires_grad_(False)
    params = lm_parameters(um)
    if not cfg.lm_train_vision:
        frozen = {id(p) for p in vision_parameters(um)}
        for p in vision_parameters(um):
            p.requires_grad_(False)
        params = [p for p in params if id(p) not in frozen]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lm_lr, betas=(0.9, 0.98))
    if opt_state:
        opt.load_state_dict(opt_state)
    trainer = ctx.wrap(LossModule(lambda task, batch, drop: task_loss(um, task, batch, cfg.caption_dropout, drop=drop),
                                  model=um.model))
    um.model.train()
    um.vq.eval()
    mixes = {}
    for name, mix in (("perception", cfg.perception_mix), ("full", cfg.mix)):
        tasks = [t for t in TASKS if mix.get(t, 0) > 0]
        mixes[name] = (tasks, [mix[t] for t in tasks])
    end = cfg.lm_steps if stop is None else min(stop, cfg.lm_steps)
    bar = tqdm(range(start, end), desc="model", disable=not (progress and ctx.is_main), initial=start,
               total=cfg.lm_steps)
    for step in bar:
        rng = random.Random(cfg.seed * 1_000_003 + 7919 * step + 1)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        if step < cfg.yesno_steps:
            task, attributes, newest = "attribute", yesno_attributes(step, cfg.yesno_steps), cfg.yesno_newest
        else:
            task = rng.choices(*mixes["perception" if step < cfg.perception_steps else "full"])[0]
            attributes, newest = YESNO_ORDER, 0.0
        lr = float(cfg.lm_lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + np.cos(np.pi * step / cfg.lm_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = task_batch(task, corpus, cfg.lm_batch, rng, attributes, newest, paired=cfg.yesno_paired)
        drop = torch.rand(cfg.lm_batch, generator=gen) < cfg.caption_dropout
        loss = trainer(task, shard_batch(ctx, batch), ctx.shard(drop))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.setdefault("lm", []).append([step, task, ctx.mean(float(loss.detach()))])
        if progress and ctx.is_main and step % 10 == 0:
            bar.set_postfix(task=task, loss=f"{float(loss):.3f}")
        if cfg.track_every and (step + 1) % cfg.track_every == 0 and ctx.is_main:
            tracked = evaluate_base(um, None, n=cfg.track_n, seed=999, tasks=("attribute", "recognition", "same"))
            history.setdefault("tracked", []).append({"step": step + 1, **tracked})
            um.model.train()
        if save and (step + 1) % cfg.checkpoint_every == 0:
            save("lm", step + 1, opt.state_dict())
    history["replica_checksums"] = ctx.checksums(um.model)
    um.model.eval()


# --------------------------------------------------------------------------- evaluation


def _all_right(read: dict, expected: dict) -> bool:
    return all(read[k] == v for k, v in expected.items())


@torch.no_grad()
def tokenizer_quality(um: M.UnifiedModel, judge, n: int = 200, seed: int = 12345, batch: int = 50) -> dict:
    """The tokenizer's round trip on ``n`` fresh renders (held-out pairs included):
    ``vq_recon_judge`` (fraction the judge reads right in every attribute), its ceiling
    ``vq_original_judge`` (the same judge on the renders themselves), ``vq_recon_mse`` (pixels
    in [0, 1]) and ``vq_codes_used`` (codebook entries the renders use)."""
    from .judge import expected_reading

    rng = random.Random(seed)
    pool = [world.random_scene(rng, allow_heldout=True, item_prob=0.35) for _ in range(n)]
    originals = world.render_many(pool)
    codes = torch.cat([V.vq_encode(um, originals[i:i + batch]) for i in range(0, n, batch)])
    recon = np.concatenate([V.vq_decode(um, codes[i:i + batch]) for i in range(0, n, batch)])
    reads, truth = judge.read(recon), [expected_reading(s) for s in pool]
    return {"vq_recon_judge": float(np.mean([_all_right(r, t) for r, t in zip(reads, truth)])),
            "vq_original_judge": float(np.mean([_all_right(r, t) for r, t in zip(judge.read(originals), truth)])),
            "vq_recon_mse": float(np.mean((recon.astype(np.float32) - originals) ** 2) / 255**2),
            "vq_codes_used": int((V.code_usage(codes, um.codebook_size) > 0).sum())}


@torch.no_grad()
def evaluate_base(um: M.UnifiedModel, judge, n: int = 200, seed: int = 12345, guidance: float | None = None,
                  batch: int = 50,
                  tasks=("vq", "caption", "vqa", "recognition", "same", "t2i", "edit", "attribute"),
                  temperature: float | None = None) -> dict:
    """Judge-scored quality on held-out examples (fresh seeds, never trained on). Fractions in [0, 1].
    Images are drawn with ``guidance`` / ``temperature``, by default the model's own (``model.sampling``)."""
    from .judge import expected_reading

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
            out[key] = float(np.mean([_all_right(r, w) for r, w in zip(reads, want)]))
    if "edit" in tasks:
        pairs = [(s, *world.random_edit(s, rng)) for s in scenes]
        res = np.concatenate([M.edit_image(um, world.render_many([s for s, _, _ in c]), [e for _, e, _ in c],
                                           guidance=guidance, temperature=temperature, seed=seed + i)
                              for i, c in enumerate(chunks(pairs))])
        reads = judge.read(res)
        out["edit"] = float(np.mean([_all_right(r, expected_reading(t)) for r, (_, _, t) in zip(reads, pairs)]))
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
    return out


EVAL_TASKS = ("vq", "probe", "caption", "vqa", "attribute", "recognition", "same", "t2i", "edit")
TARGETS = {**{f"encoder_probe_{a}": 0.97 for a in world.ATTRIBUTES}, **{f"attribute_{a}": 0.95 for a in YESNO_ORDER},
           "recognition": 0.90, "same_object": 0.85, "vqa": 0.95, "caption": 0.85, "vq_recon_judge": 0.95,
           "t2i_seen": 0.80, "edit": 0.60}
"""The base model's quality targets (``metrics.json`` keys; judge-scored on held-out scenes)."""

SAMPLING_GRID = {"guidance": (1.25, 1.5, 2.0, 3.0), "temperature": (0.5, 0.75, 1.0)}
"""What :func:`calibrate_sampling` tries (docs/notes/2026-12-03-sampling.md: guidance 3, the kit's
old fixed setting, drew far worse than 1.5 on the ship4 model)."""
CALIBRATION_SEED = 777  # validation scenes; the quality metrics use evaluate_base's 12345


def calibrate_sampling(um: M.UnifiedModel, judge, n: int = 100, grid: dict | None = None) -> dict:
    """Choose the guidance and temperature the model draws best with and store them as its own
    (``um.info["sampling"]``, read by ``model.sampling``).

    Scores every setting of ``grid`` (default :data:`SAMPLING_GRID`) by text-to-image on seen
    pairs plus editing, ``n`` judged validation examples each (:data:`CALIBRATION_SEED`, never the
    scenes the quality metrics use). Returns ``{"guidance", "temperature", "n", "grid": [{"guidance",
    "temperature", "t2i_seen", "edit"}]}``; ties go to the higher temperature, then the lower guidance."""
    grid = grid or SAMPLING_GRID
    rows = []
    for g in grid["guidance"]:
        for t in grid["temperature"]:
            m = evaluate_base(um, judge, n=n, seed=CALIBRATION_SEED, guidance=g, temperature=t, tasks=("t2i", "edit"))
            rows.append({"guidance": g, "temperature": t, "t2i_seen": m["t2i_seen"], "edit": m["edit"]})
    best = max(rows, key=lambda r: (r["t2i_seen"] + r["edit"], r["temperature"], -r["guidance"]))
    um.info["sampling"] = {"guidance": best["guidance"], "temperature": best["temperature"]}
    return {**um.info["sampling"], "n": n, "grid": rows}


# --------------------------------------------------------------------------- the whole run


def pretrain(profile: str = "teach", out=None, resume: bool = False, seed: int = 0, progress: bool = True,
             judge=None, workers: int = 1, phases_from=None, finish: bool = False,
             **overrides) -> tuple[M.UnifiedModel, dict, dict]:
    """Pretrain a base model. Returns ``(model, metrics, history)`` and writes them to ``out``.

    ``out`` defaults to the cache (``pretrain/<profile>-<hash>``). ``workers`` > 1 trains
    data-parallel (:mod:`unikit.distributed`: one-thread gloo workers; under ``torchrun`` the
    launcher's processes). With ``resume`` an interrupted run continues from its last checkpoint
    (same config required); if settings changed, the checkpoint's finished phases whose own
    settings (:data:`PHASE_SETTINGS`) are unchanged are reused and the rest start afresh.
    ``phases_from``: directories holding finished phases (``tokenizer.safetensors`` /
    ``vision.safetensors`` with ``phase.json``, as ``benchmarks/probe_base.py`` writes them) to
    reuse when their settings equal this run's. ``finish``: score and write an interrupted run's
    model as its last checkpoint (in the model phase) holds it, without training further; the
    metrics record the step it stopped at (``lm_steps_done``).
    """
    from . import cache
    from .distributed import check_workers, launch

    cfg = pretrain_config(profile, seed=seed, **overrides)
    check_workers(workers)
    out = Path(out) if out else cache.artifact_dir("pretrain", profile, cfg.as_dict())
    plan = _plan(cfg, out, resume or finish, [Path(d) for d in (phases_from or [])])
    if finish and not (plan["resume"] and plan["phase"] == "lm"):
        raise PretrainError(f"--finish needs an interrupted run in its model phase at {_checkpoint(out)} with these "
                            f"same settings; there is none (run it, or resume it, first)")
    plan["finish"] = finish
    command = "unikit pretrain --profile {} --seed {} --out {}{}{}{}{}".format(
        profile, seed, out, f" --workers {workers}" if workers > 1 else "", " --resume" if resume else "",
        "".join(f" --phases-from {d}" for d in (phases_from or [])), " --finish" if finish else "")
    hint = (f"The last checkpoint in {_checkpoint(out)} is whole: continue with the same command and --resume."
            if _checkpoint(out).exists() or plan["phase"] != "vq" else "Start it again.")
    launch(_run, workers, cfg, out, plan, progress, command, judge if workers == 1 else None, resume_hint=hint)
    return M.load_model(out), json.loads((out / "metrics.json").read_text()), json.loads((out / "history.json").read_text())


def _plan(cfg: PretrainConfig, out: Path, resume: bool, phases_from: list[Path]) -> dict:
    """Where a run starts: ``{"phase", "step", "resume": checkpoint or None, "reuse": {phase: source}}``.
    Raises :class:`PretrainError` for an output directory or checkpoint it cannot use."""
    ckpt = _checkpoint(out)
    want = cfg.as_dict()
    if out.exists() and any(out.iterdir()) and not resume and not (out / "metrics.json").exists() and not ckpt.exists():
        raise PretrainError(f"{out} is not empty and holds no unikit pretraining run; choose another --out")
    if ckpt.exists() and not resume and not (out / "metrics.json").exists():
        raise PretrainError(f"{out} holds an interrupted run; continue it with --resume, or delete {ckpt} to start afresh")
    plan = {"phase": "vq", "step": 0, "resume": None, "reuse": {}}
    if resume and ckpt.exists():
        state = torch.load(ckpt / "state.pt", weights_only=True)
        if state.get("world") != world_version():
            raise PretrainError(f"the checkpoint in {ckpt} was made for another version of the world (its renders or "
                                f"words differ); it cannot be resumed: delete {ckpt} or choose another --out")
        saved = recorded_config(state["config"])
        if saved == want:
            return {"phase": state["phase"], "step": state["step"], "resume": str(ckpt), "reuse": {}}
        done = PHASES[:PHASES.index(state["phase"])]
        reuse = [ph for ph in done if ph in PHASE_SETTINGS and phase_settings(saved, ph) == phase_settings(want, ph)]
        reuse = reuse[:next((i for i, ph in enumerate(done) if ph not in reuse), len(reuse))]  # a prefix only
        if not reuse:
            raise PretrainError(f"the checkpoint in {ckpt} was made with other settings ({'; '.join(_differences(saved, want))}) "
                                f"and none of its finished phases has this run's settings; resume with the same "
                                f"options, or delete {ckpt}")
        print(f"the checkpoint in {ckpt} was made with other settings ({'; '.join(_differences(saved, want))}); "
              f"reusing its finished {', '.join(reuse)} phase(s), the rest start afresh")
        plan.update(phase=PHASES[len(reuse)], reuse={ph: str(ckpt) for ph in reuse})
    offered = {}
    for d in phases_from:
        meta_file = d / "phase.json"
        if not meta_file.is_file():
            raise PretrainError(f"--phases-from {d}: no phase.json there (a directory benchmarks/probe_base.py wrote)")
        for meta in json.loads(meta_file.read_text()):
            offered[meta["settings"]["phase"]] = (d, recorded_phase_settings(meta["settings"]))
    for ph, (d, settings) in offered.items():
        if settings != phase_settings(want, ph):
            raise PretrainError(f"--phases-from {d}: its {ph} phase was made with other settings "
                                f"({'; '.join(_differences(settings, phase_settings(want, ph)))}); "
                                f"pass options that match it or leave it out")
    for ph in PHASES[PHASES.index(plan["phase"]):]:
        if ph not in offered:
            break
        plan["reuse"][ph] = str(offered[ph][0])
        plan["phase"] = PHASES[PHASES.index(ph) + 1]
    unused = [ph for ph in offered if ph not in plan["reuse"] and PHASES.index(ph) >= PHASES.index(plan["phase"])]
    if unused:
        raise PretrainError(f"--phases-from offers the {', '.join(unused)} phase(s), but this run must first train "
                            f"the {plan['phase']} phase; offer that phase too (or leave them out)")
    return plan


def _run(ctx: Context, cfg: PretrainConfig, out: Path, plan: dict, progress: bool, command: str, judge) -> None:
    """One worker's pretraining run as ``plan`` (:func:`_plan`) says; the main worker writes."""
    from .judge import load_judge

    ckpt = _checkpoint(out)
    t0 = time.time()
    history, seconds, reused = {}, {}, {}
    phase, step, opt_state, elapsed = plan["phase"], plan["step"], None, 0.0
    if plan["resume"]:
        um, state = _load_state(ckpt)
        history, seconds = json.loads(state["history"]), dict(state.get("seconds", {}))
        opt_state, elapsed, reused = state["opt"], state["elapsed"], dict(state.get("reused", {}))
        if ctx.is_main:
            print(f"resuming {cfg.profile} pretraining at {phase} step {step}")
    else:
        um = M.build_model(cfg.model, seed=cfg.seed)
        for ph, source in plan["reuse"].items():
            if source == str(ckpt):
                old, state = _load_state(ckpt)
                load_phase_state(um, PHASE_FILES[ph], phase_state(old, PHASE_FILES[ph]))
                history.update({k: v for k, v in json.loads(state["history"]).items() if k.startswith(ph)})
                seconds.update({k: v for k, v in state.get("seconds", {}).items() if k == PHASE_FILES[ph]})
            else:
                load_phase_weights(um, PHASE_FILES[ph], Path(source) / f"{PHASE_FILES[ph]}.safetensors")
            reused[ph] = source
    torch.manual_seed(cfg.seed)

    def save(ph, st, opt):
        if ctx.is_main:
            _save_state(um, ckpt, {"phase": ph, "step": st, "opt": opt, "history": json.dumps(history),
                                   "seconds": seconds, "config": cfg.as_dict(), "world": world_version(),
                                   "reused": reused, "elapsed": elapsed + time.time() - t0})
        ctx.barrier()

    judge = judge or load_judge(progress=False)
    if phase == "vq":
        t = time.time()
        train_vq(um, cfg, history, start=step, opt_state=opt_state, save=save, progress=progress, ctx=ctx)
        seconds["tokenizer"] = seconds.get("tokenizer", 0.0) + time.time() - t
        phase, step, opt_state = "vision", 0, None
        save("vision", 0, None)
    if "vq_gate" not in history:
        gate_tokenizer(um, judge, cfg, history, out, verbose=ctx.is_main)
    if phase == "vision":  # (an interrupted vision or align phase restarts)
        t = time.time()
        train_vision(um, cfg, history, progress=progress, ctx=ctx)
        seconds["vision"] = time.time() - t
        phase, step, opt_state = "align", 0, None
        save("align", 0, None)
    if phase == "align":
        if cfg.align_steps:
            t = time.time()
            train_align(um, cfg, history, progress=progress, ctx=ctx)
            seconds["align"] = time.time() - t
        phase, step, opt_state = "lm", 0, None
        save("lm", 0, None)
    t = time.time()
    corpus = None if plan.get("finish") else build_corpus(um, cfg.corpus, cfg.seed)
    seconds["corpus"] = seconds.get("corpus", 0.0) + time.time() - t
    t = time.time()
    train_lm(um, corpus, cfg, history, start=step, opt_state=opt_state, save=save, progress=progress, ctx=ctx,
             stop=step if plan.get("finish") else None)
    seconds["model"] = seconds.get("model", 0.0) + time.time() - t
    if not ctx.is_main:
        return
    torch.set_num_threads(max(1, os.cpu_count() or 1) if ctx.distributed else torch.get_num_threads())
    t = time.time()
    metrics = calibrate_and_score(um, judge, cfg)
    seconds["evaluation"] = time.time() - t
    total = elapsed + time.time() - t0
    metrics.update(seconds=round(total, 1), phase_seconds={k: round(v, 1) for k, v in seconds.items()},
                   profile=cfg.profile, seed=cfg.seed, workers=ctx.world, targets=TARGETS, reused_phases=reused,
                   lm_steps_done=len({row[0] for row in history.get("lm", [])}),
                   command=command)
    um.info.update(profile=cfg.model, pretrain_profile=cfg.profile, seed=cfg.seed, pretrain_config=cfg.as_dict(),
                   world_version=world_version())
    with atomic_path(out) as tmp:
        M.save_model(um, path=tmp)
        write_json(tmp / "metrics.json", metrics)
        (tmp / "history.json").write_text(json.dumps(history) + "\n")
        (tmp / "MODEL_CARD.md").write_text(model_card(um, cfg, metrics, command))


def calibrate_and_score(um: M.UnifiedModel, judge, cfg: PretrainConfig) -> dict:
    """How a finished model is measured: :func:`calibrate_sampling` on half as many validation
    examples as ``cfg.eval_n``, then :func:`evaluate_base` with that sampling. Returns the metrics
    plus ``"sampling"`` (the calibration) and ``"judge_hash"``."""
    sampling = calibrate_sampling(um, judge, n=max(8, cfg.eval_n // 2))
    return {**evaluate_base(um, judge, n=cfg.eval_n, tasks=EVAL_TASKS), "sampling": sampling,
            "judge_hash": _judge_hash(judge)}


def _judge_hash(judge) -> str:
    from .judge import judge_hash

    return judge_hash(judge.config)


def rescore(model_dir, judge=None) -> dict:
    """Re-measure a pretrained model with ``judge`` (default: the shipped one): calibrate its
    sampling again (:func:`calibrate_sampling`), score it on the examples its run scored
    (:func:`evaluate_base`'s seed, the run's ``eval_n``) and rewrite the directory atomically
    (weights unchanged; ``metrics.json``, ``MODEL_CARD.md`` and the sampling in ``unikit.json``
    new; what the run measured of itself, times, steps and phases, kept). For a model scored by a
    judge that has since been replaced, or made before models calibrated their sampling.
    Returns the new metrics."""
    import shutil

    from .judge import load_judge

    model_dir = Path(model_dir)
    if not (model_dir / "metrics.json").is_file():
        raise PretrainError(f"{model_dir} holds no pretrained model (no metrics.json); give the directory "
                            f"`unikit pretrain --out` wrote")
    judge = judge or load_judge(progress=False)
    um = M.load_model(model_dir)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    cfg = PretrainConfig(**recorded_config(um.info.get("pretrain_config", {})))
    command = metrics.get("command")
    if command is None:  # models written before metrics recorded their command
        found = re.search(r"^- command: `(.*)`$", (model_dir / "MODEL_CARD.md").read_text(), re.M)
        command = found.group(1) if found else ""
    t = time.time()
    metrics.update(calibrate_and_score(um, judge, cfg), command=command, rescored_seconds=round(time.time() - t, 1))
    um.info["pretrain_config"] = cfg.as_dict()
    with atomic_path(model_dir) as tmp:
        M.save_model(um, path=tmp)
        if (model_dir / "history.json").is_file():
            shutil.copy2(model_dir / "history.json", Path(tmp) / "history.json")
        write_json(Path(tmp) / "metrics.json", metrics)
        (Path(tmp) / "MODEL_CARD.md").write_text(model_card(um, cfg, metrics, command))
    return metrics


def gate_tokenizer(um: M.UnifiedModel, judge, cfg: PretrainConfig, history: dict, out: Path,
                   verbose: bool = True) -> dict:
    """Score the trained tokenizer (:func:`tokenizer_quality`, seed 777) into ``history["vq_gate"]``
    and stop the run if the judge reads fewer than ``cfg.vq_gate`` of its reconstructions right:
    generation can never draw what the tokenizer cannot decode, so an hour of model training on a
    failed tokenizer would be wasted. The tokenizer checkpoint is kept."""
    quality = tokenizer_quality(um, judge, n=min(200, max(8, cfg.eval_n)), seed=777)
    history["vq_gate"] = quality
    if verbose:
        print(f"tokenizer: the judge reads {quality['vq_recon_judge']:.1%} of reconstructions right "
              f"(gate {cfg.vq_gate:.0%}; {quality['vq_original_judge']:.1%} of the renders themselves), "
              f"{quality['vq_codes_used']} of {um.codebook_size} codes used", flush=True)
    if quality["vq_recon_judge"] < cfg.vq_gate:
        raise PretrainError(
            f"the tokenizer failed its gate: the judge reads {quality['vq_recon_judge']:.1%} of its reconstructions "
            f"right, below vq_gate={cfg.vq_gate:.0%} (pixel MSE {quality['vq_recon_mse']:.4f}); generation could not "
            f"show more than that. Train it longer (vq_steps > {cfg.vq_steps}) or check the world changed; "
            f"its checkpoint is in {_checkpoint(out)}")
    return quality


def model_card(um: M.UnifiedModel, cfg: PretrainConfig, metrics: dict, command: str) -> str:
    reused = ", ".join(f"{ph} (from {src})" for ph, src in (metrics.get("reused_phases") or {}).items()) or "none"
    table = M.parameter_table(um)
    rows = "\n".join(f"| {k} | {v:,} |" for k, v in table.items())
    keys = [*TARGETS, "t2i_heldout", *(["vq_original_judge"] if "vq_original_judge" in metrics else [])]
    notes = {"vq_original_judge": "(report: the judge on the renders themselves, vq_recon_judge's ceiling)"}
    quality = "\n".join(f"| {k} | {metrics.get(k, float('nan')):.3f} | {TARGETS.get(k, notes.get(k, '(report)'))} |"
                         for k in keys)
    sampling = metrics.get("sampling")
    calibration = "" if not sampling else (
        f"\n## Sampling (calibrated, `calibrate_sampling`)\n\nThe model draws with guidance {sampling['guidance']} and "
        f"temperature {sampling['temperature']} unless told otherwise: the best of these settings on {sampling['n']} "
        f"validation captions and edits each (judge: every attribute right).\n\n| guidance | temperature | t2i_seen | edit |\n"
        f"|---|---|---|---|\n" + "\n".join(f"| {r['guidance']} | {r['temperature']} | {r['t2i_seen']:.3f} | {r['edit']:.3f} |"
                                        for r in sampling["grid"]) + "\n")
    return f"""# The kit's base model ({cfg.profile} profile)

A small `JanusForConditionalGeneration` pretrained from scratch on the concept world's generic
objects by `unikit.pretrain` (image tokenizer; the understanding encoder on attribute labels;
then every other part on captioning, VQA, recognition, same-object pairs, text-to-image and
instruction editing). No personal concept was seen. Held-out shape+colour pairs:
{sorted(world.HELDOUT_PAIRS)}.

- command: `{command}`
- seed: {cfg.seed}
- wall time: {metrics['seconds'] / 60:.1f} min on {torch.get_num_threads()} CPU threads ({metrics['phase_seconds']})
- phases reused from earlier runs with the same settings: {reused}
- model phase: {metrics.get('lm_steps_done', cfg.lm_steps)} of {cfg.lm_steps} steps{
    '' if metrics.get('lm_steps_done', cfg.lm_steps) >= cfg.lm_steps else ' (stopped early with --finish: the last checkpoint, scored as it was)'}
- python {sys.version.split()[0]}, torch {torch.__version__}

## Parameters

| part | parameters |
|---|---|
{rows}

## Quality (judge-scored, held-out examples)

| metric | value | target |
|---|---|---|
{quality}
{calibration}
## Config

```json
{json.dumps(cfg.as_dict(), indent=1)}
```
"""


# --------------------------------------------------------------------------- re-checking a shipped model

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
