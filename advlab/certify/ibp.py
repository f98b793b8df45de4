"""Interval bound propagation (Gowal et al. 2018): a proof that no point of an Linf ball changes the answer.

    from advlab.certify import certify_ibp, interval_bounds
    cert = certify_ibp(model, x, y, eps=0.1, bounds=data.bounds)   # Certificate; cert.accuracy_at(0.1)
    lower, upper = interval_bounds(model, x - 0.1, x + 0.1)         # (N, K) bounds on every logit

A box [lower, upper] goes through the network layer by layer. An affine layer (Linear, Conv2d,
BatchNorm in eval mode, the normalisation inside advlab's models) maps the box's centre c and
radius r to W c + b and |W| r; a monotone layer (ReLU, max and average pooling, flatten) maps the two
corners. The last Linear layer is folded into the specification: for label y the bound is on
z_y - z_j = (w_y - w_j) h + (b_y - b_j) directly, which is far tighter than l_y - u_j.

A point is certified when every margin's lower bound is positive. The input box is the Linf ball
intersected with the data's bounds (attacks stay inside both, so that is the threat model). The
certificate is computed in float64; a point also needs its margin to clear 1e-4 times its largest
clean logit, so float32 rounding of the deployed model cannot turn a certified point around.

Supported: advlab's logistic, softmax, mlp, maxout, cnn-small, cnn-madry, resnet18, preact-resnet18 and
wrn, Normalized, nn.Sequential of Linear, Conv2d, ReLU, LeakyReLU, Tanh, Sigmoid, Flatten, Unflatten,
MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d, Dropout, Identity. Anything else (a module
whose forward we cannot see) is an AdvlabError naming the first such layer: a wrong certificate is
worse than none. Layers are matched by exact type, so a subclass with its own forward is refused too.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AdvlabError
from ..models.cnn import MadryCNN, SmallCNN
from ..models.linear import LogisticRegression, SoftmaxRegression
from ..models.mlp import MLP, Maxout, MaxoutNet
from ..models.resnet import BasicBlock, PreActBlock, PreActResNet18, ResNet18, WideResNet
from ..models.shapes import as_image
from ..models.wrappers import Normalized
from ..predict import model_device
from ..progress import progress as progress_bar
from .result import Certificate

MARGIN_TOLERANCE = 1e-4  # of max(1, largest |clean logit|): float32 rounding of the deployed model


class Box(NamedTuple):
    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        return (self.upper + self.lower) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2


def _affine(box: Box, center: Callable[[torch.Tensor], torch.Tensor],
            radius: Callable[[torch.Tensor], torch.Tensor]) -> Box:
    c, r = center(box.center), radius(box.radius)
    return Box(c - r, c + r)


def _monotone(box: Box, f: Callable[[torch.Tensor], torch.Tensor]) -> Box:
    return Box(f(box.lower), f(box.upper))


# -- operations: one per layer, each maps a Box to a Box ------------------------------------------
class Op:
    path = ""     # where it sits in the model (net.2, stages.0.1), for error messages
    layer = ""    # the module type it came from (torch.nn.modules.activation.Tanh), for error messages

    def __call__(self, box: Box) -> Box:
        raise NotImplementedError


class LinearOp(Op):
    """z = W h + b on flat features (the last one is folded into the margin specification)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, box: Box) -> Box:
        return _affine(box, lambda c: F.linear(c, self.weight, self.bias), lambda r: F.linear(r, self.weight.abs()))


class ConvOp(Op):
    def __init__(self, conv: nn.Conv2d):
        self.conv = conv

    def __call__(self, box: Box) -> Box:
        m = self.conv
        kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
        return _affine(box, lambda c: F.conv2d(c, m.weight, m.bias, **kw),
                       lambda r: F.conv2d(r, m.weight.abs(), None, **kw))


class ChannelAffineOp(Op):
    """x * scale + shift per channel (axis 1): BatchNorm in eval mode, Normalized's (x - mean) / std."""

    def __init__(self, scale_shift: Callable[[Box], tuple[torch.Tensor, torch.Tensor]]):
        self.scale_shift = scale_shift

    def __call__(self, box: Box) -> Box:
        scale, shift = self.scale_shift(box)
        shape = (1, -1) + (1,) * (box.lower.ndim - 2)
        scale, shift = scale.reshape(shape), shift.reshape(shape)
        return _affine(box, lambda c: c * scale + shift, lambda r: r * scale.abs())


class MonotoneOp(Op):
    """A function that is non-decreasing in every input: maps the lower and upper corners.

    `kind` says what it is for the bounds that need more than monotonicity (CROWN, exact verification):
    "relu"; "reshape" (flatten, unflatten: a permutation of the entries); "linear" (another fixed linear
    map: average pooling); "maxpool" (`module` holds the MaxPool2d); "other" (tanh, sigmoid, leaky ReLU,
    ...: only IBP goes through)."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], kind: str = "other", module: nn.Module | None = None):
        self.f, self.kind, self.module = f, kind, module

    def __call__(self, box: Box) -> Box:
        return _monotone(box, self.f)


class DropoutOp(Op):
    """Identity in eval mode; in train mode (IBP training) one mask scales both corners alike."""

    def __init__(self, p: float, training: Callable[[], bool]):
        self.p, self.training = p, training

    def __call__(self, box: Box) -> Box:
        if not self.training() or self.p == 0:
            return box
        mask = F.dropout(torch.ones_like(box.lower), self.p, training=True)  # >= 0: order kept
        return Box(box.lower * mask, box.upper * mask)


class MaxoutOp(Op):
    def __init__(self, linear: nn.Linear, units: int, pieces: int):
        self.linear, self.units, self.pieces = LinearOp(linear.weight, linear.bias), units, pieces

    def __call__(self, box: Box) -> Box:
        z = self.linear(box)
        return _monotone(z, lambda t: t.view(t.shape[0], self.units, self.pieces).amax(dim=2))


class SequenceOp(Op):
    def __init__(self, ops: list[Op]):
        self.ops = ops

    def __call__(self, box: Box) -> Box:
        for op in self.ops:
            box = op(box)
        return box


class ResidualOp(Op):
    """post(main(x) + shortcut(x)) (BasicBlock); for a pre-activation block, `pre` runs first and the
    shortcut reads either x or pre(x)."""

    def __init__(self, main: list[Op], shortcut: list[Op], post: list[Op], pre: list[Op] | None = None,
                 shortcut_after_pre: bool = False):
        self.main, self.shortcut, self.post = SequenceOp(main), SequenceOp(shortcut), SequenceOp(post)
        self.pre = SequenceOp(pre or [])
        self.shortcut_after_pre = shortcut_after_pre

    def __call__(self, box: Box) -> Box:
        h = self.pre(box)
        a = self.main(h)
        b = self.shortcut(h if self.shortcut_after_pre else box)
        return self.post(Box(a.lower + b.lower, a.upper + b.upper))


# -- turning a module into operations -------------------------------------------------------------
SUPPORTED = ("advlab's logistic, softmax, mlp, maxout, cnn-small, cnn-madry, resnet18, preact-resnet18 and wrn; "
             "Normalized; nn.Sequential of Linear, Conv2d, ReLU, LeakyReLU, Tanh, Sigmoid, Flatten, Unflatten, "
             "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d, Dropout, Identity")


def _unsupported(module: nn.Module, path: str, why: str = "") -> AdvlabError:
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    return AdvlabError(f"interval bound propagation cannot go through layer {path or '(the model itself)'} "
                       f"({kind}){': ' + why if why else ''}; it handles {SUPPORTED}. For any other model use "
                       "`method='smoothing'` (randomized smoothing needs only forward passes)")


def _batchnorm(m: nn.modules.batchnorm._BatchNorm) -> ChannelAffineOp:
    def scale_shift(box: Box) -> tuple[torch.Tensor, torch.Tensor]:
        if m.training or not m.track_running_stats or m.running_mean is None:
            # Batch statistics (IBP training): those of the box centres, used as a fixed affine map.
            dims = [0, *range(2, box.lower.ndim)]
            c = box.center
            mean, var = c.mean(dims), c.var(dims, unbiased=False)
        else:
            mean, var = m.running_mean, m.running_var
        scale = torch.rsqrt(var.to(box.lower.dtype) + m.eps)
        if m.weight is not None:
            scale = scale * m.weight
        shift = -mean * scale + (m.bias if m.bias is not None else 0)
        return scale, shift
    return ChannelAffineOp(scale_shift)


def _leaf(m: nn.Module, path: str) -> list[Op]:
    t = type(m)
    if t is nn.Linear:
        return [LinearOp(m.weight, m.bias)]
    if t is nn.Conv2d:
        if m.padding_mode != "zeros":
            raise _unsupported(m, path, f"padding_mode={m.padding_mode!r} (only zero padding)")
        return [ConvOp(m)]
    if t is nn.ReLU:
        return [MonotoneOp(m, "relu")]
    if t in (nn.Tanh, nn.Sigmoid):
        return [MonotoneOp(m)]
    if t is nn.LeakyReLU:
        if m.negative_slope < 0:
            raise _unsupported(m, path, "a negative slope is not monotone")
        return [MonotoneOp(m)]
    if t in (nn.Flatten, nn.Unflatten):
        return [MonotoneOp(m, "reshape")]
    if t in (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d):
        return [MonotoneOp(m, "linear")]
    if t in (nn.MaxPool2d, nn.MaxPool1d):
        if m.return_indices:
            raise _unsupported(m, path, "return_indices=True")
        return [MonotoneOp(m, "maxpool" if t is nn.MaxPool2d else "other", m)]
    if t in (nn.BatchNorm1d, nn.BatchNorm2d):
        return [_batchnorm(m)]
    if t is nn.Dropout:
        return [DropoutOp(m.p, lambda m=m: m.training)]
    if t is nn.Identity:
        return []
    raise _unsupported(m, path)


def _reshape_to_image(input_shape: tuple[int, ...]) -> Op:
    return MonotoneOp(lambda t: as_image(t, input_shape), "reshape")


def compile_ops(module: nn.Module, path: str = "") -> list[Op]:
    """The operations that bound `module`, in forward order; an AdvlabError at the first layer we cannot."""
    def sub(name: str) -> str:
        return f"{path}.{name}" if path else name

    if not path:
        for name, m in module.named_modules():
            if m._forward_hooks or m._forward_pre_hooks:
                raise _unsupported(m, name, "it has forward hooks, which may change what it computes")
    compile_known = _CONTAINERS.get(type(module))
    if compile_known is not None:
        ops = compile_known(module, sub)
    else:
        if list(module.children()):
            raise _unsupported(module, path, "a container whose forward advlab cannot see")
        ops = _leaf(module, path)
    for op in ops:
        if not op.path:
            op.path = path
        if not op.layer:
            op.layer = f"{type(module).__module__}.{type(module).__qualname__}"
    return ops


# The modules advlab can see inside, by exact type: (module, sub) -> ops, where sub(name) is a child's path.
def _sequential(module: nn.Sequential, sub: Callable[[str], str]) -> list[Op]:
    ops: list[Op] = []
    for name, child in module.named_children():
        ops += compile_ops(child, sub(name))
    return ops


def _normalized(m: Normalized, sub: Callable[[str], str]) -> list[Op]:
    ops = [ChannelAffineOp(lambda box: (1 / m.std.to(box.lower.dtype), -m.mean.to(box.lower.dtype) /
                                        m.std.to(box.lower.dtype)))]
    return ops + compile_ops(m.net, sub("net"))


def _cnn(module: SmallCNN | MadryCNN, sub: Callable[[str], str]) -> list[Op]:
    return [_reshape_to_image(module.input_shape), *compile_ops(module.features, sub("features")),
            *compile_ops(module.classifier, sub("classifier"))]


def _mlp(module: MLP | MaxoutNet, sub: Callable[[str], str]) -> list[Op]:
    return compile_ops(module.net, sub("net"))


def _maxout(module: Maxout, sub: Callable[[str], str]) -> list[Op]:
    return [MaxoutOp(module.linear, module.units, module.pieces)]


def _softmax_regression(module: SoftmaxRegression, sub: Callable[[str], str]) -> list[Op]:
    return [MonotoneOp(lambda x: x.flatten(1), "reshape"), LinearOp(module.linear.weight, module.linear.bias)]


def _logistic_regression(module: LogisticRegression, sub: Callable[[str], str]) -> list[Op]:
    w, b = module.linear.weight, module.linear.bias  # logits [0, w.x + b]
    return [MonotoneOp(lambda x: x.flatten(1), "reshape"),
            LinearOp(torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros_like(b), b]))]


def _basic_block(m: BasicBlock, sub: Callable[[str], str]) -> list[Op]:
    main = [ConvOp(m.conv1), *_leaf(m.bn1, sub("bn1")), MonotoneOp(F.relu, "relu"), ConvOp(m.conv2),
            *_leaf(m.bn2, sub("bn2"))]
    return [ResidualOp(main, compile_ops(m.shortcut, sub("shortcut")), [MonotoneOp(F.relu, "relu")])]


def _preact_block(m: PreActBlock, sub: Callable[[str], str]) -> list[Op]:
    pre = [*_leaf(m.bn1, sub("bn1")), MonotoneOp(F.relu, "relu")]
    main = [ConvOp(m.conv1), *_leaf(m.bn2, sub("bn2")), MonotoneOp(F.relu, "relu"),
            DropoutOp(m.dropout, lambda m=m: m.training), ConvOp(m.conv2)]
    short = [] if m.shortcut is None else [ConvOp(m.shortcut)]
    return [ResidualOp(main, short, [], pre=pre, shortcut_after_pre=m.shortcut is not None)]


def _resnet(module: ResNet18 | PreActResNet18 | WideResNet, sub: Callable[[str], str]) -> list[Op]:
    return [_reshape_to_image(module.input_shape), *compile_ops(module.stem, sub("stem")),
            *compile_ops(module.stages, sub("stages")), *compile_ops(module.head, sub("head")),
            MonotoneOp(lambda h: F.adaptive_avg_pool2d(h, 1).flatten(1), "linear"),
            LinearOp(module.linear.weight, module.linear.bias)]


_CONTAINERS: dict[type, Callable[[Any, Callable[[str], str]], list[Op]]] = {
    nn.Sequential: _sequential, Normalized: _normalized, SmallCNN: _cnn, MadryCNN: _cnn, MLP: _mlp, MaxoutNet: _mlp,
    Maxout: _maxout, SoftmaxRegression: _softmax_regression, LogisticRegression: _logistic_regression,
    BasicBlock: _basic_block, PreActBlock: _preact_block, ResNet18: _resnet, PreActResNet18: _resnet,
    WideResNet: _resnet,
}


def check_ibp_supported(model: nn.Module) -> None:
    """An AdvlabError naming the first layer IBP cannot bound; nothing when it can bound them all."""
    compile_ops(model)


def input_box(x: torch.Tensor, eps: float | torch.Tensor, bounds: Any = None) -> Box:
    """The Linf ball around x (eps a number or one per example), intersected with the data's bounds."""
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if e.ndim == 1:
        e = e.view(-1, *[1] * (x.ndim - 1))
    lower, upper = x - e, x + e
    if bounds is not None:
        lo, hi = bounds
        lower, upper = lower.clamp_min(lo), upper.clamp_max(hi)
    return Box(lower, upper)


def interval_bounds(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds (N, K) on every logit of `model` over the box [lower, upper] (in the model's dtype and mode)."""
    if (lower > upper).any():
        raise AdvlabError("interval_bounds: lower must be <= upper everywhere")
    box = Box(lower, upper)
    for op in compile_ops(model):
        box = op(box)
    return box.lower, box.upper


def margin_lower_bounds(model: nn.Module, box: Box, y: torch.Tensor, ops: list[Op] | None = None) -> torch.Tensor:
    """(N, K): a lower bound on z_y - z_j over the box for every class j (+inf at j = y).

    When the network ends in a Linear layer it is folded into the specification (Gowal et al.'s
    elision): the bound is on (w_y - w_j) h + b_y - b_j over the box of h."""
    ops = compile_ops(model) if ops is None else ops
    last = ops[-1] if ops and isinstance(ops[-1], LinearOp) else None
    for op in (ops[:-1] if last is not None else ops):
        box = op(box)
    if last is not None and box.lower.ndim != 2:  # a Linear on (N, ..., D): not logits of flat features
        box, last = last(box), None
    if last is not None:
        w, b = last.weight, last.bias                         # (K, D), (K,)
        c, r = box.center.flatten(1), box.radius.flatten(1)   # (N, D)
        diff = w[y].unsqueeze(1) - w.unsqueeze(0)             # (N, K, D)
        lower = torch.einsum("nkd,nd->nk", diff, c) - torch.einsum("nkd,nd->nk", diff.abs(), r)
        if b is not None:
            lower = lower + (b[y].unsqueeze(1) - b.unsqueeze(0))
    else:
        lo, hi = box.lower.flatten(1), box.upper.flatten(1)   # (N, K)
        lower = lo.gather(1, y.view(-1, 1)) - hi
    return lower.masked_fill(F.one_hot(y, lower.shape[1]).bool(), float("inf"))


def worst_case_logits(model: nn.Module, box: Box, y: torch.Tensor) -> torch.Tensor:
    """Logits whose cross-entropy is the IBP training loss: -margin lower bounds (0 at the label)."""
    lower = margin_lower_bounds(model, box, y)
    return -lower.masked_fill(F.one_hot(y, lower.shape[1]).bool(), 0.0)


@torch.no_grad()
def certify_ibp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                bounds: Any = None, batch_size: int = 256, progress: bool = True,
                indices: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> Certificate:
    """Certify every point of x against Linf perturbations of size eps (a number or one per point).

    Returns a Certificate whose radius is eps for a certified point and 0 otherwise; its prediction is
    the model's clean prediction. Bounds are computed in `dtype` (float64) on a copy of the model."""
    eps_t = torch.as_tensor(eps, dtype=torch.float64)
    if not torch.isfinite(eps_t).all() or (eps_t < 0).any():
        raise AdvlabError(f"IBP needs a finite epsilon >= 0, got {eps}")
    if batch_size < 1:
        raise AdvlabError(f"batch_size must be a positive integer, got {batch_size}")
    started = time.perf_counter()
    check_ibp_supported(model)
    device = model_device(model)
    net = copy.deepcopy(model).to(dtype).eval()
    ops = compile_ops(net)
    y = y.long().cpu()
    preds, certified, margins = [], [], []
    starts = range(0, len(y), batch_size)
    for i in progress_bar(starts, "IBP", progress, unit="batch"):
        xb = x[i:i + batch_size].to(device=device, dtype=dtype)
        yb = y[i:i + batch_size].to(device)
        e = eps_t[i:i + batch_size] if eps_t.ndim else eps_t
        clean = net(xb)                                                    # (B, K)
        lower = margin_lower_bounds(net, input_box(xb, e.to(device), bounds), yb, ops).amin(1)  # (B,)
        tol = MARGIN_TOLERANCE * clean.abs().amax(1).clamp_min(1.0)
        preds.append(clean.argmax(1).cpu())
        certified.append((lower > tol).cpu())
        margins.append(lower.float().cpu())
    pred, ok = torch.cat(preds), torch.cat(certified)
    ok &= pred == y  # a positive margin implies it; kept explicit
    eps_points = eps_t.expand(len(y)) if eps_t.ndim == 0 else eps_t
    radius = torch.where(ok, eps_points, torch.zeros_like(eps_points))
    params = {"eps": float(eps_t) if eps_t.ndim == 0 else eps_t.tolist(), "norm": "linf"}
    return Certificate("ibp", params, torch.arange(len(y)) if indices is None else indices.cpu(), y, pred,
                       radius, time.perf_counter() - started, extra={"margin_lower_bound": torch.cat(margins)})
