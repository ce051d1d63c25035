"""unikit: teach and probe personalized unified multimodal models.

The path a reader follows, one import away (each loads its module on first use, so
``import unikit`` stays fast)::

    import unikit

    um = unikit.load_model()                        # the shipped base model (data/base_model)
    bo = unikit.load_concept("bo")                  # a concept card (or unikit.photos for photo folders)
    pers = unikit.personalize(um, [bo], "unictokens", "teach")
    rows = unikit.evaluate_personalized(um, pers, unikit.load_judge())
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_model": "model",
    "sampling": "model",
    "load_concept": "concepts",
    "load_concepts": "concepts",
    "load_photo_concept": "photos",
    "personalize": "methods",
    "evaluate_personalized": "evaluate",
    "bench": "benchmark",
    "load_judge": "judge",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unikit' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
