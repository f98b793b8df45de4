"""CROWN and alpha-CROWN: linear bounds propagated backwards through the network.

    from advlab.certify import certify_crown, crown_bounds, crown_margin_bounds
    cert = certify_crown(model, x, y, eps=0.05, bounds=data.bounds)                   # Certificate, Linf
    cert = certify_crown(model, x, y, eps=0.5, norm="l2", method="alpha-crown")      # L2, optimised slopes
    lower, upper = crown_bounds(model, x, eps=0.05, bounds=data.bounds)             # (N, K) on every logit

CROWN (Zhang et al. 2018) bounds a linear function of the network's output, lam . f(x), from below
over the input set by walking the network backwards: an affine layer maps lam to W^T lam (plus lam . b);
a ReLU whose input may take both signs is replaced by a line below it (slope alpha in [0, 1]) where lam
is positive and by the chord above it where lam is negative, so the bound stays a bound; at the input
the linear function is minimised over the set in closed form. The specification is the margin
z_y - z_j, so the last Linear layer is folded in exactly (lam = e_y - e_j).

- **Intermediate bounds** (the pre-activation bounds each ReLU's relaxation needs) are CROWN's own:
  every ReLU input whose IBP bounds straddle 0 (and every input of a max-pool that can be positive)
  is bounded by a backward pass from that neuron, and the result is intersected with IBP's. With
  `intermediate="ibp"` they are IBP's only (faster, looser).
- **alpha-CROWN** (Xu et al. 2021, `method="alpha-crown"`): the lower slopes are free parameters, one
  per neuron and per bounded quantity, optimised by projected gradient ascent on the bounds (Adam,
  `steps`, clamped to [0, 1] after each step). Every slope in [0, 1] gives a sound bound, so every
  iterate is a certificate; the best bound per margin over all iterates is kept.
- **Max-pooling** (no padding, no dilation): below by the input with the largest lower bound, above by
  m + sum_i chord(relu(x_i - m)) with m the largest lower bound, or by the largest upper bound when
  that is smaller at the box's centre. Both are sound for every input of the window.
- **The input set** is the Linf ball intersected with the data's bounds (a box: closed form), or the
  L2 ball intersected with them: min a . x over it is bounded by the Lagrangian dual
  max_mu>=0 min_{x in box} a . x + mu/2 (|x - x0|^2 - eps^2), whose inner minimum is a clamp per
  coordinate; any mu gives a lower bound and a golden-section search over log mu finds the best.
- The final margin bound is the larger of CROWN's and IBP's (both are sound), so CROWN is never looser
  than IBP. Computed in float64 on an eval-mode copy, with IBP's margin tolerance for certification.

Supported: what IBP supports except Tanh, Sigmoid, LeakyReLU, MaxPool1d and maxout (refused by exact
type, naming the layer); max-pooling with padding or dilation is refused too.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AdvlabError
from ..predict import model_device
from ..progress import progress as progress_bar
from .ibp import (MARGIN_TOLERANCE, Box, ChannelAffineOp, ConvOp, DropoutOp, LinearOp, MonotoneOp, Op, ResidualOp,
                  SequenceOp, compile_ops, margin_lower_bounds)
from .result import Certificate

METHODS = ("crown", "alpha-crown")
NORMS = ("linf", "l2")
ALPHA_STEPS, ALPHA_LR = 20, 0.1
_BUDGET = 2 ** 24          # float64 entries of one backward pass's largest coefficient tensor (128 MB)


# -- the network as CROWN sees it: a graph of nodes in forward order --------------------------------
@dataclass
class Node:
    kind: str                   # input | affine | linear | reshape | relu | maxpool | add
    inputs: tuple[int, ...]
    op: Any = None
    path: str = ""
    shape: tuple[int, ...] = ()  # per example, filled by a forward pass


def _refuse(op: Op, why: str = "", method: str = "CROWN") -> AdvlabError:
    return AdvlabError(f"{method} cannot go through layer {op.path or '(the model itself)'} ({op.layer or type(op).__name__})"
                       f"{': ' + why if why else ''}; it handles Linear, Conv2d, ReLU, Flatten, average and max pooling, "
                       "BatchNorm (eval mode), Normalized and the zoo's residual blocks. `method='ibp'` bounds "
                       "Tanh, Sigmoid, LeakyReLU and maxout too; `method='smoothing'` any model")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def build_graph(ops: list[Op], method: str = "CROWN") -> list[Node]:
    """The nodes of `ops` (from ibp.compile_ops) in forward order; node 0 is the input. An AdvlabError
    names the first layer CROWN cannot bound."""
    nodes = [Node("input", ())]

    def chain(seq: list[Op], src: int, where: Op | None) -> int:
        for op in seq:
            if not op.path and where is not None:
                op.path, op.layer = where.path, where.layer
            if isinstance(op, ResidualOp):
                h = chain(op.pre.ops, src, op)
                a = chain(op.main.ops, h, op)
                b = chain(op.shortcut.ops, h if op.shortcut_after_pre else src, op)
                nodes.append(Node("add", (a, b), op, op.path))
                src = chain(op.post.ops, len(nodes) - 1, op)
                continue
            if isinstance(op, SequenceOp):
                src = chain(op.ops, src, where)
                continue
            if isinstance(op, DropoutOp):
                continue  # identity in eval mode (CROWN runs on an eval-mode copy)
            if isinstance(op, (LinearOp, ConvOp, ChannelAffineOp)):
                kind = "affine"
            elif isinstance(op, MonotoneOp) and op.kind in ("relu", "linear", "reshape", "maxpool"):
                kind = op.kind
            else:
                raise _refuse(op, method=method)
            if kind == "maxpool":
                m = op.module
                if _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1) or m.ceil_mode:
                    raise _refuse(op, "max-pooling with padding, dilation or ceil_mode", method)
            nodes.append(Node(kind, (src,), op, op.path))
            src = len(nodes) - 1
        return src

    chain(ops, 0, None)
    return nodes


def _forward(nodes: list[Node], x: torch.Tensor) -> list[torch.Tensor]:
    """Every node's value at x (N, ...); fills the nodes' shapes."""
    values: list[torch.Tensor] = [x]
    for node in nodes[1:]:
        v = [values[i] for i in node.inputs]
        if node.kind == "add":
            out = v[0] + v[1]
        elif node.kind == "affine":
            out = node.op(Box(v[0], v[0])).center
        else:
            out = node.op.f(v[0])
        values.append(out)
    for node, v in zip(nodes, values):
        node.shape = tuple(v.shape[1:])
    return values


def _ibp_node(node: Node, boxes: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    if node.kind == "add":
        (l1, u1), (l2, u2) = (boxes[i] for i in node.inputs)
        return l1 + l2, u1 + u2
    out = node.op(Box(*boxes[node.inputs[0]]))
    return out.lower, out.upper


# -- the input set: Linf or L2 ball intersected with the data's bounds --------------------------------
class InputSet:
    """{x' : |x' - x| <= eps} intersected with the bounds; `box` is the smallest box holding it."""

    def __init__(self, x: torch.Tensor, eps: torch.Tensor, norm: str, bounds: Any = None):
        self.x, self.norm = x, norm                                        # (N, ...)
        self.eps = eps.to(x).reshape(-1, *[1] * (x.ndim - 1)).expand(len(x), *[1] * (x.ndim - 1))
        lower, upper = x - self.eps, x + self.eps
        self.bounded = bounds is not None
        if bounds is not None:
            lo, hi = bounds
            lower, upper = lower.clamp_min(lo), upper.clamp_max(hi)
        self.box = (lower, upper)

    def minimize(self, lam: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(S, N): a lower bound of lam . x' + bias over the set, for lam (S, N, ...) and bias (S, N)."""
        a = lam.flatten(2)
        lo, hi = (t.flatten(1).unsqueeze(0) for t in self.box)
        if self.norm == "linf":
            return (a.clamp(min=0) * lo + a.clamp(max=0) * hi).sum(-1) + bias
        x0 = self.x.flatten(1).unsqueeze(0)
        eps = self.eps.flatten(1)[:, 0].unsqueeze(0)                    # (1, N)
        if not self.bounded:
            return (a * x0).sum(-1) - eps * a.norm(dim=-1) + bias
        return _l2_box_dual(a, x0, eps, lo, hi) + bias


def _l2_box_dual(a: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, lo: torch.Tensor,
                 hi: torch.Tensor) -> torch.Tensor:
    """(S, N): a lower bound of min a . t over the L2 ball of eps around x0 intersected with the box [lo, hi],
    by weak duality: for every mu >= 0, g(mu) = min_{lo <= t <= hi} a . t + mu/2 (|t - x0|^2 - eps^2) is one,
    and its inner minimum is t = clamp(x0 - a / mu, lo, hi). The best mu is found exactly: with s = 1/mu,
    |t - x0|^2 = sum_i min(|a_i| s, c_i)^2 (c_i the room to the box's face a_i pushes towards) is a
    non-decreasing piecewise quadratic in s, so sorting its breakpoints c_i / |a_i| gives the s where it
    reaches eps^2 (none: the box lies inside the ball, mu = 0 and the box's own bound). g is then evaluated
    at that mu (with gradients); the box's bound g(0) is a floor."""
    box = (a.clamp(min=0) * lo + a.clamp(max=0) * hi).sum(-1)
    with torch.no_grad():
        size = a.abs()
        room = torch.where(a > 0, x0 - lo, hi - x0).clamp_min(0).expand_as(a)
        brk = torch.where(size > 0, room / size.clamp_min(1e-300), torch.full_like(size, math.inf))
        brk, order = brk.sort(-1)
        a2, c2 = (size ** 2).gather(-1, order), (room ** 2).gather(-1, order)
        saturated = c2.cumsum(-1) - c2                                   # sum of c_j^2 over j before k
        free = a2.flip(-1).cumsum(-1).flip(-1)                           # sum of a_j^2 over j from k on
        f = saturated + torch.where(free > 0, brk.clamp(max=1e150) ** 2 * free, torch.zeros_like(free))
        e2 = (eps ** 2).unsqueeze(-1)
        reach = f >= e2
        inside = ~reach.any(-1)                                          # the whole box is in the ball
        k = reach.to(torch.int8).argmax(-1, keepdim=True)                # first breakpoint where |t - x0| >= eps
        s_star = ((e2 - saturated.gather(-1, k)).clamp_min(0) / free.gather(-1, k).clamp_min(1e-300)).sqrt()
        mu = 1 / s_star.squeeze(-1).clamp_min(1e-150)
    t = torch.minimum(torch.maximum(x0 - a / mu.unsqueeze(-1), lo), hi)
    g = (a * t).sum(-1) + mu / 2 * (((t - x0) ** 2).sum(-1) - eps ** 2)
    return torch.where(inside, box, torch.maximum(g, box))


# -- one step backwards ---------------------------------------------------------------------------
def _sum_tail(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(-1)


def _relu_relaxation(lower: torch.Tensor, upper: torch.Tensor):
    """(unstable, active, upper slope, upper intercept) of ReLU over [lower, upper] (N, ...)."""
    unstable = (lower < 0) & (upper > 0)
    active = lower >= 0
    width = torch.where(unstable, upper - lower, torch.ones_like(upper))
    slope = torch.where(unstable, upper / width, active.to(upper.dtype))
    intercept = torch.where(unstable, -slope * lower, torch.zeros_like(upper))
    return unstable, active, slope, intercept


def default_alpha(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """CROWN's adaptive lower slope: 1 where the upper bound is larger than minus the lower, else 0."""
    return (upper > -lower).to(upper.dtype)


def _maxpool_relaxation(m: nn.MaxPool2d, lower: torch.Tensor, upper: torch.Tensor):
    """Per window (N, C, k*k, L): the lower bound's one-hot input, the upper bound's slopes and intercept
    (N, C, L); see the module docstring."""
    k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
    n, c = lower.shape[:2]
    lw = F.unfold(lower, k, stride=s).view(n, c, k[0] * k[1], -1)
    uw = F.unfold(upper, k, stride=s).view(n, c, k[0] * k[1], -1)
    m_low, arg = lw.max(2)                                               # (N, C, L)
    low_coef = F.one_hot(arg, k[0] * k[1]).movedim(-1, 2).to(lower.dtype)  # (N, C, kk, L)
    above = uw - m_low.unsqueeze(2)
    width = (uw - lw).clamp_min(1e-300)
    slope = torch.where(above <= 0, torch.zeros_like(uw),
                        torch.where(lw >= m_low.unsqueeze(2), torch.ones_like(uw), above / width))
    up_bias = m_low - (slope * lw).sum(2)
    const = uw.max(2).values
    use_const = const < m_low + (slope * (uw - lw) / 2).sum(2)
    slope = torch.where(use_const.unsqueeze(2), torch.zeros_like(slope), slope)
    up_bias = torch.where(use_const, const, up_bias)
    return low_coef, slope, up_bias, k, s


def _back(node: Node, lam: torch.Tensor, in_box, alpha: torch.Tensor | None):
    """lam . node(h) >= lam_in . h + bias for every h in the input's box: returns (lam_in, bias (S, N))."""
    op, S, N = node.op, lam.shape[0], lam.shape[1]
    in_shape = in_box[0].shape[1:]
    if node.kind == "affine":
        if isinstance(op, LinearOp):
            bias = _sum_tail(lam * op.bias) if op.bias is not None else lam.new_zeros(S, N)
            return lam @ op.weight, bias
        if isinstance(op, ConvOp):
            m = op.conv
            flat = lam.flatten(0, 1)
            lam_in = torch.nn.grad.conv2d_input((S * N, *in_shape), m.weight, flat, stride=m.stride,
                                                padding=m.padding, dilation=m.dilation, groups=m.groups)
            bias = (lam.sum((-2, -1)) * m.bias).sum(-1) if m.bias is not None else lam.new_zeros(S, N)
            return lam_in.view(S, N, *in_shape), bias
        z = in_box[0][:1]
        scale, shift = op.scale_shift(Box(z, z))
        shape = (1, 1, -1) + (1,) * (lam.ndim - 3)
        return lam * scale.reshape(shape), _sum_tail(lam * shift.reshape(shape))
    if node.kind == "reshape":
        return lam.reshape(S, N, *in_shape), lam.new_zeros(S, N)
    if node.kind == "linear":
        with torch.enable_grad():
            z = torch.zeros(S * N, *in_shape, dtype=lam.dtype, device=lam.device, requires_grad=True)
            out = op.f(z)
            (lam_in,) = torch.autograd.grad(out, z, lam.reshape(S * N, *out.shape[1:]), create_graph=lam.requires_grad)
        bias = _sum_tail(lam * op.f(torch.zeros(1, *in_shape, dtype=lam.dtype, device=lam.device)).unsqueeze(0))
        return lam_in.view(S, N, *in_shape), bias
    if node.kind == "relu":
        lower, upper = in_box
        unstable, active, up_slope, up_icpt = _relu_relaxation(lower, upper)
        a = default_alpha(lower, upper) if alpha is None else alpha.clamp(0, 1)
        low_slope = torch.where(unstable, a, active.to(lam.dtype))
        return lam * torch.where(lam > 0, low_slope, up_slope), _sum_tail(lam.clamp(max=0) * up_icpt)
    if node.kind == "maxpool":
        lower, upper = in_box
        low_coef, up_coef, up_bias, k, s = _maxpool_relaxation(op.module, lower, upper)
        c, h, w = in_shape
        lam_w = lam.flatten(3).unsqueeze(3)                                    # (S, N, C, 1, L)
        coef = lam_w * torch.where(lam_w > 0, low_coef, up_coef)               # (S, N, C, kk, L)
        bias = (lam.clamp(max=0).flatten(3) * up_bias).flatten(2).sum(-1)
        lam_in = F.fold(coef.reshape(S * N, c * k[0] * k[1], -1), (h, w), k, stride=s)
        return lam_in.view(S, N, c, h, w), bias
    raise AssertionError(node.kind)


# -- the bounder ----------------------------------------------------------------------------------
class Bounder:
    """Bounds of one batch of points: per-node boxes (IBP intersected with CROWN's), and lower bounds of
    linear specifications of the output. `alphas[(target, relu)]`: the lower slopes used when bounding
    `target` (a node index, or -1 for the output specification); None: CROWN's default."""

    def __init__(self, nodes: list[Node], xset: InputSet, intermediate: str = "crown",
                 splits: dict[int, torch.Tensor] | None = None):
        self.nodes, self.xset, self.intermediate = nodes, xset, intermediate
        self.n = len(xset.x)
        # Branch and bound: splits[i] (N, numel) in {-1, 0, +1} restricts node i (a ReLU input) to <= 0 or
        # >= 0; betas[i] (S or 1, N, numel) >= 0 are the Lagrange multipliers of those constraints.
        self.splits = splits or {}
        self.betas: dict[int, torch.Tensor] = {}
        self.scores: dict[int, torch.Tensor] = {}      # ReLU input -> (N, numel) what its relaxation costs
        self.input_lam: torch.Tensor | None = None       # the last backward pass's coefficients on the input
        self.boxes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.selection: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # target -> (index (N, S), valid)
        self.alphas: dict[tuple[int, int], torch.Tensor] = {}
        self.users: dict[int, list[int]] = {}   # node -> the nodes that read it
        for j, node in enumerate(nodes):
            for i in node.inputs:
                self.users.setdefault(i, []).append(j)
        # IBP is exact for an Linf box pushed through diagonal maps and at most one other affine map.
        depth = [0]
        for node in nodes[1:]:
            d = depth[node.inputs[0]] if node.kind != "add" else 99
            if node.kind == "affine" and not isinstance(node.op, ChannelAffineOp) or node.kind == "linear":
                d += 1
            elif node.kind in ("relu", "maxpool", "add"):
                d = 99
            depth.append(d)
        self.exact_by_ibp = [d <= 1 and xset.norm == "linf" for d in depth]

    # which neurons of node i get a backward pass of their own
    def _wanted(self, i: int, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor | None:
        users = self.users.get(i, [])
        kinds = [self.nodes[j].kind for j in users]
        if self.intermediate == "ibp" or self.exact_by_ibp[i] or not any(k in ("relu", "maxpool") for k in kinds):
            return None
        want = (lower < 0) & (upper > 0)   # an unstable ReLU input (a max-pool after the ReLU uses the other
        # bounds too, but refining them all cost 1.5x the time and certified no more on the digits CNNs)
        if "maxpool" in kinds:
            want = torch.ones_like(want)
        return want.flatten(1)

    def compute(self, fixed_selection: bool = False, inherit: list | None = None) -> None:
        """Every node's box, in forward order (CROWN refinement where it matters). `inherit`: boxes known to
        hold on this domain (a branch-and-bound parent's): IBP through them and the splits, no refinement."""
        self.boxes = [self.xset.box]
        for i, node in enumerate(self.nodes[1:], 1):
            lower, upper = _ibp_node(node, self.boxes)
            if inherit is not None:
                lower, upper = torch.maximum(lower, inherit[i][0]), torch.minimum(upper, inherit[i][1])
                lower, upper = self._split(i, lower, torch.maximum(upper, lower))
                self.boxes.append((lower, upper))
                continue
            lower, upper = self._split(i, lower, upper)
            if fixed_selection:
                sel = self.selection.get(i)
            else:
                want = self._wanted(i, lower, upper)
                sel = None
                if want is not None and bool(want.any()):
                    count = want.sum(1)
                    s = int(count.max())
                    order = torch.argsort((~want).to(torch.int8), dim=1, stable=True)[:, :s]   # wanted first
                    valid = torch.arange(s, device=want.device).unsqueeze(0) < count.unsqueeze(1)
                    sel = (order, valid)
                    self.selection[i] = sel
            if sel is not None:
                lower, upper = self._split(i, *self._refine(i, lower, upper, *sel))
            self.boxes.append((lower, upper))

    def _split(self, i: int, lower: torch.Tensor, upper: torch.Tensor):
        s = self.splits.get(i)
        if s is None:
            return lower, upper
        s = s.view_as(lower)
        lower = torch.where(s > 0, lower.clamp_min(0), lower)
        upper = torch.where(s < 0, upper.clamp_max(0), upper)
        return lower, torch.maximum(upper, lower)   # an empty domain keeps a degenerate box (its bound is still sound)

    def _refine(self, i: int, lower, upper, index: torch.Tensor, valid: torch.Tensor):
        shape = self.nodes[i].shape
        numel = math.prod(shape)
        n, s = index.shape
        biggest = max(math.prod(nd.shape) for nd in self.nodes[:i + 1])
        chunk = max(1, min(s, _BUDGET // max(1, 2 * n * biggest)))
        lo, hi = lower.flatten(1), upper.flatten(1)
        pad = torch.full((n, 1), float("nan"), dtype=lo.dtype, device=lo.device)
        lo, hi = torch.cat([lo, pad], 1), torch.cat([hi, pad], 1)
        dummy = torch.full_like(index, numel)
        for s0 in range(0, s, chunk):
            idx, ok = index[:, s0:s0 + chunk], valid[:, s0:s0 + chunk]           # (N, c)
            c = idx.shape[1]
            lam = torch.zeros(c, n, numel, dtype=lo.dtype, device=lo.device)
            lam.scatter_(2, idx.T.unsqueeze(-1), ok.T.unsqueeze(-1).to(lo.dtype))
            lam = torch.cat([lam, -lam]).view(2 * c, n, *shape)
            alphas = self._alphas_for(i, s0, c)
            bound = self.backward(i, lam, lam.new_zeros(2 * c, n), alphas)     # (2c, N)
            new_lo, new_hi = bound[:c].T, -bound[c:].T                           # (N, c)
            at = torch.where(ok, idx, dummy[:, s0:s0 + chunk])
            lo = lo.scatter(1, at, torch.where(ok, torch.maximum(lo.gather(1, at), new_lo), lo.gather(1, at)))
            hi = hi.scatter(1, at, torch.where(ok, torch.minimum(hi.gather(1, at), new_hi), hi.gather(1, at)))
        lo, hi = lo[:, :numel].view_as(lower), hi[:, :numel].view_as(upper)
        return lo, torch.maximum(hi, lo)  # rounding can cross them by an ulp; keep the box non-empty

    def _alphas_for(self, target: int, s0: int, c: int) -> dict[int, torch.Tensor]:
        out = {}
        for (t, r), a in self.alphas.items():
            if t != target:
                continue
            if a.shape[1] == 1:   # shared by all rows: (2, 1, N, ...)
                out[r] = a.expand(2, c, *a.shape[2:]).flatten(0, 1)
            else:                 # one per row: (2, S, N, ...)
                out[r] = a[:, s0:s0 + c].flatten(0, 1)
        return out

    def backward(self, start: int, lam: torch.Tensor, bias: torch.Tensor,
                 alphas: dict[int, torch.Tensor] | None = None, betas: dict[int, torch.Tensor] | None = None,
                 record: bool = False) -> torch.Tensor:
        """(S, N) lower bounds of lam . node_start + bias over the input set. `betas`: for split nodes, the
        bound is of lam . out - sum beta * split * node_i (<= lam . out on the split domain, beta >= 0).
        `record`: keep each ReLU's relaxation cost (self.scores) and the input coefficients (self.input_lam)."""
        alphas, betas = alphas or {}, betas or {}
        lams = {start: lam}
        for i in range(start, 0, -1):
            if i not in lams:
                continue
            lam_i = lams.pop(i)
            node = self.nodes[i]
            if i in betas:
                # betas (S or 1, N, numel) and splits (N, numel) are flat; lam_i has the node's shape (conv: C, H, W)
                lam_i = lam_i - (betas[i].clamp(min=0) * self.splits[i].to(lam_i)).view(-1, self.n, *node.shape)
            if record and node.kind == "relu":
                _, _, _, icpt = _relu_relaxation(*self.boxes[node.inputs[0]])
                self.scores[node.inputs[0]] = (-lam_i.clamp(max=0) * icpt).sum(0).flatten(1).detach()
            if node.kind == "add":
                parts = [(j, lam_i) for j in node.inputs]
            else:
                j = node.inputs[0]
                lam_j, b = _back(node, lam_i, self.boxes[j], alphas.get(i))
                bias = bias + b
                parts = [(j, lam_j)]
            for j, part in parts:
                lams[j] = lams[j] + part if j in lams else part
        lam0 = lams.pop(0)
        if record:
            self.input_lam = lam0.detach()
        return self.xset.minimize(lam0, bias)

    def output_bounds(self, spec: torch.Tensor, bias: torch.Tensor | None = None, record: bool = False) -> torch.Tensor:
        """(N, S): lower bounds of spec[n, s] . output + bias[n, s], for spec (N, S, K)."""
        last = len(self.nodes) - 1
        lam = spec.transpose(0, 1)                                                # (S, N, K)
        b = lam.new_zeros(lam.shape[:2]) if bias is None else bias.transpose(0, 1)
        alphas = {r: a for (t, r), a in self.alphas.items() if t == -1}
        return self.backward(last, lam, b, alphas, self.betas, record).T

    # -- alpha-CROWN ------------------------------------------------------------------------------
    def init_alphas(self, spec_rows: int) -> list[torch.Tensor]:
        """Free lower slopes for every (target, ReLU) pair, at CROWN's default; returns the parameters."""
        relus = [r for r, nd in enumerate(self.nodes) if nd.kind == "relu"]
        params = []
        for r in relus:
            box = self.boxes[self.nodes[r].inputs[0]]
            start = default_alpha(*box).unsqueeze(0)                          # (1, N, ...)
            numel = math.prod(self.nodes[r].shape)
            for t in [*self.selection, -1]:
                if t != -1 and t <= r:
                    continue
                rows = spec_rows if t == -1 else self.selection[t][0].shape[1]
                per_row = (2 if t != -1 else 1) * rows * self.n * numel <= _BUDGET
                if t == -1:
                    a = start.expand(rows if per_row else 1, *start.shape[1:]).clone()
                else:
                    a = start.unsqueeze(0).expand(2, rows if per_row else 1, *start.shape[1:]).clone()
                a.requires_grad_(True)
                self.alphas[(t, r)] = a
                params.append(a)
        return params


def _spec_margins(y: torch.Tensor, k: int, dtype, device) -> torch.Tensor:
    """(N, K, K): row j is e_y - e_j (row y is zero)."""
    eye = torch.eye(k, dtype=dtype, device=device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def _prepare(model: nn.Module, dtype: torch.dtype | None, method_name: str = "CROWN"):
    """An eval-mode copy of the model in `dtype` (None: the model itself, to check it), its ops and graph."""
    net = model if dtype is None else copy.deepcopy(model).to(dtype).eval()
    try:
        ops = compile_ops(net)
    except AdvlabError as e:  # IBP's words for a layer nobody can bound
        raise AdvlabError(str(e).replace("interval bound propagation", method_name, 1)) from None
    return net, ops, build_graph(ops, method_name)


def _check_options(eps, norm: str, method: str, steps: int, intermediate: str) -> torch.Tensor:
    if norm not in NORMS:
        raise AdvlabError(f"CROWN bounds Linf and L2 balls: `norm` must be one of {', '.join(NORMS)}, got {norm!r}")
    if method not in METHODS:
        raise AdvlabError(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
    if intermediate not in ("crown", "ibp"):
        raise AdvlabError(f"`intermediate` must be 'crown' or 'ibp', got {intermediate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AdvlabError(f"`steps` must be a positive integer, got {steps!r}")
    eps_t = torch.as_tensor(eps, dtype=torch.float64)
    if not torch.isfinite(eps_t).all() or (eps_t < 0).any():
        raise AdvlabError(f"`eps` must be finite and >= 0, got {eps}")
    return eps_t


def _bound_batch(nodes, xset: InputSet, spec: torch.Tensor, bias: torch.Tensor | None, method: str, steps: int,
                 lr: float, intermediate: str, splits: dict[int, torch.Tensor] | None = None,
                 stop: torch.Tensor | float | None = None, record: bool = False,
                 inherit: list | None = None) -> tuple[torch.Tensor, Bounder]:
    """(N, S) lower bounds of the specification (best over the alpha iterates), and the bounder (its
    boxes: the tightest found). With `splits` (branch and bound), alpha-CROWN optimises the splits'
    Lagrange multipliers (beta-CROWN's) with the slopes. The optimisation stops early when every bound
    is above `stop`, or when the bounds' sum gains less than 1e-4 of itself in 5 steps. `inherit`: node
    boxes that hold on the domain (then only the output's slopes are optimised)."""
    bounder = Bounder(nodes, xset, intermediate, splits)
    with torch.no_grad():
        bounder.compute(inherit=inherit)
        best = bounder.output_bounds(spec, bias, record=record)
    done = (lambda b: stop is not None and bool((b > stop).all()))
    if method == "alpha-crown" and not done(best):
        boxes = [(lo.clone(), hi.clone()) for lo, hi in bounder.boxes]
        slopes = bounder.init_alphas(spec.shape[1])
        for i, sp in (splits or {}).items():
            if bool((sp != 0).any()):
                bounder.betas[i] = torch.zeros(spec.shape[1], *sp.shape, dtype=spec.dtype, device=spec.device,
                                               requires_grad=True)
        params = slopes + list(bounder.betas.values())
        if params:
            opt = torch.optim.Adam(params, lr=lr)
            history: list[float] = []
            for _ in range(steps):
                with torch.enable_grad():
                    if inherit is None:
                        bounder.compute(fixed_selection=True)
                    out = bounder.output_bounds(spec, bias)
                    loss = -out.sum()
                    opt.zero_grad()
                    loss.backward()
                opt.step()
                with torch.no_grad():
                    for p in slopes:
                        p.clamp_(0, 1)
                    for p in bounder.betas.values():
                        p.clamp_(min=0)
                    best = torch.maximum(best, out.detach())
                    boxes = [(torch.maximum(a, lo.detach()), torch.minimum(b, hi.detach()))
                             for (a, b), (lo, hi) in zip(boxes, bounder.boxes)]
                history.append(float(-loss.detach()))
                if done(best) or len(history) > 5 and history[-1] - history[-6] < 1e-4 * (1 + abs(history[-1])):
                    break
            with torch.no_grad():
                if inherit is None:
                    bounder.compute(fixed_selection=True)
                best = torch.maximum(best, bounder.output_bounds(spec, bias, record=record))
                boxes = [(torch.maximum(a, lo), torch.minimum(b, hi)) for (a, b), (lo, hi) in zip(boxes, bounder.boxes)]
        bounder.boxes = boxes
    return best, bounder


def _input_set(x: torch.Tensor, eps: torch.Tensor, norm: str, bounds: Any) -> InputSet:
    e = eps.to(x) if eps.ndim else eps.to(x).expand(len(x))
    return InputSet(x, e, norm, bounds)


_NAMES = {"crown": "CROWN", "alpha-crown": "alpha-CROWN", "exact": "exact verification"}


def check_crown_supported(model: nn.Module, method: str = "crown") -> None:
    """An AdvlabError naming the first layer CROWN (or `method`: alpha-crown, exact) cannot bound; nothing when
    it can bound them all."""
    _prepare(model, None, _NAMES.get(method, method))


@torch.no_grad()
def crown_bounds(model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf",
                 bounds: Any = None, method: str = "crown", steps: int = ALPHA_STEPS, lr: float = ALPHA_LR,
                 intermediate: str = "crown", dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper), each (N, K): bounds on every logit over the `norm` ball of `eps` around each point of
    x intersected with `bounds`, in `dtype`."""
    eps_t = _check_options(eps, norm, method, steps, intermediate)
    net, ops, nodes = _prepare(model, dtype)
    device = model_device(model)
    xd = x.to(device=device, dtype=dtype)
    k = _forward(nodes, xd[:1])[-1].shape[1]
    eye = torch.eye(k, dtype=dtype, device=device)
    spec = torch.cat([eye, -eye]).unsqueeze(0).expand(len(xd), 2 * k, k)
    xset = _input_set(xd, eps_t.to(device), norm, bounds)
    out, _ = _bound_batch(nodes, xset, spec, None, method, steps, lr, intermediate)
    box = Box(*xset.box)
    for op in ops:
        box = op(box)
    return torch.maximum(out[:, :k], box.lower), torch.minimum(-out[:, k:], box.upper)


@torch.no_grad()
def crown_margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                        norm: str = "linf", bounds: Any = None, method: str = "crown", steps: int = ALPHA_STEPS,
                        lr: float = ALPHA_LR, intermediate: str = "crown", dtype: torch.dtype = torch.float64,
                        return_bounder: bool = False):
    """(N, K): lower bounds of z_y - z_j over the ball (+inf at j = y); the larger of CROWN's and IBP's
    (for Linf; IBP's box of the L2 ball for L2). With `return_bounder`, also the Bounder (its node
    boxes, for exact verification)."""
    eps_t = _check_options(eps, norm, method, steps, intermediate)
    net, ops, nodes = _prepare(model, dtype)
    device = model_device(model)
    xd = x.to(device=device, dtype=dtype)
    yd = y.to(device).long()
    _forward(nodes, xd[:1])
    k = nodes[-1].shape[0]
    xset = _input_set(xd, eps_t.to(device), norm, bounds)
    lower, bounder = _bound_batch(nodes, xset, _spec_margins(yd, k, dtype, device), None, method, steps, lr,
                                  intermediate)
    ibp = margin_lower_bounds(net, Box(*xset.box), yd, ops)
    lower = torch.maximum(lower, ibp).masked_fill(F.one_hot(yd, k).bool(), float("inf"))
    return (lower, bounder) if return_bounder else lower


def certify_crown(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                  norm: str = "linf", bounds: Any = None, method: str = "crown", steps: int = ALPHA_STEPS,
                  lr: float = ALPHA_LR, intermediate: str = "crown", batch_size: int = 64, progress: bool = True,
                  indices: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> Certificate:
    """Certify every point of x against `norm` perturbations of size eps (a number or one per point) with
    CROWN (`method="crown"`) or alpha-CROWN (`method="alpha-crown"`, `steps` Adam steps of size `lr`).

    Returns a Certificate whose radius is eps for a certified point and 0 otherwise; its prediction is the
    model's clean prediction; `extra["margin_lower_bound"]` is each point's worst margin bound."""
    eps_t = _check_options(eps, norm, method, steps, intermediate)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AdvlabError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    started = time.perf_counter()
    net, ops, nodes = _prepare(model, dtype)
    device = model_device(model)
    y = y.long().cpu()
    preds, certified, margins = [], [], []
    for i in progress_bar(range(0, len(y), batch_size), method, progress, unit="batch"):
        xb = x[i:i + batch_size].to(device=device, dtype=dtype)
        yb = y[i:i + batch_size].to(device)
        e = (eps_t[i:i + batch_size] if eps_t.ndim else eps_t).to(device)
        with torch.no_grad():
            clean = net(xb)
        tol = MARGIN_TOLERANCE * clean.abs().amax(1).clamp_min(1.0)
        lower = _margins(net, ops, nodes, xb, yb, e, norm, bounds, method, steps, lr, intermediate, tol).amin(1)
        preds.append(clean.argmax(1).cpu())
        certified.append((lower > tol).cpu())
        margins.append(lower.float().cpu())
    pred, ok = torch.cat(preds), torch.cat(certified)
    ok &= pred == y
    eps_points = eps_t.expand(len(y)) if eps_t.ndim == 0 else eps_t
    radius = torch.where(ok, eps_points, torch.zeros_like(eps_points))
    params = {"eps": float(eps_t) if eps_t.ndim == 0 else eps_t.tolist(), "norm": norm,
              "intermediate_bounds": intermediate}
    if method == "alpha-crown":
        params.update(alpha_steps=steps, alpha_lr=lr)
    return Certificate(method, params, torch.arange(len(y)) if indices is None else indices.cpu(), y, pred, radius,
                       time.perf_counter() - started, extra={"margin_lower_bound": torch.cat(margins)})


@torch.no_grad()
def _margins(net, ops, nodes, xb, yb, e, norm, bounds, method, steps, lr, intermediate, tol=None) -> torch.Tensor:
    _forward(nodes, xb[:1])
    k = nodes[-1].shape[0]
    xset = _input_set(xb, e, norm, bounds)
    label = F.one_hot(yb, k).bool()
    stop = None if tol is None else tol.unsqueeze(1).expand(-1, k).masked_fill(label, -math.inf)
    lower, _ = _bound_batch(nodes, xset, _spec_margins(yb, k, xb.dtype, xb.device), None, method, steps, lr,
                            intermediate, stop=stop)
    ibp = margin_lower_bounds(net, Box(*xset.box), yb, ops)
    return torch.maximum(lower, ibp).masked_fill(F.one_hot(yb, k).bool(), float("inf"))
