"""Input-preprocessing defenses and BPDA, the attack that sees through them.

Preprocessing that is not usefully differentiable ("shattered gradients") makes a gradient attack
look like it fails: quantisation and JPEG-like rounding go through torch.round, whose gradient is
zero almost everywhere. Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner
2018) keeps the forward pass and replaces the backward pass of the preprocessing by the identity
(straight-through) or by the gradient of a differentiable approximation.

Preprocessors (callables on raw inputs, shape kept):
- Quantize(levels, bounds): round every coordinate to one of `levels` evenly spaced values.
- JPEGLike(quality, bounds): per channel, 8x8 block DCT-II, divide by the JPEG luminance table
  scaled for `quality`, round, multiply back, inverse DCT, round to 256 grey levels. No colour
  transform or chroma subsampling: JPEG's lossy core, not the file format.
- MedianFilter(size): size x size median with reflected borders. Its autograd gradient is the true
  (sparse) gradient: it routes through the median pixel only.

Models:
- Preprocessed(model, pre): the defended model, model(pre(x)), with whatever gradient autograd
  gives (zero for the rounding ones) - what a naive attack sees.
- BPDA(model, pre, approximation=None): the same forward values bit for bit; backward through
  `approximation` (identity when None, or e.g. `pre.smooth`). `Preprocessed.bpda()` builds it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AdvlabError
from ..threat import Bounds

Preprocessor = Callable[[torch.Tensor], torch.Tensor]

# JPEG's standard luminance quantisation table (ITU-T T.81, Annex K.1).
JPEG_LUMINANCE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)


def _range(bounds: Bounds, who: str) -> tuple[float, float]:
    if bounds is None:
        raise AdvlabError(f"{who} needs the input bounds (low, high), e.g. bounds=dataset.bounds; "
                          "it cannot round unbounded features")
    try:
        lo, hi = float(bounds[0]), float(bounds[1])
    except (TypeError, ValueError, RuntimeError) as e:
        raise AdvlabError(f"{who} needs scalar bounds (low, high), got {bounds!r}") from e
    if not hi > lo:
        raise AdvlabError(f"{who} needs bounds with low < high, got {bounds}")
    return lo, hi


def cubic_round(z: torch.Tensor) -> torch.Tensor:
    """round(z) + (z - round(z))^3: equal to round at integers, differentiable with a useful slope
    (Shin & Song 2017's JPEG approximation)."""
    r = torch.round(z).detach()
    return r + (z - r) ** 3


class Quantize(nn.Module):
    """lo + round((x - lo) / step) * step with step = (hi - lo) / (levels - 1)."""

    def __init__(self, levels: int = 2, *, bounds: Bounds):
        super().__init__()
        if levels < 2:
            raise AdvlabError(f"quantisation needs levels >= 2, got {levels}")
        self.levels = levels
        self.lo, self.hi = _range(bounds, "Quantize")

    def _quantize(self, x: torch.Tensor, rounding) -> torch.Tensor:
        step = (self.hi - self.lo) / (self.levels - 1)
        z = (x.clamp(self.lo, self.hi) - self.lo) / step
        return self.lo + rounding(z) * step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantize(x, torch.round)

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable approximation for BPDA (cubic rounding)."""
        return self._quantize(x, cubic_round)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, bounds=({self.lo}, {self.hi})"


def dct_matrix(n: int = 8) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n, n): coefficients of a block B are D @ B @ D.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


def jpeg_table(quality: int) -> torch.Tensor:
    """The luminance table scaled for quality 1..100 with the IJG formula (8, 8)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return torch.clamp(torch.floor((JPEG_LUMINANCE * scale + 50) / 100), min=1)


class JPEGLike(nn.Module):
    """JPEG's lossy step on every channel: 8x8 block DCT, quantise with the quality-scaled table,
    inverse DCT, round to 8-bit grey levels. Images whose sides are not multiples of 8 are padded
    by edge replication and cropped back."""

    def __init__(self, quality: int = 50, *, bounds: Bounds):
        super().__init__()
        if not 1 <= quality <= 100:
            raise AdvlabError(f"JPEG quality must be in 1..100, got {quality}")
        self.quality = quality
        self.lo, self.hi = _range(bounds, "JPEGLike")
        self.register_buffer("dct", dct_matrix(8), persistent=False)
        self.register_buffer("table", jpeg_table(quality), persistent=False)

    def _jpeg(self, x: torch.Tensor, rounding) -> torch.Tensor:
        if x.ndim != 4:
            raise AdvlabError(f"JPEGLike needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        z = (x.clamp(self.lo, self.hi) - self.lo) * (255 / (self.hi - self.lo)) - 128  # JPEG's level shift
        ph, pw = -h % 8, -w % 8
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        hb, wb = z.shape[-2] // 8, z.shape[-1] // 8
        blocks = z.view(n, c, hb, 8, wb, 8).transpose(3, 4)             # (N, C, Hb, Wb, 8, 8)
        coef = self.dct @ blocks @ self.dct.T
        coef = rounding(coef / self.table) * self.table
        blocks = self.dct.T @ coef @ self.dct
        z = blocks.transpose(3, 4).reshape(n, c, hb * 8, wb * 8)[..., :h, :w]
        pixels = rounding((z + 128).clamp(0, 255))                         # 8-bit output
        return self.lo + pixels * ((self.hi - self.lo) / 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._jpeg(x, torch.round)

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable approximation for BPDA (cubic rounding, Shin & Song 2017)."""
        return self._jpeg(x, cubic_round)

    def extra_repr(self) -> str:
        return f"quality={self.quality}, bounds=({self.lo}, {self.hi})"


class MedianFilter(nn.Module):
    """size x size median filter per channel, reflected borders (N, C, H, W) -> same shape."""

    def __init__(self, size: int = 3):
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise AdvlabError(f"the median filter size must be odd and >= 1, got {size}")
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise AdvlabError(f"MedianFilter needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
        p = self.size // 2
        padded = F.pad(x, (p, p, p, p), mode="reflect") if p else x
        windows = padded.unfold(2, self.size, 1).unfold(3, self.size, 1)  # (N, C, H, W, k, k)
        return windows.flatten(-2).median(dim=-1).values

    def extra_repr(self) -> str:
        return f"size={self.size}"


class Preprocessed(nn.Module):
    """The defended model: model(preprocess(x)), gradients as autograd computes them."""

    def __init__(self, model: nn.Module, preprocess: Preprocessor):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.train(model.training)  # a wrapper of an eval-mode model starts in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(x))

    def bpda(self, approximation: Optional[Preprocessor] = None) -> "BPDA":
        """The BPDA twin sharing this model and preprocessing."""
        return BPDA(self.model, self.preprocess, approximation)


class BPDA(nn.Module):
    """model(preprocess(x)) forward; backward through `approximation` (None: the identity)."""

    def __init__(self, model: nn.Module, preprocess: Preprocessor, approximation: Optional[Preprocessor] = None):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.approximation = approximation
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_BackwardApproximation.apply(x, self.preprocess, self.approximation))


class _BackwardApproximation(torch.autograd.Function):
    """y = preprocess(x) exactly; dL/dx = J_approx(x)^T dL/dy (identity when approx is None)."""

    @staticmethod
    def forward(ctx, x, preprocess, approximation):
        ctx.approximation = approximation
        if approximation is not None:
            ctx.save_for_backward(x)
        return preprocess(x)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.approximation is None:
            return grad_out, None, None
        x, = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(ctx.approximation(xd), xd, grad_out)
        return grad, None, None


PREPROCESSORS: dict[str, Callable[..., nn.Module]] = {
    "quantize": Quantize,
    "jpeg": JPEGLike,
    "median": MedianFilter,
}


def build_preprocessor(name: str, bounds: Bounds = None, **options: Any) -> nn.Module:
    """build_preprocessor("quantize", bounds=(0, 1), levels=4): a preprocessor by name."""
    if name not in PREPROCESSORS:
        raise AdvlabError(f"unknown preprocessing {name!r}; choose one of {', '.join(PREPROCESSORS)}")
    try:
        if name == "median":
            return MedianFilter(**options)
        return PREPROCESSORS[name](**options, bounds=bounds)
    except TypeError as e:
        raise AdvlabError(f"bad options for preprocessing {name!r}: {e}") from e
