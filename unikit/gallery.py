"""Where a personalized model fails, shown: the recognition questions it answers wrong and
the generations the judge reads wrong, each with what was asked, answered and read.

:func:`failures` collects them for one concept; :func:`show` draws them upscaled with one
caption per image.
"""

from __future__ import annotations

import numpy as np

from . import evaluate as E
from .world import IDENTITY



def recognition_failures(um, pers, card) -> list[dict]:
    """The held-out recognition questions ``pers`` answers wrong:
    ``[{"image": uint8[H, W, 3], "split", "question", "answer", "expected"}]`` (hard negatives first)."""
    from .concepts import concept_data

    d = concept_data(card)
    splits = {s: d.images(s) for s in {r["image"][0] for r in d.test_recognition}}
    rec = d.test_recognition
    said = E.answers(um, [splits[r["image"][0]][r["image"][1]] for r in rec],
                     [pers.understanding_prompt(card.name, r["question"]) for r in rec], 2)
    wrong = [{"image": splits[r["image"][0]][r["image"][1]], "split": r["image"][0], "question": r["question"],
              "answer": a, "expected": r["answer"]} for a, r in zip(said, rec) if a != r["answer"]]
    return sorted(wrong, key=lambda w: w["split"] != "test_hard")


def generation_failures(um, pers, card, judge, n_images: int = 2, guidance: float | None = None, seed: int = 0) -> list[dict]:
    """The generations the judge reads wrong: for plain and context prompts the concept's
    identity, for knowledge prompts the fact's item as well:
    ``[{"image": uint8[H, W, 3], "prompt", "kind", "wrong": {attribute: (read, expected)}}]``."""
    from .concepts import concept_data

    d = concept_data(card)
    ident = dict(zip(IDENTITY, card.identity()))
    out = []
    for i, t in enumerate(d.t2i):
        prompt = pers.request(um, card.name, t["prompt"])[0]
        images = E.generate_batched(um, [prompt], n_images, guidance, seed + i)
        want = {**ident, **t["expect"]}
        for image, read in zip(images, judge.read(images)):
            wrong = {k: (read[k], v) for k, v in want.items() if read[k] != v}
            if wrong:
                out.append({"image": image, "prompt": t["prompt"], "kind": t["kind"], "wrong": wrong})
    return out


def caption(failure: dict, width: int = 28) -> str:
    """A short caption: the question and the answer, or the attributes the judge read wrong."""
    if "question" in failure:
        text = f"{failure['split']}: said {failure['answer']!r}, not {failure['expected']!r}"
    else:
        wrong = "; ".join(f"{k} {r} (not {v})" for k, (r, v) in list(failure["wrong"].items())[:2])
        more = len(failure["wrong"]) - 2
        text = f"{failure['kind']}: {wrong}" + (f" +{more}" if more > 0 else "")
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


def show(failures: list[dict], title: str, ncols: int = 4, size: float = 2.0):
    """Up to ``2 * ncols`` failures, upscaled (nearest neighbour), each with its caption."""
    import matplotlib.pyplot as plt

    shown = failures[:2 * ncols]
    if not shown:
        fig, ax = plt.subplots(figsize=(4, 0.6))
        ax.axis("off")
        ax.text(0, 0.5, f"{title}: no failures", va="center")
        return fig
    nrows = int(np.ceil(len(shown) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.6)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, f in zip(axes.flat, shown):
        ax.imshow(np.kron(f["image"], np.ones((4, 4, 1), dtype=np.uint8)), interpolation="nearest")
        ax.set_title(caption(f), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
