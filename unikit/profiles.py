"""The lesson profiles and what each one sizes: the one table of per-profile settings.

- ``smoke``: CI; seconds per notebook, proves that everything runs;
- ``teach``: the default; meaningful results on a 2-core laptop;
- ``gpu``: real Janus-Pro on an accelerator, at the papers' sizes;
- ``gpu-smoke``: the ``gpu`` path (Janus-Pro's formats, 384px, its guidance) on a tiny random
  Janus-Pro-shaped model on the CPU (:func:`unikit.janus_pro.tiny_janus_pro`), the papers' token sizes
  and smoke's steps: proves that every lesson runs on a real-model checkpoint.

Each profile has a personalization :class:`Schedule` (:data:`SCHEDULES`) and concept-token
group sizes (:data:`GROUP_SIZES`); how each group starts is one table for all profiles
(:data:`GROUP_STARTS`). The base model's sizes (``unikit.model.PROFILES``) and the pretraining
recipes (``unikit.pretrain.CONFIGS``) are named separately: they say what a model is, not how a
lesson runs. An unknown name raises :class:`ProfileError` everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .formats import JANUS_PRO_GUIDANCE

PROFILES = ("smoke", "teach", "gpu", "gpu-smoke")
QUICK = ("smoke", "gpu-smoke")  # profiles that prove a lesson runs (fewest steps, one seed)


class ProfileError(ValueError):
    """An unknown profile name."""


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else :class:`ProfileError` naming them."""
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


@dataclass(frozen=True)
class Schedule:
    """Steps and sizes of personalization in one profile."""

    stage1_steps: int
    stage2_steps: int
    stage3_steps: int
    batch: int  # examples per concept per task per step
    lr: float
    n_generated: int  # images generated between stage 2 and 3 (per concept)
    augment_copies: int  # augmented variants of each training image for generation
    eval_images: int  # generated images per prompt in evaluation
    joint_steps: int = 0  # one end-to-end stage (coupled / decoupled layouts)
    n_edits: int = 12  # editing triplets per concept for joint training
    l_gen: float = 1.0  # loss weights of the joint stage: text CE + l_gen * generation + l_edit * editing
    l_edit: float = 0.5
    weight_decay: float = 0.0
    guidance: float | None = None  # None: the base model's own (model.sampling)


SCHEDULES = {
    "smoke": Schedule(3, 3, 3, batch=2, lr=5e-3, n_generated=2, augment_copies=1, eval_images=1, joint_steps=3,
                      n_edits=3),
    # stage 2 at 300 steps, not 150: bo drawn more often on the ship5 base (docs/notes/2026-12-03-ship5-run.md)
    "teach": Schedule(100, 300, 80, batch=4, lr=5e-3, n_generated=16, augment_copies=4, eval_images=4,
                      joint_steps=150),
    "gpu": Schedule(400, 600, 300, batch=8, lr=1e-3, n_generated=20, augment_copies=8, eval_images=4,
                    joint_steps=2000, guidance=JANUS_PRO_GUIDANCE),
}
SCHEDULES["gpu-smoke"] = dataclasses.replace(SCHEDULES["smoke"], guidance=JANUS_PRO_GUIDANCE)


def schedule(profile: str, **overrides) -> Schedule:
    """The personalization schedule of ``profile``, with ``overrides`` (Schedule fields) applied."""
    return dataclasses.replace(SCHEDULES[check_profile(profile)], **overrides)


GROUP_SIZES = {  # per profile; UniCTokens uses 1 + 16 + 8 + 8 (and OmniPersona 16 per task)
    "smoke": {"shared": 2, "understanding": 1, "generation": 1, "editing": 1},
    # teach: 32 shared rows hold any card's words, one token per row (GROUP_STARTS); the rest scaled down
    "teach": {"shared": 32, "understanding": 4, "generation": 4, "editing": 4},
    "gpu": {"shared": 16, "understanding": 8, "generation": 8, "editing": 8},
}
GROUP_STARTS = {"shared": "words", "understanding": "words", "generation": "class_word", "editing": "class_word"}
"""How every method's groups start (``unikit.tokens.INITS``): rows that understanding trains hold
the card's own words (``tokens.card_words``: "a plain orange circle. <bo> has a yellow hat. ..."),
one token per row, so the facts a user wrote are in the tokens from step 0; rows only generation
or editing trains start from the class word (docs/notes/2026-12-04-word-init.md)."""
# gpu-smoke's Janus-Pro-shaped model is not a kit model, so it gets the papers' sizes, as Janus-Pro does
# (tokens.default_group_sizes)
GROUP_SIZES["gpu-smoke"] = GROUP_SIZES["gpu"]
