"""The attack base class: input checks, batching, the epsilon cascade, and budget enforcement.

An attack is a holder of hyperparameters (Foolbox 3's shape). Calling it with a model, inputs,
labels and a list of epsilons returns an AttackResult for every epsilon at once:

    result = PGD(norm="linf", steps=20)(model, x, y, eps=[0.05, 0.1], bounds=(0, 1))

Epsilons are processed in increasing order and each is attacked only on the points still unbroken:
an example found at a smaller budget is inside every larger ball too, so robust accuracy can never
rise with epsilon. Whatever a subclass returns, the base class projects it back into the ball and
the bounds, and scores the projected point with the model: what is reported is what was checked.

Subclasses implement one of
  _perturb(model, x, y, eps, targets, bounds, generator, early_stop) -> x_adv   (fixed budget; eps is (N,))
  _minimize(model, x, y, targets, bounds, generator) -> x_adv                  (minimal-norm attacks)
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from .. import rng
from ..device import default_batch_size
from ..errors import AdvlabError
from ..oom import fitting
from ..passes import PassCounter
from ..precision import verified_search
from ..predict import model_device
from ..progress import progress as progress_bar
from ..progress import write
from ..threat import Bounds, LpBall, Norm, Threat, enforce, get_norm
from .budget import EpsArg, describe_eps, per_example_budgets, finite_eps
from .cascade import eps_order, still_broken
from .engine import gradient_of_sum
from .goals import Goal, Misclassify
from .padding import PaddedBatches
from .result import AttackResult, BatchOutput


class AdvlabWarning(UserWarning):
    """Something about the input looks wrong but the computation can go on."""


class Attack:
    name = "attack"
    minimal = False           # minimal-norm attacks implement _minimize instead of _perturb
    needs_gradients = True
    needs_finite_eps = False  # step sizes or proposals scale with eps (see budget.finite_eps)
    precision = "fp32"        # the search's precision; verdicts are fp32 (advlab.precision.with_precision)
    graphs = False            # capture the search's steps with CUDA graphs (advlab.graphs)

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

    # -- public -------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: EpsArg, *,
                 bounds: Bounds = None, targets: torch.Tensor | None = None,
                 progress: bool = False, seed: int | None = None) -> AttackResult:
        """Every budget at once. `seed`: this call's randomness (default: the attack's own `seed`); an
        evaluation passes one per batch instead of changing the attack."""
        seed = self.seed if seed is None else seed
        budgets = per_example_budgets(eps, len(x))
        self._check_budget(budgets, x)
        y, targets = self._check(model, x, y, bounds, targets)
        if self.needs_finite_eps and bounds is None:  # checked up front, not only once a point is attacked
            for e in budgets:
                finite_eps(e, x, self.norm, bounds, self.name)
        start = time.perf_counter()
        order = eps_order(budgets)
        device = model_device(model)
        batch = self.batch_size or default_batch_size(device)
        n_batches = math.ceil(len(x) / batch)
        outputs = []
        counter = PassCounter(model)
        # On the CPU, a few batch sizes only, so glibc's heap does not fragment (padding.py); CUDA's caching
        # allocator reuses blocks of any size, and there the batch shrinks rarely anyway (engine.py).
        runner = PaddedBatches(counter, batch) if device.type == "cpu" else counter
        with attack_mode(model, evaluation=True):
            bar = progress_bar(range(n_batches), f"{self.name}", progress, unit="batch")
            for b in bar:
                sl = slice(b * batch, (b + 1) * batch)
                outputs += self._attack_batch_fitting(runner, x[sl], y[sl], targets[sl] if targets is not None else None,
                                                      [e[sl] for e in budgets], order, bounds, (seed, b))
        out = BatchOutput.join(outputs)
        y, targets = y.cpu(), targets.cpu() if targets is not None else None
        goal = torch.stack([self._goal_met(lg, y, targets) for lg in out.logits])  # (E, N): the attack's own criterion
        info = {"batch_size_after_oom": self._fitted_batch_size} if self._fitted_batch_size else {}
        info.update(out.extras)  # per-example extras of the attack (E, N, ...), e.g. the spatial transformation
        return AttackResult(self.name, self.threat_name, describe_eps(eps), out.x_adv, out.logits, out.clean_logits,
                            y, out.distances, targets, time.perf_counter() - start, out.min_distance, goal=goal,
                            info=info, passes=counter.counts())

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                bounds: Bounds = None, targets: torch.Tensor | None = None,
                generator: torch.Generator | None = None, early_stop: bool = False) -> torch.Tensor:
        """Adversarial examples for every point at one budget, in the model's current mode.

        The raw optimiser for training loops and exact tests: no cascade, no skipping of points
        that are already wrong (unless early_stop), budget and bounds enforced.
        """
        y, targets = self._check(model, x, y, bounds, targets, warn_train_mode=False)
        eps_t = per_example_budgets(eps, len(x))[0].to(x.device)
        gen = generator or rng.generator(self.seed, device=x.device)
        with attack_mode(model, evaluation=False):
            if self.minimal:
                x_min = self._minimize(model, x, y, targets, bounds, gen)
                keep = self.norm.distance(x_min - x) <= eps_t
                x_adv = torch.where(keep.view(-1, *[1] * (x.ndim - 1)), x_min, x)
            else:
                x_adv = self._perturb(model, x, y, eps_t, targets, bounds, gen, early_stop)
        return self._enforce(x, x_adv.detach(), eps_t, bounds)

    def _check_budget(self, budgets: list[torch.Tensor], x: torch.Tensor) -> None:
        """Attack-specific checks of the budgets and inputs, before any work (none by default)."""

    # -- per batch ----------------------------------------------------------------------------
    _fitted_batch_size: int | None = None  # set when the device ran out of memory (advlab.oom)

    def _attack_batch_fitting(self, model, x, y, targets, budgets, order, bounds, key) -> list[BatchOutput]:
        """A batch moved to the device and attacked, in chunks small enough for the device's memory.
        `key` = (seed, batch) names its random stream; without an out-of-memory error it is one chunk."""
        device = model_device(model)

        def chunks(limit: int) -> list[BatchOutput]:
            outputs = []
            for j, first in enumerate(range(0, len(x), limit)):
                sl = slice(first, first + limit)
                outputs.append(self._attack_batch(
                    model, x[sl].to(device), y[sl].to(device),
                    targets[sl].to(device) if targets is not None else None,
                    [e[sl].to(device) for e in budgets], order, bounds, key if limit == len(x) else (*key, j)))
            return outputs

        start = min(len(x), self._fitted_batch_size or len(x))
        outputs, limit = fitting(chunks, start, self.name, write)
        if limit < start:
            self._fitted_batch_size = limit
        return outputs

    def _attack_batch(self, model, x, y, targets, budgets, order, bounds, key: tuple[int, ...]) -> BatchOutput:
        """One batch on the device, every budget, back on the CPU."""
        n = len(x)
        with torch.no_grad():
            clean_logits = model(x)
        _warn_if_probabilities(clean_logits)
        broken = self._goal_met(clean_logits, y, targets)
        x_cur = x.clone()
        logits_cur = clean_logits.clone()
        eps_prev = torch.zeros(n, device=x.device)
        x_adv = [None] * len(budgets)
        logits = [None] * len(budgets)
        x_min = min_dist = None
        if self.minimal:
            def search(m, i):  # the minimal examples of rows i, found with model m (advlab.precision)
                gen = rng.generator(*key, device=x.device)
                t = targets[i] if targets is not None else None
                return enforce(x[i], self._minimize(m, x[i], y[i], t, bounds, gen).detach(), self.norm, math.inf,
                               bounds)
            x_min, min_logits = verified_search(self, model, search, torch.arange(n, device=x.device), y, targets)
            min_dist = self.norm.distance(x_min - x)
            reached = self._goal_met(min_logits, y, targets)
            min_dist = torch.where(reached, min_dist, torch.full_like(min_dist, math.inf))
            min_dist = torch.where(broken, torch.zeros_like(min_dist), min_dist)
        for e in order:
            eps = budgets[e]
            # A point broken at a smaller budget keeps its example: it is inside this ball too.
            broken = still_broken(broken, eps_prev, eps)
            todo = ~broken & (eps > 0)
            # Per-example budgets can shrink: those points start over from the clean input.
            shrank = eps < eps_prev
            x_cur = torch.where(shrank.view(-1, *[1] * (x.ndim - 1)), x, x_cur)
            logits_cur = torch.where(shrank[:, None], clean_logits, logits_cur)
            if todo.any():
                idx = todo.nonzero().flatten()
                if self.minimal:
                    fits = min_dist[idx] <= eps[idx]
                    new = torch.where(fits.view(-1, *[1] * (x.ndim - 1)), x_min[idx], x[idx])
                    new = self._enforce(x[idx], new, eps[idx], bounds)
                    with torch.no_grad():
                        new_logits = model(new)
                else:
                    def search(m, i, e=e, eps=eps):  # examples for rows i, found with model m (advlab.precision)
                        gen = rng.generator(*key, e, device=x.device)
                        t = targets[i] if targets is not None else None
                        return self._enforce(x[i], self._perturb(m, x[i], y[i], eps[i], t, bounds, gen, True).detach(),
                                             eps[i], bounds)
                    # Reported logits are fp32 whatever precision the search ran in.
                    new, new_logits = verified_search(self, model, search, idx, y, targets)
                x_cur[idx] = new
                logits_cur[idx] = new_logits
                broken[idx] = self._goal_met(new_logits, y[idx], targets[idx] if targets is not None else None)
            eps_prev = eps
            x_adv[e] = x_cur.clone()
            logits[e] = logits_cur.clone()
        x_adv_t = torch.stack(x_adv)
        dist = torch.stack([self._distance(x, xa) for xa in x_adv])
        return BatchOutput(x_adv_t.cpu(), torch.stack(logits).float().cpu(), clean_logits.float().cpu(), dist.cpu(),
                           min_dist.cpu() if min_dist is not None else None)

    def _goal_met(self, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """(N,) bool: has this point met the attack's goal? The cascade, early stopping and
        AttackResult.success all use it: the goal object decides (attacks/goals.py)."""
        return self.goal.met(logits, y, targets)

    # -- the threat model (an Lp ball by default; advlab.metric measures budgets in an embedding) ---------
    @property
    def threat_name(self) -> str:
        """What AttackResult.norm reports: the threat's name (the norm's, for an Lp ball)."""
        return self.threat.name

    def _enforce(self, x: torch.Tensor, x_adv: torch.Tensor, eps: torch.Tensor, bounds: Bounds) -> torch.Tensor:
        """Bring x_adv inside the budget and the bounds (what every returned example passes through)."""
        return self.threat.enforce(x, x_adv, eps, bounds)

    def _distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """(N,) size of each perturbation in the units of the budget."""
        return self.threat.distance(x, x_adv)

    # -- subclass hooks -----------------------------------------------------------------------
    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        raise NotImplementedError(f"{type(self).__name__} must implement _perturb or _minimize")

    def _minimize(self, model, x, y, targets, bounds, generator):
        raise NotImplementedError

    # -- checks -------------------------------------------------------------------------------
    def _check(self, model, x, y, bounds, targets, warn_train_mode=True):
        if not isinstance(model, nn.Module):
            raise AdvlabError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        check_inputs(x, y, bounds)
        if self.targeted and targets is None:
            raise AdvlabError(f"{self.name} is targeted: pass targets=tensor of target classes (N,)")
        if targets is not None:
            targets = torch.as_tensor(targets)
            if targets.shape != y.shape or targets.dtype not in (torch.int64, torch.int32):
                raise AdvlabError(f"targets must be integer class labels of shape {tuple(y.shape)}, "
                                  f"got {targets.dtype} {tuple(targets.shape)}")
            targets = targets.long()
        if warn_train_mode and model.training and _mode_dependent(model):
            warnings.warn("the model is in train mode; attacking it in eval mode (dropout and batch-norm off) "
                          "and restoring its mode afterwards", AdvlabWarning, stacklevel=3)
        try:
            with torch.no_grad(), attack_mode(model, evaluation=True):
                probe = model(x[:2].to(model_device(model)))
        except (RuntimeError, ValueError) as e:
            raise AdvlabError(f"the model cannot take inputs of shape {tuple(x.shape[1:])} (is this the dataset it "
                              f"was trained on?): {str(e).splitlines()[0]}") from e
        if probe.ndim != 2 or probe.shape[0] != min(2, len(x)):
            raise AdvlabError(f"the model must return logits of shape (N, K); it returned {tuple(probe.shape)} "
                              f"for input {tuple(x[:2].shape)}")
        k = probe.shape[1]
        for name, labels in (("labels", y), ("targets", targets)):
            if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= k):
                raise AdvlabError(f"{name} must be in 0..{k - 1} (the model has {k} outputs); "
                                  f"found {labels.min().item()}..{labels.max().item()}")
        if targets is not None:
            self.goal.check_targets(y, targets)
        return y.long(), targets


def check_inputs(x: torch.Tensor, y: torch.Tensor, bounds: Bounds) -> None:
    """Reject inputs that would give a wrong number instead of an error."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise AdvlabError(f"inputs must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 2:
        raise AdvlabError(f"inputs must have a batch axis: (N, D) or (N, C, H, W), got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise AdvlabError("empty batch: no inputs to attack")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise AdvlabError(f"labels must be an integer tensor, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.shape != (len(x),):
        raise AdvlabError(f"labels must have shape ({len(x)},) to match the inputs, got {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise AdvlabError(f"inputs contain NaN or inf (first bad rows: {bad}); clean the data first")
    if bounds is not None:
        lo, hi = bounds
        if (torch.as_tensor(lo) > torch.as_tensor(hi)).any():
            raise AdvlabError(f"bounds must be (low, high) with low <= high, got {bounds}")
        tol = 1e-6
        if (x < torch.as_tensor(lo, dtype=x.dtype) - tol).any() or (x > torch.as_tensor(hi, dtype=x.dtype) + tol).any():
            raise AdvlabError(f"inputs lie outside the bounds {tuple(float(b) for b in bounds)} "
                              f"(min {x.min().item():.4g}, max {x.max().item():.4g}); scale the data or pass the "
                              "right bounds (bounds=None for unbounded features)")


_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def _mode_dependent(model: nn.Module) -> bool:
    """Whether train and eval mode compute different things (dropout, batch norm)."""
    return any(isinstance(m, _MODE_DEPENDENT) and getattr(m, "p", 1) != 0 for m in model.modules())


def _warn_if_probabilities(logits: torch.Tensor) -> None:
    if logits.shape[1] > 1 and (logits >= 0).all() and (logits <= 1).all() and \
            torch.allclose(logits.sum(1), torch.ones(len(logits), device=logits.device), atol=1e-4):
        warnings.warn("the model's outputs look like probabilities (non-negative, rows sum to 1); attacks and "
                      "losses expect logits: remove the final softmax", AdvlabWarning, stacklevel=4)


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


def input_gradient(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, targets=None):
    """(loss per example (N,), logits (N, K), d sum(loss) / dx) in one forward and backward pass."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits, y, targets)
        grad = gradient_of_sum(loss, x)
    return loss.detach(), logits.detach(), grad
