"""Per-point progress of a long certification (smoothing, exact), saved after every group of points so an
interrupted run resumes where it stopped: one safetensors file, a tensor per column indexed by test index,
the run's identity and its seconds in the metadata. A file made by another run (another identity) is set
aside: the run starts over."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..io import load_tensors, read_metadata, save_tensors
from ..progress import write


class PointState:
    """`done[test index]` = a tuple of the `columns` (name -> dtype, in order); `extra_meta`: further numbers
    kept in the metadata (e.g. forward rows). `tensors`: the loaded file's tensors, for extras a caller saved
    through `save(extra=...)`."""

    def __init__(self, path: Path | None, identity: dict[str, Any], columns: dict[str, torch.dtype], what: str,
                 extra_meta: dict[str, Any] | None = None):
        self.path, self.columns = path, columns
        self.identity = json.loads(json.dumps(identity, default=str))
        self.done: dict[int, tuple] = {}
        self.seconds = 0.0
        self.meta: dict[str, Any] = dict(extra_meta or {})
        self.tensors: dict[str, torch.Tensor] = {}
        if path is None or not path.is_file():
            return
        meta = json.loads(read_metadata(path)["advlab"])
        if meta["identity"] != self.identity:
            write(f"{path} belongs to a different {what}; starting over")
            return
        self.tensors = load_tensors(path)
        values = [self.tensors[name].tolist() for name in columns]
        for i, *row in zip(self.tensors["index"].tolist(), *values):
            self.done[i] = tuple(row)
        self.seconds = meta["seconds"]
        self.meta.update({k: meta[k] for k in self.meta if k in meta})
        write(f"resuming the {what} saved in {path.parent} ({len(self.done)} points done)")

    def save(self, extra: dict[str, torch.Tensor] | None = None) -> None:
        if self.path is None:
            return
        keys = sorted(self.done)
        rows = [self.done[k] for k in keys]
        tensors = {"index": torch.tensor(keys, dtype=torch.long)}
        for c, (name, dtype) in enumerate(self.columns.items()):
            tensors[name] = torch.tensor([r[c] for r in rows], dtype=dtype)
        meta = {"identity": self.identity, "seconds": self.seconds, **self.meta}
        save_tensors(self.path, {**tensors, **(extra or {})}, {"advlab": json.dumps(meta)})
