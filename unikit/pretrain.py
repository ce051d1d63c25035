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
     the time, so the understanding path learns to see what words cannot name);
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
import json
import random
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
from .world import Scene

TASKS = ("caption", "vqa", "attribute", "recognition", "same", "t2i", "edit")
CAPTION_Q = "describe the image."
SAME_Q = "is the object in both images the same?"


@dataclass
class PretrainConfig:
    """Sizes and schedules of one pretraining run."""

    profile: str
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
    caption_dropout: float = 0.1
    checkpoint_every: int = 500
    eval_n: int = 200  # held-out examples per metric
    guidance: float = 3.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


CONFIGS = {
    "smoke": PretrainConfig("smoke", vq_steps=30, vq_batch=16, corpus=256, lm_steps=24, lm_batch=8,
                            warmup=5, checkpoint_every=12, eval_n=8, yesno_steps=4, perception_steps=8, vision_steps=6,
                            vision_batch=8),
    # teach: the settings the shipped base model was made with (a test holds them equal to its record)
    "teach": PretrainConfig("teach", vq_steps=1500, vq_batch=32, corpus=12000, lm_steps=6000, lm_batch=32,
                            lm_lr=1.5e-3, checkpoint_every=250, perception_steps=500, vq_gate=0.7, vision_steps=1000,
                            vision_init="fan_in", vision_readout="both",
                            perception_mix={"caption": 1, "vqa": 2, "recognition": 1, "same": 1},
                            mix={"caption": 1, "vqa": 1, "recognition": 1, "same": 1, "t2i": 4, "edit": 2}),
}


class PretrainError(ValueError):
    """Bad pretraining input (unknown profile, an output directory holding something else)."""


def recorded_config(saved: dict) -> dict:
    """A run's recorded config with settings added to the kit since then filled in by their
    defaults (which reproduce the behaviour before the setting existed, e.g. ``yesno_steps=0``)."""
    return {**dataclasses.asdict(PretrainConfig(saved.get("profile", ""))), **saved}


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


YESNO_ORDER = ("background", "colour", "shape", "pattern")  # the yes/no curriculum, easiest first


def attribute_example(sc: Scene, rng: random.Random, attributes=YESNO_ORDER, newest: float = 0.0) -> tuple[str, str]:
    """Recognition's building block, one attribute at a time: "is the background black?", "is
    the object red?", "is the object a circle?", "is the object striped?" -> yes/no (half true;
    an empty scene's object questions are "no"). The attribute is drawn from ``attributes``,
    the last of them with probability ``newest`` (else uniformly among all of them).

    Why it exists (measured in this kit): a yes/no answer is an *equality* between a word of the
    question and what the image shows, which no linear read-out of either alone predicts, so the
    loss sits on the coin-flip plateau (log(2)/2 per answer token) until a comparison circuit
    forms. From a fresh language model on a trained encoder, "is the background X?" (3 values)
    left the plateau in ~100 steps and "is the object <colour>?" (6 values) in ~275 when each was
    the only task; four attributes at once took longer, and with the other understanding tasks
    mixed in none had left it after 260 steps. The three-attribute recognition question had not
    left it after 6000 mixed steps. Nor does a later yes/no phase rescue it: fine-tuning the
    shipped model (every part but the tokenizer, AdamW lr 5e-4, batch 32, 600 steps, scored on
    160 fresh scenes per attribute) with the other understanding tasks mixed in (this task x2,
    recognition, same, VQA, caption) left every attribute at chance; on this task alone the
    background question reached 1.0 by step 500 and colour 0.69 (0.63 at 600; shape and pattern at
    chance), while VQA fell from 0.87 to 0.21.
    """
    which = attributes[-1] if rng.random() < newest else rng.choice(attributes)
    value = getattr(sc, which)
    truth = (sc.present or which == "background") and rng.random() < 0.5
    if not truth:
        value = rng.choice([v for v in world.ATTRIBUTES[which] if v != value and v != world.NONE])
    if which == "background":
        return f"is the background {value}?", "yes" if truth else "no"
    noun = f"{world._article(value)} {value}" if which == "shape" else value
    return f"is the object {noun}?", "yes" if truth else "no"


def yesno_attributes(step: int, yesno_steps: int) -> tuple[str, ...]:
    """The attributes the yes/no curriculum asks about at model step ``step``: one more of
    :data:`YESNO_ORDER` every ``yesno_steps / 4`` steps (the newest drawn with probability
    ``PretrainConfig.yesno_newest``)."""
    k = min(len(YESNO_ORDER), 1 + step * len(YESNO_ORDER) // max(1, yesno_steps))
    return YESNO_ORDER[:k]


def recognition_example(sc: Scene, rng: random.Random) -> tuple[str, str]:
    """"is there a <pattern> <colour> <shape> in this image?" -> yes/no (half true, half one attribute off)."""
    shape, colour, pattern = sc.shape, sc.colour, sc.pattern
    truth = sc.present and rng.random() < 0.5
    if not truth:
        which = rng.choice(("shape", "colour", "pattern"))
        if which == "shape":
            shape = rng.choice([s for s in world.SHAPES if s != sc.shape])
        elif which == "colour":
            colour = rng.choice([c for c in world.COLOURS if c != sc.colour])
        else:
            pattern = rng.choice([p for p in world.PATTERNS if p != sc.pattern])
    return f"is there {world._article(pattern)} {pattern} {colour} {shape} in this image?", "yes" if truth else "no"


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


def task_batch(task: str, corpus: Corpus, size: int, rng: random.Random, attributes=YESNO_ORDER, newest: float = 0.0):
    """One batch of one task: ``(images, prompts, answers_or_codes)`` (``attributes``/``newest``:
    what the ``attribute`` task asks about, see :func:`attribute_example`)."""
    idx = [rng.randrange(len(corpus.scenes)) for _ in range(size)]
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
        return None, [world.caption(s) for s in scenes], corpus.codes[idx]
    if task == "edit":
        e = [rng.randrange(len(corpus.edit_src)) for _ in range(size)]
        src = corpus.images[[corpus.edit_src[i] for i in e]]
        return src, [corpus.edit_instr[i] for i in e], corpus.edit_codes[e]
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def task_loss(um: M.UnifiedModel, task: str, batch, caption_dropout: float, generator=None) -> torch.Tensor:
    images, prompts, target = batch
    if task == "t2i":
        return M.t2i_loss(um, prompts, target, caption_dropout=caption_dropout, generator=generator)
    if task == "edit":
        return M.edit_loss(um, images, prompts, target, caption_dropout=caption_dropout, generator=generator)
    return M.understanding_loss(um, images, prompts, target)


# --------------------------------------------------------------------------- phases


TOKENIZER_SETTINGS = ("profile", "seed", "vq_steps", "vq_batch", "vq_lr", "vq_restart_every")


def _same_tokenizer(saved: dict, config: dict) -> bool:
    """Whether two run configs train the same tokenizer (phase 1 depends on these alone)."""
    return all(saved.get(k) == config.get(k) for k in TOKENIZER_SETTINGS)


def _with_tokenizer_of(um: M.UnifiedModel, profile: str, seed: int) -> M.UnifiedModel:
    """A fresh model for ``profile``/``seed`` (what phase 2 starts from) holding ``um``'s trained
    tokenizer: the state a run with the same tokenizer settings has right after phase 1."""
    fresh = M.build_model(profile, seed=seed)
    fresh.vq.load_state_dict(um.vq.state_dict())
    return fresh


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
             save=None, progress: bool = True) -> None:
    """Phase 1: the tokenizer on fresh renders each step (generic scenes, held-out pairs included:
    the tokenizer is not part of the compositional test)."""
    vq = um.vq
    vq.train()
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.vq_lr)
    if opt_state:
        opt.load_state_dict(opt_state)
    gen = torch.Generator().manual_seed(cfg.seed)
    usage = torch.zeros(um.codebook_size, dtype=torch.long)
    latents = []
    bar = tqdm(range(start, cfg.vq_steps), desc="tokenizer", disable=not progress, initial=start, total=cfg.vq_steps)
    for step in bar:
        rng = random.Random(cfg.seed * 1_000_003 + step)
        images = world.render_many([world.random_scene(rng, allow_heldout=True, item_prob=0.35)
                                    for _ in range(cfg.vq_batch)])
        lr = float(cfg.vq_lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / cfg.vq_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        stats = {}
        loss, _ = V.vq_loss(vq, images, stats=stats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += V.code_usage(stats["ids"], um.codebook_size)
        latents.append(stats["latents"])
        history.setdefault("vq", []).append([step, stats["recon_loss"], stats["embedding_loss"]])
        if (step + 1) % cfg.vq_restart_every == 0 and step + 1 < cfg.vq_steps * 0.8:
            restarted = V.restart_dead_codes(vq, torch.cat(latents), usage, generator=gen)
            history.setdefault("vq_restarts", []).append([step, restarted, int((usage > 0).sum())])
            usage.zero_()
            latents = []
        if progress:
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


def train_vision(um: M.UnifiedModel, cfg: PretrainConfig, history: dict, progress: bool = True) -> None:
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
    opt = torch.optim.AdamW([*params, *heads.parameters()], lr=cfg.vision_lr, betas=(0.9, 0.98), weight_decay=0.01)
    janus.vision_model.train()
    janus.aligner.train()
    right, seen = dict.fromkeys(VISION_ATTRIBUTES, 0), 0
    bar = tqdm(range(cfg.vision_steps), desc="vision", disable=not progress)
    for step in bar:
        rng = random.Random(cfg.seed * 1_000_003 + 31 * step + 5)
        scenes = [world.random_scene(rng, item_prob=0.35) for _ in range(cfg.vision_batch)]
        labels = {a: torch.tensor([sc.labels()[a] for sc in scenes]) for a in VISION_ATTRIBUTES}
        lr = float(cfg.vision_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / cfg.vision_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        encoded = janus.vision_model(M.pixel_values(um, world.render_many(scenes))).last_hidden_state
        pooled = {r: (encoded if r == "encoder" else janus.aligner(encoded)).mean(1) for r in reads}
        loss = 0.0
        for r in reads:  # the first readout's logits are what ``vision_accuracy`` reports
            out = {a: heads[r][a](pooled[r]) for a in VISION_ATTRIBUTES}
            if r == reads[0]:
                logits = out
            loss = loss + sum(F.cross_entropy(out[a], labels[a].to(encoded.device)) for a in VISION_ATTRIBUTES) / len(out)
        if step >= cfg.vision_steps - 50:  # what the heads read right at the end, per attribute
            for a in VISION_ATTRIBUTES:
                right[a] += int((logits[a].argmax(-1).cpu() == labels[a]).sum())
            seen += len(scenes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.setdefault("vision", []).append([step, float(loss.detach())])
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    history["vision_accuracy"] = {a: right[a] / max(1, seen) for a in VISION_ATTRIBUTES}
    um.model.eval()


def _lm_parameters(um: M.UnifiedModel):
    vq_ids = {id(p) for p in um.vq.parameters()}
    return [p for p in um.model.parameters() if id(p) not in vq_ids]


def train_lm(um: M.UnifiedModel, corpus: Corpus, cfg: PretrainConfig, history: dict, start: int = 0,
             opt_state=None, save=None, progress: bool = True) -> None:
    """Phase 3: every part but the tokenizer, on the task mixture (one task per step, drawn by
    weight): first ``cfg.yesno_steps`` of the yes/no curriculum alone, then understanding tasks
    alone up to ``cfg.perception_steps``, then the full mixture ``cfg.mix``. With
    ``cfg.lm_init="fan_in"`` a fresh run (not a resumed one) first re-initialises the language
    model (:func:`init_language_fan_in`)."""
    if cfg.lm_init == "fan_in" and start == 0 and not opt_state:
        init_language_fan_in(um, cfg.seed)
    for p in um.vq.parameters():
        p.requires_grad_(False)
    params = _lm_parameters(um)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lm_lr, betas=(0.9, 0.98))
    if opt_state:
        opt.load_state_dict(opt_state)
    um.model.train()
    um.vq.eval()
    mixes = {}
    for name, mix in (("perception", cfg.perception_mix), ("full", cfg.mix)):
        tasks = [t for t in TASKS if mix.get(t, 0) > 0]
        mixes[name] = (tasks, [mix[t] for t in tasks])
    bar = tqdm(range(start, cfg.lm_steps), desc="model", disable=not progress, initial=start, total=cfg.lm_steps)
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
        batch = task_batch(task, corpus, cfg.lm_batch, rng, attributes, newest)
        loss = task_loss(um, task, batch, cfg.caption_dropout, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.setdefault("lm", []).append([step, task, float(loss.detach())])
        if progress and step % 10 == 0:
            bar.set_postfix(task=task, loss=f"{float(loss):.3f}")
        if save and (step + 1) % cfg.checkpoint_every == 0:
            save("lm", step + 1, opt.state_dict())
    um.model.eval()


# --------------------------------------------------------------------------- evaluation


def _all_right(read: dict, expected: dict) -> bool:
    return all(read[k] == v for k, v in expected.items())


@torch.no_grad()
def tokenizer_quality(um: M.UnifiedModel, judge, n: int = 200, seed: int = 12345, batch: int = 50) -> dict:
    """The tokenizer's round trip on ``n`` fresh renders (held-out pairs included):
    ``vq_recon_judge`` (fraction the judge reads right in every attribute), ``vq_recon_mse``
    (pixels in [0, 1]) and ``vq_codes_used`` (codebook entries the renders use)."""
    from .judge import expected_reading

    rng = random.Random(seed)
    pool = [world.random_scene(rng, allow_heldout=True, item_prob=0.35) for _ in range(n)]
    originals = world.render_many(pool)
    codes = torch.cat([V.vq_encode(um, originals[i:i + batch]) for i in range(0, n, batch)])
    recon = np.concatenate([V.vq_decode(um, codes[i:i + batch]) for i in range(0, n, batch)])
    reads = judge.read(recon)
    return {"vq_recon_judge": float(np.mean([_all_right(r, expected_reading(s)) for r, s in zip(reads, pool)])),
            "vq_recon_mse": float(np.mean((recon.astype(np.float32) - originals) ** 2) / 255**2),
            "vq_codes_used": int((V.code_usage(codes, um.codebook_size) > 0).sum())}


@torch.no_grad()
def evaluate_base(um: M.UnifiedModel, judge, n: int = 200, seed: int = 12345, guidance: float = 3.0,
                  batch: int = 50,
                  tasks=("vq", "caption", "vqa", "recognition", "same", "t2i", "edit", "attribute")) -> dict:
    """Judge-scored quality on held-out examples (fresh seeds, never trained on). Fractions in [0, 1]."""
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
                                                    seed=seed + i) for i, c in enumerate(chunks(pool))])
            reads = judge.read(gen)
            want = [{k: expected_reading(s)[k] for k in (*world.NAMEABLE, "present")} for s in pool]
            out[key] = float(np.mean([_all_right(r, w) for r, w in zip(reads, want)]))
    if "edit" in tasks:
        pairs = [(s, *world.random_edit(s, rng)) for s in scenes]
        res = np.concatenate([M.edit_image(um, world.render_many([s for s, _, _ in c]), [e for _, e, _ in c],
                                           guidance=guidance, seed=seed + i) for i, c in enumerate(chunks(pairs))])
        reads = judge.read(res)
        out["edit"] = float(np.mean([_all_right(r, expected_reading(t)) for r, (_, _, t) in zip(reads, pairs)]))
    if "attribute" in tasks:  # the yes/no curriculum's questions, the n scenes split over the attributes
        which = [YESNO_ORDER[i % len(YESNO_ORDER)] for i in range(n)]
        qa = [attribute_example(sc, rng, (a,)) for a, sc in zip(which, scenes)]
        ans = sum((M.answer(um, images[i:i + batch], [q for q, _ in qa[i:i + batch]], max_new_tokens=2)
                   for i in range(0, n, batch)), [])
        hits = np.array([a == t for a, (_, t) in zip(ans, qa)])
        out["attribute"] = float(hits.mean())
        out.update({f"attribute_{a}": float(hits[[w == a for w in which]].mean()) for a in set(which)})
    return out


TARGETS = {"vq_recon_judge": 0.95, "t2i_seen": 0.90, "caption": 0.95, "vqa": 0.90, "recognition": 0.95, "edit": 0.80}


# --------------------------------------------------------------------------- the whole run


def pretrain(profile: str = "teach", out=None, resume: bool = False, seed: int = 0, progress: bool = True,
             judge=None, **overrides) -> tuple[M.UnifiedModel, dict, dict]:
    """Pretrain a base model. Returns ``(model, metrics, history)`` and writes them to ``out``.

    ``out`` defaults to the cache (``pretrain/<profile>-<hash>``). With ``resume`` an
    interrupted run continues from its last checkpoint (same config required), or, if only
    settings of the later phases changed, reuses the checkpoint's finished tokenizer
    (:data:`TOKENIZER_SETTINGS` equal) and runs the later phases afresh.
    """
    from . import cache
    from .judge import load_judge

    cfg = pretrain_config(profile, seed=seed, **overrides)
    out = Path(out) if out else cache.artifact_dir("pretrain", profile, cfg.as_dict())
    ckpt = _checkpoint(out)
    if out.exists() and any(out.iterdir()) and not resume and not (out / "metrics.json").exists() and not ckpt.exists():
        raise PretrainError(f"{out} is not empty and holds no unikit pretraining run; choose another --out")
    t0 = time.time()
    history, seconds, reused = {}, {}, []
    phase, step, opt_state, elapsed = "vq", 0, None, 0.0
    if resume and ckpt.exists():
        um, state = _load_state(ckpt)
        history, seconds = json.loads(state["history"]), dict(state.get("seconds", {}))
        if recorded_config(state["config"]) == cfg.as_dict():
            phase, step, opt_state, elapsed = state["phase"], state["step"], state["opt"], state["elapsed"]
            print(f"resuming {profile} pretraining at {phase} step {step}")
        elif state["phase"] != "vq" and _same_tokenizer(state["config"], cfg.as_dict()) and "tokenizer" in seconds:
            um = _with_tokenizer_of(um, profile, seed)
            history = {k: v for k, v in history.items() if k.startswith("vq")}
            seconds, reused = {"tokenizer": seconds["tokenizer"]}, ["tokenizer"]
            phase, elapsed = "vision", seconds["tokenizer"]
            print(f"the checkpoint in {ckpt} has a finished tokenizer with this config's tokenizer settings: reusing "
                  f"it; the later phases (changed settings) start afresh")
        else:
            raise PretrainError(f"the checkpoint in {ckpt} was made with another config; resume with the same "
                                f"profile/options (only a finished tokenizer is reused across other changes) "
                                f"or delete {ckpt}")
    else:
        um = M.build_model(profile, seed=seed)
    torch.manual_seed(seed)

    def save(ph, st, opt):
        _save_state(um, ckpt, {"phase": ph, "step": st, "opt": opt, "history": json.dumps(history),
                               "seconds": seconds, "config": cfg.as_dict(), "elapsed": elapsed + time.time() - t0})

    judge = judge or load_judge()
    if phase == "vq":
        t = time.time()
        train_vq(um, cfg, history, start=step, opt_state=opt_state, save=save, progress=progress)
        seconds["tokenizer"] = time.time() - t
        phase, step, opt_state = "vision", 0, None
        save("vision", 0, None)
    if phase == "vision":  # (an interrupted vision phase restarts: it takes a minute or two)
        gate_tokenizer(um, judge, cfg, history, out)
        t = time.time()
        train_vision(um, cfg, history, progress=progress)
        seconds["vision"] = time.time() - t
        phase, step, opt_state = "lm", 0, None
        save("lm", 0, None)
    t = time.time()
    corpus = build_corpus(um, cfg.corpus, seed)
    seconds["corpus"] = seconds.get("corpus", 0.0) + time.time() - t
    t = time.time()
    train_lm(um, corpus, cfg, history, start=step, opt_state=opt_state, save=save, progress=progress)
    seconds["model"] = seconds.get("model", 0.0) + time.time() - t
    t = time.time()
    metrics = evaluate_base(um, judge, n=cfg.eval_n, guidance=cfg.guidance)
    seconds["evaluation"] = time.time() - t
    total = elapsed + time.time() - t0
    metrics.update(seconds=round(total, 1), phase_seconds={k: round(v, 1) for k, v in seconds.items()},
                   profile=profile, seed=seed, targets=TARGETS, reused_phases=reused)
    um.info.update(profile=profile, seed=seed, pretrain_config=cfg.as_dict())
    command = "unikit pretrain --profile {} --seed {} --out {}{}".format(profile, seed, out, " --resume" if resume else "")
    with atomic_path(out) as tmp:
        M.save_model(um, path=tmp)
        write_json(tmp / "metrics.json", metrics)
        (tmp / "history.json").write_text(json.dumps(history) + "\n")
        (tmp / "MODEL_CARD.md").write_text(model_card(um, cfg, metrics, command))
    return um, metrics, history


def gate_tokenizer(um: M.UnifiedModel, judge, cfg: PretrainConfig, history: dict, out: Path) -> dict:
    """Score the trained tokenizer (:func:`tokenizer_quality`, seed 777) into ``history["vq_gate"]``
    and stop the run if the judge reads fewer than ``cfg.vq_gate`` of its reconstructions right:
    generation can never draw what the tokenizer cannot decode, so an hour of model training on a
    failed tokenizer would be wasted. The tokenizer checkpoint is kept."""
    quality = tokenizer_quality(um, judge, n=min(200, max(8, cfg.eval_n)), seed=777)
    history["vq_gate"] = quality
    print(f"tokenizer: the judge reads {quality['vq_recon_judge']:.1%} of reconstructions right "
          f"(gate {cfg.vq_gate:.0%}), {quality['vq_codes_used']} of {um.codebook_size} codes used", flush=True)
    if quality["vq_recon_judge"] < cfg.vq_gate:
        raise PretrainError(
            f"the tokenizer failed its gate: the judge reads {quality['vq_recon_judge']:.1%} of its reconstructions "
            f"right, below vq_gate={cfg.vq_gate:.0%} (pixel MSE {quality['vq_recon_mse']:.4f}); generation could not "
            f"show more than that. Train it longer (vq_steps > {cfg.vq_steps}) or check the world changed; "
            f"its checkpoint is in {_checkpoint(out)}")
    return quality


def model_card(um: M.UnifiedModel, cfg: PretrainConfig, metrics: dict, command: str) -> str:
    table = M.parameter_table(um)
    rows = "\n".join(f"| {k} | {v:,} |" for k, v in table.items())
    quality = "\n".join(f"| {k} | {metrics.get(k, float('nan')):.3f} | {TARGETS.get(k, '(report)')} |"
                        for k in ("vq_recon_judge", "t2i_seen", "t2i_heldout", "caption", "vqa", "recognition",
                                  "same_object", "edit"))
    return f"""# The kit's base model ({cfg.profile} profile)

A small `JanusForConditionalGeneration` pretrained from scratch on the concept world's generic
objects by `unikit.pretrain` (image tokenizer; the understanding encoder on attribute labels;
then every other part on captioning, VQA, recognition, same-object pairs, text-to-image and
instruction editing). No personal concept was seen. Held-out shape+colour pairs:
{sorted(world.HELDOUT_PAIRS)}.

- command: `{command}`
- seed: {cfg.seed}
- wall time: {metrics['seconds'] / 60:.1f} min on {torch.get_num_threads()} CPU threads ({metrics['phase_seconds']})
- phases reused from an earlier run's checkpoint (same settings): {', '.join(metrics.get('reused_phases') or ['none'])}
- python {sys.version.split()[0]}, torch {torch.__version__}

## Parameters

| part | parameters |
|---|---|
{rows}

## Quality (judge-scored, held-out examples)

| metric | value | target |
|---|---|---|
{quality}

## Config

```json
{json.dumps(cfg.as_dict(), indent=1)}
```
"""


# --------------------------------------------------------------------------- re-checking a shipped model

QUALITY_KEYS = ("vq_recon_judge", "t2i_seen", "t2i_heldout", "caption", "vqa", "recognition", "edit")


def quality_check(um: M.UnifiedModel, judge, recorded: dict, n: int = 24, seed: int = 2024,
                  recorded_n: int | None = None, guidance: float | None = None) -> list[dict]:
    """Re-measure a model's recorded quality (``metrics.json``) on a fresh judged sample.

    Runs :func:`evaluate_base` with ``n`` examples per metric and a ``seed`` other than the
    one the recorded numbers used, and returns one row per metric of :data:`QUALITY_KEYS`
    (plus ``same_object`` if recorded): ``{"metric", "recorded", "measured", "n",
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
    guidance = guidance or float(run.get("guidance", PretrainConfig("teach").guidance))
    keys = [*QUALITY_KEYS, *(["same_object"] if "same_object" in recorded else [])]
    measured = evaluate_base(um, judge, n=n, seed=seed, guidance=guidance)
    rows = []
    for key in keys:
        p = float(recorded[key])
        tolerance = 3 * float(np.sqrt(p * (1 - p) * (1 / n + 1 / recorded_n))) + 0.05
        rows.append({"metric": key, "recorded": p, "measured": measured[key], "n": n,
                     "tolerance": round(tolerance, 3), "ok": measured[key] >= p - tolerance})
    return rows
