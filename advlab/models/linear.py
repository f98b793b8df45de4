"""Linear models: binary logistic regression and softmax (multinomial) regression."""

from __future__ import annotations

import math

import torch
from torch import nn


class LogisticRegression(nn.Module):
    """Binary logistic regression returning two logits [0, w.x + b].

    Softmax over these two logits is the sigmoid of w.x + b, so cross-entropy is the logistic
    loss, and every attack sees the same (N, K) logits interface as for any other model.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 2):
        super().__init__()
        if num_classes != 2:
            raise ValueError(f"logistic regression is binary (num_classes=2); use 'softmax' for {num_classes} classes")
        self.linear = nn.Linear(math.prod(input_shape), 1)

    @property
    def weight(self) -> torch.Tensor:  # (D,)
        return self.linear.weight[0]

    @property
    def bias(self) -> torch.Tensor:
        return self.linear.bias[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.flatten(1))  # (N, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)  # (N, 2)


class SoftmaxRegression(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))
