"""Task interference, measured: how understanding holds while generation and editing train the
same (coupled) or separate (decoupled) concept-token rows (lesson 07, claim (c)).

It trains with :mod:`unikit.methods` and scores with :mod:`unikit.evaluate`, so it sits beside
both and neither imports the other for it.
"""

from __future__ import annotations

from typing import Sequence

from . import stages as S
from .evaluate import evaluate_personalized
from .methods import MethodError, Personalized, add_token_groups, joint_layout
from .photos import as_concept
from .profiles import schedule


def measure_interference(um, concepts: Sequence, layout: str, profile: str = "teach", seed: int = 0, judge=None,
                         points: int = 5) -> list[dict]:
    """Task interference, measured: understanding accuracy while generation and editing train.

    1. the layout's tokens (``coupled``: one set; ``decoupled``: a group per task) learn
       understanding alone (``stage1_steps``);
    2. then generation + editing train (``joint_steps``, loss l_gen * generation + l_edit * editing)
       with the same groups as the joint stage, and understanding is re-measured ``points`` times.

    Returns rows ``{"layout", "concept", "step", "rec", "rec_hard", "vqa", "text_qa"}`` (step 0 =
    after understanding training). In ``coupled`` the generation loss moves the very rows
    understanding reads; in ``decoupled`` only the identifier ``<c>`` is common to both.
    """
    if layout not in ("coupled", "decoupled"):
        raise MethodError(f"layout {layout!r}: choose coupled or decoupled")
    cards = [as_concept(c, um.image_size) for c in concepts]
    sched = schedule(profile)
    pdata = [S.personal_data(um, c, sched, seed, n_edits=sched.n_edits) for c in cards]
    groups, p = joint_layout(um, layout)
    cts = add_token_groups(um, cards, groups, pdata)
    cl = [cts[c.name] for c in cards]
    pers = Personalized(layout, cards, cts, p)
    train = ("identifier", *groups)
    S.train_tokens(um, cl, pdata, steps=sched.stage1_steps, train_groups=train, weights={"understanding": 1.0},
                   prompting=p, sched=sched, seed=seed, stage="understanding")
    rows = []

    def measure(step):
        for r in evaluate_personalized(um, pers, judge, parts=("understanding",)):
            rows.append({"layout": layout, "concept": r["concept"], "step": step,
                         **{k: r[k] for k in ("rec", "rec_hard", "vqa", "text_qa")}})

    measure(0)
    every = max(1, sched.joint_steps // points)

    def on_step(stage, step, loss, ct):
        if ct is cl[0] and (step + 1) % every == 0:
            measure(step + 1)

    S.train_tokens(um, cl, pdata, steps=every * points, train_groups=train,
                   weights={"generation": sched.l_gen, "editing": sched.l_edit}, prompting=p, sched=sched,
                   seed=seed + 1, stage="generation+editing", on_step=on_step, record_every=1)
    return rows
