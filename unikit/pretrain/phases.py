"""Phase bookkeeping: the settings each phase's result depends on, checkpoints, and the files a
finished phase's weights are kept in so that later runs can reuse them."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from .. import model as M
from ..cache import atomic_path, write_json
from .config import PretrainConfig


PHASES = ("vq", "vision", "align", "lm", "facts", "drawing")  # in order; a checkpoint's "phase" is the one it is in
LATE_PHASES = ("facts", "drawing")  # after the model phase, each on a schedule of its own; ``<phase>_steps=0`` skips it
VISION_SETTINGS = ("seed", "vision_steps", "vision_batch", "vision_lr", "vision_init", "vision_readout", "precision")
# The settings each reusable phase's result depends on (besides the model's sizes and the world).
PHASE_SETTINGS = {
    "vq": ("seed", "vq_steps", "vq_batch", "vq_lr", "vq_restart_every"),
    "vision": VISION_SETTINGS,
    "align": (*VISION_SETTINGS, "align_steps", "align_lr"),  # it continues from the vision phase
    # the model phase continues from all three: every setting but the later phases' and the record's
    "lm": tuple(f for f in PretrainConfig.__dataclass_fields__
                if not f.startswith(tuple(f"{ph}_" for ph in LATE_PHASES))
                and f not in ("profile", "model", "checkpoint_every", "track_every", "track_n", "eval_n", "eval_n_drawing", "vq_gate",
                              "sampling_grid")),
}
for _earlier, _phase in zip(("lm", *LATE_PHASES), LATE_PHASES):  # each later phase continues from the one before
    PHASE_SETTINGS[_phase] = (*PHASE_SETTINGS[_earlier],
                              *(f for f in PretrainConfig.__dataclass_fields__ if f.startswith(f"{_phase}_")))
PHASE_FILES = {"vq": "tokenizer", "vision": "vision", "align": "align", "lm": "model", "facts": "model",
               "drawing": "model"}  # phase -> save_phase_weights name
PHASE_CLOCK = {"vq": "tokenizer", "vision": "vision", "align": "align", "lm": "model", "facts": "facts",
               "drawing": "drawing"}  # phase -> its key in a run's ``phase_seconds``
# The model sizes each reusable phase's modules have (the language model's depth is in none:
# no phase before the model phase runs its layers).
VISION_SIZES = ("hidden", "vision_hidden", "vision_layers", "vision_heads")
PHASE_SIZES = {"vq": ("vq_base", "vq_mult", "vq_res_blocks", "vq_latent", "codebook", "vq_embed_dim"),
               "vision": VISION_SIZES, "align": VISION_SIZES,
               **{ph: tuple(M.PROFILES["teach"]) for ph in ("lm", *LATE_PHASES)}}


def trained_phases(cfg: dict) -> list[str]:
    """The phases :func:`~unikit.pretrain.training.train_lm` runs for a config (``as_dict()`` or a
    recorded one), in order: the model phase, then each later phase with steps."""
    return ["lm", *(ph for ph in LATE_PHASES if cfg[f"{ph}_steps"])]


def world_version(words: bool = True) -> str:
    """A hash of the world a run trains on: its renders and attributes (what the judge checks) and,
    with ``words``, the language's vocabulary. A checkpoint from another version is not resumed."""
    from .. import cache
    from ..judge import world_definition

    return cache.config_hash({"world": world_definition(), **({"words": M.base_words()} if words else {})})


def phase_settings(cfg: dict, phase: str) -> dict:
    """What a phase's result depends on: its settings, the sizes of the modules it trains
    (:data:`PHASE_SIZES`), the world's renders."""
    sizes = M.PROFILES[cfg["model"]]
    settings = {"phase": phase, **{k: cfg[k] for k in PHASE_SETTINGS[phase]},
                "model": {k: sizes[k] for k in PHASE_SIZES[phase]},
                "world": world_version(words=phase not in ("vq", "vision", "align"))}
    return json.loads(json.dumps(settings))  # as a record on disk reads back (tuples as lists)


def recorded_phase_settings(settings: dict) -> dict:
    """A ``phase.json`` record's settings as :func:`phase_settings` writes them today (records
    written before :data:`PHASE_SIZES` hold every model size, only the phase's own count; records
    written before ``precision`` existed ran in float32)."""
    phase = settings["phase"]
    if "precision" in PHASE_SETTINGS[phase]:  # records from before the setting ran in float32
        settings = {"precision": "fp32", **settings}
    return {**settings, "model": {k: v for k, v in settings["model"].items() if k in PHASE_SIZES[phase]}}


def setting_differences(saved: dict, wanted: dict) -> list[str]:
    return [f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
            if saved.get(k) != wanted.get(k)]


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoint"


def save_checkpoint(um, path: Path, state: dict) -> None:
    """Model (safetensors) + optimizer/schedule state (torch.save of tensors and plain data), atomically."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        M.save_model(um, path=tmp / "model")
        torch.save(state, tmp / "state.pt")


def load_checkpoint(path: Path):
    um = M.load_model(path / "model")
    return um, torch.load(path / "state.pt", weights_only=True)


PHASE_MODULES = {"tokenizer": ("vqmodel",), "vision": ("vision_model", "aligner"),
                 "align": ("vision_model", "aligner", "language_model.embed_tokens"), "model": ("",)}
"""The modules (paths under ``JanusModel``; "" for all of ``JanusForConditionalGeneration``)
whose weights each phase's file holds."""


def _module(um: M.UnifiedModel, path: str) -> torch.nn.Module:
    return functools.reduce(getattr, path.split("."), um.model.model) if path else um.model


def phase_state(um: M.UnifiedModel, phase: str) -> dict[str, torch.Tensor]:
    """The weights one phase trains (:data:`PHASE_MODULES`), keyed ``<module>.<parameter>``."""
    return {f"{m}.{k}".lstrip("."): v.detach().clone().contiguous() for m in PHASE_MODULES[phase]
            for k, v in _module(um, m).state_dict().items()}


def save_phase_weights(um: M.UnifiedModel, phase: str, directory) -> Path:
    """Write :func:`phase_state` to ``directory/<phase>.safetensors`` atomically."""
    from safetensors.torch import save_file

    path = Path(directory) / f"{phase}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(phase_state(um, phase), str(tmp))
    return path


def record_phase(directory, cfg: PretrainConfig, phase: str, **extra) -> None:
    """Add ``phase``'s settings (:func:`phase_settings`) to ``directory/phase.json``, so that
    ``pretrain(..., phases_from=[directory])`` can reuse the weights saved beside it."""
    path = Path(directory) / "phase.json"
    records = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if r["settings"]["phase"] != phase]
    records.append({"settings": phase_settings(cfg.as_dict(), phase), **extra})
    write_json(path, records)


def load_phase_state(um: M.UnifiedModel, phase: str, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`phase_state`-keyed weights into ``um``'s modules of ``phase`` (shapes must match)."""
    for m in PHASE_MODULES[phase]:
        prefix = m + "." if m else ""
        _module(um, m).load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def load_phase_weights(um: M.UnifiedModel, phase: str, path) -> None:
    """Load a phase's weights written by :func:`save_phase_weights` into ``um``."""
    from safetensors.torch import load_file

    load_phase_state(um, phase, load_file(str(path)))
