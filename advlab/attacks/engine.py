"""The one projected-ascent loop: a threat (where a point may go) and a goal (what it wants), applied.

    out, loss, met = ascend(model, x0, y, targets, eps, alpha, threat=LpBall("linf"), goal=Misclassify("ce"),
                            steps=20, random_start=True, generator=g, early_stop=True, bounds=(0, 1))

PGD, BIM, FGSM, MI-FGSM, high-confidence and fooling attacks and the embedding-space PGD are this
loop with other threats and goals. Per row it returns the point to keep (with early stopping, the
first one that met the goal; otherwise the last iterate), its loss, and whether the goal was met.

Early stopping drops finished rows. On the CPU they leave the batch at once (a shrinking batch is
cheaper, and asking "is any row done?" costs nothing there). On a GPU that question is a host
synchronisation that stalls the device, so finished rows stay in the batch, frozen by a mask on the
device, and the batch is compacted only at a check every `check_every` steps, when at most
`compact_share` of it is still active: at most one synchronisation per `check_every` steps.
"""

from __future__ import annotations

import torch

from ..errors import AdvlabError
from ..threat import Bounds, Threat
from .goals import Goal

CHECK_EVERY = 4      # steps between host checks of the active set on a GPU
COMPACT_SHARE = 0.5  # compact the batch when at most this share of it is still active


def sync_free_default(x: torch.Tensor) -> bool:
    """Masks instead of a shrinking batch: on accelerators, where a host check stalls the device."""
    return x.device.type != "cpu"


def ascend(model, x0: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, eps: torch.Tensor,
           alpha: torch.Tensor, *, threat: Threat, goal: Goal, steps: int, random_start: bool,
           generator: torch.Generator, early_stop: bool, bounds: Bounds, momentum: float = 0.0,
           score_last: bool = True, sync_free: bool | None = None, context: dict | None = None):
    """One run of projected steepest ascent from x0 (or a random start inside the threat).

    x0 (N, ...), y (N,), targets (N,) or None, eps and alpha (N,). Returns (out (N, ...), loss (N,),
    met (N,) bool). With score_last=False and no early stopping the last iterate is returned unscored
    (loss -inf): one forward pass less, for training loops that take the last point anyway.
    `context`: the threat's per-row tensors for these rows, when the caller already has them.
    """
    sync_free = sync_free_default(x0) if sync_free is None else sync_free
    n = len(x0)
    out = x0.clone()
    out_loss = torch.full((n,), -torch.inf, device=x0.device)
    met = torch.zeros(n, dtype=torch.bool, device=x0.device)
    rows = torch.arange(n, device=x0.device)                 # batch position of each row held
    active = torch.ones(n, dtype=torch.bool, device=x0.device)
    if context is None:
        context = threat.context(x0, eps, bounds)
    st = {"x0": x0, "y": y, "t": targets, "eps": eps, "alpha": alpha, **context}
    ctx_keys = [k for k in st if k not in ("x0", "y", "t", "eps", "alpha")]
    xa = threat.start(x0, eps, alpha, bounds, generator, _ctx(st, ctx_keys)) if random_start else x0
    velocity = torch.zeros_like(x0) if momentum else None
    shape = (-1, *[1] * (x0.ndim - 1))

    for step in range(steps + 1):
        last = step == steps
        if last and not score_last and not early_stop:
            out[rows] = xa
            break
        loss, logits, grad = _evaluate(model, goal, threat, xa, st, ctx_keys, gradient=not last)
        hit = goal.met(logits, st["y"], st["t"])
        if early_stop:
            newly = hit & active
            out[rows] = torch.where(newly.view(shape), xa, out[rows])
            met[rows] = met[rows] | newly
            active = active & ~hit
            keep = shrink_rows(active, step, sync_free)
            if keep is not None:
                if len(keep) == 0:
                    break
                rows, active, xa, loss, grad, velocity = _take(keep, rows, active, xa, loss, grad, velocity)
                st = {k: (v[keep] if v is not None else None) for k, v in st.items()}
        if last:
            out[rows] = torch.where(active.view(shape), xa, out[rows])
            out_loss[rows] = torch.where(active, loss, out_loss[rows])
            if not early_stop:
                met[rows] = hit
            break
        grad = torch.nan_to_num(grad)
        if velocity is not None:  # MI-FGSM: momentum on the L1-normalised gradient
            l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(shape)
            velocity = momentum * velocity + grad / l1
            grad = velocity
        xa = threat.move(st["x0"], xa, grad, st["alpha"], st["eps"], bounds, _ctx(st, ctx_keys))
    return out, out_loss, met


def restarted_ascent(attack, model, x, y, targets, eps, alpha, bounds, generator, early_stop, momentum=0.0,
                     skip=None):
    """`attack.restarts` runs of the engine's ascent (attack.threat, attack.goal, attack.steps,
    attack.random_start), keeping per point the first one that met the goal (early stopping) or the
    highest-loss end point. Rows in `skip` (N,) bool are not attacked: they come back unchanged."""
    threat = attack.threat
    runs = BestOfRuns(x, skip)
    context = threat.context(x, eps, bounds)
    for _ in range(attack.restarts):
        idx = runs.todo(early_stop or skip is not None)
        if idx is None:
            break
        out, loss, met = ascend(model, x[idx], y[idx], targets[idx] if targets is not None else None, eps[idx],
                                alpha[idx], threat=threat, goal=attack.goal, steps=attack.steps,
                                random_start=attack.random_start, generator=generator, early_stop=early_stop,
                                bounds=bounds, momentum=momentum, score_last=attack.restarts > 1,
                                sync_free=attack.sync_free, context={k: v[idx] for k, v in context.items()})
        # One run without early stopping returns its last iterate, unscored.
        runs.fold(idx, out, loss, met, early_stop, unscored=not early_stop and attack.restarts == 1)
    return runs.best


class BestOfRuns:
    """The best point per row over several runs on a batch: PGD's restarts (restarted_ascent), APGD's
    restarts and APGD-T's targets. With early stopping a row whose run met the goal is final (later runs
    skip it); otherwise the highest score wins. Updates are in place, without boolean indexing (nothing
    waits for the device)."""

    def __init__(self, x: torch.Tensor, skip: torch.Tensor | None = None):
        n = len(x)
        self.best = x.clone()                                             # (N, ...)
        self.score = torch.full((n,), -torch.inf, device=x.device)        # (N,)
        self.done = torch.zeros(n, dtype=torch.bool, device=x.device) if skip is None else skip.clone()

    def todo(self, only_unfinished: bool) -> torch.Tensor | None:
        """The rows the next run attacks (every row unless `only_unfinished`); None when none is left."""
        n = len(self.best)
        idx = (~self.done).nonzero().flatten() if only_unfinished else torch.arange(n, device=self.best.device)
        return idx if len(idx) else None

    def fold(self, idx: torch.Tensor, x_out: torch.Tensor, score: torch.Tensor, found: torch.Tensor,
             early_stop: bool, unscored: bool = False) -> None:
        """Fold one run on rows `idx` in: (x_out (R, ...), score (R,), found (R,) the goal was met)."""
        if unscored:
            better = torch.ones_like(found)
        else:
            better = score > self.score[idx]
            if early_stop:
                better = better | found
                self.done[idx] = self.done[idx] | found
        self.best[idx] = torch.where(better.view(-1, *[1] * (x_out.ndim - 1)), x_out, self.best[idx])
        self.score[idx] = torch.where(better, score, self.score[idx])


def _ctx(st: dict, keys: list[str]) -> dict:
    return {k: st[k] for k in keys}


def _evaluate(model, goal: Goal, threat: Threat, xa, st, ctx_keys, gradient: bool):
    """(loss (N,), logits (N, K), input gradient of the objective or None) at xa."""
    if not gradient:
        with torch.no_grad():
            logits = model(xa)
            return goal.loss(logits, st["y"], st["t"]), logits, None
    xg = xa.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        loss = goal.loss(logits, st["y"], st["t"])
        objective = loss
        for penalty in (goal.penalty(xg, st["x0"]), threat.penalty(xg, st["x0"], _ctx(st, ctx_keys))):
            if penalty is not None:
                objective = objective - penalty
        grad = gradient_of_sum(objective, xg)
    return loss.detach(), logits.detach(), grad


def gradient_of_sum(objective: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d sum(objective) / dx, or a clear error when the model cut the graph between x and its output."""
    if not objective.requires_grad:
        raise AdvlabError("the model's output does not depend differentiably on its input (it runs under "
                          "no_grad, detaches, or converts to numpy); use a black-box attack (square) or wrap "
                          "the non-differentiable part with BPDA (advlab.models.Preprocessed(...).bpda())")
    grad, = torch.autograd.grad(objective.sum(), x)
    return grad


def shrink_rows(active: torch.Tensor, step: int, sync_free: bool) -> torch.Tensor | None:
    """Indices of the rows to keep when the batch should shrink now, else None."""
    if not sync_free:
        if bool(active.all()):
            return None
        return active.nonzero().flatten()
    if step % CHECK_EVERY:
        return None
    count = int(active.sum())  # the one host synchronisation, every CHECK_EVERY steps
    if count > COMPACT_SHARE * len(active):
        return None
    return active.nonzero().flatten()


def _take(keep, *tensors):
    return tuple(t[keep] if t is not None else None for t in tensors)


def input_gradient(model, loss_fn, x: torch.Tensor, y: torch.Tensor, targets=None):
    """(loss per example (N,), logits (N, K), d sum(loss) / dx) in one forward and backward pass."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits, y, targets)
        grad = gradient_of_sum(loss, x)
    return loss.detach(), logits.detach(), grad
