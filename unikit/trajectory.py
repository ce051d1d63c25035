"""The path concept tokens take during training: :class:`TokenRecorder` keeps a copy of every
group's rows each time a training function calls it (``on_step``), and saves them to safetensors."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class TrajectoryError(ValueError):
    """A snapshot or trajectory file that is not there."""


@dataclass
class TokenSnapshot:
    """One concept's input rows at one training step: ``rows[group]`` is ``Tensor[k, D]``."""

    order: int
    stage: str
    step: int
    loss: float
    concept: str
    names: dict[str, list[str]]
    rows: dict[str, torch.Tensor]


class TokenRecorder:
    """Record concept tokens during training: pass it as ``on_step`` to the training functions.

    ``recorder(stage, step, loss, tokens)`` stores a detached copy of every group's input rows
    (groups added later, e.g. generation tokens in stage 2, appear from then on). Call
    ``recorder.start(tokens)`` before training to keep the starting point too.
    """

    def __init__(self):
        self.snapshots: list[TokenSnapshot] = []

    def __call__(self, stage: str, step: int, loss: float, tokens) -> None:
        rows = {g: tokens.rows[g][0].detach().float().cpu().clone() for g in tokens.groups}
        names = {g: list(n) for g, n in tokens.groups.items()}
        self.snapshots.append(TokenSnapshot(len(self.snapshots), str(stage), int(step), float(loss),
                                            tokens.concept, names, rows))

    def start(self, tokens, stage: str = "start") -> None:
        """Record the tokens before training (loss NaN)."""
        self(stage, 0, float("nan"), tokens)

    def stages(self) -> list[str]:
        """Stage names in the order first recorded."""
        return list(dict.fromkeys(s.stage for s in self.snapshots))

    def concepts(self) -> list[str]:
        return list(dict.fromkeys(s.concept for s in self.snapshots))

    def last_rows(self, stage: str, concept: str) -> dict[str, torch.Tensor]:
        """``{group: Tensor[k, D]}`` at the end of ``stage`` for ``concept``."""
        found = [s for s in self.snapshots if s.stage == stage and s.concept == concept]
        if not found:
            raise TrajectoryError(f"no snapshot of {concept!r} in stage {stage!r}; recorded stages: {self.stages()}, "
                             f"concepts: {self.concepts()}")
        return found[-1].rows

    def frame(self):
        """One row per (snapshot, token): ``order, stage, step, loss, concept, group, token, norm,
        cos_to_first`` (cosine to the token's first recorded row: how far it turned): a pandas DataFrame."""
        import pandas

        first: dict[tuple, torch.Tensor] = {}
        out = []
        for s in self.snapshots:
            for g, r in s.rows.items():
                for i, name in enumerate(s.names[g]):
                    f = first.setdefault((s.concept, name), r[i])
                    out.append({"order": s.order, "stage": s.stage, "step": s.step, "loss": s.loss,
                                "concept": s.concept, "group": g, "token": name, "norm": float(r[i].norm()),
                                "cos_to_first": float(F.cosine_similarity(r[i], f, dim=0))})
        return pandas.DataFrame(out, columns=["order", "stage", "step", "loss", "concept", "group", "token", "norm",
                                              "cos_to_first"])

    def save(self, path) -> None:
        """Write every snapshot to one safetensors file (rows as tensors, the rest as metadata), atomically."""
        from safetensors.torch import save_file

        from .cache import atomic_path

        tensors = {f"{s.order}/{g}": r.contiguous() for s in self.snapshots for g, r in s.rows.items()}
        meta = [{"order": s.order, "stage": s.stage, "step": s.step, "loss": s.loss, "concept": s.concept,
                 "names": s.names} for s in self.snapshots]
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"unikit": "token-trajectory", "snapshots": json.dumps(meta)})

    @classmethod
    def load(cls, path) -> "TokenRecorder":
        """The recorder :meth:`save` wrote (safetensors; no code is unpickled)."""
        from safetensors import safe_open

        rec = cls()
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("unikit") != "token-trajectory":
                raise TrajectoryError(f"{path} is not a token trajectory written by TokenRecorder.save")
            for m in json.loads(meta["snapshots"]):
                rows = {g: f.get_tensor(f"{m['order']}/{g}") for g in m["names"]}
                rec.snapshots.append(TokenSnapshot(m["order"], m["stage"], m["step"], float(m["loss"]), m["concept"],
                                                   m["names"], rows))
        return rec

    def __len__(self) -> int:
        return len(self.snapshots)

    def __repr__(self) -> str:
        return f"TokenRecorder({len(self)} snapshots; stages {self.stages()}; concepts {self.concepts()})"
