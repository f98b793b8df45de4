"""Projected gradient attacks: FGSM, BIM, PGD with restarts, and momentum iterative FGSM.

One loop serves every norm: the norm supplies `step`, `project` and `random_init`.
- FGSM (Goodfellow et al. 2015): one step of size eps, no random start: x + eps * sign(grad).
- BIM (Kurakin et al. 2017): PGD without random start.
- PGD (Madry et al. 2018): random start, `steps` steps, optional restarts.
- MI-FGSM (Dong et al. 2018): gradient momentum g <- mu g + grad / ||grad||_1.
"""

from __future__ import annotations

import torch

from ..errors import AdvlabError
from ..threat import clip_to_bounds, per_example
from .base import Attack, input_gradient
from .budget import finite_eps
from .losses import get_loss


class PGD(Attack):
    name = "pgd"
    needs_finite_eps = True

    def __init__(self, norm="linf", *, steps: int = 20, step_size: float | None = None,
                 rel_step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss="ce", momentum: float = 0.0, targeted: bool = False, batch_size: int = 500, seed: int = 0):
        super().__init__(norm, targeted=targeted, batch_size=batch_size, seed=seed)
        if steps < 1 or restarts < 1:
            raise AdvlabError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
        if step_size is not None and rel_step_size is not None:
            raise AdvlabError("give step_size (absolute) or rel_step_size (a fraction of eps), not both")
        if (step_size is not None and step_size <= 0) or (rel_step_size is not None and rel_step_size <= 0):
            raise AdvlabError("the step size must be > 0")
        self.steps, self.restarts = steps, restarts
        self.step_size, self.rel_step_size = step_size, rel_step_size
        self.random_start, self.momentum = random_start, momentum
        self.loss = loss
        self._loss_fn = get_loss(loss)

    def _step_sizes(self, eps: torch.Tensor) -> torch.Tensor:
        if self.step_size is not None:
            return torch.full_like(eps, self.step_size)
        rel = self.rel_step_size if self.rel_step_size is not None else (1.0 if self.steps == 1 else 2.5 / self.steps)
        return eps * rel

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        n = len(x)
        best = x.clone()
        best_loss = torch.full((n,), -torch.inf, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        eps = finite_eps(eps, x, self.norm, bounds, self.name)  # step sizes scale with eps
        alpha_all = self._step_sizes(eps)
        for _ in range(self.restarts):
            idx = (~done).nonzero().flatten() if early_stop else torch.arange(n, device=x.device)
            if len(idx) == 0:
                break
            x0, yy, ee, alpha = x[idx], y[idx], eps[idx], alpha_all[idx]
            tt = targets[idx] if targets is not None else None
            xa = x0
            if self.random_start:
                xa = clip_to_bounds(x0 + self.norm.random_init(x0, ee, generator), bounds)
            velocity = torch.zeros_like(x0) if self.momentum else None
            for step in range(self.steps + 1):
                if step == self.steps and self.restarts == 1 and not early_stop:
                    # One run and nothing to choose between: skip the scoring forward pass
                    # (a third of an FGSM step's cost in adversarial training).
                    best[idx] = xa
                    break
                loss, logits, grad = input_gradient(model, self._loss_fn, xa, yy, tt) if step < self.steps \
                    else (*_forward(model, self._loss_fn, xa, yy, tt), None)
                hit = self._goal_met(logits, yy, tt)
                if early_stop and hit.any():
                    # Freeze the points that are already adversarial and drop them from the batch.
                    best[idx[hit]] = xa[hit]
                    done[idx[hit]] = True
                    keep = ~hit
                    idx, x0, yy, ee, alpha, xa = idx[keep], x0[keep], yy[keep], ee[keep], alpha[keep], xa[keep]
                    loss = loss[keep]
                    tt = tt[keep] if tt is not None else None
                    grad = grad[keep] if grad is not None else None
                    velocity = velocity[keep] if velocity is not None else None
                    if len(idx) == 0:
                        break
                if step == self.steps:
                    # Keep the highest-loss end point over restarts.
                    better = loss > best_loss[idx]
                    best[idx[better]] = xa[better]
                    best_loss[idx[better]] = loss[better]
                    if not early_stop:
                        done[idx[hit]] = True
                    break
                grad = torch.nan_to_num(grad)
                if velocity is not None:
                    l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))
                    velocity = self.momentum * velocity + grad / l1
                    grad = velocity
                xa = xa + self.norm.step(grad, alpha)
                xa = clip_to_bounds(x0 + self.norm.project(xa - x0, ee), bounds)
        return best


@torch.no_grad()
def _forward(model, loss_fn, x, y, targets):
    logits = model(x)
    return loss_fn(logits, y, targets), logits


def FGSM(norm="linf", *, loss="ce", targeted=False, batch_size=500, seed=0) -> PGD:
    """x + eps * sign(grad) for Linf (the normalised gradient for L2): one step, no random start."""
    attack = PGD(norm, steps=1, rel_step_size=1.0, random_start=False, loss=loss, targeted=targeted,
                 batch_size=batch_size, seed=seed)
    attack.name = "fgsm"
    return attack


def BIM(norm="linf", *, steps=10, rel_step_size=None, loss="ce", targeted=False, batch_size=500, seed=0) -> PGD:
    attack = PGD(norm, steps=steps, rel_step_size=rel_step_size or 1.0 / steps * 1.25, random_start=False,
                 loss=loss, targeted=targeted, batch_size=batch_size, seed=seed)
    attack.name = "bim"
    return attack


def MIFGSM(norm="linf", *, steps=10, decay=1.0, loss="ce", targeted=False, batch_size=500, seed=0) -> PGD:
    attack = PGD(norm, steps=steps, rel_step_size=1.0 / steps, random_start=False, momentum=decay, loss=loss,
                 targeted=targeted, batch_size=batch_size, seed=seed)
    attack.name = "mifgsm"
    return attack
