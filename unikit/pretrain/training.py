"""The training loop of each phase: the image tokenizer, the understanding encoder, image-text
alignment, the model phase and the facts phase (:func:`train_lm` runs both)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import model as M
from .. import vq as V
from .. import world
from ..distributed import Context, LossModule
from .config import PretrainConfig, TASKS, VISION_READS
from .data import Corpus, YESNO_ORDER, shard_batch, task_batch, task_loss, yesno_attributes
from .quality import evaluate_base


def warmup_cosine(step: int, peak: float, total: int, warmup: int) -> float:
    """The learning rate at ``step`` of ``total``: linear warm-up over ``warmup`` steps to ``peak``,
    cosine decay to zero at ``total``."""
    return float(peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / total)))


def autocast(um: M.UnifiedModel, cfg: PretrainConfig):
    """The context a phase's forward pass runs in: bfloat16 autocast on the model's device when
    ``cfg.precision == "bf16"``, else a no-op."""
    return torch.autocast(um.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


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
        set_lr(opt, float(cfg.vq_lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / cfg.vq_steps))))
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
    q/k/v with Xavier, position embeddings as the library set them (transformers' normal(0, 0.02)
    leaves attention logits near zero at width 128: docs/notes/2026-12-04-init-and-readout.md)."""
    janus = um.model.model
    _init_fan_in([*janus.vision_model.modules(), *janus.aligner.modules()],
                 [layer.self_attn for layer in janus.vision_model.encoder.layers], seed + 7)


def init_language_fan_in(um: M.UnifiedModel, seed: int) -> None:
    """Re-initialise the language model's linear layers and its text head (``lm_head``) the
    same way as :func:`init_vision_fan_in` (fan-in scale, Xavier q/k/v); the token embeddings,
    norms and the generation path keep the library's init. No profile uses it: faster on yes/no
    alone, worse in a full run (docs/notes/2026-12-04-init-and-readout.md)."""
    lm = um.model.model.language_model
    _init_fan_in([*lm.modules(), um.model.lm_head], [layer.self_attn for layer in lm.layers], seed + 13)


def vision_parameters(um: M.UnifiedModel) -> list[torch.nn.Parameter]:
    """The understanding path's own parameters: vision encoder + aligner."""
    janus = um.model.model
    return [*janus.vision_model.parameters(), *janus.aligner.parameters()]


def train_vision(um: M.UnifiedModel, cfg: PretrainConfig, history: dict, progress: bool = True,
                 on_step=None, ctx: Context = Context()) -> None:
    """Phase 2: the understanding encoder (vision model + aligner) learns to see the world.

    Janus-Pro's understanding encoder is a pretrained SigLIP; here it starts from scratch, and
    the answer loss alone teaches it slowly (docs/notes/2026-12-04-init-and-readout.md). So the
    encoder first learns on its own: the *mean* of its outputs ``[B, D]`` (the aligner's, the
    encoder's own with ``vision_readout="encoder"``, or both) feeds one linear head per attribute
    of :data:`VISION_ATTRIBUTES` (shape, colour, pattern, background, mark, mark colour, items),
    cross-entropy on the renderer's exact labels. The heads are thrown away; what stays is an
    encoder whose every output summarises the scene, mark included. Fresh generic renders each
    step, held-out shape+colour pairs excluded.
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
        set_lr(opt, warmup_cosine(step, cfg.vision_lr, cfg.vision_steps, warmup=50))
        with autocast(um, cfg):
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
        set_lr(opt, warmup_cosine(step, cfg.align_lr, cfg.align_steps, warmup=50))
        with autocast(um, cfg):
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


def lm_parameters(um: M.UnifiedModel) -> list[torch.nn.Parameter]:
    """Every parameter of the model but the tokenizer's (what phase 3 trains)."""
    vq_ids = {id(p) for p in um.vq.parameters()}
    return [p for p in um.model.parameters() if id(p) not in vq_ids]


def late_phase_config(cfg: PretrainConfig, phase: str) -> PretrainConfig:
    """A phase after the model phase (``"facts"`` or ``"drawing"``) as :func:`train_lm` runs it:
    ``cfg`` with that phase's steps, learning rate, warm-up and mixture in place of the model
    phase's (no curriculum, no re-initialisation)."""
    get = lambda name: getattr(cfg, f"{phase}_{name}")  # noqa: E731
    return dataclasses.replace(cfg, lm_steps=get("steps"), lm_lr=get("lr"), warmup=get("warmup"), mix=get("mix"),
                               yesno_steps=0, perception_steps=0, lm_init="transformers", track_every=0)


def train_lm(um: M.UnifiedModel, corpus: Corpus, cfg: PretrainConfig, history: dict, start: int = 0,
             opt_state=None, save=None, progress: bool = True, ctx: Context = Context(),
             stop: int | None = None, phase: str = "lm") -> None:
    """Phase 3: every part but the tokenizer, on the task mixture (one task per step, drawn by
    weight): first ``cfg.yesno_steps`` of the yes/no curriculum alone, then understanding tasks
    alone up to ``cfg.perception_steps``, then the full mixture ``cfg.mix``. With
    ``cfg.lm_init="fan_in"`` a fresh run (not a resumed one) first re-initialises the language
    model (:func:`init_language_fan_in`). Data-parallel over ``ctx``: every worker draws the same
    global batch of ``cfg.lm_batch`` and trains on its shard. ``stop``: end before that step (the
    schedule stays the one for ``cfg.lm_steps``). ``phase="facts"`` or ``"drawing"`` runs phase 4 or
    5 (give it :func:`late_phase_config`): its losses go to ``history[phase]``, its
    batches are drawn afresh."""
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
    salt = {"lm": 0, "facts": 1_000_000_007, "drawing": 2_000_000_014}[phase]  # each phase draws batches of its own
    bar = tqdm(range(start, end), desc="model" if phase == "lm" else phase, disable=not (progress and ctx.is_main), initial=start,
               total=cfg.lm_steps)
    for step in bar:
        rng = random.Random(cfg.seed * 1_000_003 + 7919 * step + 1 + salt)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + salt)
        if step < cfg.yesno_steps:
            task, attributes, newest = "attribute", yesno_attributes(step, cfg.yesno_steps), cfg.yesno_newest
        else:
            task = rng.choices(*mixes["perception" if step < cfg.perception_steps else "full"])[0]
            attributes, newest = YESNO_ORDER, 0.0
        set_lr(opt, warmup_cosine(step, cfg.lm_lr, cfg.lm_steps, warmup=cfg.warmup))
        batch = task_batch(task, corpus, cfg.lm_batch, rng, attributes, newest, paired=cfg.yesno_paired)
        drop = torch.rand(cfg.lm_batch, generator=gen) < cfg.caption_dropout
        with autocast(um, cfg):
            loss = trainer(task, shard_batch(ctx, batch), ctx.shard(drop))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.setdefault(phase, []).append([step, task, ctx.mean(float(loss.detach()))])
        if progress and ctx.is_main and step % 10 == 0:
            bar.set_postfix(task=task, loss=f"{float(loss):.3f}")
        if cfg.track_every and (step + 1) % cfg.track_every == 0 and ctx.is_main:
            tracked = evaluate_base(um, None, n=cfg.track_n, seed=999, tasks=("attribute", "recognition", "same"))
            history.setdefault("tracked", []).append({"step": step + 1, **tracked})
            um.model.train()
        if save and (step + 1) % cfg.checkpoint_every == 0:
            save(phase, step + 1, opt.state_dict())
    history["replica_checksums"] = ctx.checksums(um.model)
    um.model.eval()
