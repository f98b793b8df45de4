"""Fewer kernel launches: the search's forward and backward through CUDA graphs (`--graphs`).

    from advlab.precision import with_precision
    attack = with_precision(PGD(norm="linf", steps=20), "bf16", graphs=True)

`graphed(model)` wraps the model the search runs in torch.compile(mode="reduce-overhead"), which
records CUDA graphs of the steady-state step (a fixed batch shape: on a GPU the engine keeps finished
rows in the batch behind a mask, advlab.attacks.engine) and replays them, one launch instead of one
per kernel. Without CUDA it does nothing (said once on stderr). If compiling or capturing fails, the
call runs again eagerly and every later call stays eager, said once on stderr: a failed capture
costs time, never a result. Verdicts never go through it (advlab.precision scores in eager fp32).

Not measured yet: no GPU was lent to the session that wrote this. The wrapper sits around the model
as one attack call sees it (pass counter and padding included), so torch.compile may recompile per
attack call; a GPU measurement decides whether to keep it, move it, or drop it (benchmarks/gpu.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .oom import is_out_of_memory
from .predict import model_device
from .progress import write

MODE = "reduce-overhead"
_said: set[str] = set()  # messages already written (one line per process, not per batch)


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        write(message)


def cuda_graphs_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def graphed(model: nn.Module) -> nn.Module:
    """`model` behind CUDA graphs on a GPU; `model` itself elsewhere."""
    if not cuda_graphs_available(model_device(model)):
        _say_once("--graphs: CUDA graphs need a CUDA device; running eagerly")
        return model
    return Graphed(model)


class Graphed(nn.Module):
    """`model` through torch.compile(mode="reduce-overhead"), falling back to eager on any failure."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training  # mirror the model (see passes.PassCounter)
        self.failed: str | None = None
        self._compiled = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed is None:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self.model, mode=MODE, dynamic=False)
                return self._compiled(x)
            except Exception as e:  # any capture failure: the eager model computes the same
                if is_out_of_memory(e):
                    raise  # the batch is too large: advlab.oom halves it, graphs or not
                self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                _say_once(f"--graphs: capture failed ({self.failed[:200]}); running eagerly")
        return self.model(x)
