"""Count the work: forward and backward passes in image rows (adversarial-library's habit).

A pass count does not depend on the machine, so it compares a CPU run with a GPU run, and advlab
with AutoAttack (wrap their model in the same counter). Rows are counted where the network runs:
padding rows (attacks.padding) count, since they cost compute; an EOT wrapper counts as one pass
per row, whatever it samples inside.
"""

from __future__ import annotations

import torch
from torch import nn


class PassCounter(nn.Module):
    """`model` unchanged, counting the rows of every forward pass and of every backward pass
    through its output. Plain Python integers: no device synchronisation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training  # a new Module says "train": mirror the model, or restoring modes breaks it
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        rows = len(x)
        self.forward_rows += rows
        if out.requires_grad:
            out.register_hook(lambda grad: self._count_backward(rows))
        return out

    def _count_backward(self, rows: int) -> None:
        self.backward_rows += rows

    def counts(self) -> dict[str, int]:
        return {"forward": self.forward_rows, "backward": self.backward_rows}


def add_counts(*counts: dict[str, int] | None) -> dict[str, int]:
    total = {"forward": 0, "backward": 0}
    for c in counts:
        for k in total:
            total[k] += int((c or {}).get(k, 0))
    return total
