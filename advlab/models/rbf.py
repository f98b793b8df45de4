"""Shallow RBF network of Goodfellow et al. (2015): one Gaussian unit per class.

p(y=i|x) ~ exp(-beta_i * ||x - w_i||^2), so the logits are the negative scaled squared
distances. Far from every centre all logits are very negative: the model is unconfident there,
which is why it resists FGSM (at the price of low clean confidence).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class RBFNet(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, beta: float = 1.0):
        super().__init__()
        self.centers = nn.Parameter(torch.rand(num_classes, math.prod(input_shape)))  # (K, D)
        # beta_i = softplus(raw_i) keeps every precision positive.
        self.raw_beta = nn.Parameter(torch.full((num_classes,), math.log(math.expm1(beta))))

    @property
    def beta(self) -> torch.Tensor:
        return F.softplus(self.raw_beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, D)
        # ||x - w||^2 = ||x||^2 - 2 x.w + ||w||^2, without an (N, K, D) intermediate.
        sq = (x * x).sum(1, keepdim=True) - 2 * x @ self.centers.T + (self.centers ** 2).sum(1)
        return -self.beta * sq.clamp_min(0)  # (N, K)
