"""Training for certificates: Gaussian noise augmentation (for randomized smoothing) and IBP training.

- gaussian (Cohen et al. 2019): J(x + d), d ~ N(0, sigma^2 I), a fresh draw per example and step, not
  clipped to the data's bounds (as the smoothed classifier sees it). `--defense-arg sigma=0.25`; certify
  with the same sigma (`advlab certify --method smoothing --sigma 0.25`).
- ibp (Gowal et al. 2018): kappa J(x) + (1 - kappa) J(worst-case logits over the Linf ball of eps_t),
  the worst case from interval bound propagation (advlab.certify.ibp, last layer folded into the
  margins). The usual schedule: `warmup` (a fraction of all training steps) trains clean; over the
  next `ramp` fraction eps_t rises linearly from 0 to `train_eps` (default eps) and kappa from 1 to
  `kappa`; then both stay. The schedule is a function of the step (epoch and batch), so `--resume`
  ends with the same weights. Validation (`val=ibp`, the default) is IBP-certified accuracy at eps on
  the held-out split, so `--patience` keeps the most certifiable epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AdvlabError
from ..threat import Bounds
from .training import Trainer, TrainerHook, ValMetric


def _positive(value, key: str, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
        (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise AdvlabError(f"defense {name!r}: {key} must be a {'non-negative' if allow_zero else 'positive'} "
                          f"finite number, got {value!r}")
    return float(value)


class GaussianAugmentation:
    """Cross-entropy on x + N(0, sigma^2 I): the base classifier randomized smoothing needs."""

    name = "gaussian"

    def __init__(self, sigma: float = 0.25, *, bounds: Bounds = None):
        self.sigma = _positive(sigma, "sigma", self.name)
        self.val_metric: ValMetric | None = None

    def hooks(self, x_val, y_val) -> list[TrainerHook]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"sigma": self.sigma}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        logits = model(x + self.sigma * noise)
        return F.cross_entropy(logits, y), logits


class IBPTraining:
    """Interval-bound-propagation training with the eps ramp and the kappa-mixed loss (Gowal et al. 2018)."""

    name = "ibp"

    def __init__(self, eps: float | None = None, *, kappa: float = 0.5, warmup: float = 0.1, ramp: float = 0.5,
                 train_eps: float | None = None, val: str = "ibp", val_n: int = 1000, bounds: Bounds = None):
        if eps is None:
            raise AdvlabError("defense 'ibp' needs a budget: pass `eps` (the Linf eps to certify, e.g. 0.1)")
        self.eps = _positive(eps, "eps", self.name)
        self.train_eps = _positive(train_eps, "train_eps", self.name) if train_eps is not None else self.eps
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 <= kappa <= 1:
            raise AdvlabError(f"defense 'ibp': kappa (the final weight of the clean loss) must be in [0, 1], "
                              f"got {kappa!r}")
        self.kappa = float(kappa)
        for key, value in (("warmup", warmup), ("ramp", ramp)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise AdvlabError(f"defense 'ibp': {key} is a fraction of the training steps in [0, 1], got {value!r}")
        if warmup + ramp > 1:
            raise AdvlabError(f"defense 'ibp': warmup + ramp must be at most 1 (of the training steps), got "
                              f"{warmup} + {ramp}")
        self.warmup, self.ramp = float(warmup), float(ramp)
        if val not in ("ibp", "clean"):
            raise AdvlabError(f"defense 'ibp': val={val!r} is unknown; choose ibp (certified accuracy) or clean")
        if isinstance(val_n, bool) or not isinstance(val_n, int) or val_n < 1:
            raise AdvlabError(f"defense 'ibp': val_n must be a positive integer, got {val_n!r}")
        self.val, self.val_n = val, val_n
        self.bounds = bounds
        self._trainer: Trainer | None = None
        self._epoch, self._calls = -1, 0

    # -- what train_run wires into the Trainer ----------------------------------------------------
    @property
    def val_metric(self) -> ValMetric | None:
        if self.val == "clean":
            return None
        eps, bounds, n = self.eps, self.bounds, self.val_n

        def certified(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
            from ..certify.ibp import certify_ibp
            # A mean over the first val_n points stands for the split (the Trainer weighs it by len(y)).
            return certify_ibp(model, x[:n], y[:n], eps, bounds=bounds, progress=False).accuracy_at(eps)
        return certified

    def hooks(self, x_val, y_val) -> list[TrainerHook]:
        return [_Schedule(self)]

    def describe(self) -> dict[str, Any]:
        return {"eps": self.eps, "train_eps": self.train_eps, "kappa": self.kappa, "warmup": self.warmup,
                "ramp": self.ramp, "val": self.val, "val_n": self.val_n}

    # -- the schedule -----------------------------------------------------------------------------
    def progress(self) -> float:
        """The fraction of training done before this step (1.0 outside a Trainer)."""
        t = self._trainer
        if t is None:
            return 1.0
        if t.epoch != self._epoch:
            self._epoch, self._calls = t.epoch, 0
        steps = math.ceil(len(t.y_train) / t.config.batch_size)
        done = t.epoch * steps + self._calls
        self._calls += 1
        return done / max(steps * t.config.epochs, 1)

    def schedule(self, progress: float) -> tuple[float, float]:
        """(eps_t, kappa_t) at this fraction of training."""
        if progress < self.warmup:
            return 0.0, 1.0
        s = 1.0 if self.ramp == 0 else min(1.0, (progress - self.warmup) / self.ramp)
        return self.train_eps * s, 1.0 - (1.0 - self.kappa) * s

    # -- the objective ----------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        from ..certify.ibp import input_box, worst_case_logits

        eps_t, kappa_t = self.schedule(self.progress())
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if eps_t > 0 and kappa_t < 1:
            worst = worst_case_logits(model, input_box(x, eps_t, self.bounds), y)
            loss = kappa_t * loss + (1 - kappa_t) * F.cross_entropy(worst, y)
        return loss, logits


class _Schedule(TrainerHook):
    """Gives the objective the Trainer (epoch, steps) and checks the model before any epoch runs."""

    def __init__(self, objective: IBPTraining):
        self.objective = objective

    def fit_start(self, trainer: Trainer) -> None:
        from ..certify.ibp import check_ibp_supported
        check_ibp_supported(trainer.model)
        self.objective._trainer = trainer
        self.objective._epoch, self.objective._calls = -1, 0

    def epoch_end(self, trainer: Trainer, metrics: dict[str, Any]):
        eps_t, kappa_t = self.objective.schedule(min(1.0, trainer.epoch / max(trainer.config.epochs, 1)))
        metrics["ibp_eps"], metrics["ibp_kappa"] = eps_t, kappa_t
        return None
