"""Convolutional networks for (C, H, W) images.

Both accept flat (N, C*H*W) input too and reshape it, so one test harness serves all models.
"""

from __future__ import annotations

import torch
from torch import nn

from .shapes import as_image, check_image_shape


class SmallCNN(nn.Module):
    """conv3x3(32) - pool - conv3x3(64) - pool - fc(128) - fc(K). `width` scales the channels."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 1, hidden: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        check_image_shape(input_shape, "cnn-small")
        self.input_shape = tuple(input_shape)
        c, h, w = input_shape
        c1, c2 = 32 * width, 64 * width
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(as_image(x, self.input_shape)))


class MadryCNN(nn.Module):
    """Madry et al. 2018 MNIST network: conv5x5(32) - pool - conv5x5(64) - pool - fc(1024) - fc(K)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 1024):
        super().__init__()
        check_image_shape(input_shape, "cnn-madry")
        self.input_shape = tuple(input_shape)
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * (h // 4) * (w // 4), hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(as_image(x, self.input_shape)))
