"""Adversarial training objectives and their controls, as Trainer objectives.

Each defense is an object called as `objective(model, x, y, generator) -> (loss, logits)` that
crafts its examples with advlab's own attacks (`attack.perturb`), drawing every random number from
`generator`, so a resumed run ends with the same weights as one that never stopped.

- goodfellow (Goodfellow et al. 2015): alpha * J(x) + (1 - alpha) * J(x + eps sign(grad_x J)),
  alpha = 0.5; its validation metric is FGSM accuracy, so --patience early-stops on the
  adversarial validation error as in the paper.
- pgd (Madry et al. 2018): J(x') with x' from k-step PGD with a random start.
- trades (Zhang et al. 2019): CE(f(x), y) + beta * KL(p(x) || p(x')) with x' maximising the same
  KL by PGD (the KL's argument order follows the authors' code: nn.KLDivLoss(log p(x'), p(x))).
- fgsm-rs (Wong et al. 2020): one FGSM step of 1.25 eps from a uniform random start; use it with
  the one-cycle schedule. A PGD check on a fixed held-out batch after every epoch catches
  catastrophic overfitting, rolls back to the last good epoch and stops (see CollapseCheck).
- noise-sign / noise-uniform: the same mixed objective with random +-eps sign noise or uniform
  noise instead of the adversarial direction (the paper's controls: they barely help).
- l1: CE + coef * ||W||_1 of the first layer (for logistic regression, the weights). The paper's
  point: for a linear model, the adversarial loss softplus(eps ||w||_1 - y z) is an L1 penalty
  inside the loss, which stops acting once the model is confident, unlike this decay.

Where to perturb: `layer=k` perturbs the activations after the k-th hidden layer instead of the
input (see layers.split_at_layer); eps is then in activation units and no input bounds apply.
Validation metrics (`val=fgsm|pgd`) always attack the input, at `val_eps` (default: eps).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..attacks import FGSM, PGD
from ..attacks.base import Attack
from ..errors import AdvlabError
from ..threat import Bounds, clip_to_bounds, get_norm
from .layers import split_at_layer
from .training import Trainer, TrainerHook, ValMetric


class AdversarialObjective:
    """Shared plumbing: budget, bounds, where to perturb, and the validation metric."""

    name = "adversarial"

    def __init__(self, eps: float | None = None, *, bounds: Bounds = None, norm: str = "linf", layer: int = 0,
                 val: str = "clean", val_eps: float | None = None):
        if eps is None:
            raise AdvlabError(f"defense {self.name!r} needs a budget: pass `eps` (e.g. `eps=0.1` or 8/255)")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise AdvlabError(f"defense {self.name!r}: eps must be a number >= 0, got {eps!r}")
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise AdvlabError(f"defense {self.name!r}: layer must be 0 (the input) or a hidden layer number >= 1, "
                              f"got {layer!r}")
        if val not in VAL_METRICS:
            raise AdvlabError(f"defense {self.name!r}: val={val!r} is unknown; choose one of {', '.join(VAL_METRICS)}")
        if val_eps is not None and (isinstance(val_eps, bool) or not isinstance(val_eps, (int, float)) or val_eps < 0):
            raise AdvlabError(f"defense {self.name!r}: val_eps must be a number >= 0, got {val_eps!r}")
        self.eps = float(eps)
        self.val_eps = float(val_eps) if val_eps is not None else self.eps
        self.bounds = bounds
        self.norm = get_norm(norm)
        self.layer = layer
        self.val = val

    # -- what train_run wires into the Trainer --------------------------------------------
    @property
    def val_metric(self) -> ValMetric | None:
        """Validation accuracy under this metric's attack at the input budget (None: clean accuracy)."""
        return VAL_METRICS[self.val](self.val_eps, self.bounds, self.norm.name)

    def hooks(self, x_val: torch.Tensor | None, y_val: torch.Tensor | None) -> list[TrainerHook]:
        return []

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("bounds",)}
        out["norm"] = self.norm.name
        return out

    # -- the objective --------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        head, tail = split_at_layer(model, self.layer)
        h = head(x)  # (N, ...): the input, or hidden activations (with their graph to the head)
        bounds = self.bounds if self.layer == 0 else None
        return self.loss(tail, h, y, bounds, generator)

    def loss(self, tail: nn.Module, h: torch.Tensor, y: torch.Tensor, bounds: Bounds,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _perturbed(self, attack: Attack, tail, h, y, bounds, generator, **kw) -> torch.Tensor:
        """h plus a constant adversarial perturbation (gradients still reach the head through h)."""
        h0 = h.detach()
        delta = attack.perturb(tail, h0, y, self.eps, bounds=bounds, generator=generator, **kw) - h0
        return h + delta


def _two_forwards(tail: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tail(a), tail(b) in one batched forward pass."""
    logits = tail(torch.cat([a, b]))
    return logits[:len(a)], logits[len(a):]


class Goodfellow(AdversarialObjective):
    name = "goodfellow"

    def __init__(self, eps=None, *, alpha: float = 0.5, bounds=None, norm="linf", layer=0, val="fgsm", val_eps=None):
        super().__init__(eps, bounds=bounds, norm=norm, layer=layer, val=val, val_eps=val_eps)
        _check_fraction(alpha, "alpha", self.name)
        self.alpha = float(alpha)
        self._attack = FGSM(self.norm)

    def loss(self, tail, h, y, bounds, generator):
        h_adv = self._perturbed(self._attack, tail, h, y, bounds, generator)
        clean, adv = _two_forwards(tail, h, h_adv)
        loss = self.alpha * F.cross_entropy(clean, y) + (1 - self.alpha) * F.cross_entropy(adv, y)
        return loss, clean


class PGDTraining(AdversarialObjective):
    name = "pgd"

    def __init__(self, eps=None, *, steps: int = 10, step_size: float | None = None,
                 rel_step_size: float | None = None, random_start: bool = True, bounds=None, norm="linf", layer=0,
                 val="clean", val_eps=None):
        super().__init__(eps, bounds=bounds, norm=norm, layer=layer, val=val, val_eps=val_eps)
        self.steps, self.step_size, self.rel_step_size = steps, step_size, rel_step_size
        self.random_start = random_start
        self._attack = _pgd(self.norm, steps, step_size, rel_step_size, random_start, self.name)

    def loss(self, tail, h, y, bounds, generator):
        logits = tail(self._perturbed(self._attack, tail, h, y, bounds, generator))
        return F.cross_entropy(logits, y), logits


class TRADES(AdversarialObjective):
    name = "trades"

    def __init__(self, eps=None, *, beta: float = 6.0, steps: int = 10, step_size: float | None = None,
                 rel_step_size: float | None = 0.25, bounds=None, norm="linf", layer=0, val="clean", val_eps=None):
        super().__init__(eps, bounds=bounds, norm=norm, layer=layer, val=val, val_eps=val_eps)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
            raise AdvlabError(f"defense 'trades': beta must be a number >= 0, got {beta!r}")
        self.beta, self.steps, self.step_size, self.rel_step_size = float(beta), steps, step_size, rel_step_size
        if step_size is not None:
            rel_step_size = None
        self._attack_args = (steps, step_size, rel_step_size)
        _pgd(self.norm, steps, step_size, rel_step_size, True, self.name)  # validate the options now

    def loss(self, tail, h, y, bounds, generator):
        h0 = h.detach()
        with torch.no_grad():
            p_clean = F.softmax(tail(h0), dim=1)  # (N, K): the target the inner maximisation moves away from

        def kl_to_clean(logits, _y, _targets):  # per example; perturb keeps all N points in order
            return kl_divergence(p_clean, logits)

        attack = PGD(self.norm, steps=self._attack_args[0], step_size=self._attack_args[1],
                     rel_step_size=self._attack_args[2], random_start=True, loss=kl_to_clean)
        h_adv = self._perturbed(attack, tail, h, y, bounds, generator)
        clean, adv = _two_forwards(tail, h, h_adv)
        robust = kl_divergence(F.softmax(clean, dim=1), adv).mean()
        return F.cross_entropy(clean, y) + self.beta * robust, clean


def kl_divergence(p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(logits_q)) per example, (N,); exactly 0 where the two agree."""
    log_q = F.log_softmax(logits_q, dim=1)
    return (p * (torch.log(p.clamp_min(1e-30)) - log_q)).sum(1)


class FastAT(AdversarialObjective):
    """FGSM from a uniform random start, step 1.25 eps (Wong et al. 2020), with a collapse check."""

    name = "fgsm-rs"

    def __init__(self, eps=None, *, step: float = 1.25, check: bool = True, check_n: int = 256,
                 check_steps: int = 10, check_drop: float = 0.2, bounds=None, norm="linf", layer=0, val="clean",
                 val_eps=None):
        super().__init__(eps, bounds=bounds, norm=norm, layer=layer, val=val, val_eps=val_eps)
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise AdvlabError(f"defense 'fgsm-rs': step (a multiple of eps) must be > 0, got {step!r}")
        if not isinstance(check_n, int) or check_n < 1 or not isinstance(check_steps, int) or check_steps < 1:
            raise AdvlabError("defense 'fgsm-rs': check_n and check_steps must be integers >= 1")
        _check_fraction(check_drop, "check_drop", self.name)
        self.step, self.check, self.check_n, self.check_steps, self.check_drop = \
            float(step), bool(check), check_n, check_steps, float(check_drop)
        self._attack = PGD(self.norm, steps=1, rel_step_size=self.step, random_start=True)

    def loss(self, tail, h, y, bounds, generator):
        logits = tail(self._perturbed(self._attack, tail, h, y, bounds, generator))
        return F.cross_entropy(logits, y), logits

    def hooks(self, x_val, y_val):
        if not self.check:
            return []
        if x_val is None or len(x_val) == 0:
            raise AdvlabError("fgsm-rs checks for catastrophic overfitting on held-out data: keep a validation "
                              "split (`val_fraction` > 0) or pass `defense_kwargs` check=false")
        x, y = x_val[:self.check_n], y_val[:self.check_n]
        attack = PGD(self.norm, steps=self.check_steps, rel_step_size=2.5 / self.check_steps, random_start=True)
        what = f"PGD-{self.check_steps} accuracy on {len(y)} held-out images"
        # On the input, at val_eps (= eps unless the perturbation lives in a hidden layer).
        return [CollapseCheck(lambda model: robust_accuracy(attack, model, x, y, self.val_eps, self.bounds),
                              drop=self.check_drop, what=what)]


class CollapseCheck(TrainerHook):
    """Catastrophic-overfitting guard (Wong et al. 2020): after each epoch measure robustness on a
    fixed batch; if it falls by more than `drop` below the last good epoch's, restore that epoch's
    model and optimizer and stop, saying so in the history and the stop reason."""

    key = "check_robust_accuracy"

    def __init__(self, measure: Callable[[nn.Module], float], drop: float = 0.2, what: str = "robust accuracy"):
        self.measure, self.drop, self.what = measure, drop, what
        self.last_good: dict[str, Any] | None = None
        self.last_good_epoch = 0
        self.last_good_value: float | None = None

    def fit_start(self, trainer: Trainer) -> None:
        # Checkpoints only ever hold good (or rolled-back) states, so after a resume the loaded
        # model is the last good one; its score is the last one the history recorded.
        self.last_good = trainer.snapshot()
        self.last_good_epoch = trainer.epoch
        scores = [m[self.key] for m in trainer.history if self.key in m and "rolled_back_to_epoch" not in m]
        self.last_good_value = scores[-1] if scores else None

    def epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> str | None:
        value = float(self.measure(trainer.model))
        metrics[self.key] = value
        if self.last_good_value is not None and value < self.last_good_value - self.drop:
            trainer.restore(self.last_good)
            metrics["rolled_back_to_epoch"] = self.last_good_epoch
            return (f"catastrophic overfitting in epoch {trainer.epoch}: {self.what} fell from "
                    f"{self.last_good_value:.3f} to {value:.3f}; rolled back to epoch {self.last_good_epoch} "
                    "and stopped")
        self.last_good = trainer.snapshot()
        self.last_good_epoch, self.last_good_value = trainer.epoch, value
        return None


class Noise(AdversarialObjective):
    """alpha J(x) + (1 - alpha) J(x + noise): random +-eps signs or uniform noise in the ball."""

    def __init__(self, eps=None, *, kind: str = "sign", alpha: float = 0.5, bounds=None, norm="linf", layer=0,
                 val="clean", val_eps=None):
        self.name = f"noise-{kind}"
        super().__init__(eps, bounds=bounds, norm=norm, layer=layer, val=val, val_eps=val_eps)
        if kind not in ("sign", "uniform"):
            raise AdvlabError(f"noise kind must be 'sign' or 'uniform', got {kind!r}")
        if kind == "sign" and self.norm.name != "linf":
            raise AdvlabError("noise-sign is +-eps per coordinate, an Linf perturbation; use norm=linf "
                              "or noise-uniform")
        _check_fraction(alpha, "alpha", self.name)
        self.kind, self.alpha = kind, float(alpha)

    def loss(self, tail, h, y, bounds, generator):
        h0 = h.detach()
        if self.kind == "sign":
            u = torch.rand(h0.shape, generator=generator, device=h0.device, dtype=h0.dtype)
            delta = self.eps * torch.where(u < 0.5, -1.0, 1.0).to(h0.dtype)
        else:
            delta = self.norm.random_init(h0, self.eps, generator)
        delta = clip_to_bounds(h0 + delta, bounds) - h0
        clean, noisy = _two_forwards(tail, h, h + delta)
        loss = self.alpha * F.cross_entropy(clean, y) + (1 - self.alpha) * F.cross_entropy(noisy, y)
        return loss, clean


class L1Penalty:
    """CE + coef * sum |W| over the first layer's weights (bias excluded)."""

    name = "l1"

    def __init__(self, coef: float | None = None, *, eps: float | None = None, bounds: Bounds = None):
        coef = coef if coef is not None else eps
        if coef is None:
            raise AdvlabError("defense 'l1' needs its coefficient: `defense_kwargs` coef=0.001 (or `eps=E`, which sets "
                              "coef=E: the penalty eps*||w||_1 that FGSM training puts inside a linear model's loss)")
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0:
            raise AdvlabError(f"defense 'l1': coef must be a number >= 0, got {coef!r}")
        self.coef = float(coef)
        self.val_metric = None

    def hooks(self, x_val, y_val):
        return []

    def describe(self) -> dict[str, Any]:
        return {"coef": self.coef}

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.coef * first_weight(model).abs().sum()

    def __call__(self, model, x, y, generator):
        logits = model(x)
        return F.cross_entropy(logits, y) + self.penalty(model), logits


def first_weight(model: nn.Module) -> torch.Tensor:
    """The weight of the first Linear or Conv layer (for logistic regression: w)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.weight
    raise AdvlabError(f"l1 decays the first linear or convolutional layer, and {type(model).__name__} has none")


# -- helpers ---------------------------------------------------------------------------------
def robust_accuracy(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    bounds: Bounds) -> float:
    """Accuracy under `attack` in eval mode, leaving the model's mode as it was."""
    was_training = model.training
    model.eval()
    try:
        return attack(model, x, y, eps=[eps], bounds=bounds).robust_accuracy()[0]
    finally:
        model.train(was_training)


def _attack_metric(make: Callable[[str], Attack]) -> Callable[..., ValMetric]:
    def build(eps: float, bounds: Bounds, norm: str) -> ValMetric:
        attack = make(norm)
        return lambda model, x, y: robust_accuracy(attack, model, x, y, eps, bounds)
    return build


VAL_METRICS: dict[str, Callable[..., ValMetric | None]] = {
    "clean": lambda eps, bounds, norm: None,
    "fgsm": _attack_metric(lambda norm: FGSM(norm)),
    "pgd": _attack_metric(lambda norm: PGD(norm, steps=10)),
}


def _pgd(norm, steps, step_size, rel_step_size, random_start, name) -> PGD:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AdvlabError(f"defense {name!r}: steps must be an integer >= 1, got {steps!r}")
    if step_size is not None and rel_step_size is not None:
        raise AdvlabError(f"defense {name!r}: give step_size (absolute) or rel_step_size (a fraction of eps), not both")
    if not isinstance(random_start, bool):
        raise AdvlabError(f"defense {name!r}: random_start must be true or false, got {random_start!r}")
    return PGD(norm, steps=steps, step_size=step_size, rel_step_size=rel_step_size, random_start=random_start)


def _check_fraction(value, key: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise AdvlabError(f"defense {name!r}: {key} must be a number in [0, 1], got {value!r}")
