"""Data-parallel training on ``torch.distributed``: the plumbing pretraining runs on.

One process per worker; each computes the loss of its shard of a global batch and
``DistributedDataParallel`` averages the gradients, so every worker holds the same weights.
Here that means ``gloo`` over loopback with one thread per worker (two one-thread processes
beat one two-thread process for models this small); under ``torchrun`` on GPUs the same code
runs with ``nccl``.

- :func:`launch` starts ``workers`` local processes (``torch.multiprocessing.spawn``) and
  runs ``fn(ctx, *args)`` in each; if one dies, the others are stopped and
  :class:`WorkerDied` says which and how to resume. Under ``torchrun`` (``WORLD_SIZE`` in the
  environment) it joins the process group ``torchrun`` set up and runs ``fn`` in place.
- :class:`Context` (``rank``, ``world``) shards batches (:meth:`Context.shard`), averages
  scalars, and wraps a loss module in DDP (:meth:`Context.wrap`).
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


class WorkerError(ValueError):
    """A worker count this machine cannot run; the message names the fix."""


class WorkerDied(RuntimeError):
    """A worker process stopped before the run finished (the others were stopped too)."""


@dataclass(frozen=True)
class Context:
    """Who this process is in a data-parallel run (``world == 1``: a plain single process)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, items, size: int | None = None):
        """This worker's part of a global batch: items ``rank::world`` (a list, an array or a
        tensor along its first dimension). The batch size must divide by ``world``."""
        n = len(items) if size is None else size
        if n % self.world:
            raise WorkerError(f"a batch of {n} does not split over {self.world} workers; use a batch size divisible "
                              f"by {self.world} or another --workers")
        if self.world == 1 or items is None:
            return items
        if isinstance(items, (np.ndarray, torch.Tensor)):
            return items[self.rank::self.world]
        return list(items)[self.rank::self.world]

    def mean(self, value: float) -> float:
        """The mean of a scalar over the workers (itself when single)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.world

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the workers in place (returns it)."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-shaped ``tensor`` of every worker along dim 0, in rank order."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in ``DistributedDataParallel`` (weights broadcast from rank 0, gradients
        averaged in backward; parameters a step does not use are allowed), or itself when single."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, find_unused_parameters=True)

    def checksums(self, module: torch.nn.Module) -> list[float]:
        """Every worker's sum of ``module``'s parameters, in rank order (equal when in sync)."""
        with torch.no_grad():
            total = torch.tensor([sum(float(p.double().sum()) for p in module.parameters())], dtype=torch.float64)
        return [float(x) for x in self.gather(total)]


class LossModule(torch.nn.Module):
    """A module holding ``parts`` (what trains) whose ``forward(*args)`` is ``loss_fn(*args)``:
    what DDP wraps when the loss is computed by functions, not by ``module.forward``."""

    def __init__(self, loss_fn, **parts: torch.nn.Module):
        super().__init__()
        self.parts = torch.nn.ModuleDict(parts)
        self.loss_fn = loss_fn

    def forward(self, *args, **kwargs):
        return self.loss_fn(*args, **kwargs)


def check_workers(workers: int) -> int:
    """``workers`` if this machine can run that many one-thread workers, else a clear error."""
    cores = os.cpu_count() or 1
    if workers < 1:
        raise WorkerError(f"--workers {workers}: give 1 or more")
    if workers > cores and not os.environ.get("WORLD_SIZE"):
        raise WorkerError(f"--workers {workers} but this machine has {cores} CPU cores; one-thread workers need a core "
                          f"each: use --workers {cores} or fewer (or torchrun across machines)")
    return workers


def default_workers() -> int:
    """Two one-thread workers where there are two cores or more, else one."""
    return min(2, os.cpu_count() or 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=10))
    try:
        fn(Context(rank, world), *args)
    finally:
        dist.destroy_process_group()


def launch(fn, workers: int, *args, resume_hint: str | Callable[[], str] = "") -> None:
    """Run ``fn(ctx, *args)`` on ``workers`` processes (or in place: ``workers == 1`` or under torchrun).

    A worker that raises or dies stops the run: the others are terminated and
    :class:`WorkerDied` (or the worker's own error, re-raised when it is a ``ValueError``)
    names it and adds ``resume_hint`` (a string, or a function called when a worker fails, so the
    hint can say what the run left on disk by then).
    """
    if os.environ.get("WORLD_SIZE") and int(os.environ["WORLD_SIZE"]) > 1:  # torchrun
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        fn(Context(dist.get_rank(), dist.get_world_size()), *args)
        return
    check_workers(workers)
    if workers == 1:
        fn(Context(), *args)
        return
    import torch.multiprocessing as mp

    def hint() -> str:
        return resume_hint() if callable(resume_hint) else resume_hint

    try:
        mp.spawn(_worker, args=(workers, _free_port(), fn, args), nprocs=workers, join=True)
    except mp.ProcessRaisedException as e:
        last = str(e).strip().splitlines()[-1]
        raise WorkerDied(f"worker {e.error_index} failed: {last}. {hint()}".strip()) from None
    except mp.ProcessExitedException as e:
        raise WorkerDied(f"worker {e.error_index} died (exit code {e.exit_code}); the other workers were stopped. "
                         f"{hint()}".strip()) from None
