"""The models of the panel (benchmarks/panel.py), each trained by advlab and cached in benchmarks/.cache.

Every function takes no argument and returns a torch.nn.Module in eval mode that takes raw
Fashion-MNIST images in [0, 1], so the CLI can load any of them:

    advlab evaluate --model benchmarks/panel_models.py:quantize --dataset fashion-mnist --eps 0.1 --n 200

Ordinary models (advlab train recipes): standard, fgsm_rs, pgd_at, trades, ibp, gaussian.
Defenses that mislead gradient attacks, each with the adaptation that sees through it
(advlab.models.adaptive, `advlab evaluate --adaptive NAME`):
- quantize: 4-level input quantisation in front of the standard CNN (zero gradient) -> bpda;
- threshold: a CNN whose first-layer activations are thresholded to 0/1 (a step, zero gradient),
  trained with a straight-through estimator -> bpda;
- saturated: the standard CNN with its logits multiplied by 1000, as a distilled network at
  temperature 1/1000 would give: softmax saturates in fp32, so the cross-entropy gradient is exactly
  zero on every correctly classified point -> rescale;
- random: random resize-and-pad at inference (Xie et al. 2018) in front of a CNN trained with the
  same augmentation -> eot.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, trained_model  # noqa: E402

EPS = 0.1
SATURATION = 1000.0


def standard():
    return trained_model("fm-cnn-standard", epochs=2)[0]


def fgsm_rs():
    return trained_model("fm-cnn-fgsmrs-1", defense="fgsm-rs", eps=EPS, epochs=1)[0]


def pgd_at():
    return trained_model("fm-cnn-pgd3-1", defense="pgd", eps=EPS, epochs=1, defense_kwargs={"steps": 3})[0]


def trades():
    return trained_model("fm-cnn-trades3-1", defense="trades", eps=EPS, epochs=1, defense_kwargs={"steps": 3})[0]


def ibp():
    return trained_model("fm-cnn-ibp-1", defense="ibp", eps=EPS, epochs=1)[0]


def gaussian():
    return trained_model("fm-cnn-gaussian-1", defense="gaussian", epochs=1, defense_kwargs={"sigma": 0.25})[0]


def quantize():
    from advlab.models import Preprocessed, Quantize
    return Preprocessed(standard(), Quantize(4, bounds=(0.0, 1.0))).eval()


class FirstLayerThreshold(nn.Module):
    """x -> 1[conv(x) > 0]: the first convolution's activations thresholded to 0/1 (zero gradient).
    `smooth` is the same layer without the step (conv(x)): BPDA through it is the straight-through
    estimator the network was trained with."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(torch.relu(self.conv(x)))  # 1 where conv(x) > 0, else 0; autograd's gradient: zero

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    backward_approximation = smooth  # what `advlab evaluate --adaptive bpda` differentiates instead


def threshold_model(input_shape=(1, 28, 28), num_classes=10):
    """The untrained thresholded CNN (cnn-small's layers, the first one's activations stepped to 0/1)."""
    from advlab.models import Preprocessed
    from advlab.rng import seeded
    c, h, w = input_shape
    with seeded(0):
        conv = nn.Conv2d(c, 32, 3, padding=1)
        back = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
                             nn.Linear(128, num_classes))
    return Preprocessed(back, FirstLayerThreshold(conv))


def train_threshold(model, data=None, epochs=2):
    """Straight-through training: the same forward, gradients through conv(x) as if the step were the identity."""
    _fit(model.bpda(model.preprocess.smooth), augment=None, epochs=epochs, data=data)


def threshold():
    return _cached("fm-cnn-threshold-1", threshold_model(), lambda m: train_threshold(m, epochs=1))


class Saturated(nn.Module):
    """model(x) * factor: the same predictions, a softmax saturated in fp32 (distillation-like)."""

    def __init__(self, model: nn.Module, factor: float = SATURATION):
        super().__init__()
        self.model, self.factor = model, factor
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


def saturated():
    return Saturated(standard()).eval()


def random_base():
    """cnn-small trained on random resize-and-pad (the transformation at inference needs it)."""
    from advlab.models import RandomResizePad, build_model
    from advlab.rng import seeded
    with seeded(0):
        model = build_model("cnn-small", (1, 28, 28), 10)
    return _cached("fm-cnn-resizepad-1", model, lambda m: _fit(m, augment=RandomResizePad(0.75), epochs=1))


def random():
    from advlab.models import Randomized, RandomResizePad
    return Randomized(random_base(), RandomResizePad(0.75), seed=1).eval()


def _fit(model, augment, epochs, data=None):
    from advlab.data import load_dataset
    from advlab.defenses import TrainConfig, Trainer
    data = data or load_dataset("fashion-mnist")

    def objective(m, x, y, g):
        logits = m(augment(x, g) if augment is not None else x)
        return F.cross_entropy(logits, y), logits

    Trainer(model, data.x_train, data.y_train, config=TrainConfig(epochs=epochs, lr=3e-3), objective=objective,
            progress=False, log=print if data.name == "fashion-mnist" else (lambda msg: None)).fit()


def _cached(name: str, model: nn.Module, train) -> nn.Module:
    """`model` with the weights in benchmarks/.cache/NAME.safetensors, trained by train(model) first if missing."""
    from advlab.io import load_tensors, save_tensors
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.safetensors"
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            if os.environ.get("ADVLAB_BENCH_NO_TRAIN"):  # panel.py --cached-only
                raise LookupError(f"{name} is not trained yet")
            train(model)
            save_tensors(path, model.state_dict())
    model.load_state_dict(load_tensors(path))
    return model.eval()


def digits_mlp():
    """benchmarks/verify.py's digits MLP (two hidden layers of 256, 15 epochs): exact verification decides
    every one of its first 100 test points at Linf 0.02 (benchmarks/results/verify.md)."""
    return trained_model("verify-digits-mlp", model="mlp", epochs=15, dataset="digits")[0]


def digits_mlp_x1000():
    """The same MLP with its last layer x1000 (verify.py's): the same decisions, so the same exact answer, and a
    saturated softmax."""
    from verify import scaled_logits
    return scaled_logits(digits_mlp(), SATURATION).eval()


# name in the panel -> (function, what it is, the adaptation that sees through it or None, randomised)
PANEL = {
    "standard": (standard, "cnn-small, 2 epochs", None, False),
    "fgsm-rs": (fgsm_rs, "FGSM + random start (Wong 2020), eps 0.1, 1 epoch", None, False),
    "pgd-at": (pgd_at, "PGD-3 adversarial training, eps 0.1, 1 epoch", None, False),
    "trades": (trades, "TRADES (beta 6, 3 steps), eps 0.1, 1 epoch", None, False),
    "ibp": (ibp, "IBP training, eps 0.1, 1 epoch", None, False),
    "gaussian": (gaussian, "Gaussian noise augmentation, sigma 0.25, 1 epoch", None, False),
    "quantize": (quantize, "4-level input quantisation + standard cnn-small", "bpda", False),
    "threshold": (threshold, "first-layer activations thresholded to 0/1 (straight-through training, 1 epoch)", "bpda",
                  False),
    "saturated": (saturated, "standard cnn-small, logits x1000 (saturated softmax)", "rescale", False),
    "random": (random, "random resize-and-pad at inference, cnn-small trained on it 1 epoch", "eot", True),
    # Ground truth: exact verification decides every point, so the attacks' misses are known, not estimated.
    "digits-mlp": (digits_mlp, "digits MLP 256-256, 15 epochs (benchmarks/verify.py)", None, False),
    "digits-mlp-x1000": (digits_mlp_x1000, "the digits MLP, logits x1000 (saturated softmax)", None, False),
}
