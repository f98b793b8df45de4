"""Spatial attack: the worst case over a grid of small rotations and translations
(Engstrom, Tran, Tsipras, Schmidt & Madry 2019, "Exploring the landscape of spatial robustness").

The threat model is a transformation range, not an Lp ball: rotations within +/- max_rotation
degrees, shifts within +/- max_shift pixels in x and y. An rotated image is far from the original
in every Lp norm, so the Attack base class (which projects into an Lp ball) does not apply;
Spatial has the same call signature and returns an AttackResult, but is not an Attack subclass.

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
import time

import torch
from torch import nn

from ..errors import AdvlabError
from ..models.transforms import affine_transform
from ..predict import model_device
from ..progress import progress as progress_bar
from ..threat import Bounds, clip_to_bounds
from .base import Attack, _describe_eps, _eps_list, attack_mode
from .losses import get_loss
from .result import AttackResult


class Spatial:
    name = "spatial"
    minimal = False
    needs_gradients = False

    def __init__(self, *, max_rotation: float = 30.0, max_shift: float = 3.0, rotations: int = 31, shifts: int = 7,
                 loss="ce", fill: float | None = None, targeted: bool = False, batch_size: int = 500, seed: int = 0):
        if max_rotation < 0 or max_shift < 0:
            raise AdvlabError(f"max_rotation and max_shift must be >= 0, got {max_rotation}, {max_shift}")
        if rotations < 1 or shifts < 1 or batch_size < 1:
            raise AdvlabError(f"rotations, shifts and batch_size must be >= 1, got {rotations}, {shifts}, {batch_size}")
        self.max_rotation, self.max_shift = float(max_rotation), float(max_shift)
        self.rotations, self.shifts = rotations, shifts
        self.loss, self._loss_fn = loss, get_loss(loss)
        self.fill, self.targeted, self.batch_size, self.seed = fill, targeted, batch_size, seed

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"Spatial({opts})"

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

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps=1.0, *, bounds: Bounds = None,
                 targets: torch.Tensor | None = None, progress: bool = False) -> AttackResult:
        eps_list = _eps_list(eps, len(x))  # each (N,): the share of the range allowed per example
        if any((e > 1).any() for e in eps_list):
            raise AdvlabError("the spatial attack's eps is the share of the transformation range to search, in "
                              "[0, 1] (1: +/- max_rotation degrees and +/- max_shift pixels); set the range with "
                              "max_rotation and max_shift")
        y, targets = _checked(self, model, x, y, bounds, targets)
        if x.ndim != 4:
            raise AdvlabError(f"the spatial attack needs images (N, C, H, W); got shape {tuple(x.shape)}")
        start = time.perf_counter()
        device = model_device(model)
        fill = self._fill(bounds)
        angle, shift, size = (t.to(device) for t in self.grid())
        outs = []
        with attack_mode(model, evaluation=True):
            bar = progress_bar(range(math.ceil(len(x) / self.batch_size)), self.name, progress, unit="batch")
            for b in bar:
                sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
                t = targets[sl].to(device) if targets is not None else None
                outs.append(self._batch(model, x[sl].to(device), y[sl].to(device), t,
                                        [e[sl].to(device) for e in eps_list], angle, shift, size, bounds, fill))
        x_adv, logits, clean, ang, sh = (torch.cat(p, dim=0 if i == 2 else 1) for i, p in enumerate(zip(*outs)))
        y, targets = y.cpu(), targets.cpu() if targets is not None else None
        pred = logits.argmax(2)
        goal = pred == targets if targets is not None else pred != y
        return AttackResult(self.name, "spatial", _describe_eps(eps), x_adv, logits, clean, y, self._size(ang, sh),
                            targets, time.perf_counter() - start, goal=goal, info={"angle": ang, "shift": sh})

    def _batch(self, model, x, y, targets, eps_list, angle, shift, size, bounds, fill):
        n, g = len(x), len(angle)
        per_pass = max(1, self.batch_size // n)  # grid points per forward pass
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
            for e in eps_list:
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


def _checked(attack, model, x, y, bounds, targets):
    """The Attack base class's input checks (model, shapes, NaN, bounds, labels, targets)."""
    checker = Attack(targeted=attack.targeted)
    checker.name = attack.name
    return checker._check(model, x, y, bounds, targets)
