"""Where a concept token's rows start (:data:`INITS`), each a function of the base model and
the concept's data:

- ``class_word``: the mean embedding of the class word's tokens (every row alike);
- ``mean``: the mean of the base vocabulary;
- ``kmeans_images``: k-means centroids of the image tokens of the concept's photos, as the
  generation path embeds them (UniCTokens' shared tokens);
- ``kmeans_codes``: the same over given VQ codes (UniCTokens' stage-3 tokens, from drawn images);
- ``words``: one token of a text per row, in order (:func:`card_words`: what the card says).

Output-head rows always start from the class word.
"""

from __future__ import annotations

import torch

from .base_identity import base_vocab_size

INITS = ("class_word", "mean", "kmeans_images", "kmeans_codes", "words")


class ConceptTokenError(ValueError):
    """A concept-token request that cannot be served; the message names the problem and the fix."""


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 25) -> torch.Tensor:
    """Centroids ``[k, D]`` of the points ``x`` ``[N, D]`` (Lloyd's algorithm, k-means++ start).

    Deterministic in ``seed``. A cluster that loses all its points keeps its centroid.
    """
    x = x.detach().float()
    n = x.shape[0]
    if k < 1:
        raise ConceptTokenError(f"kmeans needs k >= 1, got {k}")
    if n < k:
        raise ConceptTokenError(f"kmeans: {n} points cannot make {k} clusters; give more images (or codes) "
                                f"or a smaller group")
    gen = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: next centre drawn with probability proportional to d^2
        weights = d2 if float(d2.sum()) > 0 else torch.ones(n)  # all points equal: draw uniformly
        c = x[int(torch.multinomial(weights.cpu(), 1, generator=gen))]
        centres.append(c)
        d2 = torch.minimum(d2, ((x - c) ** 2).sum(1))
    centroids = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)  # [N]
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)[:, None]
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(new, centroids):
            break
        centroids = new
    return centroids


def class_word_rows(um, class_word: str, k: int):
    """``(input rows [k, D], output rows [k, D], output bias [k] or None)``: each the mean over the
    class word's tokens."""
    model, tok = um.model, um.tokenizer
    word_ids = tok(class_word, add_special_tokens=False)["input_ids"]
    if not word_ids:
        raise ConceptTokenError(f"class word {class_word!r} gives no tokens; use init='mean'")
    ids = torch.tensor(word_ids, device=um.device)
    head = model.get_output_embeddings()
    in_row = model.get_input_embeddings().weight[ids].mean(0)
    out_row = head.weight[ids].mean(0)
    bias = head.bias[ids].mean().expand(k) if getattr(head, "bias", None) is not None else None
    return in_row.expand(k, -1), out_row.expand(k, -1), bias


def card_words(concept) -> str:
    """What a card says of its concept after ``"<bo> is "``: ``"a plain orange circle. <bo> has a
    yellow hat. <bo> likes naps."`` (a photo concept: its description as written)."""
    text = concept.description()
    lead = f"{concept.token} is "
    return text[len(lead):] if text.startswith(lead) else text


@torch.no_grad()
def text_rows(um, words: str, k: int, own: dict | None = None) -> torch.Tensor:
    """The input embeddings ``[min(k, n), D]`` of the first ``k`` of the ``n`` tokens ``words`` splits
    into; a token in ``own`` (``{id: row [D]}``, e.g. the concept's identifier) takes that row."""
    ids = um.tokenizer(words, add_special_tokens=False)["input_ids"][:k]
    if not ids:
        raise ConceptTokenError(f"init='words': {words!r} gives no tokens; give the concept's description")
    rows = um.model.get_input_embeddings().weight[torch.tensor(ids, device=um.device)].float().clone()
    for i, t in enumerate(ids):
        if t in (own or {}):
            rows[i] = own[t]
    return rows


@torch.no_grad()
def initial_rows(um, class_word: str, k: int, init: str, images=None, codes=None, seed: int = 0,
                 words: str | None = None, own: dict | None = None):
    """``(input rows [k, D], output rows [k, D], bias [k] or None)`` for a new group started as
    ``init`` says (one of :data:`INITS`); output rows and bias always from the class word."""
    if init not in INITS:
        raise ConceptTokenError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    in_rows, out_rows, bias = class_word_rows(um, class_word, k)
    if init == "mean":
        n = base_vocab_size(um)
        head = um.model.get_output_embeddings()
        in_rows = um.model.get_input_embeddings().weight[:n].mean(0).expand(k, -1)
        out_rows = head.weight[:n].mean(0).expand(k, -1)
        bias = head.bias[:n].mean().expand(k) if getattr(head, "bias", None) is not None else None
    elif init == "kmeans_images":
        if images is None and codes is None:
            raise ConceptTokenError("init='kmeans_images' needs images= (uint8 [N, 32, 32, 3], the concept's "
                                    "training images) or their VQ codes=")
        from .vq import vq_encode
        in_rows = image_token_centroids(um, vq_encode(um, images) if codes is None else codes, k, seed)
    elif init == "kmeans_codes":
        if codes is None:
            raise ConceptTokenError("init='kmeans_codes' needs codes= (LongTensor [N, g, g] of VQ ids, e.g. "
                                    "from stages.generated_codes)")
        in_rows = image_token_centroids(um, codes, k, seed)
    elif init == "words":  # the text's tokens in order; rows past its end keep the class word
        if not words:
            raise ConceptTokenError("init='words' needs words= (text, e.g. tokens.card_words(card))")
        start = text_rows(um, words, k, own)
        in_rows = in_rows.clone(memory_format=torch.contiguous_format)
        in_rows[:len(start)] = start.to(in_rows.dtype)
    return in_rows, out_rows, bias


@torch.no_grad()
def image_token_centroids(um, codes, k: int, seed: int = 0) -> torch.Tensor:
    """k-means centroids ``[k, D]`` of the language-model-space embeddings of VQ ``codes``
    (``[N, g, g]`` -> ``prepare_embeddings_for_image_generation`` -> ``[N, g*g, D]``)."""
    codes = torch.as_tensor(codes, dtype=torch.long, device=um.device)
    vectors = um.model.prepare_embeddings_for_image_generation(codes.flatten(1))  # [N, T, D]
    return kmeans(vectors.reshape(-1, vectors.shape[-1]), k, seed=seed)
