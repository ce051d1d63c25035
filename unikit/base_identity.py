"""The identity of a base model, as concept-token files record it: its vocabulary size without
concept tokens, and a hash of its config and a strided sample of its weights."""

from __future__ import annotations

import hashlib
import json
import re

import torch

CONCEPT_TOKEN = re.compile(r"^<[a-z][a-z0-9_]*>$")
"""A concept token's name: ``<bo>``, ``<bo_s0>``."""


def base_size_from_tokenizer(tok) -> int:
    specials = set(tok.all_special_tokens)
    concept = [t for t in tok.get_added_vocab() if t not in specials and CONCEPT_TOKEN.match(t)]
    return len(tok) - len(concept)


def base_vocab_size(um) -> int:
    """Vocabulary size without concept tokens (``um.info["base_vocab_size"]``, recorded when tokens
    are first added; else the tokenizer's size minus its non-special ``<word>`` tokens)."""
    if "base_vocab_size" in um.info:
        return int(um.info["base_vocab_size"])
    return base_size_from_tokenizer(um.tokenizer)


_VOLATILE_CONFIG = {"vocab_size", "transformers_version", "architectures", "dtype", "torch_dtype",
                    "attn_implementation", "output_attentions", "output_hidden_states", "return_dict", "use_cache"}


def _config_identity(config) -> dict:
    parts = {p: getattr(config, p) for p in ("text_config", "vision_config", "vq_config") if hasattr(config, p)}
    out = {}
    for name, sub in (parts or {"config": config}).items():
        out[name] = {k: v for k, v in sub.to_dict().items() if k not in _VOLATILE_CONFIG and not k.startswith("_")}
    return out


def _strided_rows(t: torch.Tensor, n: int = 64) -> bytes:
    t = t.detach()
    t = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)
    idx = torch.linspace(0, t.shape[0] - 1, min(n, t.shape[0])).round().long().to(t.device)
    return t[idx].to("cpu", torch.float32).contiguous().numpy().tobytes()


def base_model_hash(um) -> str:
    """The base model's identity (16 hex digits), blind to concept tokens: a hash of the config
    (text/vision/VQ configs minus the vocabulary size) and of a fingerprint of the weights
    (strided rows of the base vocabulary's input embedding, the first layer's ``q_proj``,
    the generation head)."""
    model = um.model
    h = hashlib.sha256(json.dumps(_config_identity(model.config), sort_keys=True, default=str).encode())
    h.update(_strided_rows(model.get_input_embeddings().weight[:base_vocab_size(um)]))
    lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
    h.update(_strided_rows(lm.layers[0].self_attn.q_proj.weight))
    for p in (model.model.generation_head.parameters() if hasattr(model.model, "generation_head") else ()):
        h.update(_strided_rows(p))
    return h.hexdigest()[:16]
