"""Spatial attack: the worst case over a grid of small rotations and translations
(Engstrom, Tran, Tsipras, Schmidt & Madry 2019, "Exploring the landscape of spatial robustness").

The threat model is a transformation range, not an Lp ball: rotations within +/- max_rotation
degrees, shifts within +/- max_shift pixels in x and y. An rotated image is far from the original
in every Lp norm: the threat is `SpatialRange`, and instead of the harness's per-batch cascade Spatial
runs one grid search per batch that serves every budget (the sub-grids are nested).

    result = Spatial(max_rotation=30, max_shift=3)(model, x, y, eps=[0.5, 1.0], bounds=(0, 1))

- eps is the share of the range allowed: eps=1 searches the whole grid, eps=0.5 the grid points
  with |angle| <= 15 degrees and |shift| <= 1.5 px, eps=0 only the identity. The sub-grids are
  nested, so robust accuracy never rises with eps, and the identity is always in the grid (it is
  exact, see affine_transform), so robust accuracy is never above clean accuracy.
- distances (E, N) is the size of the chosen transformation in the same units:
  max(|angle| / max_rotation, |dx| / max_shift, |dy| / max_shift); the norm is named "spatial".
- Per example, the chosen grid point meets the goal (wrong class; targeted: the target) if any
  allowed point does, with the highest loss among those; otherwise it has the highest loss.
- info["angle"] (E, N) and info["shift"] (E, N, 2) record the transformation per example.
Rotation about the image centre, then translation; bilinear; `fill` (default: the lower bound)
where the image moves out of view. Inputs must be images (N, C, H, W).
"""

from __future__ import annotations

import math

import torch

from ..device import default_batch_size
from ..errors import AdvlabError
from ..models.transforms import affine_transform
from ..threat import Bounds, Threat, clip_to_bounds
from .base import Attack
from .result import BatchOutput
from .losses import get_loss


class SpatialRange(Threat):
    """Rotations and shifts up to a share eps of the range: the grid search stays inside it by
    construction (Spatial._batch picks only allowed grid points), so there is nothing to project."""

    name = "spatial"


class Spatial(Attack):
    name = "spatial"
    needs_gradients = False
    searches_every_budget = True  # the sub-grids are nested: one grid search per batch serves every budget

    def __init__(self, *, max_rotation: float = 30.0, max_shift: float = 3.0, rotations: int = 31, shifts: int = 7,
                 loss="ce", fill: float | None = None, targeted: bool = False, batch_size: int | None = None, seed: int = 0):
        if max_rotation < 0 or max_shift < 0:
            raise AdvlabError(f"max_rotation and max_shift must be >= 0, got {max_rotation}, {max_shift}")
        if rotations < 1 or shifts < 1:
            raise AdvlabError(f"rotations and shifts must be >= 1, got {rotations}, {shifts}")
        super().__init__("linf", targeted=targeted, batch_size=batch_size, seed=seed)
        del self.norm  # no Lp ball: the budget is a share of the transformation range
        self.threat = SpatialRange()
        self.max_rotation, self.max_shift = float(max_rotation), float(max_shift)
        self.rotations, self.shifts = rotations, shifts
        self.loss, self._loss_fn = loss, get_loss(loss)
        self.fill = fill

    def grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """angles (G,), shifts (G, 2) as (dx, dy), and sizes (G,) as shares of the range. The
        identity is always included."""
        angles = torch.linspace(-self.max_rotation, self.max_rotation, self.rotations) if self.rotations > 1 \
            else torch.zeros(1)
        moves = torch.linspace(-self.max_shift, self.max_shift, self.shifts) if self.shifts > 1 else torch.zeros(1)
        a, dx, dy = torch.meshgrid(angles, moves, moves, indexing="ij")
        angle, shift = a.flatten(), torch.stack([dx.flatten(), dy.flatten()], 1)
        # linspace can miss 0 and whole pixels by rounding; snap them so they take the exact path.
        angle = torch.where(angle.abs() < 1e-6 * max(self.max_rotation, 1), torch.zeros_like(angle), angle)
        shift = torch.where((shift - shift.round()).abs() < 1e-6, shift.round(), shift)
        if not ((angle == 0) & (shift == 0).all(1)).any():
            angle, shift = torch.cat([torch.zeros(1), angle]), torch.cat([torch.zeros(1, 2), shift])
        return angle, shift, self._size(angle, shift)

    def _size(self, angle, shift):
        # A zero move has size 0 even for a zero (or float-underflowing) range.
        r = torch.where(angle == 0, torch.zeros_like(angle), angle.abs() / self.max_rotation)
        s = shift.abs().amax(-1)
        s = torch.where(s == 0, torch.zeros_like(s), s / self.max_shift)
        return torch.maximum(r, s)

    def _check_budget(self, budgets, x):
        if any((e > 1).any() for e in budgets):
            raise AdvlabError("the spatial attack's eps is the share of the transformation range to search, in "
                              "[0, 1] (1: +/- max_rotation degrees and +/- max_shift pixels); set the range with "
                              "max_rotation and max_shift")
        if isinstance(x, torch.Tensor) and x.ndim != 4:
            raise AdvlabError(f"the spatial attack needs images (N, C, H, W); got shape {tuple(x.shape)}")

    def perturb(self, *args, **kwargs):
        raise AdvlabError("the spatial attack searches a grid of transformations for every budget at once; "
                          "call it: Spatial(...)(model, x, y, eps=[...])")

    def _search_every_budget(self, model, x, y, targets, budgets, bounds):
        angle, shift, size = (t.to(x.device) for t in self.grid())
        x_adv, logits, clean, angles, shifts = self._batch(model, x, y, targets, budgets, angle, shift, size,
                                                           bounds, self._fill(bounds))
        return BatchOutput(x_adv, logits, clean, self._size(angles, shifts), extras={"angle": angles, "shift": shifts})

    def _batch(self, model, x, y, targets, budgets, angle, shift, size, bounds, fill):
        n, g = len(x), len(angle)
        per_pass = max(1, (self.batch_size or default_batch_size(x.device)) // n)  # grid points per forward pass
        loss = torch.empty(g, n, device=x.device)
        goal = torch.empty(g, n, dtype=torch.bool, device=x.device)
        with torch.no_grad():
            clean = model(x)
            for i in range(0, g, per_pass):
                j = min(g, i + per_pass)
                xt = self._transform(x.repeat(j - i, 1, 1, 1), angle[i:j].repeat_interleave(n),
                                     shift[i:j].repeat_interleave(n, 0), bounds, fill)
                lg = model(xt)                                             # ((j-i)*N, K)
                yy, tt = y.repeat(j - i), targets.repeat(j - i) if targets is not None else None
                loss[i:j] = torch.nan_to_num(self._loss_fn(lg, yy, tt).float(), nan=-math.inf).view(j - i, n)
                pred = lg.argmax(1)
                goal[i:j] = (pred == tt if tt is not None else pred != yy).view(j - i, n)
            x_adv, logits, angles, shifts = [], [], [], []
            for e in budgets:
                allowed = size[:, None] <= e[None, :] + 1e-6              # (G, N)
                any_goal = (goal & allowed).any(0)                         # (N,)
                best_goal = loss.masked_fill(~(goal & allowed), -math.inf).argmax(0)
                best_loss = loss.masked_fill(~allowed, -math.inf).argmax(0)
                pick = torch.where(any_goal, best_goal, best_loss)         # (N,) grid index
                xe = self._transform(x, angle[pick], shift[pick], bounds, fill)
                x_adv.append(xe.cpu())
                logits.append(model(xe).float().cpu())
                angles.append(angle[pick].cpu())
                shifts.append(shift[pick].cpu())
        return torch.stack(x_adv), torch.stack(logits), clean.float().cpu(), torch.stack(angles), torch.stack(shifts)

    @staticmethod
    def _transform(x, angle, shift, bounds, fill):
        return clip_to_bounds(affine_transform(x, angle, shift, fill), bounds)

    def _fill(self, bounds: Bounds) -> float:
        if self.fill is not None:
            return float(self.fill)
        if bounds is None:
            return 0.0
        return float(torch.as_tensor(bounds[0]).min())
