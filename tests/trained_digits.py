"""Small models trained on digits, shared by the attack tests (trained once per test process)."""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from advlab.data import load_dataset
from advlab.defenses import TrainConfig, Trainer
from advlab.models import build_model
from advlab.rng import seeded


@functools.lru_cache(maxsize=None)
def digits_cnn(augment=None):
    """cnn-small on digits, 15 epochs (~96% test accuracy); `augment` is a random transform applied
    to every training batch (a model that works under a randomised defense)."""
    data = load_dataset("digits")
    with seeded(0):
        model = build_model("cnn-small", data.input_shape, data.num_classes)

    def objective(m, x, y, g):
        logits = m(augment(x, g) if augment is not None else x)
        return F.cross_entropy(logits, y), logits

    Trainer(model, data.x_train, data.y_train, config=TrainConfig(epochs=15, lr=3e-3), objective=objective,
            progress=False, log=lambda msg: None).fit()
    model.eval()
    return model
