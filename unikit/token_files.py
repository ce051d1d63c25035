"""Concept tokens on disk: one safetensors file per concept (rows, token names and groups, and the
identity of the base model they were trained on), written atomically and refused on load into
another base model."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from .cache import atomic_path
from .tokens import ConceptTokenError, ConceptTokens, base_model_hash

FORMAT = "unikit.concept_tokens/1"


def _kit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    with contextlib.suppress(PackageNotFoundError):
        return version("unikit")
    return "unknown"


def save_concept_tokens(ct: ConceptTokens, path, extra: dict | None = None) -> Path:
    """Write ``ct`` to one safetensors file (atomically): tensors ``input.<group>``, ``output.<group>``
    (and ``bias.<group>``), metadata naming the concept and the base model. ``extra``: JSON-able
    notes (method, layout, metrics)."""
    from safetensors.torch import save_file

    tensors = {}
    for g, (inp, out) in ct.rows.items():
        tensors[f"input.{g}"] = inp.detach().cpu().contiguous()
        tensors[f"output.{g}"] = out.detach().cpu().contiguous()
        if g in ct.biases:
            tensors[f"bias.{g}"] = ct.biases[g].detach().cpu().contiguous()
    meta = {"format": FORMAT, "concept": ct.concept, "identifier": ct.identifier, "class_word": ct.class_word,
            "groups": json.dumps(ct.groups), "base_hash": ct.base_hash, "base_source": str(ct.base_source),
            "unikit_version": _kit_version(), "extra": json.dumps(extra or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_concept_tokens(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a concept-token file, without a model; ``metadata["groups"]`` and
    ``["extra"]`` decoded from JSON."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConceptTokenError(f"no concept-token file at {path}; train tokens (`unikit personalize`) or "
                                f"check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != FORMAT:
            raise KeyError("format")
        meta["groups"], meta["extra"] = json.loads(meta["groups"]), json.loads(meta.get("extra") or "{}")
        for g, names in meta["groups"].items():
            if tensors[f"input.{g}"].shape[0] != len(names) or tensors[f"output.{g}"].shape[0] != len(names):
                raise ValueError(f"group {g} has {len(names)} names but other row counts")
    except Exception as e:  # noqa: BLE001 -- safetensors, JSON and missing keys all mean the same here
        raise ConceptTokenError(f"{path} is not a readable concept-token file ({type(e).__name__}: {e}); it may be "
                                f"truncated or corrupt: re-save it with save_concept_tokens or re-train") from None
    return meta, tensors


def load_concept_tokens(um, path) -> ConceptTokens:
    """Add the tokens saved at ``path`` to ``um`` (which must be the base model they were trained on,
    without them yet) and return them attached. Outputs equal those of the model that saved them."""
    meta, tensors = read_concept_tokens(path)
    here = base_model_hash(um)
    if meta["base_hash"] != here:
        raise ConceptTokenError(
            f"{path} was trained on base model {meta['base_source'] or '?'} (hash {meta['base_hash']}), but this "
            f"model is {um.source or 'a built model'} (hash {here}). Load the base model the tokens were trained "
            f"on, or re-train the tokens on this one with `unikit personalize`")
    existing = [t for names in meta["groups"].values() for t in names if t in um.tokenizer.get_vocab()]
    if existing:
        raise ConceptTokenError(f"tokens {existing} already exist in this model; load {path} into a fresh copy "
                                f"of the base model (unikit.model.load_model)")
    dim = um.model.get_input_embeddings().weight.shape[1]
    if any(t.shape[-1] != dim for k, t in tensors.items() if not k.startswith("bias.")):
        raise ConceptTokenError(f"{path} holds rows of another width than this model's {dim}; load the base "
                                f"model the tokens were trained on")
    ct = ConceptTokens(meta["concept"], meta["class_word"], here, um.source)
    with torch.no_grad():
        for g, names in meta["groups"].items():
            ct.append_rows(um, g, names, tensors[f"input.{g}"], tensors[f"output.{g}"], tensors.get(f"bias.{g}"))
    ct.extra = meta["extra"]
    return ct
