"""The lessons' shared setup: a lesson's parameters in, what every lesson works with out.

    kit = lesson.setup(PROFILE, SEED, DEVICE, BASE, DTYPE)
    um = kit.model()        # a fresh copy of the base model on kit.device, in kit.dtype
    kit.schedule, kit.judge # the profile's personalization schedule; the world's judge
    kit.concepts(CONCEPTS)  # the concept cards (a quick profile keeps the first two)
    kit.results()           # the bench made on this base model for this profile, or None

``BASE`` empty means the shipped base model (``data/base_model``), or Janus-Pro-1B from the
local Hugging Face cache in the ``gpu`` profile, or the tiny random Janus-Pro-shaped model
(built once into the cache) in ``gpu-smoke``. Each :meth:`Lesson.model` call loads a fresh
copy, because personalization adds rows to the model it is given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from . import runtime
from .profiles import QUICK, check_profile

GPU_BASE = "deepseek-community/Janus-Pro-1B"


@dataclass
class Lesson:
    """A lesson's profile, seed, device, dtype and base model, and what they give."""

    profile: str
    seed: int
    device: torch.device
    dtype: torch.dtype
    base: str | None  # a directory or hub id; None: the shipped base model

    def model(self):
        """A fresh copy of the base model (``UnifiedModel``) on :attr:`device` in :attr:`dtype`."""
        from .model import load_model

        return load_model(self.base, device=self.device, dtype=self.dtype)

    @property
    def quick(self) -> bool:
        """Whether the profile only proves that the lesson runs (``smoke``, ``gpu-smoke``): one seed."""
        return self.profile in QUICK

    def concepts(self, names):
        """The concept cards ``names`` (``unikit.concepts.load_concepts``); a quick profile keeps the
        first two, enough to run every loop over concepts."""
        from .concepts import load_concepts

        return load_concepts(list(names)[:2] if self.quick else names)

    @functools.cached_property
    def schedule(self):
        """The profile's ``profiles.Schedule``."""
        from .profiles import schedule

        return schedule(self.profile)

    @functools.cached_property
    def judge(self):
        """The world's judge (trained once, then loaded from the cache)."""
        from .judge import load_judge

        return load_judge(progress=False)

    @functools.cached_property
    def base_metrics(self) -> dict | None:
        """What the base model's pretraining measured (``metrics.json``), or None."""
        from .model import base_metrics

        return base_metrics(self.base)

    def results(self) -> dict | None:
        """The bench results for this profile (the smoke profile reads teach's) when they were made
        on this base model; None otherwise."""
        from .benchmark import load_results

        return load_results("teach" if self.profile == "smoke" else self.profile, base=self.model())

    def __str__(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        return (f"profile={self.profile} seed={self.seed} device={self.device} dtype={dtype} "
                f"base={self.base or 'the shipped base model'}")


def setup(profile: str, seed: int = 0, device: str = "auto", base: str = "", dtype: str = "float32") -> Lesson:
    """Check the profile, seed everything, pick the device (``runtime.setup``) and the base model."""
    check_profile(profile)
    dev = runtime.setup(seed, device)
    if not base and profile == "gpu-smoke":
        from .janus_pro import tiny_janus_pro

        base = str(tiny_janus_pro())
    return Lesson(profile, seed, dev, runtime.parse_dtype(dtype), base or (GPU_BASE if profile == "gpu" else None))
