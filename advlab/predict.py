"""Batched inference that leaves the model's mode as it found it."""

from __future__ import annotations

import torch
from torch import nn

from .oom import fitting
from .progress import write


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for x in eval mode, computed in batches; returned on the CPU."""
    was_training = model.training
    device = model_device(model)
    model.eval()
    out, i = [], 0
    try:
        while i < len(x):
            logits, batch_size = fitting(lambda size: model(x[i:i + size].to(device)).float().cpu(), batch_size,
                                         "prediction", write)
            out.append(logits)
            i += batch_size
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    if len(y) == 0:
        return float("nan")
    return (predict_logits(model, x, batch_size).argmax(1) == y.cpu()).float().mean().item()
