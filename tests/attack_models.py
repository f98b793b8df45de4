"""Small models with known answers for the attack tests (imported by tests/test_attacks_*.py); the trained
digits models are fixtures in trained_digits.py."""

from __future__ import annotations

import torch
from torch import nn

from advlab.models import build_model
from advlab.rng import seeded


def logistic(d: int = 20, n: int = 64, seed: int = 0, scale: float = 1.0):
    """(model, x (n, d), y, z = w.x + b) for binary logistic regression, labels = its own
    predictions so every point starts correct and its margin is |z|."""
    with seeded(seed):
        model = build_model("logistic", (d,), 2).eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = scale * torch.randn(n, d, generator=g)
    with torch.no_grad():
        z = model(x)[:, 1]
    return model, x, (z > 0).long(), z


def hyperplane_distance(model, z, q: float) -> torch.Tensor:
    """|w.x + b| / ||w||_q: the smallest perturbation (in the dual norm of q) that flips the label."""
    return z.abs() / torch.linalg.vector_norm(model.weight.detach(), ord=q)


def margin_of(model, x, y) -> torch.Tensor:
    """(N,) signed margin of the true class of a logistic model: > 0 when correct."""
    with torch.no_grad():
        z = model(x)[:, 1]
    return torch.where(y == 1, z, -z)


class TinyConv(nn.Module):
    """conv - relu - pool - linear on (N, C, H, W) or a flat (N, D) view; K outputs."""

    def __init__(self, shape, k: int = 5):
        super().__init__()
        self.shape = tuple(shape)
        c = shape[0]
        self.conv = nn.Conv2d(c, 4, 3, padding=1)
        self.fc = nn.Linear(4 * shape[1] * shape[2], k)

    def forward(self, x):
        x = x.view(len(x), *self.shape)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny_model(shape, k: int = 5, seed: int = 0) -> nn.Module:
    """A random small model for input shape (D,) or (C, H, W), in eval mode."""
    with seeded(seed):
        if len(shape) == 1:
            model = nn.Sequential(nn.Linear(shape[0], 16), nn.Tanh(), nn.Linear(16, k))
        else:
            model = TinyConv(shape, k)
    return model.eval()

