"""The harness: everything around an attack's proposals, the same for every attack and every caller (in
the spirit of adversarial-library's `run_attack`).

    result = run_attack(PGD(norm="linf", steps=20), model, x, y, eps=[0.05, 0.1], bounds=(0, 1), seed=0)
    # what PGD(norm="linf", steps=20)(model, x, y, eps=[0.05, 0.1], bounds=(0, 1), seed=0) does

An attack (attacks/base.py) proposes examples for one batch at one budget; the harness
- checks the inputs, the model and the labels before any work (`check_call`), and turns the budgets into
  one (N,) tensor per epsilon (`budget.per_example_budgets`);
- cuts the inputs into batches (on the CPU the model sees a few batch sizes only, padding.py), and a
  batch into chunks that fit the device's memory (`oom.fitting`), starting from the size that fitted before;
- runs the epsilon cascade on each batch (cascade.py): budgets smallest first, each on the points
  still unbroken, so robust accuracy never rises with epsilon;
- enforces the ball and the bounds on every proposal through the attack's threat and scores the
  enforced point again, in fp32 (`precision.verified_search`): what is reported is what was checked;
- counts the model's passes (passes.py) and returns an AttackResult.

It changes nothing on the attack. The randomness of a call comes from `seed` (batch b draws from
(seed, b), chunk j of it from (seed, b, j), budget e of those from (..., e)); the batch size that
fitted after an out-of-memory error comes back in `info["batch_size_after_oom"]`, and a caller that
goes on (the evaluation, batch after batch) passes it back in as `fitted`.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Protocol

import torch
from torch import nn

from .. import rng
from ..device import default_batch_size
from ..errors import AdvlabError
from ..oom import fitting
from ..passes import PassCounter
from ..precision import verified_search
from ..predict import attack_mode, looks_like_probabilities, model_device, model_output
from ..progress import progress as progress_bar
from ..progress import write
from ..threat import Bounds, Norm, Threat, enforce
from .budget import EpsArg, describe_eps, finite_eps, per_example_budgets
from .cascade import eps_order, still_broken
from .goals import Goal
from .padding import PaddedBatches
from .result import AttackResult, BatchOutput

Targets = torch.Tensor | None


class Proposer(Protocol):
    """What the harness asks of an attack (attacks/base.py's `Attack` is the one class that has it)."""
    name: str
    seed: int
    batch_size: int | None
    targeted: bool
    minimal: bool                # proposes through _minimize (minimal-norm attacks), else _perturb
    searches_every_budget: bool  # proposes for every budget of a batch at once: _search_every_budget
    needs_finite_eps: bool
    norm: Norm
    threat: Threat
    goal: Goal

    def _check_budget(self, budgets: list[torch.Tensor], x: torch.Tensor) -> None: ...
    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop) -> torch.Tensor: ...
    def _minimize(self, model, x, y, targets, bounds, generator) -> torch.Tensor: ...
    def _search_every_budget(self, model, x, y, targets, budgets, bounds) -> BatchOutput: ...


class AdvlabWarning(UserWarning):
    """Something about the input looks wrong but the computation can go on."""


def run_attack(attack: Proposer, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: EpsArg, *,
               bounds: Bounds = None, targets: Targets = None, progress: bool = False, seed: int | None = None,
               fitted: int | None = None) -> AttackResult:
    """`attack` on every budget of `eps` at once. `seed`: this call's randomness (default: the attack's
    own); `fitted`: the batch size that fitted the device's memory before (None: the attack's batch size)."""
    seed = attack.seed if seed is None else seed
    budgets = per_example_budgets(eps, len(x))
    attack._check_budget(budgets, x)
    y, targets = check_call(attack, model, x, y, bounds, targets)
    if attack.needs_finite_eps and bounds is None:  # checked up front, not only once a point is attacked
        for e in budgets:
            finite_eps(e, x, attack.norm, bounds, attack.name)
    start = time.perf_counter()
    order = eps_order(budgets)
    device = model_device(model)
    batch = attack.batch_size or default_batch_size(device)
    outputs: list[BatchOutput] = []
    counter = PassCounter(model)
    # On the CPU, a few batch sizes only, so glibc's heap does not fragment (padding.py); CUDA's caching
    # allocator reuses blocks of any size, and there the batch shrinks rarely anyway (engine.py).
    runner = PaddedBatches(counter, batch) if device.type == "cpu" else counter
    with attack_mode(model, evaluation=True):
        for b in progress_bar(range(math.ceil(len(x) / batch)), attack.name, progress, unit="batch"):
            sl = slice(b * batch, (b + 1) * batch)
            out, fitted = _fitting(attack, runner, x[sl], y[sl], targets[sl] if targets is not None else None,
                                   [e[sl] for e in budgets], order, bounds, (seed, b), fitted)
            outputs += out
    out = BatchOutput.join(outputs)
    y, targets = y.cpu(), targets.cpu() if targets is not None else None
    goal = torch.stack([attack.goal.met(lg, y, targets) for lg in out.logits])  # (E, N): the attack's own criterion
    info = {"batch_size_after_oom": fitted} if fitted else {}
    info.update(out.extras)  # per-example extras of the attack (E, N, ...), e.g. the spatial transformation
    return AttackResult(attack.name, attack.threat.name, describe_eps(eps), out.x_adv, out.logits, out.clean_logits,
                        y, out.distances, targets, time.perf_counter() - start, out.min_distance, goal=goal,
                        info=info, passes=counter.counts())


def perturb(attack: Proposer, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
            bounds: Bounds = None, targets: Targets = None, generator: torch.Generator | None = None,
            early_stop: bool = False) -> torch.Tensor:
    """The raw optimiser at one budget, in the model's current mode (training loops, exact tests): no
    cascade, no skipping of points already wrong (unless early_stop); budget and bounds enforced."""
    y, targets = check_call(attack, model, x, y, bounds, targets, warn_train_mode=False)
    eps_t = per_example_budgets(eps, len(x))[0].to(x.device)
    gen = generator or rng.generator(attack.seed, device=x.device)
    with attack_mode(model, evaluation=False):
        if attack.minimal:
            x_min = attack._minimize(model, x, y, targets, bounds, gen)
            keep = attack.norm.distance(x_min - x) <= eps_t
            x_adv = torch.where(keep.view(-1, *[1] * (x.ndim - 1)), x_min, x)
        else:
            x_adv = attack._perturb(model, x, y, eps_t, targets, bounds, gen, early_stop)
    return attack.threat.enforce(x, x_adv.detach(), eps_t, bounds)


# -- one batch ------------------------------------------------------------------------------------------------
def _fitting(attack: Proposer, model: nn.Module, x, y, targets, budgets, order, bounds, key: tuple[int, ...],
             fitted: int | None) -> tuple[list[BatchOutput], int | None]:
    """A batch moved to the device and attacked, in chunks small enough for the device's memory, and the
    batch size that fitted (`fitted` as it was when nothing ran out). `key` = (seed, batch) names its random
    stream; without an out-of-memory error it is one chunk."""
    device = model_device(model)

    def chunks(limit: int) -> list[BatchOutput]:
        outputs = []
        for j, first in enumerate(range(0, len(x), limit)):
            sl = slice(first, first + limit)
            outputs.append(_attack_batch(
                attack, model, x[sl].to(device), y[sl].to(device),
                targets[sl].to(device) if targets is not None else None,
                [e[sl].to(device) for e in budgets], order, bounds, key if limit == len(x) else (*key, j)))
        return outputs

    start = min(len(x), fitted or len(x))
    outputs, limit = fitting(chunks, start, attack.name, write)
    return outputs, limit if limit < start else fitted


def _attack_batch(attack: Proposer, model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: Targets,
                  budgets: list[torch.Tensor], order: list[int], bounds: Bounds, key: tuple[int, ...]) -> BatchOutput:
    """One batch on the device, every budget (the cascade), back on the CPU."""
    if attack.searches_every_budget:  # one search serves every budget (Spatial's grid, recorded examples)
        return attack._search_every_budget(model, x, y, targets, budgets, bounds)
    n = len(x)
    with torch.no_grad():
        clean_logits = model(x)
    if looks_like_probabilities(clean_logits):
        warnings.warn("the model's outputs look like probabilities (non-negative, rows sum to 1); attacks and "
                      "losses expect logits: remove the final softmax", AdvlabWarning, stacklevel=4)
    broken = attack.goal.met(clean_logits, y, targets)
    x_cur, logits_cur = x.clone(), clean_logits.clone()
    eps_prev = torch.zeros(n, device=x.device)
    x_adv: dict[int, torch.Tensor] = {}  # per budget
    logits: dict[int, torch.Tensor] = {}
    x_min = min_dist = None
    if attack.minimal:
        x_min, min_dist = _minimal_examples(attack, model, x, y, targets, bounds, key, broken)
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
            if x_min is not None and min_dist is not None:  # the minimal example, where it fits this budget
                fits = min_dist[idx] <= eps[idx]
                new = torch.where(fits.view(-1, *[1] * (x.ndim - 1)), x_min[idx], x[idx])
                new = attack.threat.enforce(x[idx], new, eps[idx], bounds)
                with torch.no_grad():
                    new_logits = model(new)
            else:
                new, new_logits = _examples_at(attack, model, x, y, targets, eps, idx, bounds, (*key, e))
            x_cur[idx] = new
            logits_cur[idx] = new_logits
            broken[idx] = attack.goal.met(new_logits, y[idx], targets[idx] if targets is not None else None)
        eps_prev = eps
        x_adv[e], logits[e] = x_cur.clone(), logits_cur.clone()
    budget_order = range(len(budgets))  # (E, n, ...) in the caller's order
    dist = torch.stack([attack.threat.distance(x, x_adv[e]) for e in budget_order])
    return BatchOutput(torch.stack([x_adv[e] for e in budget_order]).cpu(),
                       torch.stack([logits[e] for e in budget_order]).float().cpu(), clean_logits.float().cpu(),
                       dist.cpu(), min_dist.cpu() if min_dist is not None else None)


def _examples_at(attack: Proposer, model: nn.Module, x, y, targets, eps, idx, bounds, key: tuple[int, ...]):
    """The single-budget core: examples for the batch rows idx at budget eps (N,), proposed by the attack,
    enforced, and their fp32 logits (advlab.precision)."""
    def search(m, i):  # examples for rows i, found with model m
        gen = rng.generator(*key, device=x.device)
        t = targets[i] if targets is not None else None
        proposed = attack._perturb(m, x[i], y[i], eps[i], t, bounds, gen, True).detach()
        return attack.threat.enforce(x[i], proposed, eps[i], bounds)
    return verified_search(attack, model, search, idx, y, targets)


def _minimal_examples(attack: Proposer, model: nn.Module, x, y, targets, bounds, key: tuple[int, ...], broken):
    """A minimal-norm attack's examples for the batch (inside the bounds) and their distances (N,): inf
    where the goal was not reached, 0 where the clean point meets it already."""
    def search(m, i):  # the minimal examples of rows i, found with model m
        gen = rng.generator(*key, device=x.device)
        t = targets[i] if targets is not None else None
        return enforce(x[i], attack._minimize(m, x[i], y[i], t, bounds, gen).detach(), attack.norm, math.inf, bounds)
    x_min, min_logits = verified_search(attack, model, search, torch.arange(len(x), device=x.device), y, targets)
    min_dist = attack.norm.distance(x_min - x)
    reached = attack.goal.met(min_logits, y, targets)
    min_dist = torch.where(reached, min_dist, torch.full_like(min_dist, math.inf))
    return x_min, torch.where(broken, torch.zeros_like(min_dist), min_dist)


# -- checks ---------------------------------------------------------------------------------------------------
def check_call(attack: Proposer, model: nn.Module, x: torch.Tensor, y: torch.Tensor, bounds: Bounds,
               targets: Targets, warn_train_mode: bool = True) -> tuple[torch.Tensor, Targets]:
    """Everything about a call that would give a wrong number instead of an error; (y, targets) as int64."""
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    check_inputs(x, y, bounds)
    if attack.targeted and targets is None:
        raise AdvlabError(f"{attack.name} is targeted: pass targets=tensor of target classes (N,)")
    if targets is not None:
        targets = torch.as_tensor(targets)
        if targets.shape != y.shape or targets.dtype not in (torch.int64, torch.int32):
            raise AdvlabError(f"targets must be integer class labels of shape {tuple(y.shape)}, "
                              f"got {targets.dtype} {tuple(targets.shape)}")
        targets = targets.long()
    if warn_train_mode and model.training and _mode_dependent(model):
        warnings.warn("the model is in train mode; attacking it in eval mode (dropout and batch-norm off) "
                      "and restoring its mode afterwards", AdvlabWarning, stacklevel=4)
    k = model_output(model, x).shape[1]
    check_labels(y, k, "labels")
    if targets is not None:
        check_labels(targets, k, "targets")
        attack.goal.check_targets(y, targets)
    return y.long(), targets


def check_labels(labels: torch.Tensor, k: int, name: str) -> None:
    """Class indices of a model with k outputs."""
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise AdvlabError(f"{name} must be in 0..{k - 1} (the model has {k} outputs); "
                          f"found {labels.min().item()}..{labels.max().item()}")


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
