"""What the model does: answer, draw, edit, and the losses that train each."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..vq import unit_to_uint8
from .inputs import (EmbedHook, check_length, embed, generation_inputs, kv_cache, run_language_model,
                     unconditional_ids, understanding_inputs)
from .janus import UnifiedModel

# --------------------------------------------------------------------------- understanding


@torch.no_grad()
def answer(um: UnifiedModel, images, questions, max_new_tokens: int = 4,
           embed_hook: EmbedHook | None = None) -> list[str]:
    """Greedy answers to ``questions`` (``list[str]``) about ``images`` (``uint8[B, 32, 32, 3]``,
    or None / None entries for text-only questions). Returns ``B`` strings (without ``<eos>``)."""
    batch = understanding_inputs(um, images, questions)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    check_length(um, ids.shape[1], max_new_tokens, "the question prompt")
    out = run_language_model(um, embed(um, ids, batch["pixel_values"], embed_hook), mask, use_cache=True)
    eos, B = um.ids["eos"], ids.shape[0]
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    result = [[] for _ in range(B)]
    for _ in range(max_new_tokens):
        nxt = um.model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        for r in range(B):
            if not done[r] and nxt[r] != eos:
                result[r].append(int(nxt[r]))
        done |= nxt == eos
        if bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        out = run_language_model(um, embed(um, nxt[:, None], None, embed_hook), mask,
                                 cache=kv_cache(out), use_cache=True)
    return [um.tokenizer.decode(r, skip_special_tokens=True).strip() for r in result]


def understanding_loss(um: UnifiedModel, images, prompts, answers, embed_hook: EmbedHook | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on the answer tokens (+ ``<eos>``) of the understanding format.

    ``images``: ``uint8[B, 32, 32, 3]``, processed ``float[B, 3, S, S]`` pixel values, or None
    (entries may be None for text-only QA). ``reduction="none"`` gives one loss per example ``[B]``.
    """
    batch = understanding_inputs(um, images, prompts, answers)
    emb = embed(um, batch["input_ids"], batch["pixel_values"], embed_hook)
    hidden = run_language_model(um, emb, batch["attention_mask"]).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    sel = labels != -100
    logits = um.model.lm_head(hidden[sel])
    losses = F.cross_entropy(logits.float(), labels[sel], reduction="none")
    return _reduce(losses, sel, reduction)


def _reduce(losses: torch.Tensor, sel: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "none":
        per = torch.zeros(sel.shape, dtype=losses.dtype, device=losses.device)
        per[sel] = losses
        return per.sum(1) / sel.sum(1).clamp(min=1)
    raise ValueError(f"reduction={reduction!r}; choose 'mean' or 'none'")


# --------------------------------------------------------------------------- generation


DEFAULT_SAMPLING = {"guidance": 3.0, "temperature": 1.0}
"""Sampling of a model whose pretraining did not calibrate it (:func:`unikit.pretrain.calibrate_sampling`)."""


def sampling(um: UnifiedModel) -> dict:
    """``{"guidance", "temperature"}`` the model draws with when a caller gives none: what its
    pretraining calibrated (``um.info["sampling"]``), else :data:`DEFAULT_SAMPLING`."""
    return {**DEFAULT_SAMPLING, **{k: v for k, v in um.info.get("sampling", {}).items() if k in DEFAULT_SAMPLING}}


def _sampling(um: UnifiedModel, guidance, temperature) -> tuple[float, float]:
    own = sampling(um)
    guidance = own["guidance"] if guidance is None else guidance
    _check_guidance(guidance)
    return float(guidance), float(own["temperature"] if temperature is None else temperature)


def _check_guidance(guidance: float) -> None:
    if guidance is None or guidance <= 1:
        raise ValueError(f"guidance={guidance}: classifier-free guidance needs guidance > 1 (Janus's image "
                         f"generation always runs the guided pair; 1.01 is nearly unguided). Try 2.0-5.0")


def decode_images(um: UnifiedModel, codes) -> np.ndarray:
    """VQ codes ``[B, T]`` or ``[B, g, g]`` -> ``uint8[B, S, S, 3]``."""
    codes = torch.as_tensor(codes, device=um.device).reshape(len(codes), -1)
    with torch.no_grad():
        return unit_to_uint8(um.model.decode_image_tokens(codes), channels_last=True)


def generate_images(um: UnifiedModel, prompts, n: int = 1, guidance: float | None = None, seed: int = 0,
                    temperature: float | None = None, top_k: int | None = None, return_codes: bool = False):
    """Text-to-image with ``model.generate(generation_mode="image")`` and classifier-free guidance.

    Returns ``uint8[B*n, S, S, 3]`` (row ``i*n + j`` is sample ``j`` of prompt ``i``), and the
    codes ``LongTensor[B*n, g, g]`` too with ``return_codes``. ``temperature=0`` is greedy;
    ``guidance`` / ``temperature`` left None take the model's own (:func:`sampling`).
    Deterministic in ``seed`` (the caller's random state is left untouched).
    """
    from transformers import GenerationConfig

    guidance, temperature = _sampling(um, guidance, temperature)
    batch = generation_inputs(um, prompts)
    kw = dict(do_sample=True, temperature=float(temperature), top_k=int(top_k or 0)) if temperature > 0 else \
        dict(do_sample=False)
    gc = GenerationConfig(bos_token_id=um.ids["bos"], pad_token_id=um.ids["pad"], eos_token_id=um.ids["eos"],
                          guidance_scale=float(guidance), num_return_sequences=int(n),
                          generation_kwargs={"boi_token_id": um.ids["boi"]}, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codes = um.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=gc,
                                  generation_mode="image")
    images = decode_images(um, codes)
    return (images, codes.view(-1, um.gen_grid, um.gen_grid)) if return_codes else images


def sample_image_codes(um: UnifiedModel, input_ids, attention_mask, pixel_values=None,
                       guidance: float | None = None, seed: int = 0, temperature: float | None = None,
                       top_k: int | None = None,
                       embed_hook: EmbedHook | None = None, attention_steps: Sequence[int] = ()):
    """The image sampling loop written out (what ``generate(generation_mode="image")`` does,
    plus vision-encoder inputs and attention capture). Prompts end in BOI.

    Conditional and unconditional (:func:`unconditional_ids`) prompts run as one doubled batch with a
    KV cache; logits = uncond + guidance * (cond - uncond). Returns ``(codes [B, T], attentions)``
    where ``attentions[step]`` is a tuple over layers of ``[B, heads, keys]`` (conditional half).
    ``guidance`` / ``temperature`` left None take the model's own (:func:`sampling`).
    """
    guidance, temperature = _sampling(um, guidance, temperature)
    B = input_ids.shape[0]
    cond = embed(um, input_ids, pixel_values, embed_hook)
    unc = embed(um, unconditional_ids(um, input_ids), None, embed_hook)
    mask = attention_mask.repeat(2, 1)
    steps = set(attention_steps)
    codes = torch.zeros(B, um.num_gen_tokens, dtype=torch.long, device=input_ids.device)
    attentions = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = run_language_model(um, torch.cat([cond, unc]), mask, use_cache=True, output_attentions=0 in steps)
        for i in range(um.num_gen_tokens):
            if i in steps:
                attentions[i] = tuple(a[:B, :, -1].detach() for a in out.attentions)
            c, u = um.model.model.generation_head(out.last_hidden_state[:, -1]).chunk(2)
            scores = u + guidance * (c - u)
            if temperature > 0:
                scores = scores / temperature
                if top_k:
                    kth = scores.topk(min(top_k, scores.shape[-1])).values[:, -1:]
                    scores = scores.masked_fill(scores < kth, float("-inf"))
                nxt = torch.multinomial(scores.softmax(-1), 1).squeeze(-1)
            else:
                nxt = scores.argmax(-1)
            codes[:, i] = nxt
            if i + 1 == um.num_gen_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(2 * B, 1)], dim=1)
            e = um.model.prepare_embeddings_for_image_generation(torch.cat([nxt, nxt])[:, None])
            out = run_language_model(um, e, mask, cache=kv_cache(out), use_cache=True,
                                     output_attentions=(i + 1) in steps)
    return codes, attentions


@torch.no_grad()
def edit_image(um: UnifiedModel, images, instructions, guidance: float | None = None, seed: int = 0,
               temperature: float | None = None, top_k: int | None = None, n: int = 1,
               embed_hook: EmbedHook | None = None, return_codes: bool = False):
    """Edit ``images`` (``uint8[B, 32, 32, 3]``, read by the vision encoder) by ``instructions``.

    Returns ``uint8[B*n, S, S, 3]`` (and codes ``[B*n, g, g]`` with ``return_codes``);
    deterministic in ``seed``. ``guidance`` / ``temperature`` left None take the model's own.
    """
    batch = generation_inputs(um, instructions, images)
    ids, mask, pv = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    if n > 1:
        ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        pv = torch.cat([g for g in pv.split(batch["counts"]) for _ in range(n)])
    codes, _ = sample_image_codes(um, ids, mask, pv, guidance, seed, temperature, top_k, embed_hook)
    images = decode_images(um, codes)
    return (images, codes.view(-1, um.gen_grid, um.gen_grid)) if return_codes else images


def _code_loss(um: UnifiedModel, prompt_embeds, mask, codes, reduction: str) -> torch.Tensor:
    codes = torch.as_tensor(codes, device=um.device).reshape(prompt_embeds.shape[0], -1)
    T = codes.shape[1]
    if T != um.num_gen_tokens:
        raise ValueError(f"expected {um.num_gen_tokens} VQ codes per image, got {T}")
    img = um.model.prepare_embeddings_for_image_generation(codes[:, :-1])
    full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], T - 1)], dim=1)
    hidden = run_language_model(um, torch.cat([prompt_embeds, img], dim=1), full_mask).last_hidden_state[:, -T:]
    logits = um.model.model.generation_head(hidden)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), codes.reshape(-1), reduction="none")
    return _reduce(losses, torch.ones_like(codes, dtype=torch.bool), reduction)


def _dropout(um, ids, p: float, generator, drop=None) -> tuple[torch.Tensor, torch.Tensor]:
    if drop is None:
        drop = torch.rand(ids.shape[0], generator=generator) < p if p > 0 else torch.zeros(ids.shape[0], dtype=torch.bool)
    drop = torch.as_tensor(drop, dtype=torch.bool).to(ids.device)
    return torch.where(drop[:, None], unconditional_ids(um, ids), ids), drop


def t2i_loss(um: UnifiedModel, prompts, vq_ids, caption_dropout: float = 0.1, embed_hook: EmbedHook | None = None,
             generator: torch.Generator | None = None, reduction: str = "mean", drop=None) -> torch.Tensor:
    """Text-to-image cross-entropy on the VQ codes ``vq_ids`` (``[B, g, g]`` or ``[B, T]``).

    With probability ``caption_dropout`` a prompt becomes the unconditional prompt
    ``generate`` uses for guidance (all but BOS/BOI -> PAD), so guidance has something to
    subtract. ``drop`` (``bool[B]``) chooses the dropped prompts instead of drawing them.
    """
    batch = generation_inputs(um, prompts)
    ids, _ = _dropout(um, batch["input_ids"], caption_dropout, generator, drop)
    return _code_loss(um, embed(um, ids, None, embed_hook), batch["attention_mask"], vq_ids, reduction)


def edit_loss(um: UnifiedModel, src_images, instructions, tgt_vq_ids, caption_dropout: float = 0.0,
              embed_hook: EmbedHook | None = None, generator: torch.Generator | None = None,
              reduction: str = "mean", drop=None) -> torch.Tensor:
    """Editing cross-entropy: source image (understanding path) + instruction -> target VQ codes.

    Dropped examples (``caption_dropout``) lose both image and instruction, as in guidance.
    """
    batch = generation_inputs(um, instructions, src_images)
    ids, drop = _dropout(um, batch["input_ids"], caption_dropout, generator, drop)
    keep = torch.repeat_interleave(~drop.cpu(), torch.tensor(batch["counts"]))
    pv = batch["pixel_values"][keep.to(batch["pixel_values"].device)]
    emb = embed(um, ids, pv if len(pv) else None, embed_hook)
    return _code_loss(um, emb, batch["attention_mask"], tgt_vq_ids, reduction)


