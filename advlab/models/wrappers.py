"""Model wrappers that keep epsilon in raw input units: normalisation lives inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalized(nn.Module):
    """(x - mean) / std per channel (or per feature for (N, D) input), then the wrapped network."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)  # channel axis is 1 for both (N, D) and (N, C, H, W)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
