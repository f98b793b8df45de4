"""The embedding-space threat model: ||f(x') - f(x)||_2 <= eps_e, f a (triplet) embedding net.

    advlab attack --run runs/digits-cnn --threat embedding --embedding runs/emb/embedding --eps 0.1,0.2 --n 300

Epsilon is measured in the embedding, not in pixels; the input must still lie inside the dataset's
bounds and, optionally, inside a pixel Lp ball (`pixel_eps` in `pixel_norm`, the threat.py norms).

The threat is `EmbeddingBall`; the optimiser is the engine's PGD loop (attacks/engine.py) on the
classifier's loss minus a penalty `penalty * (d_e / eps_e)^2` that
steers it towards directions the embedding barely notices. A step is taken in `pixel_norm`'s
steepest-ascent direction, clipped to the bounds and the pixel ball, and then "projected" in the
embedding: if the new point x + delta breaks the embedding constraint, it is moved back toward x to
x + t * delta, the largest feasible t a search finds: the secant guess t = eps_e / d_e(x + delta)
(exact when the embedding distance grows linearly along the segment), then 3 bisection steps above
it if it is feasible, or `bisection_steps` below it if not. The search only ever accepts points
whose embedding distance it has computed, with a relative slack of `tolerance` and an absolute one
of ATOL = 1e-6, so that recomputing the distance in another batch (other float rounding) still passes.

Whatever the optimiser did, `EmbeddingBall.enforce` (called by the harness on every returned example)
clips to the bounds and the pixel ball, recomputes the embedding distance and reverts every point
that breaks the constraint to x. eps_e = 0 returns x itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack
from ..predict import attack_mode
from ..attacks.budget import box_diameter
from ..attacks.goals import Misclassify
from ..attacks.engine import restarted_ascent
from ..errors import AdvlabError
from ..threat import Bounds, Norm, Threat, clip_to_bounds, enforce


ATOL = 1e-6  # absolute slack on embedding distances: float32 rounding differs between batch compositions


class EmbeddingBall(Threat):
    """||f(x) - f(x0)||_2 <= eps_e inside the bounds (and the optional pixel ball): steps in the pixel
    norm, then the segment search (`shrink`) back into the embedding ball; the gradient pays
    `penalty * (d_e / eps_e)^2` (module docstring)."""

    name = "embedding"

    def __init__(self, embedding: nn.Module, pixel_norm: Norm, pixel_eps: float | None, penalty: float,
                 bisection_steps: int, tolerance: float):
        self.embedding, self.norm, self.pixel_eps = embedding, pixel_norm, pixel_eps
        self.penalty_weight, self.bisection_steps, self.tolerance = penalty, bisection_steps, tolerance

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), attack_mode(self.embedding.to(x.device), evaluation=True):
            return self.embedding(x)

    def distance(self, x0, x):
        """(N,) ||f(x) - f(x0)||_2."""
        return (self.embed(x) - self.embed(x0)).norm(dim=1)

    def pixel_clip(self, x0: torch.Tensor, x: torch.Tensor, bounds: Bounds) -> torch.Tensor:
        if self.pixel_eps is not None:
            return enforce(x0, x, self.norm, self.pixel_eps, bounds)
        return clip_to_bounds(x, bounds)

    def enforce(self, x0, x, eps, bounds):
        """Bounds and pixel ball by clipping; the embedding constraint by check and revert."""
        x = self.pixel_clip(x0, x, bounds)
        eps = torch.as_tensor(eps, dtype=torch.float32, device=x0.device).expand(len(x0))
        # ATOL below eps: a recomputation in another batch (other float rounding) must pass too.
        ok = (self.distance(x0, x) <= eps - ATOL) & (eps > 0)
        return torch.where(ok.view(-1, *[1] * (x0.ndim - 1)), x, x0)

    def context(self, x0, eps, bounds):
        return {"z0": self.embed(x0), "limit": eps * (1 - self.tolerance) - ATOL}

    def start(self, x0, eps, alpha, bounds, generator, ctx):
        radius = self.pixel_eps if self.pixel_eps is not None else alpha
        start = self.pixel_clip(x0, x0 + self.norm.random_init(x0, radius, generator), bounds)
        return self.shrink(x0, start, ctx["z0"], ctx["limit"])

    def move(self, x0, x, grad, alpha, eps, bounds, ctx):
        x_new = self.pixel_clip(x0, x + self.norm.step(grad, alpha), bounds)
        return self.shrink(x0, x_new, ctx["z0"], ctx["limit"])

    def penalty(self, x, x0, ctx):
        if not self.penalty_weight:
            return None
        limit = ctx["limit"]
        # Squared distance: its gradient is finite at d_e = 0, the norm's is not.
        de2 = (self.embedding(x) - ctx["z0"]).pow(2).sum(1)
        scale = torch.where(torch.isfinite(limit) & (limit > 0), limit, torch.ones_like(limit))
        return self.penalty_weight * de2 / scale.pow(2) * torch.isfinite(limit)

    def shrink(self, x0: torch.Tensor, x_new: torch.Tensor, z0: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
        """x0 + t * (x_new - x0) with t = 1 if that satisfies ||f(.) - z0|| <= limit, else the
        largest feasible t a search finds (t = 0, i.e. x0, at worst). The search starts from the
        secant guess t = limit / d(1), exact when d grows linearly along the segment: if the guess
        is feasible, 3 bisection steps on [guess, 1] follow, else `bisection_steps` on [0, guess]."""
        delta = x_new - x0
        d_new = (self.embed(x_new) - z0).norm(dim=1)
        bad = (d_new > limit).nonzero().flatten()
        if len(bad) == 0:
            return x_new
        shape = (-1, *[1] * (x0.ndim - 1))
        xb, db, zb, lb = x0[bad], delta[bad], z0[bad], limit[bad]

        def feasible(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return (self.embed(xb[rows] + t.view(shape) * db[rows]) - zb[rows]).norm(dim=1) <= lb[rows]

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


class EmbeddingPGD(Attack):
    """PGD (the engine's loop, attacks/engine.py) under the EmbeddingBall threat."""

    name = "embedding-pgd"

    def __init__(self, embedding: nn.Module, *, pixel_norm: str = "linf", pixel_eps: float | None = None,
                 steps: int = 40, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", penalty: float = 0.0, bisection_steps: int = 10, tolerance: float = 1e-3,
                 targeted: bool = False, batch_size: int | None = None, seed: int = 0, sync_free: bool | None = None):
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
        self.goal = Misclassify(loss)
        self.threat = EmbeddingBall(embedding, self.norm, pixel_eps, penalty, bisection_steps, tolerance)
        self.sync_free = sync_free

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if not k.startswith("_") and k not in ("embedding", "threat", "goal"))
        return f"{type(self).__name__}({opts})"

    def __call__(self, model, x, y, eps, **kwargs):
        result = super().__call__(model, x, y, eps, **kwargs)
        # The budget is in the embedding; the pixel-space size is worth knowing too.
        result.info["pixel_norm"] = self.norm.name
        result.info["pixel_eps"] = self.pixel_eps
        result.info["pixel_distances"] = torch.stack([self.norm.distance(xa - x.cpu()) for xa in result.x_adv])
        return result

    def embedding_distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """(N,) ||f(x_adv) - f(x)||_2."""
        return self.threat.distance(x, x_adv)

    def _alpha(self, x: torch.Tensor, bounds: Bounds) -> float:
        if self.step_size is not None:
            return self.step_size
        reach = self.pixel_eps if self.pixel_eps is not None else 0.25 * box_diameter(x, self.norm, bounds)
        if not math.isfinite(reach):
            raise AdvlabError("the embedding attack needs step_size (or pixel_eps) when the inputs have no bounds")
        return 2.5 * reach / self.steps

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        alpha = torch.full((len(x),), self._alpha(x, bounds), device=x.device)
        with attack_mode(self.embedding.to(x.device), evaluation=True):
            # eps_e = 0 (or below float resolution): nothing may move
            return restarted_ascent(self, model, x, y, targets, eps, alpha, bounds, generator, early_stop,
                                    skip=eps <= ATOL)


def embedding_attack(name: str, embedding: nn.Module, **options: Any) -> EmbeddingPGD:
    """The embedding-space version of a CLI attack: pgd, bim (no random start) or fgsm (one step,
    no random start). `norm` is the pixel norm that steps (and the optional pixel ball) use."""
    if name not in ("pgd", "bim", "fgsm"):
        raise AdvlabError(f"`threat='embedding'` supports the attacks pgd, bim and fgsm, not {name!r}")
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
