"""Multi-layer perceptrons: ReLU MLP and the maxout network of Goodfellow et al. (2015)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] | list[int] = (256, 256),
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Maxout(nn.Module):
    """A maxout layer: `pieces` linear maps per unit, the unit outputs their maximum."""

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(dim=2)  # (N, units)


class MaxoutNet(nn.Module):
    """Goodfellow et al. 2015's MNIST maxout network: 2 maxout layers of 240 units, 5 pieces."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, units: int = 240, pieces: int = 5,
                 layers: int = 2, dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        mods: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            mods.append(nn.Dropout(input_dropout))
        width = math.prod(input_shape)
        for _ in range(layers):
            mods.append(Maxout(width, units, pieces))
            if dropout:
                mods.append(nn.Dropout(dropout))
            width = units
        mods.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
