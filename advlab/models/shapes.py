"""Image inputs given flat or shaped: the models that need (C, H, W) accept (N, C*H*W) too."""

from __future__ import annotations

import math

import torch


def as_image(x: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """x as (N, *input_shape) when it comes flat as (N, prod(input_shape)); otherwise x unchanged."""
    if x.ndim == 2 and x.shape[1] == math.prod(input_shape):
        return x.view(x.shape[0], *input_shape)
    return x


def check_image_shape(input_shape: tuple[int, ...], name: str) -> None:
    """A ValueError unless `input_shape` is (C, H, W); `name` is the model's."""
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image input (C, H, W); got input shape {tuple(input_shape)}. "
                         "Use 'mlp' or 'softmax' for feature vectors")
