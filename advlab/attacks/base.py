"""The attack: hyperparameters, a threat, a goal, and proposals for one batch at one budget.

An attack is a holder of hyperparameters (Foolbox 3's shape). Calling it with a model, inputs, labels
and a list of epsilons runs it through the harness (attacks/harness.py), which returns an AttackResult
for every epsilon at once:

    result = PGD(norm="linf", steps=20)(model, x, y, eps=[0.05, 0.1], bounds=(0, 1), seed=0)

The harness checks the inputs, batches them, runs the epsilon cascade, fits the device's memory,
counts passes, and enforces the ball and the bounds on whatever the attack proposes, then scores the
enforced point: what is reported is what was checked. Nothing in a call changes the attack.

Subclasses implement one of
  _perturb(model, x, y, eps, targets, bounds, generator, early_stop) -> x_adv   (fixed budget; eps is (N,))
  _minimize(model, x, y, targets, bounds, generator) -> x_adv                  (minimal-norm attacks)
  _search_every_budget(model, x, y, targets, budgets, bounds) -> BatchOutput   (one search serves every budget)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AdvlabError
from ..threat import Bounds, LpBall, Norm, Threat, get_norm
from . import harness
from .budget import EpsArg
from .goals import Goal, Misclassify
from .result import AttackResult, BatchOutput


class Attack:
    name = "attack"
    minimal = False                # minimal-norm attacks implement _minimize instead of _perturb
    searches_every_budget = False  # one search serves every budget of a batch: _search_every_budget
    needs_gradients = True
    needs_finite_eps = False       # step sizes or proposals scale with eps (see budget.finite_eps)
    precision = "fp32"             # the search's precision; verdicts are fp32 (advlab.precision.with_precision)
    graphs = False                 # capture the search's steps with CUDA graphs (advlab.graphs)

    def __init__(self, norm: str | Norm = "linf", *, targeted: bool = False, batch_size: int | None = None, seed: int = 0):
        self.norm = get_norm(norm)
        self.targeted = targeted
        self.goal: Goal = Misclassify()  # what counts as done (attacks/goals.py); subclasses set their own
        self.threat: Threat = LpBall(self.norm)  # where a point may go (threat.py, metric/embedding_threat.py)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise AdvlabError(f"batch_size must be a positive integer (or None: chosen for the device), got {batch_size!r}")
        self.batch_size = batch_size  # None: default_batch_size(the model's device)
        self.seed = seed

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: EpsArg, *,
                 bounds: Bounds = None, targets: torch.Tensor | None = None,
                 progress: bool = False, seed: int | None = None) -> AttackResult:
        """Every budget at once (harness.run_attack). `seed`: this call's randomness (default: the attack's
        own `seed`); an evaluation passes one per batch instead of changing the attack."""
        return harness.run_attack(self, model, x, y, eps, bounds=bounds, targets=targets, progress=progress,
                                  seed=seed)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                bounds: Bounds = None, targets: torch.Tensor | None = None,
                generator: torch.Generator | None = None, early_stop: bool = False) -> torch.Tensor:
        """Adversarial examples for every point at one budget, in the model's current mode (harness.perturb).

        The raw optimiser for training loops and exact tests: no cascade, no skipping of points
        that are already wrong (unless early_stop), budget and bounds enforced.
        """
        return harness.perturb(self, model, x, y, eps, bounds=bounds, targets=targets, generator=generator,
                               early_stop=early_stop)

    # -- hooks --------------------------------------------------------------------------------------------------
    def _check_budget(self, budgets: list[torch.Tensor], x: torch.Tensor) -> None:
        """Attack-specific checks of the budgets (N,) and inputs, before any work (none by default)."""

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _perturb or _minimize")

    def _minimize(self, model, x, y, targets, bounds, generator) -> torch.Tensor:
        raise NotImplementedError

    def _search_every_budget(self, model, x, y, targets, budgets, bounds) -> BatchOutput:
        """Examples, logits, clean logits and distances (E, n, ...) of one batch on the device for every
        budget (n,) at once, on the CPU; only with `searches_every_budget`."""
        raise NotImplementedError
