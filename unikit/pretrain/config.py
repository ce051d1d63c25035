"""Pretraining settings: :class:`PretrainConfig`, the named profiles (:data:`CONFIGS`) and the task names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


from ..preamble import FACT_TASKS


TASKS = ("caption", "vqa", "attribute", "recognition", "same", "t2i", "edit", "object_edit", *FACT_TASKS)
GENERATION_TASKS = {"t2i": "t2i", "edit": "edit", "object_edit": "edit", "fact_t2i": "t2i", "fact_edit": "edit"}  # task -> loss
CAPTION_Q = "describe the image."
SAME_Q = "is the object in both images the same?"


@dataclass
class PretrainConfig:
    """Sizes and schedules of one pretraining run."""

    profile: str
    model: str = ""  # the model's sizes (unikit.model.PROFILES); default: the profile's own name
    seed: int = 0
    vq_steps: int = 3000
    vq_batch: int = 64
    vq_lr: float = 2e-3
    vq_restart_every: int = 50
    vq_gate: float = 0.0  # the model phase starts only if the judge reads this fraction of reconstructions right
    vision_steps: int = 0  # phase 2: the understanding encoder on the world's attribute labels (SigLIP's stand-in)
    vision_batch: int = 64
    vision_lr: float = 2e-3
    # How phase 2 starts and what its heads read (see :func:`train_vision`): "transformers" keeps
    # the library's normal(0, 0.02) init, "fan_in" re-initialises the encoder and aligner at
    # PyTorch's fan-in scale (Xavier for attention q/k/v); the heads read the mean of the
    # "aligner" outputs, of the "encoder"'s own outputs (the aligner then learns in phase 3 only),
    # or "both" (one set of heads each, losses summed).
    vision_init: str = "transformers"
    vision_readout: str = "aligner"
    corpus: int = 12000  # generic scenes rendered and VQ-encoded once
    # How phase 3 starts: "transformers" keeps the library's init of the language model,
    # "fan_in" re-initialises its linear layers and text head (:func:`init_language_fan_in`:
    # faster on yes/no alone, worse in a full teach run, measured there).
    lm_init: str = "transformers"
    lm_steps: int = 6000
    lm_batch: int = 32
    lm_lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    mix: dict = field(default_factory=lambda: {"caption": 1, "vqa": 1, "attribute": 1, "recognition": 1, "same": 1,
                                               "t2i": 3, "edit": 2})
    # Understanding first: the first ``perception_steps`` model steps draw from ``perception_mix``
    # only, so the vision path learns to see objects before generation's larger losses share the
    # language model (yes/no questions need more: see ``yesno_steps`` and :func:`attribute_example`).
    perception_steps: int = 0
    perception_mix: dict = field(default_factory=lambda: {"caption": 1, "vqa": 2, "attribute": 2, "recognition": 2,
                                                          "same": 1})
    # Before everything else, ``yesno_steps`` steps of the yes/no curriculum alone (see
    # :func:`attribute_example`): one attribute more every quarter, background first.
    yesno_steps: int = 0
    yesno_newest: float = 0.5  # how often the curriculum asks about its newest attribute
    yesno_paired: bool = False  # yes/no batches ask each image twice, once true, once false
    lm_train_vision: bool = True  # phase 3 trains the understanding encoder and aligner too (False: frozen)
    align_steps: int = 0  # phase 2b: image-text alignment (:func:`train_align`); 0 skips it
    align_lr: float = 2e-3
    # Phase 4 (facts), after the model phase: ``facts_steps`` more steps on ``facts_mix``, where
    # facts stated first must be used or ignored (:mod:`unikit.preamble`), on a schedule of its own
    # (warm-up to ``facts_lr``, cosine to zero). 0 skips it.
    facts_steps: int = 0
    facts_lr: float = 5e-4
    facts_warmup: int = 100
    facts_mix: dict = field(default_factory=lambda: {"caption": 1, "vqa": 1, "attribute": 1, "recognition": 1,
                                                     "same": 1, "t2i": 3, "edit": 2, "fact_t2i": 3, "fact_edit": 2,
                                                     "fact_qa": 1, "fact_ask": 2})
    # Phase 5 (drawing), after the facts phase: ``drawing_steps`` more steps on ``drawing_mix``, where
    # text-to-image has 10 of 24 task weights (the model phase gives it a third), on a schedule of its
    # own like the facts phase's. 0 skips it.
    drawing_steps: int = 0
    drawing_lr: float = 5e-4
    drawing_warmup: int = 200
    drawing_mix: dict = field(default_factory=lambda: {"t2i": 10, "edit": 4, "object_edit": 1, "fact_t2i": 1,
                                                       "fact_edit": 1, "fact_qa": 1, "fact_ask": 1, "caption": 1,
                                                       "vqa": 1, "attribute": 1, "recognition": 1, "same": 1})
    caption_dropout: float = 0.1
    # "bf16": the encoder, alignment, model, facts and drawing phases compute under bfloat16 autocast
    # (weights and optimizer state stay fp32); the tokenizer's convolutions gained nothing from it
    # here (docs/notes/2026-12-04-bf16.md). "fp32": everything in float32.
    precision: str = "fp32"
    checkpoint_every: int = 500
    track_every: int = 0  # every so many model steps, score yes/no per question kind (history["tracked"]); 0: off
    track_n: int = 100  # held-out questions per tracking
    eval_n: int = 200  # held-out examples per metric
    # held-out examples for text-to-image and editing (0: eval_n); at 200 a drawing metric's 95%
    # interval is about +-0.06, too wide to tell 0.77 from a 0.80 target
    eval_n_drawing: int = 0
    sampling_grid: dict | None = None  # what calibrate_sampling tries (None: SAMPLING_GRID)

    def __post_init__(self) -> None:
        self.model = self.model or self.profile

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


CONFIGS = {
    "smoke": PretrainConfig("smoke", vq_steps=30, vq_batch=16, corpus=256, lm_steps=24, lm_batch=8,
                            warmup=5, checkpoint_every=12, eval_n=8, yesno_steps=4, perception_steps=8, vision_steps=6,
                            vision_batch=8, align_steps=3, track_every=12, track_n=10, facts_steps=12, facts_warmup=3,
                            drawing_steps=6, drawing_warmup=2, sampling_grid={"guidance": [1.5, 3.0], "temperature": [0.5]}),
    # teach: lesson 01's live demonstration (minutes on 2 cores): every phase, a few hundred steps
    "teach": PretrainConfig("teach", vq_steps=60, vq_batch=32, vision_steps=60, align_steps=40, corpus=512,
                            lm_steps=120, yesno_steps=20, perception_steps=40, lm_batch=32, lm_lr=1.5e-3, warmup=20,
                            eval_n=8, checkpoint_every=60, vision_init="fan_in", vision_readout="both",
                            facts_steps=30, facts_warmup=5, drawing_steps=30, drawing_warmup=5),
    # v1: the recipe of the base model shipped before the ship run finished (one thread setup, no
    # alignment, unpaired yes/no); the shipped weights carry its run, moved onto today's vocabulary
    "v1": PretrainConfig("v1", model="teach", vq_steps=1500, vq_batch=32, corpus=12000, lm_steps=6000, lm_batch=32,
                         lm_lr=1.5e-3, checkpoint_every=250, perception_steps=500, vq_gate=0.7, vision_steps=1000,
                         vision_init="fan_in", vision_readout="both",
                         perception_mix={"caption": 1, "vqa": 2, "recognition": 1, "same": 1},
                         mix={"caption": 1, "vqa": 1, "recognition": 1, "same": 1, "t2i": 4, "edit": 2}),
    # ship: the settings the next shipped base model is made with (a test holds them equal to its record)
    "ship": PretrainConfig("ship", model="teach", vq_steps=4000, vq_batch=32, vq_lr=2e-3, vq_gate=0.8,
                           vision_steps=8000, vision_batch=64, vision_lr=2e-3, vision_init="fan_in",
                           vision_readout="both", align_steps=1500, align_lr=2e-3, corpus=20000, lm_steps=12000,
                           lm_batch=32, lm_lr=1.5e-3, warmup=300, checkpoint_every=250, yesno_paired=True,
                           track_every=500,
                           perception_steps=3000,
                           perception_mix={"attribute": 3, "recognition": 3, "vqa": 1, "caption": 1, "same": 2},
                           mix={"attribute": 1, "recognition": 1, "vqa": 1, "caption": 1, "same": 1, "t2i": 4,
                                "edit": 2}),
}
# ship2: ship with the encoder frozen in phase 3, which erased phase 2's shape and mark read-out
# (docs/notes/2026-12-03-ship-run.md).
CONFIGS["ship2"] = dataclasses.replace(CONFIGS["ship"], profile="ship2", lm_train_vision=False)
# ship3: ship2 with a language model twice as deep; stopped, depth did not speed up drawing
# (docs/notes/2026-12-03-ship3-run.md).
CONFIGS["ship3"] = dataclasses.replace(CONFIGS["ship2"], profile="ship3", model="deep")
# ship4: ship2 with twice the model steps: drawing is limited by steps at this size
# (docs/notes/2026-12-03-ship4-run.md).
CONFIGS["ship4"] = dataclasses.replace(CONFIGS["ship2"], profile="ship4", lm_steps=24000)
# ship5: ship4's finished model (--phases-from), then the facts phase, so a concept's facts before a
# request are used, not a reason to fail (docs/notes/2026-12-03-facts-preamble.md, 2026-12-03-ship5-run.md).
CONFIGS["ship5"] = dataclasses.replace(CONFIGS["ship4"], profile="ship5", facts_steps=4000, facts_warmup=200,
                                       facts_lr=8e-4,
                                       facts_mix={"caption": 1, "vqa": 1, "attribute": 1, "recognition": 1, "same": 1,
                                                  "t2i": 2, "edit": 2, "fact_t2i": 4, "fact_edit": 3, "fact_qa": 2,
                                                  "fact_ask": 2})
# ship6: ship5's recipe from nothing in one command, in bfloat16 autocast, whose faster steps pay for
# 36000 model steps inside the 3-hour budget (docs/notes/2026-12-04-bf16.md).
CONFIGS["ship6"] = dataclasses.replace(CONFIGS["ship5"], profile="ship6", precision="bf16", lm_steps=36000)
# ship7: ship6 with the object edits (remove the object, replace it by a described one), the operations the
# personalized edits ask for ("remove <bo>", "replace the object with <bo>"), which no earlier model was taught.
CONFIGS["ship7"] = dataclasses.replace(CONFIGS["ship6"], profile="ship7",
                                       mix={**CONFIGS["ship6"].mix, "object_edit": 1},
                                       facts_mix={**CONFIGS["ship6"].facts_mix, "object_edit": 1})
# ship8: ship7 and then 7000 steps of the drawing phase: after the model phase's cosine has run out,
# a second, shorter schedule weighted toward drawing moved text-to-image from 0.755 to 0.808 on 1000
# captions in a probe (docs/notes/2026-12-05-drawing-phase.md); drawing scored on 1000 examples.
CONFIGS["ship8"] = dataclasses.replace(CONFIGS["ship7"], profile="ship8", drawing_steps=7000, eval_n_drawing=1000)


class PretrainError(ValueError):
    """Bad pretraining input (unknown profile, an output directory holding something else)."""


def recorded_config(saved: dict) -> dict:
    """A run's recorded config with settings added to the kit since then filled in by their
    defaults (which reproduce the behaviour before the setting existed, e.g. ``yesno_steps=0``)."""
    known = PretrainConfig.__dataclass_fields__  # settings the kit has since dropped (guidance) are left out
    return {**dataclasses.asdict(PretrainConfig(saved.get("profile", ""))),
            **{k: v for k, v in saved.items() if k in known}}


def pretrain_config(profile: str, **overrides) -> PretrainConfig:
    if profile not in CONFIGS:
        raise PretrainError(f"no pretraining profile {profile!r}; choose one of {', '.join(CONFIGS)} "
                            f"(the gpu profile loads Janus-Pro instead of pretraining)")
    cfg = dataclasses.replace(CONFIGS[profile], **overrides)
    for name, allowed in (("vision_init", VISION_INITS), ("vision_readout", tuple(VISION_READS)),
                          ("lm_init", LM_INITS), ("precision", PRECISIONS)):
        if getattr(cfg, name) not in allowed:
            raise PretrainError(f"{name}={getattr(cfg, name)!r}; choose one of {', '.join(allowed)}")
    return cfg


VISION_INITS = ("transformers", "fan_in")
LM_INITS = ("transformers", "fan_in")
PRECISIONS = ("fp32", "bf16")
VISION_READS = {"aligner": ("aligner",), "encoder": ("encoder",), "both": ("aligner", "encoder")}
"""``vision_readout`` -> the outputs phase 2's heads read (the first is what ``vision_accuracy`` reports)."""
