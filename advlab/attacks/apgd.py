"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): PGD that tunes its own step size.

    APGD(norm="linf", loss="ce")(model, x, y, eps=[8/255])      # "apgd-ce" (loss="dlr" for APGD-DLR)
    APGDT(norm="linf")(model, x, y, eps=[8/255])                # "apgd-t": targeted DLR, 9 target classes

The algorithm, per example:
- start at a random point of the ball; the step size is 2 * eps;
- each step goes z = P(x + eta * step(grad)), then x' = P(x + a (z - x) + (1 - a)(x - x_prev)) with
  momentum a = 0.75 (a = 1 on the first step);
- at the checkpoints w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
  - 0.03, 0.06), the step size is halved and the iterate moved back to the best point found so far
  if (1) the loss increased in at most rho = 75% of the steps since the last checkpoint, or (2) neither
  the step size nor the best loss changed since the last checkpoint;
- the point with the highest loss is kept (and, with early stopping, the first misclassified one).

A point whose gradient is exactly zero, with no momentum and at its best point, can never move again
(every later step returns it unchanged): with early stopping it leaves at once, which changes no result
and spares the steps a saturated softmax, input rounding or a step function would waste.

give_up=h (off by default, as in the paper) stops a run on a point at a checkpoint when even h
times its progress since the previous checkpoint, in the margin z_y - max_{j != y} z_j, would not
reach the boundary in the steps left (advlab/attacks/give_up.py, the rule Square uses). APGD halves
its step as it goes, so the recent rate overstates what is left; on a robust model most points
stall far from the boundary, and APGD-T runs 9 targets on each of them.

near_restarts=r (0 by default, as in the paper; the `standard` suite uses 3) gives a point that ends
unbroken within NEAR_SHARE (5%) of the boundary, measured against its clean margin, up to r more runs
from fresh random starts, until one breaks it. Such a point is a coin flip, not a robust one: on the
panel's Gaussian-noise and L2 models one such point fell to 5 of 12 random starts of APGD-CE and
AutoAttack's 9 targets or FAB-T broke it where one start of advlab's had not (benchmarks/results/panel.md).
Every unbroken point costs two forward passes for the check (its clean and its best point). Only with
early stopping (as in evaluations): `perturb` without it runs every point the same.

bpda=True searches through the BPDA twins of the model's `Preprocessed` layers (advlab.models.adaptive:
the same forward values, a backward through the preprocessing's approximation, straight-through by
default), swapped in for the search only; the examples are scored on the model as given. The `standard`
suite adds such a stage ("apgd-ce-bpda") when the model has a preprocessing layer to see through.

APGD-T is an untargeted attack (it wins when the label changes) that runs the targeted DLR loss
against each of the n_target_classes most likely wrong classes of the clean input in turn, each
run only on the points the earlier runs did not break. Points leave the batch as soon as they are
broken (early_stop), so later iterations cost only what is still robust.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..errors import AdvlabError
from ..models.adaptive import bpda_gradients
from .base import Attack
from .budget import finite_eps
from .engine import BestOfRuns, input_gradient, shrink_rows, sync_free_default
from .give_up import check_give_up, hopeless
from .losses import get_loss, margin

NEAR_SHARE = 0.05  # near_restarts: "near" is a best margin within this share of the clean one


class APGD(Attack):
    name = "apgd-ce"
    needs_finite_eps = True

    def __init__(self, norm="linf", *, steps: int = 100, restarts: int = 1, loss="ce", rho: float = 0.75,
                 momentum: float = 0.75, give_up: float | None = None, near_restarts: int = 0, bpda: bool = False,
                 targeted: bool = False, batch_size: int | None = None, seed: int = 0, sync_free: bool | None = None):
        super().__init__(norm, targeted=targeted, batch_size=batch_size, seed=seed)
        self.sync_free = sync_free  # None: masks instead of a shrinking batch on accelerators (engine.py)
        if self.norm.name not in ("linf", "l2"):
            raise AdvlabError(f"APGD supports the linf and l2 norms, not {self.norm.name!r}; use pgd for l1")
        if steps < 1 or restarts < 1:
            raise AdvlabError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
        if not 0 < rho <= 1 or not 0 < momentum <= 1:
            raise AdvlabError(f"rho and momentum must be in (0, 1], got rho={rho}, momentum={momentum}")
        check_give_up(give_up)
        if isinstance(near_restarts, bool) or not isinstance(near_restarts, int) or near_restarts < 0:
            raise AdvlabError(f"near_restarts is a number of extra runs >= 0, got {near_restarts!r}")
        self.steps, self.restarts, self.rho, self.momentum, self.give_up = steps, restarts, rho, momentum, give_up
        self.near_restarts = near_restarts
        if not isinstance(bpda, bool):
            raise AdvlabError(f"bpda is True or False, got {bpda!r}")
        self.bpda = bpda
        self.loss = loss
        self._loss_fn = get_loss(loss)
        if isinstance(loss, str):
            self.name = f"apgd-{loss}"
        if bpda:
            self.name = f"{self.name}-bpda"

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        if self.bpda:  # search with the BPDA twins; the harness scores the examples on `model` itself
            with bpda_gradients(model) as twin:
                return self._search(twin, x, y, eps, targets, bounds, generator, early_stop)
        return self._search(model, x, y, eps, targets, bounds, generator, early_stop)

    def _search(self, model, x, y, eps, targets, bounds, generator, early_stop):
        eps = finite_eps(eps, x, self.norm, bounds, self.name)
        runs = BestOfRuns(x)
        for _ in range(self.restarts):
            idx = runs.todo(early_stop)
            if idx is None:
                break
            t = targets[idx] if targets is not None else None
            x_out, score, found = run_apgd(self, model, x[idx], y[idx], eps[idx], self._loss_fn, t, t,
                                           bounds, generator, early_stop)
            runs.fold(idx, x_out, score, found, early_stop)
        if early_stop and self.near_restarts:
            self._retry_near(model, x, y, eps, targets, bounds, generator, runs)
        return runs.best

    def _retry_near(self, model, x, y, eps, targets, bounds, generator, runs: BestOfRuns) -> None:
        """near_restarts: more random starts for the unbroken points that ended near the boundary."""
        idx = runs.todo(True)
        if idx is None:
            return
        with torch.no_grad():
            clean, best = margin(model(x[idx]), y[idx], None if targets is None else targets[idx]), \
                margin(model(runs.best[idx]), y[idx], None if targets is None else targets[idx])
        near = idx[best >= NEAR_SHARE * clean]  # margins are < 0 while unbroken: "near" is a small share of the start
        for _ in range(self.near_restarts):
            near = near[~runs.done[near]]
            if len(near) == 0:
                return
            t = targets[near] if targets is not None else None
            x_out, score, found = run_apgd(self, model, x[near], y[near], eps[near], self._loss_fn, t, t,
                                           bounds, generator, True)
            runs.fold(near, x_out, score, found, True)


class APGDT(Attack):
    """APGD with the targeted DLR loss against the top wrong classes; the goal stays misclassification."""

    name = "apgd-t"
    needs_finite_eps = True

    def __init__(self, norm="linf", *, steps: int = 100, restarts: int = 1, n_target_classes: int = 9,
                 loss="dlr", rho: float = 0.75, momentum: float = 0.75, give_up: float | None = None,
                 ranking: str = "logits", batch_size: int | None = None, seed: int = 0, sync_free: bool | None = None):
        super().__init__(norm, targeted=False, batch_size=batch_size, seed=seed)
        if n_target_classes < 1:
            raise AdvlabError(f"n_target_classes must be >= 1, got {n_target_classes}")
        if ranking not in RANKINGS:
            raise AdvlabError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
        self.n_target_classes, self.ranking = n_target_classes, ranking
        # The inner optimiser; its own goal check is overridden by passing goal targets None.
        self._apgd = APGD(norm, steps=steps, restarts=1, loss=loss, rho=rho, momentum=momentum, give_up=give_up,
                          seed=seed, sync_free=sync_free)
        self.sync_free = sync_free
        self.steps, self.restarts, self.loss, self.rho, self.momentum = steps, restarts, loss, rho, momentum
        self.give_up = give_up

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        if targets is not None:
            raise AdvlabError("apgd-t chooses its own target classes; for given targets use "
                              "apgd-ce with targeted=True (loss 'dlr' or 'ce')")
        eps = finite_eps(eps, x, self.norm, bounds, self.name)
        ranking = rank_targets(model, x, y, self.norm, self.ranking)  # (N, K - 1) wrong classes, likeliest first
        n_targets = min(self.n_target_classes, ranking.shape[1])
        loss_fn = self._apgd._loss_fn
        if self.loss == "dlr" and ranking.shape[1] < 3:
            loss_fn = get_loss("margin")  # the targeted DLR loss needs 4 classes; C&W's margin is its unscaled form
        runs = BestOfRuns(x)
        for k in range(n_targets):
            for _ in range(self.restarts):
                idx = runs.todo(early_stop)
                if idx is None:
                    return runs.best
                x_out, _, found = run_apgd(self._apgd, model, x[idx], y[idx], eps[idx], loss_fn,
                                           ranking[idx, k], None, bounds, generator, early_stop)
                # Losses of different targets are not comparable: rank candidates by the true margin.
                with torch.no_grad():
                    score = margin(model(x_out), y[idx])
                runs.fold(idx, x_out, score, found, early_stop)
        return runs.best


RANKINGS = ("logits", "linear")


def rank_targets(model, x, y, norm, how: str = "logits") -> torch.Tensor:
    """(N, K - 1): the wrong classes of each point, the most promising target first.

    "logits" (AutoAttack's): by decreasing clean logit. "linear" (MALT, Melamed et al. 2024): by the
    distance to each class's decision boundary in the linear approximation of the model at x,
    (z_y - z_t) / ||grad_x (z_y - z_t)||_*, with the dual norm of the threat (l1 for Linf, l2 for L2):
    exact for a linear model, where it is the budget each target needs. It costs one forward and
    K - 1 backward passes per point (counted by a PassCounter like any other), against the 100 steps
    an unpromising target would get.
    """
    if how == "logits":
        with torch.no_grad():
            clean = model(x)  # (N, K)
        order = clean.scatter(1, y[:, None], -torch.inf).argsort(1, descending=True)
        return order[:, :-1]  # the true class, at -inf, comes last
    dual = {"linf": 1, "l2": 2, "l1": torch.inf}[norm.name]
    xx = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xx)
        k = logits.shape[1]
        zy = logits.gather(1, y[:, None])[:, 0]
        dist = torch.full((len(x), k), torch.inf, device=x.device)
        for t in range(k):
            gap = zy - logits[:, t]  # > 0 while the point is on its own side of the boundary with t
            grad, = torch.autograd.grad(gap.sum(), xx, retain_graph=t < k - 1)
            size = torch.linalg.vector_norm(torch.nan_to_num(grad).flatten(1), ord=dual, dim=1)
            dist[:, t] = gap.detach() / size.clamp_min(1e-12)
    dist = dist.scatter(1, y[:, None], torch.inf)
    return dist.argsort(1)[:, :-1]


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j (1-based, < steps) after which the step size is checked.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in whole steps as in the
    authors' code: the first interval is 22% of the budget, each next one 3% shorter, never under 6%.
    """
    first, decrease, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, w, interval = [], first, first
    while w < steps:
        out.append(w)
        interval = max(interval - decrease, shortest)
        w += interval
    return out


@dataclass
class _Rows:
    """The state of one APGD run, one row per point still running (all shrink together)."""
    idx: torch.Tensor  # (R,) position in the run's batch
    active: torch.Tensor  # (R,) still running (False: frozen under a device mask)
    x0: torch.Tensor  # (R, ...) clean input, the centre of the ball
    y: torch.Tensor
    eps: torch.Tensor
    loss_targets: torch.Tensor | None
    goal_targets: torch.Tensor | None
    step: torch.Tensor  # (R,) step size
    x: torch.Tensor  # (R, ...) current iterate
    x_prev: torch.Tensor
    grad: torch.Tensor
    x_best: torch.Tensor  # highest-loss point so far, its gradient and loss
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    loss_best_last: torch.Tensor  # best loss at the last checkpoint
    reduced_last: torch.Tensor  # the step size was halved at the last checkpoint
    # give_up: the distance to the goal (z_y - max_{j != y} z_j, <= 0 once met), best so far and at
    # the last checkpoint; points the rule stops leave with their best point, like broken ones.
    gap_best: torch.Tensor
    gap_then: torch.Tensor
    stalled: torch.Tensor

    def keep(self, keep: torch.Tensor) -> None:
        """Keep only the rows `keep`."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, value[keep])


def run_apgd(attack: APGD, model, x, y, eps, loss_fn, loss_targets, goal_targets, bounds, generator, early_stop):
    """One APGD run from a random start.

    x (N, ...), eps (N,). Returns (x_out (N, ...), score (N,), found (N,)): x_out is the first
    point that met the goal where one was found and early_stop is on, else the highest-loss point;
    score is the best loss. Finished points leave the batch as the engine's do (engine.py: at once on
    the CPU; on a GPU frozen by a mask, the batch compacted at a check every few steps).
    """
    n, steps = len(x), attack.steps
    shape = (-1, *[1] * (x.ndim - 1))
    sync_free = sync_free_default(x) if attack.sync_free is None else attack.sync_free
    out_x, out_score = x.clone(), torch.full((n,), -torch.inf, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    hist = torch.empty(steps + 1, n, device=x.device)  # loss after each step; row 0 at the start

    threat = attack.threat
    ctx = threat.context(x, eps, bounds)

    def project(x0, ee, z):  # back into the threat (for an Lp ball: the eps-ball around x0, then the bounds)
        return threat.enforce(x0, z, ee, bounds)

    def move(x0, xx, grad, step, ee):  # one steepest-ascent step of size `step`, projected
        return threat.move(x0, xx, grad, step, ee, bounds, ctx)

    def start(x0, ee):  # a random point of the threat
        return project(x0, ee, threat.start(x0, ee, 2.0 * ee, bounds, generator, ctx))

    r, loss, logits = _start(model, x, y, eps, loss_fn, loss_targets, goal_targets, start)
    hist[0] = loss
    checks = checkpoints(steps)
    last_check = 0
    give_up = attack.give_up if early_stop else None

    for i in range(steps + 1):
        hit = attack.goal.met(logits, r.y, r.goal_targets) & r.active
        found[r.idx] = found[r.idx] | hit
        if early_stop:
            _retire(r, hit, out_x, out_score, shape)
            keep = shrink_rows(r.active, i, sync_free)
            if keep is not None:
                if len(keep) == 0:
                    break
                r.keep(keep)
        if i == steps:
            break

        loss, logits = _momentum_step(attack, model, loss_fn, r, project, move, first=i == 0, last=i == steps - 1)
        hist[i + 1, r.idx] = loss
        if give_up is not None:
            r.gap_best = torch.minimum(r.gap_best, -margin(logits.detach(), r.y, r.goal_targets))

        improved = loss > r.loss_best
        r.x_best = torch.where(improved.view(shape), r.x, r.x_best)
        r.grad_best = torch.where(improved.view(shape), r.grad, r.grad_best)
        r.loss_best = torch.where(improved, loss, r.loss_best)

        if i + 1 in checks:
            interval, last_check = i + 1 - last_check, i + 1
            _checkpoint(attack, r, hist, logits, interval, last_check, early_stop, give_up)
        if early_stop:
            r.stalled = r.stalled | _frozen(r)

    # Points broken under early stopping were written out when they left; the rest return their best point.
    out_x[r.idx] = torch.where(r.active.view(shape), r.x_best, out_x[r.idx])
    out_score[r.idx] = torch.where(r.active, r.loss_best, out_score[r.idx])
    return out_x, out_score, found


def _start(model, x, y, eps, loss_fn, loss_targets, goal_targets, start):
    """A random point of the threat, its loss and gradient: (state, loss (N,), logits (N, K))."""
    n, dev = len(x), x.device
    xa = start(x, eps)
    loss, logits, grad = input_gradient(model, loss_fn, xa, y, loss_targets)
    grad = torch.nan_to_num(grad)
    gap = -margin(logits.detach(), y, goal_targets)
    loss_best = loss.clone()
    r = _Rows(idx=torch.arange(n, device=dev), active=torch.ones(n, dtype=torch.bool, device=dev),
              x0=x, y=y, eps=eps, loss_targets=loss_targets, goal_targets=goal_targets,
              step=2.0 * eps, x=xa, x_prev=xa, grad=grad,
              x_best=xa.clone(), grad_best=grad.clone(), loss_best=loss_best, loss_best_last=loss_best.clone(),
              reduced_last=torch.ones(n, dtype=torch.bool, device=dev),
              gap_best=gap, gap_then=gap.clone(), stalled=torch.zeros(n, dtype=torch.bool, device=dev))
    return r, loss, logits


def _frozen(r: _Rows) -> torch.Tensor:
    """(R,) rows that can never move again: a gradient of exactly zero (a saturated softmax, rounding or a
    step in the model), no momentum (x == x_prev) and nothing to go back to (x == x_best). The next z is x,
    the momentum term is zero and a checkpoint moves x to x_best = x: every step left would return x.
    Such a row leaves now, with its best point, exactly as it would have after the last step."""
    flat = lambda t: t.flatten(1)  # noqa: E731
    return (flat(r.grad).abs().amax(1) == 0) & (flat(r.x) == flat(r.x_prev)).all(1) & \
        (flat(r.x) == flat(r.x_best)).all(1) & r.active


def _retire(r: _Rows, hit, out_x, out_score, shape) -> None:
    """Early stopping: points that met the goal leave with that iterate, points the give-up rule
    stopped with their best point (written to out_x, out_score; the rows stay until compacted)."""
    r.stalled = r.stalled & ~hit & r.active
    out_x[r.idx] = torch.where(hit.view(shape), r.x, torch.where(r.stalled.view(shape), r.x_best, out_x[r.idx]))
    out_score[r.idx] = torch.where(hit | r.stalled, r.loss_best, out_score[r.idx])
    r.active = r.active & ~(hit | r.stalled)


def _momentum_step(attack, model, loss_fn, r: _Rows, project, move, first: bool, last: bool):
    """z from the gradient, then a convex combination with the last move; the loss and logits at
    the new iterate (and its gradient, except after the last step, which is only scored)."""
    a = 1.0 if first else attack.momentum
    z = move(r.x0, r.x, r.grad, r.step, r.eps)
    x_new = project(r.x0, r.eps, r.x + a * (z - r.x) + (1 - a) * (r.x - r.x_prev))
    r.x_prev, r.x = r.x, x_new
    if not last:
        loss, logits, grad = input_gradient(model, loss_fn, r.x, r.y, r.loss_targets)
        r.grad = torch.nan_to_num(grad)
    else:
        with torch.no_grad():
            logits = model(r.x)
            loss = loss_fn(logits, r.y, r.loss_targets)
    return loss, logits


def _checkpoint(attack, r: _Rows, hist, logits, interval: int, last_check: int, early_stop: bool, give_up) -> None:
    """Halve the step size of the points whose loss stopped rising and move them back to their best
    point; with give_up, mark the points that cannot reach the goal in the steps left."""
    shape = (-1, *[1] * (r.x.ndim - 1))
    # Condition 1: the loss rose in at most rho of the steps since the last checkpoint.
    window = hist[last_check - interval:last_check + 1, r.idx]  # (interval + 1, R)
    rises = (window[1:] > window[:-1]).sum(0)
    reduce = rises <= interval * attack.rho
    # Condition 2: neither the step size nor the best loss changed since the last checkpoint.
    reduce |= ~r.reduced_last & (r.loss_best_last >= r.loss_best)
    r.reduced_last, r.loss_best_last = reduce, r.loss_best.clone()
    r.step = torch.where(reduce, r.step / 2, r.step)
    # A point that meets the goal right now keeps its iterate: the check at the top of the
    # next step reads these logits, and with early stopping it returns this iterate.
    back = reduce & ~attack.goal.met(logits, r.y, r.goal_targets) if early_stop else reduce
    r.x = torch.where(back.view(shape), r.x_best, r.x)
    r.grad = torch.where(back.view(shape), r.grad_best, r.grad)
    if give_up is not None:
        r.stalled = hopeless(r.gap_best, r.gap_then, interval, attack.steps - last_check, give_up)
        r.gap_then = r.gap_best.clone()
