"""The judge on disk: save, and load (hash-checked; trained into the cache when none is shipped)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .. import cache
from .reading import DEFAULT_DIR, JUDGE_CONFIG, META_FILE, WEIGHTS_FILE, Judge, JudgeError, judge_hash, world_definition
from .training import train_judge

# --------------------------------------------------------------------------- files


def save_judge(judge: Judge, out_dir, metrics: dict | None = None, seed: int | None = None, command: str = "") -> Path:
    """Write ``judge.safetensors`` and ``judge.json`` (config, hash, seed, metrics) atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in judge.state_dict().items()}
    with cache.atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
        os.chmod(tmp, 0o644)
    meta = {"config": judge.config, "config_hash": judge_hash(judge.config), "seed": seed, "metrics": metrics or {},
            "train_seconds": (metrics or {}).get("train_seconds"), "threads": torch.get_num_threads(), "command": command,
            "torch": torch.__version__}
    cache.write_json(out_dir / META_FILE, meta)
    return out_dir


def _load_dir(directory: Path, config: dict) -> Judge:
    from safetensors.torch import load_file

    retrain = "retrain it with `unikit judge train`"
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise JudgeError(f"{directory}: no judge here (needs {META_FILE} and {WEIGHTS_FILE}); {retrain}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise JudgeError(f"{meta_path}: not valid JSON ({e}); {retrain}") from None
    want = judge_hash(config)
    if meta.get("config_hash") != want:
        raise JudgeError(
            f"{directory}: this judge was trained for another judge config or world definition "
            f"(stored hash {meta.get('config_hash')!r}, current {want!r}); {retrain}")
    judge = Judge(config)
    try:
        judge.load_state_dict(load_file(str(weights_path)), strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise JudgeError(f"{weights_path}: cannot load weights ({e}); {retrain}") from None
    judge.eval()
    return judge


def load_judge(path=None, progress: bool = True) -> Judge:
    """Load a trained judge (in eval mode).

    ``path`` is a directory holding ``judge.json`` + ``judge.safetensors``. By default:
    the shipped ``data/judge/``; if nothing is shipped, the cache
    (``unikit.cache.artifact_dir("judge", "default", config)``), training and saving
    one there first if needed. The stored config hash must match the current judge
    config and world definition, else :class:`JudgeError` says how to retrain.
    """
    if path is not None:
        return _load_dir(Path(path), JUDGE_CONFIG)
    if (DEFAULT_DIR / META_FILE).is_file():
        return _load_dir(DEFAULT_DIR, JUDGE_CONFIG)
    cached = cache.artifact_dir("judge", "default", {"judge": JUDGE_CONFIG, "world": world_definition()})
    if not (cached / META_FILE).is_file():
        judge, metrics = train_judge(seed=0, progress=progress)
        save_judge(judge, cached, metrics, seed=0, command="unikit.judge.load_judge()")
    return _load_dir(cached, JUDGE_CONFIG)


