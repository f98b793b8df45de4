"""How well the AC-GAN draws the class it is asked for, measured by an independently trained classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ... import rng
from ...errors import AdvlabError
from .model import ACGAN


@torch.no_grad()
def generation_quality(gan: ACGAN, judge: nn.Module, n_per_class: int = 100, seed: int = 0,
                       batch_size: int = 500) -> dict[str, Any]:
    """Accuracy of an independently trained classifier on generated images, per class.

    A good class-conditional generator makes images the judge labels as the class asked for.
    """
    if n_per_class <= 0:
        raise AdvlabError(f"n_per_class must be positive, got {n_per_class}")
    from ...predict import predict_logits
    k = gan.num_classes
    labels = torch.arange(k).repeat_interleave(n_per_class)
    g = rng.generator(seed, 12345)
    x = torch.cat([gan.sample(labels[i:i + batch_size], generator=g) for i in range(0, len(labels), batch_size)])
    pred = predict_logits(judge, x).argmax(1)
    correct = (pred == labels).float()
    per_class = correct.view(k, n_per_class).mean(1)
    return {"accuracy": correct.mean().item(), "per_class": per_class.tolist(), "n_per_class": n_per_class}
