"""The exact judge: a small CNN that reads every attribute of a rendered scene.

Generated images in this kit are scored by this classifier, the exact stand-in for
the GPT-4o / CLIP judges of the papers. It reads each field of
:data:`unikit.world.ATTRIBUTES` (one softmax head each) from a ``uint8[B, 32, 32, 3]``
image, so "is this <bo>?" becomes "do the shape, colour, pattern, mark and mark colour
it reads match <bo>'s card?" (:meth:`Judge.identify`), and "did the model draw the
hat?" becomes ``judge.read(images)[i]["hat"]``.

It is trained on renders with *degradation augmentation* (blur, down-up sampling,
noise, colour jitter, sub-pixel shifts), so the blur of a VQ tokenizer's round trip
does not fool it. :func:`evaluate_judge` reports its accuracy on held-out clean and
degraded renders.

When no subject is visible (``present == "no"``) there is nothing to read about it:
the subject's attributes (shape, colour, pattern, mark, mark_colour, hat, scarf) are
reported as ``"none"``; :func:`expected_reading` gives the words a perfect judge reads.

Usage::

    judge = load_judge()                      # the shipped data/judge/, hash-checked
    judge.read(images)                        # [{"shape": "circle", "hat": "none", ...}, ...]
    judge.identify(images, cards)             # ["bo", None, ...]
    similarity(judge, gen_images, ref_images) # CLIP-I / DINO stand-in

Retrain (and rewrite the shipped files) with ``unikit judge train``.

The package: :mod:`.reading` (the CNN, its config and hash, expected readings, scoring),
:mod:`.training` (degradation, the scene pool, training, evaluation), :mod:`.files` (save, load).
"""

from __future__ import annotations

from .reading import (DEFAULT_DIR, expected_reading, format_metrics, Judge, JUDGE_CONFIG,
                      judge_hash, JudgeError, META_FILE, readable_identities, score_scenes,
                      similarity, SUBJECT_ATTRIBUTES, to_tensor, WEIGHTS_FILE, world_definition)  # noqa: F401
from .training import (degrade, evaluate_judge, sample_scenes, train_judge)  # noqa: F401
from .files import (load_judge, save_judge)  # noqa: F401
