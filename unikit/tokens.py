"""Concept tokens: a few new vocabulary rows that carry one concept, trained while the model stays frozen.

A concept ``bo`` gets an identifier ``<bo>`` and named groups of learnable tokens
(UniCTokens: 1 identifier + 16 shared + 8 understanding + 8 generation; OmniPersona: 16
per task)::

    identifier     <bo>
    shared         <bo_s0> <bo_s1> ...      used by every task
    understanding  <bo_u0> ...              "<bo> is <bo_s0><bo_s1><bo_u0>. " + question
    generation     <bo_g0> ...              "a photo of <bo_s0> <bo_s1> <bo_g0> <bo>"
    editing        <bo_e0> ...              "put <bo_s0> <bo_s1> <bo_e0> <bo>'s hat on it"

**Only the new rows train.** The tokens enter the vocabulary the ordinary way
(``tokenizer.add_tokens`` + ``resize_token_embeddings``), then every weight of the model is
frozen. The values that learn live *outside* the model: per group one ``Parameter`` of input
rows ``[k, D]`` and one of output-head rows ``[k, D]``. Two forward hooks put them in place
at use time:

- the input embedding's output ``[B, L, D]`` takes the Parameter row wherever the id is one
  of the concept's (``torch.where`` on a gathered lookup: differentiable, nothing written
  into the weight);
- the output head's logits ``[..., V]`` get their concept columns replaced by
  ``hidden @ output_rows.T``.

So every function of :mod:`unikit.model` (answer, losses, generation, attention maps) runs
unchanged, the optimizer holds state for ``[k, D]`` tensors only, and no vocabulary-sized
gradient is ever made. (Textual Inversion trains the whole embedding and restores the other
rows after each step; AdamW's weight decay would otherwise move them.) Several concepts can
be attached to one model at once: their ids are disjoint.

Tokens are saved alone (:mod:`unikit.token_files`, one safetensors file) together with the
identity of the base model they were trained on (:func:`base_model_hash`), so loading them
into another model is refused instead of silently giving nonsense.
"""

from __future__ import annotations

import re
import weakref
from typing import Sequence

import torch

from .base_identity import base_model_hash, base_size_from_tokenizer, base_vocab_size  # noqa: F401 (public here)
from .profiles import GROUP_SIZES
from .token_starts import (INITS, ConceptTokenError, card_words, class_word_rows, image_token_centroids,  # noqa: F401
                           initial_rows, kmeans)

GROUPS = ("identifier", "shared", "understanding", "generation", "editing")
GROUP_LETTERS = {"shared": "s", "understanding": "u", "generation": "g", "editing": "e"}

_ATTACHED: "weakref.WeakKeyDictionary[torch.nn.Module, list[ConceptTokens]]" = weakref.WeakKeyDictionary()


def default_group_sizes(um) -> dict[str, int]:
    """:data:`GROUP_SIZES` for ``um``: a checkpoint the kit did not build (no model profile, e.g.
    Janus-Pro) gets the papers' sizes (``gpu``); a kit model its profile's, else ``teach``'s."""
    if um.profile is None:
        return dict(GROUP_SIZES["gpu"])
    return dict(GROUP_SIZES.get(um.profile, GROUP_SIZES["teach"]))


# --------------------------------------------------------------------------- the tokens


def _check_groups(groups: dict) -> None:
    valid = GROUPS[1:]
    for g, k in groups.items():
        if g == "identifier":
            raise ConceptTokenError(f"the identifier is always added (one token); give only the groups "
                                    f"{', '.join(valid)}")
        if g not in valid:
            raise ConceptTokenError(f"unknown token group {g!r}; valid groups: {', '.join(valid)}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConceptTokenError(f"group {g!r} has size {k!r}; a group needs a whole number >= 1 of tokens "
                                    f"(leave the group out to have none)")


class ConceptTokens:
    """One concept's tokens, the learnable rows behind them and the hooks that use them.

    ``groups``: token names per group (``"identifier"`` first), ``ids``: their ids,
    ``rows[group]``: ``(input Parameter [k, D], output Parameter [k, D])``, ``biases[group]``:
    output-bias Parameter ``[k]`` when the head has a bias. Make one with :func:`add_concept`
    or :func:`load_concept_tokens`.
    """

    def __init__(self, concept: str, class_word: str, base_hash: str, base_source: str = ""):
        self.concept, self.class_word = concept, class_word
        self.identifier = f"<{concept}>"
        self.base_hash, self.base_source = base_hash, base_source
        self.groups: dict[str, list[str]] = {}
        self.ids: dict[str, list[int]] = {}
        self.rows: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        self.biases: dict[str, torch.nn.Parameter] = {}
        self._model = None  # the model the hooks sit on
        self._handles: list = []
        self._modules: tuple = ()
        self._table = None  # (ids in row order, sort order, sorted ids) as tensors
        self.extra: dict = {}  # notes read from a saved file (method, stage, metrics)

    # ----- names and prompts

    def tokens(self) -> list[str]:
        """Every token name, in row order."""
        return [t for names in self.groups.values() for t in names]

    def sizes(self) -> dict[str, int]:
        return {g: len(names) for g, names in self.groups.items()}

    def text(self, *groups: str) -> str:
        """The named groups' tokens joined by spaces (groups that do not exist add nothing):
        ``text("shared", "understanding")`` -> ``"<bo_s0> <bo_s1> <bo_u0>"``."""
        for g in groups:
            if g not in GROUPS:
                raise ConceptTokenError(f"unknown token group {g!r}; valid groups: {', '.join(GROUPS)}")
        return " ".join(t for g in groups for t in self.groups.get(g, []))

    def understanding_prompt(self, question: str, groups: Sequence[str] = ("shared", "understanding")) -> str:
        """UniCTokens' understanding format: ``"<bo> is <shared..> <und..>. " + question``
        (groups that do not exist are skipped; with no group tokens, the question alone)."""
        soft = self.text(*groups)
        return f"{self.identifier} is {soft}. {question}" if soft else question

    def generation_prompt(self, prompt: str, groups: Sequence[str] = ("shared", "generation")) -> str:
        """Every ``<bo>`` in ``prompt`` expanded to ``"<shared..> <generation..> <bo>"`` (also for
        editing instructions with ``groups=("shared", "editing")``)."""
        soft = self.text(*groups)
        if not soft:
            return prompt
        return re.sub(re.escape(self.identifier), lambda _: f"{soft} {self.identifier}", prompt)

    # ----- parameters

    def parameters(self, groups: Sequence[str] | None = None) -> list[torch.nn.Parameter]:
        """The Parameters of ``groups`` (all when None) that exist, for an optimizer."""
        if groups is not None:
            unknown = [g for g in groups if g not in GROUPS]
            if unknown:
                raise ConceptTokenError(f"unknown token group(s) {unknown}; valid groups: {', '.join(GROUPS)}")
        out = []
        for g in self.groups:
            if groups is None or g in groups:
                out += list(self.rows[g]) + ([self.biases[g]] if g in self.biases else [])
        return out

    def add_group(self, um, group: str, k: int, init: str = "class_word", images=None, codes=None,
                  seed: int = 0, words: str | None = None) -> list[int]:
        """Add ``k`` tokens of ``group`` (initialised by ``init``, one of :data:`INITS`) to the model and
        to these tokens; returns their ids. ``kmeans_images`` needs ``images`` (``uint8[N, 32, 32, 3]``)
        or their VQ ``codes``, ``kmeans_codes`` needs ``codes`` (``LongTensor[N, g, g]``), ``words``
        needs ``words`` (text, e.g. :func:`card_words`)."""
        _check_groups({group: k})
        if group in self.groups:
            raise ConceptTokenError(f"{self.identifier} already has {group} tokens {self.groups[group]}; "
                                    f"a group is added once")
        names = [f"<{self.concept}_{GROUP_LETTERS[group]}{i}>" for i in range(k)]
        own = {i: self.rows["identifier"][0][0] for i in self.ids.get("identifier", [])}
        start = initial_rows(um, self.class_word, k, init, images, codes, seed, words, own)
        self.append_rows(um, group, names, *start)
        return self.ids[group]

    def append_rows(self, um, group, names, in_rows, out_rows, bias=None) -> None:
        if self._model is not None and self._model is not um.model:
            raise ConceptTokenError(f"{self.identifier} is attached to another model; detach() it first")
        ids = _add_vocabulary(um, names)
        weight = um.model.get_input_embeddings().weight
        # the rows and their optimizer state stay fp32 whatever the model's dtype (cast on use)
        as_param = lambda t: torch.nn.Parameter(t.detach().clone().to(weight.device, torch.float32))  # noqa: E731
        self.groups[group], self.ids[group] = list(names), ids
        self.rows[group] = (as_param(in_rows), as_param(out_rows))
        if bias is not None:
            self.biases[group] = as_param(bias)
        self._table = None
        self._write(um, [group])  # the model's own rows match too (save_model carries them)
        self.attach(um)
        _reattach_all(um.model)

    # ----- hooks

    def _lookup(self, device):
        if self._table is None or self._table[0].device != device:
            ids = torch.tensor([i for g in self.groups for i in self.ids[g]], device=device)
            order = ids.argsort()
            self._table = (ids, order, ids[order])
        return self._table

    def _input_hook(self, module, args, output):
        input_ids = args[0]
        ids, order, sorted_ids = self._lookup(input_ids.device)
        hit = torch.isin(input_ids, sorted_ids)
        if not bool(hit.any()):
            return None
        rows = torch.cat([self.rows[g][0] for g in self.groups])[order]  # [K, D] in id order
        local = torch.searchsorted(sorted_ids, input_ids).clamp(max=len(sorted_ids) - 1)
        return torch.where(hit.unsqueeze(-1), rows[local].to(output.dtype), output)

    def _head_hook(self, module, args, output):
        hidden = args[0]  # [..., D]
        ids, _, _ = self._lookup(output.device)
        cols = hidden @ torch.cat([self.rows[g][1] for g in self.groups]).T.to(hidden.dtype)  # [..., K]
        if self.biases:
            cols = cols + torch.cat([self.biases[g] for g in self.groups]).to(cols.dtype)
        return output.scatter(-1, ids.expand(*output.shape[:-1], len(ids)), cols.to(output.dtype))

    def attach(self, um) -> "ConceptTokens":
        """Hook the rows into the input embedding and output head of ``um`` (a UnifiedModel, or any
        transformers model with ``get_input_embeddings``/``get_output_embeddings``); idempotent."""
        model = um.model if hasattr(um, "processor") else um
        modules = (model.get_input_embeddings(), model.get_output_embeddings())
        if self._model is model and self._modules == modules:
            return self
        self.detach()
        self._handles = [modules[0].register_forward_hook(self._input_hook),
                         modules[1].register_forward_hook(self._head_hook)]
        self._model, self._modules = model, modules
        _ATTACHED.setdefault(model, []).append(self)
        return self

    def detach(self) -> None:
        """Remove the hooks: the model behaves as its own weights say again."""
        for h in self._handles:
            h.remove()
        if self._model is not None and self in _ATTACHED.get(self._model, []):
            _ATTACHED[self._model].remove(self)
        self._handles, self._model, self._modules = [], None, ()

    @property
    def attached(self) -> bool:
        return self._model is not None

    def write_into(self, um) -> None:
        """Copy the current rows into the model's weight rows (so ``save_model`` carries them)."""
        self._write(um, list(self.groups))

    @torch.no_grad()
    def _write(self, um, groups) -> None:
        model = um.model
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        for g in groups:
            ids = torch.tensor(self.ids[g], device=emb.weight.device)
            emb.weight[ids] = self.rows[g][0].to(emb.weight.dtype)
            head.weight[ids] = self.rows[g][1].to(head.weight.dtype)
            if getattr(head, "bias", None) is not None and g in self.biases:
                head.bias[ids] = self.biases[g].to(head.bias.dtype)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{g} {k}" for g, k in self.sizes().items())
        return f"ConceptTokens({self.identifier}: {sizes}; {'attached' if self.attached else 'detached'})"


def _reattach_all(model) -> None:
    """After a resize, move hooks onto the model's current embedding and head modules."""
    for ct in list(_ATTACHED.get(model, [])):
        if ct._modules != (model.get_input_embeddings(), model.get_output_embeddings()):
            ct.detach()
            ct.attach(model)


def _add_vocabulary(um, names: list[str]) -> list[int]:
    """Add ``names`` to the tokenizer and the embedding/head (never shrinking them); freeze the model."""
    tok, model = um.tokenizer, um.model
    vocab = tok.get_vocab()
    for name in names:
        if name in vocab:
            raise ConceptTokenError(
                f"token {name} already exists in this model's vocabulary (concept added twice, or a name equal to a "
                f"word the tokenizer knows). Load a fresh copy of the base model, or rename the concept "
                f"(the card's 'name')")
    um.info.setdefault("base_vocab_size", base_size_from_tokenizer(tok))
    tok.add_tokens(list(names))
    ids = tok.convert_tokens_to_ids(list(names))
    rows = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= rows:
        with torch.random.fork_rng(devices=[]):  # resize draws new rows: keep the caller's random state
            model.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    model.requires_grad_(False)
    got = [i for name in names for i in tok(name, add_special_tokens=False)["input_ids"]]
    if got != ids:
        raise ConceptTokenError(f"the tokenizer splits the new tokens {names} into ids {got}, not {ids}; "
                                f"concept tokens need a tokenizer that matches added tokens whole")
    return ids


# --------------------------------------------------------------------------- public entry points


def add_concept(um, concept, groups: dict[str, int] | None = None, init: str | dict = "class_word",
                images=None, codes=None, seed: int = 0) -> ConceptTokens:
    """Add a concept's identifier plus ``groups`` (``{"shared": 8}``; None: every group at the
    profile's :data:`GROUP_SIZES`) to ``um``, freeze the model, and return the attached tokens.

    ``concept``: a :class:`~unikit.concepts.ConceptCard`, a photo concept, a name or a folder. ``init``: one of :data:`INITS`
    for every group, or ``{group: init}`` (``"words"``: the card's words, :func:`card_words`). The
    identifier always starts from the class word.
    """
    from .photos import as_concept

    card = as_concept(concept, um.image_size)
    groups = default_group_sizes(um) if groups is None else dict(groups)
    _check_groups(groups)
    inits = init if isinstance(init, dict) else {g: init for g in groups}
    ct = ConceptTokens(card.name, card.shape, base_model_hash(um), um.source)
    with torch.no_grad():
        ct.append_rows(um, "identifier", [card.token], *class_word_rows(um, card.shape, 1))
    for g, k in groups.items():
        ct.add_group(um, g, k, init=inits.get(g, "class_word"), images=images, codes=codes, seed=seed,
                     words=card_words(card))
    return ct
