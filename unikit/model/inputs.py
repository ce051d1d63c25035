"""Batches of token ids and pixels in the kit's prompt formats, embeddings, one language-model pass."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import numpy as np
import torch

from .. import formats
from .janus import ModelError, UnifiedModel

EmbedHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``hook(input_ids [B, L], embeds [B, L, D]) -> embeds``: applied to text embeddings before image features."""


class ImageResized(UserWarning):
    """An input image had another size than the model reads; it was resized (a notice, not an error)."""


# --------------------------------------------------------------------------- inputs


def pixel_values(um: UnifiedModel, images) -> torch.Tensor:
    """Images -> the understanding path's ``float[B, 3, S, S]`` (the processor's normalisation).

    ``uint8[B, S, S, 3]`` at the model's size take a fast path equal to the image processor's
    output; anything else (PIL images, other sizes) goes through the processor. A float
    tensor is taken as already processed.
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images.to(um.device)
    ip = um.processor.image_processor
    s = um.image_size
    arr = np.asarray(images) if isinstance(images, np.ndarray) else None
    if arr is not None and arr.ndim == 3:
        arr = arr[None]
    if arr is not None and arr.ndim == 4 and arr.shape[1:3] != (s, s):
        import warnings
        warnings.warn(f"images of {arr.shape[1]}x{arr.shape[2]} pixels are resized to {s}x{s} by the image processor "
                      f"(this model reads {s}x{s}); render or resize them to {s}x{s} yourself to avoid it",
                      ImageResized, stacklevel=3)
    if arr is not None and arr.dtype == np.uint8 and arr.shape[1:] == (s, s, 3) and ip.do_rescale and ip.do_normalize:
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() * float(ip.rescale_factor)
        mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(um.device)
    return ip(images=list(images), return_tensors="pt")["pixel_values"].to(um.device)


def _as_list(x, n_name: str) -> list:
    if isinstance(x, str):
        return [x]
    if x is None:
        raise ValueError(f"{n_name} is required")
    return list(x)


def _split_images(images, n: int):
    """-> (images per example, all images in order) for n examples.

    ``images``: None; ``uint8[B, H, W, 3]``; a list whose entries are None, one image
    ``[H, W, 3]`` (or PIL) or several ``[k, H, W, 3]``; or pixel values ``float[B, 3, S, S]``
    / ``float[B, k, 3, S, S]``.
    """
    if images is None:
        return [0] * n, None
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        counts = [1 if images.dim() == 4 else images.shape[1]] * images.shape[0]
        batch = images if images.dim() == 4 else images.flatten(0, 1)
    else:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        counts, flat = [], []
        for im in images:
            if im is None:
                counts.append(0)
            elif isinstance(im, np.ndarray) and im.ndim == 4:
                counts.append(len(im))
                flat.extend(im)
            else:
                counts.append(1)
                flat.append(im)
        batch = (np.stack([np.asarray(im) for im in flat]) if all(isinstance(im, np.ndarray) for im in flat)
                 else flat) if flat else None
    if len(counts) != n:
        raise ValueError(f"got {len(counts)} images for {n} texts")
    return counts, (batch if any(counts) else None)


def _left_pad(seqs: list[list[int]], pad: int, labels: list[list[int]] | None = None):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, n - len(s):] = torch.tensor(s)
            mask[r, n - len(s):] = 1
            if labels is not None:
                lab[r, n - len(s):] = torch.tensor(labels[r])
    return ids, mask, lab


def check_length(um: UnifiedModel, length: int, extra: int, what: str) -> None:
    if length + extra > um.context_length:
        raise ModelError(f"{what} is {length} tokens; with {extra} more it exceeds the model's context of "
                         f"{um.context_length} tokens: shorten it")


def understanding_inputs(um: UnifiedModel, images, questions, answers=None) -> dict:
    """Token ids for understanding: ``input_ids``/``attention_mask`` ``[B, L]`` (left-padded),
    ``labels`` ``[B, L]`` (answer + eos, else -100; only with answers) and ``pixel_values``
    ``[n_images, 3, S, S]`` or None. ``images`` may be None or contain None (text-only QA)."""
    questions = _as_list(questions, "questions")
    counts, batch = _split_images(images, len(questions))
    a_ids = formats.answer_ids(um, _as_list(answers, "answers")) if answers is not None else None
    if a_ids is not None and len(a_ids) != len(questions):
        raise ValueError(f"got {len(a_ids)} answers for {len(questions)} questions")
    seqs, labels = [], []
    for r, prompt in enumerate(formats.understanding_prompts(um, questions, counts)):
        tail = a_ids[r] if a_ids is not None else []
        seqs.append(prompt + tail)
        labels.append([-100] * len(prompt) + tail)
    ids, mask, lab = _left_pad(seqs, um.ids["pad"], labels)
    check_length(um, ids.shape[1], 0, "the understanding prompt")
    out = {"input_ids": ids.to(um.device), "attention_mask": mask.to(um.device),
           "pixel_values": pixel_values(um, batch) if batch is not None else None}
    if a_ids is not None:
        out["labels"] = lab.to(um.device)
    return out


def embed(um: UnifiedModel, input_ids, pixel_values=None, embed_hook: EmbedHook | None = None) -> torch.Tensor:
    """Input embeddings ``[B, L, D]``: text rows (through ``embed_hook`` if given) with the vision
    features of ``pixel_values`` scattered into the image placeholders (in order)."""
    model = um.model
    emb = model.get_input_embeddings()(input_ids)
    if embed_hook is not None:
        emb = embed_hook(input_ids, emb)
    if pixel_values is not None:
        feats = model.model.get_image_features(pixel_values).pooler_output
        place = input_ids == um.ids["image"]
        if int(place.sum()) != feats.shape[0] * feats.shape[1]:
            raise ModelError(f"{int(place.sum())} image placeholders for {feats.shape[0]} images of {feats.shape[1]} tokens")
        emb = emb.masked_scatter(place.unsqueeze(-1), feats.reshape(-1, emb.shape[-1]).to(emb.dtype))
    return emb


def unconditional_ids(um: UnifiedModel, ids: torch.Tensor) -> torch.Tensor:
    """Janus's unconditional prompt: every token but BOS and BOI replaced by PAD."""
    keep = (ids == um.ids["bos"]) | (ids == um.ids["boi"])
    return torch.where(keep, ids, torch.full_like(ids, um.ids["pad"]))


@functools.cache
def _cache_keyword() -> str:
    """The keyword the installed transformers' language model takes its KV cache by
    (``cache`` in recent 5.x releases, ``past_key_values`` before, now deprecated)."""
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def run_language_model(um: UnifiedModel, embeds, mask, cache=None, **kw):
    """The language model on ``inputs_embeds`` ``[B, L, D]`` with ``attention_mask`` ``[B, L]``;
    ``cache``: the KV cache of an earlier call (see :func:`kv_cache`). Keyword arguments such
    as ``output_attentions`` or ``use_cache`` pass through."""
    if cache is not None:
        kw[_cache_keyword()] = cache
    return um.model.model.language_model(inputs_embeds=embeds, attention_mask=mask, **kw)


def kv_cache(out):
    """The KV cache a :func:`run_language_model` call with ``use_cache=True`` returned."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def generation_inputs(um: UnifiedModel, prompts, images=None) -> dict:
    """Token ids for generation, the twin of :func:`understanding_inputs`: ``input_ids`` /
    ``attention_mask`` ``[B, L]`` left-padded, each prompt ending in ``<begin_of_image>`` (an
    edit's source image block(s) first), ``counts`` (source images per prompt) and
    ``pixel_values`` ``[n_images, 3, S, S]`` or None."""
    prompts = _as_list(prompts, "prompts")
    counts, batch = _split_images(images, len(prompts)) if images is not None else ([0] * len(prompts), None)
    if images is not None and not all(counts):
        raise ValueError("every edit needs a source image")
    seqs = formats.generation_prompts(um, prompts, counts)
    ids, mask, _ = _left_pad(seqs, um.ids["pad"])
    check_length(um, ids.shape[1], um.num_gen_tokens, "the generation prompt")
    return {"input_ids": ids.to(um.device), "attention_mask": mask.to(um.device), "counts": counts,
            "pixel_values": pixel_values(um, batch) if batch is not None else None}
