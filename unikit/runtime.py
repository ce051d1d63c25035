"""One place for seeds, threads, devices and weight precisions.

Every notebook starts with ``device = setup(SEED, DEVICE)``: it seeds Python, NumPy and
torch, turns on deterministic kernels, and picks the device, so the same seed gives
the same numbers on the CPU.

Profiles, which size the work, are in :mod:`unikit.profiles`.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

class ThreadsError(ValueError):
    """A thread count that is not a whole number."""


class DtypeError(ValueError):
    """An unknown weight precision."""


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; otherwise the named device (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} but no CUDA device is available here; use DEVICE='cpu' or 'auto'")
    return dev


def parse_dtype(dtype) -> torch.dtype:
    """``"bf16"``, ``"bfloat16"``, ``torch.bfloat16`` ... -> the torch dtype (checked)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise DtypeError(f"dtype {dtype!r}: choose one of float32, bfloat16, float16")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(seed: int = 0, device: str = "auto", threads: int | None = None) -> torch.device:
    """Seed everything, make CPU kernels deterministic, pick the device.

    ``threads`` defaults to ``UNIKIT_THREADS`` or torch's own choice.
    """
    set_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    set_threads(threads)
    return pick_device(device)


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` CPU threads (default: ``UNIKIT_THREADS``, else leave torch's choice);
    returns the number in use. The ``unikit`` commands call it at start."""
    raw = threads if threads is not None else os.environ.get("UNIKIT_THREADS", "0")
    try:
        n = int(raw)
    except ValueError:
        raise ThreadsError(f"UNIKIT_THREADS={raw!r}: give a whole number of threads, e.g. UNIKIT_THREADS=1") from None
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()

