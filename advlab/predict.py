"""Batched inference that leaves the model's mode as it found it, and the one check that a model fits its data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .errors import AdvlabError
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


@contextlib.contextmanager
def attack_mode(model: nn.Module, evaluation: bool) -> Iterator[None]:
    """Freeze parameters (only input gradients are needed) and optionally switch to eval mode;
    restore both afterwards, even when the attack raises."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        if evaluation:
            model.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def model_output(model: nn.Module, x: torch.Tensor, what: str = "the model", rows: int = 2) -> torch.Tensor:
    """The model's logits (rows, K) on the first `rows` inputs, in eval mode and without gradients (its
    mode restored), or a clear error naming `what` when the model cannot take the data or does not return
    logits. The one check that a model fits its data: the attack harness and `check_classifier` ask it."""
    sample = x[:rows].to(model_device(model))
    try:
        with torch.no_grad(), attack_mode(model, evaluation=True):
            out = model(sample)
    except Exception as e:  # any failure here is a mismatch of model and data (the user's code may raise anything)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AdvlabError(f"{what} cannot take inputs of shape {tuple(x.shape[1:])} (is this the data it was "
                          f"trained on?): {first}") from e
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(sample):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AdvlabError(f"{what} must return logits of shape (N, K); it returned {shape} for input "
                          f"{tuple(sample.shape)}")
    return out


def looks_like_probabilities(logits: torch.Tensor) -> bool:
    """Outputs that are non-negative with rows summing to 1: a final softmax the attacks should not see."""
    return bool(logits.shape[1] > 1 and (logits >= 0).all() and (logits <= 1).all()
                and torch.allclose(logits.sum(1), torch.ones(len(logits), device=logits.device), atol=1e-4))
