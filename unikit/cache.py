"""The cache of trained artifacts (judge, base models, concept tokens, bench results).

Artifacts live under ``UNIKIT_CACHE`` (default ``~/.cache/unikit``) in
``<kind>/<profile>-<config hash>/``; lessons load them if present, else train them.
Files are written atomically (a temporary name, then ``os.replace``), so an
interrupted run never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("UNIKIT_CACHE", Path.home() / ".cache" / "unikit"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def config_hash(config) -> str:
    """A short stable hash of a JSON-able config (dict keys sorted)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def artifact_dir(kind: str, profile: str, config) -> Path:
    """``<cache>/<kind>/<profile>-<hash>``; not created."""
    return cache_root() / kind / f"{profile}-{config_hash(config)}"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success move it into place atomically.

    Works for a file or a directory (whatever the block creates at the yielded path).
    On error the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path, data) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
