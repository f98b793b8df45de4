"""The embedding-space threat model: ||f(x') - f(x)||_2 <= eps_e, f a (triplet) embedding net.

    advlab attack --run runs/digits-cnn --threat embedding --embedding runs/emb/embedding --eps 0.1,0.2 --n 300

Epsilon is measured in the embedding, not in pixels; the input must still lie inside the dataset's
bounds and, optionally, inside a pixel Lp ball (`pixel_eps` in `pixel_norm`, the threat.py norms).

The optimiser is PGD on the classifier's loss minus a penalty `penalty * (d_e / eps_e)^2` that
steers it towards directions the embedding barely notices. A step is taken in `pixel_norm`'s
steepest-ascent direction, clipped to the bounds and the pixel ball, and then "projected" in the
embedding: if the new point x + delta breaks the embedding constraint, it is moved back toward x to
x + t * delta, the largest feasible t a search finds: the secant guess t = eps_e / d_e(x + delta)
(exact when the embedding distance grows linearly along the segment), then 3 bisection steps above
it if it is feasible, or `bisection_steps` below it if not. The search only ever accepts points
whose embedding distance it has computed, with a relative slack of `tolerance`
so that recomputing the distance in another batch (different float rounding) still passes.

Whatever the optimiser did, `_enforce` (called by the Attack base class on every returned example)
clips to the bounds and the pixel ball, recomputes the embedding distance and reverts every point
that breaks the constraint to x. eps_e = 0 returns x itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack, attack_mode
from ..attacks.budget import box_diameter
from ..attacks.losses import get_loss
from ..errors import AdvlabError
from ..threat import Bounds, clip_to_bounds, enforce


class EmbeddingPGD(Attack):
    name = "embedding-pgd"

    def __init__(self, embedding: nn.Module, *, pixel_norm: str = "linf", pixel_eps: float | None = None,
                 steps: int = 40, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", penalty: float = 0.0, bisection_steps: int = 10, tolerance: float = 1e-3,
                 targeted: bool = False, batch_size: int = 500, seed: int = 0):
        super().__init__(pixel_norm, targeted=targeted, batch_size=batch_size, seed=seed)
        if not isinstance(embedding, nn.Module):
            raise AdvlabError(f"embedding must be a torch.nn.Module (an embedding net), got {type(embedding).__name__}")
        if steps < 1 or restarts < 1 or bisection_steps < 1:
            raise AdvlabError(f"steps, restarts and bisection_steps must be >= 1, got steps={steps}, "
                              f"restarts={restarts}, bisection_steps={bisection_steps}")
        if pixel_eps is not None and not pixel_eps >= 0:
            raise AdvlabError(f"pixel_eps must be >= 0 (or None for no pixel ball), got {pixel_eps}")
        if step_size is not None and not step_size > 0:
            raise AdvlabError(f"the step size must be > 0, got {step_size}")
        if penalty < 0 or not 0 <= tolerance < 1:
            raise AdvlabError(f"penalty must be >= 0 and tolerance in [0, 1), got {penalty}, {tolerance}")
        self.embedding = embedding
        self.pixel_eps = pixel_eps
        self.steps, self.step_size, self.random_start, self.restarts = steps, step_size, random_start, restarts
        self.loss, self.penalty = loss, penalty
        self.bisection_steps, self.tolerance = bisection_steps, tolerance
        self._loss_fn = get_loss(loss)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "embedding")
        return f"{type(self).__name__}({opts})"

    @property
    def threat_name(self) -> str:
        return "embedding"

    def __call__(self, model, x, y, eps, **kwargs):
        result = super().__call__(model, x, y, eps, **kwargs)
        # The budget is in the embedding; the pixel-space size is worth knowing too.
        result.info["pixel_norm"] = self.norm.name
        result.info["pixel_eps"] = self.pixel_eps
        result.info["pixel_distances"] = torch.stack([self.norm.distance(xa - x.cpu()) for xa in result.x_adv])
        return result

    # -- the constraint ---------------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), attack_mode(self.embedding.to(x.device), evaluation=True):
            return self.embedding(x)

    def embedding_distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """(N,) ||f(x_adv) - f(x)||_2."""
        return (self._embed(x_adv) - self._embed(x)).norm(dim=1)

    def _distance(self, x, x_adv):
        return self.embedding_distance(x, x_adv)

    def _pixel_clip(self, x: torch.Tensor, x_adv: torch.Tensor, bounds: Bounds) -> torch.Tensor:
        if self.pixel_eps is not None:
            return enforce(x, x_adv, self.norm, self.pixel_eps, bounds)
        return clip_to_bounds(x_adv, bounds)

    def _enforce(self, x, x_adv, eps, bounds):
        """Bounds and pixel ball by clipping; the embedding constraint by check and revert."""
        x_adv = self._pixel_clip(x, x_adv, bounds)
        eps = torch.as_tensor(eps, dtype=torch.float32, device=x.device).expand(len(x))
        ok = (self.embedding_distance(x, x_adv) <= eps) & (eps > 0)
        return torch.where(ok.view(-1, *[1] * (x.ndim - 1)), x_adv, x)

    def _shrink(self, x0: torch.Tensor, x_new: torch.Tensor, z0: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
        """x0 + t * (x_new - x0) with t = 1 if that satisfies ||f(.) - z0|| <= limit, else the
        largest feasible t a search finds (t = 0, i.e. x0, at worst). The search starts from the
        secant guess t = limit / d(1), exact when d grows linearly along the segment: if the guess
        is feasible, 3 bisection steps on [guess, 1] follow, else `bisection_steps` on [0, guess]."""
        delta = x_new - x0
        d_new = (self._embed(x_new) - z0).norm(dim=1)
        bad = (d_new > limit).nonzero().flatten()
        if len(bad) == 0:
            return x_new
        shape = (-1, *[1] * (x0.ndim - 1))
        xb, db, zb, lb = x0[bad], delta[bad], z0[bad], limit[bad]

        def feasible(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return (self._embed(xb[rows] + t.view(shape) * db[rows]) - zb[rows]).norm(dim=1) <= lb[rows]

        every = torch.arange(len(bad), device=x0.device)
        guess = (lb / d_new[bad]).clamp(0, 1).to(x0.dtype)
        ok = feasible(guess, every)
        lo = torch.where(ok, guess, torch.zeros_like(guess))
        hi = torch.where(ok, torch.ones_like(guess), guess)
        for rows, steps in ((every[ok], min(3, self.bisection_steps)), (every[~ok], self.bisection_steps)):
            if len(rows) == 0:
                continue
            lo_r, hi_r = lo[rows], hi[rows]
            for _ in range(steps):
                mid = (lo_r + hi_r) / 2
                good = feasible(mid, rows)
                lo_r = torch.where(good, mid, lo_r)
                hi_r = torch.where(good, hi_r, mid)
            lo[rows] = lo_r
        out = x_new.clone()
        out[bad] = xb + lo.view(shape) * db  # the same arithmetic as the accepted point
        return out

    # -- the optimiser ----------------------------------------------------------------------------------
    def _alpha(self, x: torch.Tensor, bounds: Bounds) -> float:
        if self.step_size is not None:
            return self.step_size
        reach = self.pixel_eps if self.pixel_eps is not None else 0.25 * box_diameter(x, self.norm, bounds)
        if not math.isfinite(reach):
            raise AdvlabError("the embedding attack needs step_size (or pixel_eps) when the inputs have no bounds")
        return 2.5 * reach / self.steps

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        n = len(x)
        alpha = self._alpha(x, bounds)
        z_all = self._embed(x)
        limit_all = eps * (1 - self.tolerance)
        best = x.clone()
        best_loss = torch.full((n,), -torch.inf, device=x.device)
        done = eps <= 0  # eps_e = 0: nothing may move
        with attack_mode(self.embedding.to(x.device), evaluation=True):
            for _ in range(self.restarts):
                idx = (~done).nonzero().flatten()
                if len(idx) == 0:
                    break
                x0, z0, lim, yy = x[idx], z_all[idx], limit_all[idx], y[idx]
                tt = targets[idx] if targets is not None else None
                xa = x0
                if self.random_start:
                    r = self.pixel_eps if self.pixel_eps is not None else alpha
                    start = self._pixel_clip(x0, x0 + self.norm.random_init(x0, r, generator), bounds)
                    xa = self._shrink(x0, start, z0, lim)
                for step in range(self.steps + 1):
                    xg = xa.detach().requires_grad_(step < self.steps)
                    with torch.enable_grad() if step < self.steps else torch.no_grad():
                        logits = model(xg)
                        loss = self._loss_fn(logits, yy, tt)
                        if step < self.steps:
                            # Squared distance: its gradient is finite at d_e = 0, the norm's is not.
                            de2 = (self.embedding(xg) - z0).pow(2).sum(1)
                            scale = torch.where(torch.isfinite(lim) & (lim > 0), lim, torch.ones_like(lim))
                            objective = loss - self.penalty * de2 / scale.pow(2) * torch.isfinite(lim)
                            if not objective.requires_grad:
                                raise AdvlabError("the model's output does not depend differentiably on its input; "
                                                  "the embedding attack needs gradients")
                            grad, = torch.autograd.grad(objective.sum(), xg)
                    loss = loss.detach()
                    hit = self._goal_met(logits.detach(), yy, tt)
                    if early_stop and hit.any():
                        # Freeze the points that are already adversarial and drop them from the batch.
                        best[idx[hit]] = xa[hit]
                        done[idx[hit]] = True
                        keep = ~hit
                        idx, x0, z0, lim, yy, xa = idx[keep], x0[keep], z0[keep], lim[keep], yy[keep], xa[keep]
                        tt = tt[keep] if tt is not None else None
                        loss = loss[keep]
                        grad = grad[keep] if step < self.steps else None
                        if len(idx) == 0:
                            break
                    if step == self.steps:
                        better = loss > best_loss[idx]
                        best[idx[better]] = xa[better]
                        best_loss[idx[better]] = loss[better]
                        break
                    x_new = self._pixel_clip(x0, xa + self.norm.step(torch.nan_to_num(grad), alpha), bounds)
                    xa = self._shrink(x0, x_new, z0, lim)
        return best


def embedding_attack(name: str, embedding: nn.Module, **options: Any) -> EmbeddingPGD:
    """The embedding-space version of a CLI attack: pgd, bim (no random start) or fgsm (one step,
    no random start). `norm` is the pixel norm that steps (and the optional pixel ball) use."""
    if name not in ("pgd", "bim", "fgsm"):
        raise AdvlabError(f"--threat embedding supports the attacks pgd, bim and fgsm, not {name!r}")
    if "norm" in options:
        options["pixel_norm"] = options.pop("norm")
    if name == "bim":
        options.setdefault("random_start", False)
    if name == "fgsm":
        options.setdefault("steps", 1)
        options.setdefault("random_start", False)
    allowed = {"pixel_norm", "pixel_eps", "steps", "step_size", "random_start", "restarts", "loss", "penalty",
               "bisection_steps", "tolerance", "targeted", "batch_size", "seed"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise AdvlabError(f"the embedding attack has no option {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    try:
        attack = EmbeddingPGD(embedding, **options)
    except TypeError as e:
        raise AdvlabError(f"embedding attack: an option has the wrong type ({e})") from e
    attack.name = f"embedding-{name}"
    return attack
