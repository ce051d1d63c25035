"""Do a concept's learned token rows lean toward the words of its own identity?

The world names every identity feature with a word, so this has a ground truth. A concept's
identity is (shape, colour, pattern, mark, mark colour); its hard negatives share the first
three and differ in the mark. For a concept's trained input rows ``R [k, D]`` and a word's
input row ``w [D]``, the lean toward a set of words is the mean cosine ``cos(R_i, w)``:

- ``tok_identity``: lean toward the concept's own shape, colour and pattern words minus the
  lean toward the other values of those attributes;
- ``tok_mark``: lean toward its own mark and mark-colour words minus toward the other marks
  and colours (the words a hard negative's mark is written with).

Both are 0 for rows unrelated to either set; above 0 the tokens moved toward what makes the
concept itself. Methods without tokens (the word baselines) have no value.
"""

from __future__ import annotations

import torch

from . import world

SEMANTIC_METRICS = ("tok_identity", "tok_mark")


def word_rows(um, words) -> torch.Tensor:
    """Input-embedding rows ``[n, D]`` of the words of the base vocabulary among ``words``."""
    tok = um.tokenizer
    ids = [tok.convert_tokens_to_ids(w) for w in words]
    ids = [i for i in ids if i is not None and i != tok.unk_token_id]
    return um.model.get_input_embeddings().weight[ids].detach().float()


def lean(rows: torch.Tensor, words: torch.Tensor) -> float:
    """Mean cosine between every row of ``rows [k, D]`` and every row of ``words [n, D]``."""
    if len(rows) == 0 or len(words) == 0:
        return float("nan")
    return float(torch.nn.functional.normalize(rows, dim=-1).matmul(
        torch.nn.functional.normalize(words, dim=-1).T).mean())


def concept_rows(ct) -> torch.Tensor:
    """Every input row ``[k, D]`` a concept's tokens trained (all groups, identifier included)."""
    return torch.cat([ct.rows[g][0].detach().float() for g in ct.groups])


def token_semantics(um, ct, card) -> dict[str, float]:
    """``{"tok_identity", "tok_mark"}`` for one concept's tokens ``ct`` (see the module doc)."""
    return rows_semantics(um, concept_rows(ct), card)


def rows_semantics(um, rows: torch.Tensor, card) -> dict[str, float]:
    """``{"tok_identity", "tok_mark"}`` for any rows ``[k, D]`` standing for ``card``."""
    colours = sorted(world.COLOURS)
    own = {"shape": card.shape, "colour": card.colour, "pattern": card.pattern}
    values = {"shape": world.SHAPES, "colour": colours, "pattern": world.PATTERNS}
    other_words = [v for k, vs in values.items() for v in vs if v != own[k]]
    mark_other = [m for m in world.MARKS if m != card.mark] + [c for c in colours
                                                               if c not in (card.mark_colour, card.colour)]
    own_mark = [card.mark, card.mark_colour]
    return {"tok_identity": lean(rows, word_rows(um, own.values())) - lean(rows, word_rows(um, other_words)),
            "tok_mark": lean(rows, word_rows(um, own_mark)) - lean(rows, word_rows(um, mark_other))}


def lean_over_training(um, recorder, cards):
    """:func:`rows_semantics` of every snapshot a :class:`~unikit.trajectory.TokenRecorder` kept:
    a DataFrame with ``order, stage, step, concept, tok_identity, tok_mark``."""
    import pandas as pd

    by_name = {c.name: c for c in cards}
    return pd.DataFrame([{"order": s.order, "stage": s.stage, "step": s.step, "concept": s.concept,
                          **rows_semantics(um, torch.cat(list(s.rows.values())), by_name[s.concept])}
                         for s in recorder.snapshots if s.concept in by_name])


def _starts_say(metric: str) -> str:
    """Why ``metric``'s level at the start is or is not given, from how groups start
    (:data:`~unikit.profiles.GROUP_STARTS`)."""
    from .profiles import GROUP_STARTS

    if metric == "tok_mark":
        return "no start names the mark (the card leaves it out), so a lean here is learned"
    by = {}
    for group, how in GROUP_STARTS.items():
        by.setdefault(how, []).append(group)
    said = {"words": "the card's words, which name its shape, colour and pattern",
            "class_word": "its class word"}
    starts = "; ".join(f"{', '.join(groups)} rows as {said.get(how, how)}" for how, groups in by.items())
    return f"the {starts} (UniCTokens' stage-3 rows as centroids of image codes): a lean here is given at the start"


def change_over_training(lean_frame, metrics=SEMANTIC_METRICS, tol: float = 0.01) -> dict[str, dict]:
    """Per metric, the mean over concepts at the first and at the last snapshot of a
    :func:`lean_over_training` frame, and a sentence that follows them: ``{metric: {"start",
    "end", "change", "sentence"}}``. A change smaller than ``tol`` reads as "did not move"."""
    first, last = lean_frame.order.min(), lean_frame.order.max()
    out = {}
    for m in metrics:
        start = float(lean_frame[lean_frame.order == first][m].mean())
        end = float(lean_frame[lean_frame.order == last][m].mean())
        change = end - start
        if abs(change) < tol:
            moved = f"training did not move it (change {change:+.3f})"
        else:
            moved = f"training moved it {'toward' if change > 0 else 'away from'} those words ({change:+.3f})"
        out[m] = {"start": start, "end": end, "change": change,
                  "sentence": f"{m}: {start:.3f} at the start, {end:.3f} at the end; {moved}. "
                              f"({_starts_say(m)}.)"}
    return out
