"""Random input transformations: what EOT averages over and what randomised defenses apply.

A transform is called as `transform(x, generator) -> x'` and draws every random choice from the
generator it is given, one independent draw per example. Each transform here splits that call into
`sample(x, generator) -> params` and `apply(x, params) -> x'`, so a test (or an attack) can replay
exactly the transformations a wrapper used. `apply` is differentiable in x.

- GaussianNoise / UniformNoise: additive noise, optionally clipped to the bounds.
- RandomResizePad (Xie et al. 2018, "Mitigating adversarial effects through randomization"):
  shrink the image to a random integer size, then pad it at a random integer offset back to the
  original size, so the model's input shape is unchanged.
- RandomAffine: a small random rotation (degrees) and shift (pixels).

`affine_transform` (rotation then translation, bilinear, `fill` outside the image) is also what the
spatial attack searches over. Spatial transforms need image batches (N, C, H, W).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Union

import torch
from torch.nn import functional as F

from ..errors import AdvlabError
from ..threat import Bounds, clip_to_bounds

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n,) uniform draws in [low, high] on like's device."""
    u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def _check_images(x: torch.Tensor, who: str) -> None:
    if x.ndim != 4:
        raise AdvlabError(f"{who} needs image batches (N, C, H, W); got shape {tuple(x.shape)}. "
                          "Reshape flat features to images first, or use a noise transform")


class RandomTransform:
    """Base: __call__(x, generator) = apply(x, sample(x, generator))."""

    def sample(self, x: torch.Tensor, generator: torch.Generator) -> Any:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: Any) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(x, generator))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


class GaussianNoise(RandomTransform):
    """x + sigma * N(0, I), clipped to `bounds` when given."""

    def __init__(self, sigma: float, bounds: Bounds = None):
        if sigma < 0:
            raise AdvlabError(f"noise sigma must be >= 0, got {sigma}")
        self.sigma, self.bounds = sigma, bounds

    def sample(self, x, generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * self.sigma

    def apply(self, x, noise):
        return clip_to_bounds(x + noise, self.bounds)


class UniformNoise(RandomTransform):
    """x + U(-width, width) per coordinate, clipped to `bounds` when given."""

    def __init__(self, width: float, bounds: Bounds = None):
        if width < 0:
            raise AdvlabError(f"noise width must be >= 0, got {width}")
        self.width, self.bounds = width, bounds

    def sample(self, x, generator):
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.width

    def apply(self, x, noise):
        return clip_to_bounds(x + noise, self.bounds)


class RandomResizePad(RandomTransform):
    """Resize (N, C, H, W) images to a random size s x s' with s in [ceil(min_scale*H), H], then pad
    them with `fill` at a random integer offset back to H x W (one draw per example).

    Xie et al. enlarge to a random size and pad to a larger canvas; models here have a fixed input
    shape, so the image shrinks inside its own canvas instead. Resizing is bilinear (what
    F.interpolate(mode="bilinear", align_corners=False) does), done for the whole batch at once with
    one affine grid.
    """

    def __init__(self, min_scale: float = 0.75, fill: float = 0.0):
        if not 0 < min_scale <= 1:
            raise AdvlabError(f"min_scale must be in (0, 1], got {min_scale}")
        self.min_scale, self.fill = min_scale, fill

    def sample(self, x, generator):
        _check_images(x, "RandomResizePad")
        n, (h, w) = len(x), x.shape[-2:]
        out = []
        for full in (h, w):
            lo = max(1, math.ceil(self.min_scale * full - 1e-9))
            size = torch.randint(lo, full + 1, (n,), generator=generator, device=x.device)
            # offset uniform in 0..full-size: floor(u * (full - size + 1))
            u = torch.rand(n, generator=generator, device=x.device)
            offset = torch.floor(u * (full - size + 1)).long().clamp(max=full - size)
            out += [size, offset]
        return tuple(out)  # (size_h, off_h, size_w, off_w), each (N,)

    def apply(self, x, params):
        size_h, off_h, size_w, off_w = params
        h, w = x.shape[-2:]
        # Canvas pixel j = off + i shows input coordinate (i + 0.5) * full / size - 0.5; in
        # affine_grid's normalised coordinates (align_corners=False) that is u_in = a u_out + t with
        # a = full / size and t = a - 1 - 2 off / size.
        sx, sy = size_w.to(x.dtype), size_h.to(x.dtype)
        ax, ay = w / sx, h / sy
        tx, ty = ax - 1 - 2 * off_w.to(x.dtype) / sx, ay - 1 - 2 * off_h.to(x.dtype) / sy
        zero = torch.zeros_like(ax)
        theta = torch.stack([torch.stack([ax, zero, tx], 1), torch.stack([zero, ay, ty], 1)], 1)  # (N, 2, 3)
        full = ((size_h == h) & (size_w == w)).view(-1, 1, 1, 1)
        return torch.where(full, x, _sample(x, theta, self.fill))  # full size: exactly the input


class RandomAffine(RandomTransform):
    """Rotation by U(-max_rotation, max_rotation) degrees and shifts by U(-max_shift, max_shift)
    pixels in x and y; `integer_shifts` rounds the shifts to whole pixels."""

    def __init__(self, max_rotation: float = 15.0, max_shift: float = 2.0, integer_shifts: bool = False,
                 fill: float = 0.0):
        if max_rotation < 0 or max_shift < 0:
            raise AdvlabError(f"max_rotation and max_shift must be >= 0, got {max_rotation}, {max_shift}")
        self.max_rotation, self.max_shift = max_rotation, max_shift
        self.integer_shifts, self.fill = integer_shifts, fill

    def sample(self, x, generator):
        _check_images(x, "RandomAffine")
        n = len(x)
        angle = _uniform(n, -self.max_rotation, self.max_rotation, x, generator)
        shift = torch.stack([_uniform(n, -self.max_shift, self.max_shift, x, generator) for _ in range(2)], 1)
        if self.integer_shifts:
            shift = shift.round()
        return angle, shift  # (N,), (N, 2) as (dx, dy)

    def apply(self, x, params):
        angle, shift = params
        return affine_transform(x, angle, shift, self.fill)


class Compose:
    """Apply transforms in order, each drawing from the same generator."""

    def __init__(self, *transforms: Transform):
        self.transforms = transforms

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.transforms))})"


def affine_transform(x: torch.Tensor, angle: Union[float, torch.Tensor], shift: Union[tuple, torch.Tensor],
                     fill: float = 0.0) -> torch.Tensor:
    """Rotate (N, C, H, W) images by `angle` degrees counter-clockwise (as displayed, row 0 at the
    top) about their centre, then move the content by shift = (dx, dy) pixels (right, down).

    angle: float or (N,); shift: (dx, dy) or (N, 2). Bilinear interpolation; `fill` outside the
    image. Examples with angle 0 and whole-pixel shifts are moved exactly (no interpolation), so
    the identity is exact.
    """
    _check_images(x, "affine_transform")
    n, (h, w) = len(x), x.shape[-2:]
    angle = torch.as_tensor(angle, dtype=x.dtype, device=x.device).expand(n)
    shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device).expand(n, 2)
    rad = angle * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Pixel offsets from the centre q = S u with S = diag(w/2, h/2) (u: normalised coordinates).
    # The output at q shows the input at R^-1 (q - shift), R = visual counter-clockwise rotation
    # in y-down coordinates: R = [[c, s], [-s, c]], R^-1 = [[c, -s], [s, c]].
    # theta = [S^-1 R^-1 S | -S^-1 R^-1 shift].
    hx, hy = w / 2, h / 2
    dx, dy = shift[:, 0], shift[:, 1]
    a11, a12 = cos, -sin * hy / hx
    a21, a22 = sin * hx / hy, cos
    t1 = -(cos * dx - sin * dy) / hx
    t2 = -(sin * dx + cos * dy) / hy
    theta = torch.stack([torch.stack([a11, a12, t1], 1), torch.stack([a21, a22, t2], 1)], 1)  # (N, 2, 3)
    out = _sample(x, theta, fill)
    exact = (angle == 0) & (shift == shift.round()).all(1)
    if exact.any():
        idx = exact.nonzero().flatten()
        out = out.index_put((idx,), integer_shift(x[idx], shift[idx].long(), fill))
    return out


def integer_shift(x: torch.Tensor, shift: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Move (N, C, H, W) images by whole pixels shift (N, 2) = (dx, dy), `fill` where nothing lands."""
    n, (h, w) = len(x), x.shape[-2:]
    rows = torch.arange(h, device=x.device)[None, :] - shift[:, 1:2]  # (N, H) source row per output row
    cols = torch.arange(w, device=x.device)[None, :] - shift[:, 0:1]  # (N, W)
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (N, H, W)
    r = rows.clamp(0, h - 1)[:, None, :, None].expand(n, x.shape[1], h, w)
    c = cols.clamp(0, w - 1)[:, None, None, :].expand(n, x.shape[1], h, w)
    moved = x.gather(2, r).gather(3, c)
    return torch.where(valid[:, None], moved, torch.full_like(moved, fill))


def _sample(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Bilinear resampling of x on the affine grid theta (N, 2, 3), `fill` outside the image."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with zeros: shift by fill so the padding becomes fill.
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


TRANSFORMS: dict[str, Callable[..., RandomTransform]] = {
    "gaussian": GaussianNoise,
    "uniform": UniformNoise,
    "resize-pad": RandomResizePad,
    "affine": RandomAffine,
}


def build_transform(name: str, **options: Any) -> RandomTransform:
    """build_transform("resize-pad", min_scale=0.75): a transform by name (for configs and the CLI)."""
    if name not in TRANSFORMS:
        raise AdvlabError(f"unknown transform {name!r}; choose one of {', '.join(TRANSFORMS)}")
    try:
        return TRANSFORMS[name](**options)
    except TypeError as e:
        raise AdvlabError(f"bad options for transform {name!r}: {e}") from e
