"""An ensemble that averages the members' probabilities, as one module attacks can target."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """Returns log of the mean member probability: softmax of the output is the averaged prediction."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([m(x).log_softmax(dim=1) for m in self.members])  # (M, N, K)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
