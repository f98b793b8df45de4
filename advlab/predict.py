"""Batched inference that leaves the model's mode as it found it."""

from __future__ import annotations

import torch
from torch import nn

from .oom import halved, is_out_of_memory
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
            try:
                out.append(model(x[i:i + batch_size].to(device)).float().cpu())
            except RuntimeError as e:  # out of GPU memory: halve the batch and go on
                if not is_out_of_memory(e):
                    raise
                batch_size = halved(batch_size, e, "prediction", write)
                continue
            i += batch_size
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    if len(y) == 0:
        return float("nan")
    return (predict_logits(model, x, batch_size).argmax(1) == y.cpu()).float().mean().item()
