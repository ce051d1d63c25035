"""Attention maps: capture every layer's attention on a prompt (eager attention only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .inputs import embed, generation_inputs, run_language_model, understanding_inputs
from .janus import ModelError, UnifiedModel
from .tasks import decode_images, sample_image_codes

# --------------------------------------------------------------------------- attention maps


@dataclass
class AttentionMaps:
    """Attention weights. ``tokens[b]``: a label per key position of example ``b``.

    ``understanding``: tuple over LM layers of ``[B, heads, L, L]``;
    ``generation``: ``{step: tuple over layers of [B, heads, keys]}`` (the query that
    predicts image code ``step``; keys are the prompt plus the codes before it).
    """

    tokens: list[list[str]]
    understanding: tuple | None = None
    generation: dict | None = None
    codes: torch.Tensor | None = None
    images: np.ndarray | None = None


def ensure_eager_attention(um: UnifiedModel):
    """Switch ``um`` to eager attention (sdpa returns no attention weights). Returns the previous
    implementation to switch back to, or None if it was eager already; raises :class:`ModelError`
    saying how to reload the model if it cannot switch."""
    impl = um.model.config._attn_implementation
    if impl == "eager":
        return None
    try:
        um.model.set_attn_implementation("eager")
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"attention maps need eager attention and this model uses {impl!r}; reload it with "
                         f"load_model(path, attn_implementation='eager') ({e})") from None
    return impl


def _labels(um: UnifiedModel, ids: torch.Tensor, mask: torch.Tensor) -> list[list[str]]:
    toks = [um.tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
    return [[t if m else "" for t, m in zip(row, mrow.tolist())] for row, mrow in zip(toks, mask)]


@torch.no_grad()
def attention_maps(um: UnifiedModel, images=None, questions=None, prompts=None, steps: Sequence[int] = (0,),
                   guidance: float | None = None, seed: int = 0, temperature: float | None = None) -> AttentionMaps:
    """Attention weights of the language model (eager attention; an sdpa model is switched
    to eager for the call).

    - ``questions`` (with ``images`` or None): one understanding forward of the prompts.
    - ``prompts``: image generation (text-to-image; an edit when ``images`` are given),
      keeping the attentions at the listed sampling ``steps``.
    """
    if (questions is None) == (prompts is None):
        raise ValueError("pass questions (understanding) or prompts (generation), not both")
    previous = ensure_eager_attention(um)
    try:
        if questions is not None:
            b = understanding_inputs(um, images, questions)
            out = run_language_model(um, embed(um, b["input_ids"], b["pixel_values"]), b["attention_mask"],
                                     output_attentions=True)
            return AttentionMaps(_labels(um, b["input_ids"], b["attention_mask"]), understanding=out.attentions)
        b = generation_inputs(um, prompts, images)
        codes, att = sample_image_codes(um, b["input_ids"], b["attention_mask"], b["pixel_values"], guidance, seed,
                                        temperature, attention_steps=steps)
        labels = [row + [f"<code_{i}>" for i in range(um.num_gen_tokens - 1)]
                  for row in _labels(um, b["input_ids"], b["attention_mask"])]
        return AttentionMaps(labels, generation=att, codes=codes.view(-1, um.gen_grid, um.gen_grid),
                             images=decode_images(um, codes))
    finally:
        if previous is not None:
            um.model.set_attn_implementation(previous)
