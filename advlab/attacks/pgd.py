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
from .base import Attack
from .budget import finite_eps
from .engine import restarted_ascent
from .goals import Misclassify


class PGD(Attack):
    name = "pgd"
    needs_finite_eps = True

    def __init__(self, norm="linf", *, steps: int = 20, step_size: float | None = None,
                 rel_step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss="ce", momentum: float = 0.0, targeted: bool = False, batch_size: int | None = None, seed: int = 0,
                 sync_free: bool | None = None):
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
        self.goal = Misclassify(loss)
        self.sync_free = sync_free  # None: masks instead of a shrinking batch on accelerators (engine.py)

    def _step_sizes(self, eps: torch.Tensor) -> torch.Tensor:
        if self.step_size is not None:
            return torch.full_like(eps, self.step_size)
        rel = self.rel_step_size if self.rel_step_size is not None else (1.0 if self.steps == 1 else 2.5 / self.steps)
        return eps * rel

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        eps = finite_eps(eps, x, self.norm, bounds, self.name)  # step sizes scale with eps
        return restarted_ascent(self, model, x, y, targets, eps, self._step_sizes(eps), bounds, generator,
                                early_stop, momentum=self.momentum)


def FGSM(norm="linf", *, loss="ce", targeted=False, batch_size=None, seed=0) -> PGD:
    """x + eps * sign(grad) for Linf (the normalised gradient for L2): one step, no random start."""
    attack = PGD(norm, steps=1, rel_step_size=1.0, random_start=False, loss=loss, targeted=targeted,
                 batch_size=batch_size, seed=seed)
    attack.name = "fgsm"
    return attack


def BIM(norm="linf", *, steps=10, rel_step_size=None, loss="ce", targeted=False, batch_size=None, seed=0) -> PGD:
    attack = PGD(norm, steps=steps, rel_step_size=rel_step_size or 1.0 / steps * 1.25, random_start=False,
                 loss=loss, targeted=targeted, batch_size=batch_size, seed=seed)
    attack.name = "bim"
    return attack


def MIFGSM(norm="linf", *, steps=10, decay=1.0, loss="ce", targeted=False, batch_size=None, seed=0) -> PGD:
    attack = PGD(norm, steps=steps, rel_step_size=1.0 / steps, random_start=False, momentum=decay, loss=loss,
                 targeted=targeted, batch_size=batch_size, seed=seed)
    attack.name = "mifgsm"
    return attack
