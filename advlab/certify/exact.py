"""Complete verification: decide, point by point, whether any input of the Linf ball changes the answer.

    from advlab.certify import verify_exact
    cert = verify_exact(model, x, y, eps=0.05, bounds=data.bounds, timeout=10)
    cert.status                 # per point: "verified" | "falsified" | "unknown"
    cert.counterexamples        # {test index: fp32 input inside the ball that the model gets wrong}

Each point goes through three stages, cheapest first:

1. **attack** (PGD with the margin loss, restarts): an example it finds is a counterexample;
2. **alpha-CROWN** (advlab.certify.crown): a positive bound on every margin verifies the point;
3. for each class j whose margin alpha-CROWN could not prove positive, **branch and bound** over the
   unstable ReLUs (`strategy="bab"`, the default): domains fix ReLUs on or off; each is bounded by
   CROWN through its parent's node boxes with the output's slopes and the splits' Lagrange multipliers
   optimised (beta-CROWN's idea), closed when the bound clears tol, else its bound's minimiser is tried
   as a counterexample and it is split on the ReLU whose relaxation costs most; a domain with nothing
   left to split is decided by its linear program (HiGHS). Or (`strategy="milp"`) **a mixed-integer
   linear program** (HiGHS through `scipy.optimize.milp`): minimise z_y - z_j over the ball with one
   binary per unstable ReLU (the big-M encoding of Tjeng et al. 2019, alpha-CROWN's pre-activation
   bounds as the Ms) and one per candidate of a max-pool window, under z_y - z_j <= tol: infeasible
   means that class cannot win anywhere in the ball. docs/certify.md has the measurement that made
   branch and bound the default.

Every counterexample (from the attack, the search or the program) is re-checked before it counts:
moved inside the ball and the bounds in float32 (as every attack's output is) and shown to the fp32
model on its own device; it is saved only when that model gets it wrong. A point still open after
`timeout` seconds (per point, all its classes together) is `unknown`. `tol` is IBP's margin tolerance
(1e-4 of the largest clean logit, at least 1e-4), which covers the linear programs' feasibility
tolerance (1e-7) as well as float32 rounding.

Resumable: each decided point is saved (`state_dir`/state.safetensors, counterexamples included), keyed by
its test index; running again skips the points done, and retries `unknown` points when given a longer
timeout. Linf only (an L2 ball would make the programs quadratic).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn
from torch.nn import functional as F

from ..errors import AdvlabError
from ..predict import model_device
from ..progress import progress as progress_bar
from ..progress import write
from ..rundir import STATE_FILE
from ..threat import Linf, enforce
from .crown import ALPHA_STEPS, Node, _check_options, _forward, _input_set, _pair, _prepare
from .ibp import MARGIN_TOLERANCE, Box, ChannelAffineOp, ConvOp, LinearOp, margin_lower_bounds
from .result import Certificate
from .state import PointState

STATUSES = ("verified", "falsified", "unknown")
VERIFIED, FALSIFIED, UNKNOWN = range(3)
DEFAULT_TIMEOUT = 60.0
_SLACK = 1e-9   # relative outward slack on the pre-activation bounds the program uses


# -- each node as an explicit matrix (the same for every point) -------------------------------------
def _node_matrix(node: Node, in_shape: tuple[int, ...], dtype, device) -> tuple[sparse.csr_matrix, np.ndarray]:
    """(M, b): the node's map on flattened vectors, out = M @ in + b (affine and linear nodes)."""
    if getattr(node, "_matrix", None) is not None:
        return node._matrix
    op = node.op
    if node.kind == "affine" and isinstance(op, LinearOp):
        m = sparse.csr_matrix(op.weight.detach().cpu().double().numpy())
        b = op.bias.detach().cpu().double().numpy() if op.bias is not None else np.zeros(m.shape[0])
    elif node.kind == "affine" and isinstance(op, ChannelAffineOp):
        z = torch.zeros(1, *in_shape, dtype=dtype, device=device)
        scale, shift = op.scale_shift(Box(z, z))
        per = math.prod(in_shape[1:])
        m = sparse.diags(np.repeat(scale.detach().cpu().double().numpy(), per)).tocsr()
        b = np.repeat(shift.detach().cpu().double().numpy(), per)
    else:
        if node.kind == "affine" and isinstance(op, ConvOp):
            f = lambda t: F.conv2d(t, op.conv.weight, None, op.conv.stride, op.conv.padding, op.conv.dilation,  # noqa: E731
                                   op.conv.groups)
            bias_f = lambda t: F.conv2d(t, op.conv.weight, op.conv.bias, op.conv.stride, op.conv.padding,  # noqa: E731
                                        op.conv.dilation, op.conv.groups)
        else:  # a linear node (average pooling): f(0) is its bias
            f = bias_f = op.f
        n_in = math.prod(in_shape)
        blocks = []
        with torch.no_grad():
            for s in range(0, n_in, 1024):
                eye = torch.eye(n_in, dtype=dtype, device=device)[s:s + 1024].view(-1, *in_shape)
                blocks.append(sparse.csr_matrix(f(eye).flatten(1).cpu().double().numpy()))   # rows: inputs
            b = bias_f(torch.zeros(1, *in_shape, dtype=dtype, device=device)).flatten().cpu().double().numpy()
        m = sparse.vstack(blocks).T.tocsr()
    node._matrix = (m, b)
    return node._matrix


class _Program:
    """The mixed-integer program of one point: variables (bounds, integrality), constraint rows, and each
    node's value as an affine expression A v + c of the variables."""

    def __init__(self):
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.rows: list[tuple[sparse.spmatrix, np.ndarray, np.ndarray]] = []
        self.nv = 0

    def new(self, lb: np.ndarray, ub: np.ndarray, integer: bool = False) -> np.ndarray:
        idx = np.arange(self.nv, self.nv + len(lb))
        self.lb.append(np.asarray(lb, float))
        self.ub.append(np.asarray(ub, float))
        self.integer.append(np.full(len(lb), 1 if integer else 0))
        self.nv += len(lb)
        return idx

    def unit(self, idx: np.ndarray) -> sparse.csr_matrix:
        """Rows selecting variables idx."""
        return sparse.csr_matrix((np.ones(len(idx)), (np.arange(len(idx)), idx)), shape=(len(idx), self.nv))

    def wide(self, a: sparse.spmatrix) -> sparse.csr_matrix:
        a = a.tocsr()
        return sparse.csr_matrix((a.data, a.indices, a.indptr), shape=(a.shape[0], self.nv))

    def add(self, a: sparse.spmatrix, lo: np.ndarray, hi: np.ndarray) -> None:
        self.rows.append((a, np.asarray(lo, float), np.asarray(hi, float)))

    def assemble(self):
        a = sparse.vstack([self.wide(r[0]) for r in self.rows]).tocsr() if self.rows else \
            sparse.csr_matrix((0, self.nv))
        lo = np.concatenate([r[1] for r in self.rows]) if self.rows else np.zeros(0)
        hi = np.concatenate([r[2] for r in self.rows]) if self.rows else np.zeros(0)
        return a, lo, hi, np.concatenate(self.lb), np.concatenate(self.ub), np.concatenate(self.integer)


def _outward(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lo - _SLACK * (1 + np.abs(lo)), hi + _SLACK * (1 + np.abs(hi))


def build_program(nodes: list[Node], boxes: list[tuple[np.ndarray, np.ndarray]], dtype=torch.float64,
                  device=None) -> tuple[_Program, sparse.csr_matrix, np.ndarray]:
    """The program for one point: boxes[i] = (lower, upper) of node i, flattened (node 0: the input set).
    Returns (program, A_out, c_out): the output logits as A_out v + c_out."""
    prog = _Program()
    x_lo, x_hi = boxes[0]
    v = prog.new(x_lo, x_hi)
    expr: list[Any] = [(prog.unit(v), np.zeros(len(v)))]
    for node in nodes[1:]:
        if node.kind == "add":
            (a1, c1), (a2, c2) = (expr[j] for j in node.inputs)
            expr.append((prog.wide(a1) + prog.wide(a2), c1 + c2))
            continue
        j = node.inputs[0]
        a_in, c_in = expr[j]
        if node.kind == "reshape":
            expr.append((a_in, c_in))
        elif node.kind in ("affine", "linear"):
            m, b = _node_matrix(node, nodes[j].shape, dtype, device)
            expr.append(((m @ prog.wide(a_in)).tocsr(), m @ c_in + b))
        elif node.kind == "relu":
            lo, hi = _outward(*boxes[j])
            z = prog.new(lo, hi)                                            # every pre-activation
            prog.add(prog.unit(z) - prog.wide(a_in), c_in, c_in)           # z = A v + c
            unstable = np.flatnonzero((lo < 0) & (hi > 0))
            col = np.full(len(lo), -1)
            col[lo >= 0] = z[lo >= 0]
            if len(unstable):
                a = prog.new(np.zeros(len(unstable)), hi[unstable])
                d = prog.new(np.zeros(len(unstable)), np.ones(len(unstable)), integer=True)
                zu, n_u = z[unstable], len(unstable)
                prog.add(prog.unit(a) - prog.unit(zu), np.zeros(n_u), np.full(n_u, np.inf))          # a >= z
                prog.add(prog.unit(a) - sparse.diags(hi[unstable]) @ prog.unit(d), np.full(n_u, -np.inf),
                         np.zeros(n_u))                                                                # a <= u d
                prog.add(prog.unit(a) - prog.unit(zu) - sparse.diags(lo[unstable]) @ prog.unit(d),
                         np.full(n_u, -np.inf), -lo[unstable])                                        # a <= z - l (1 - d)
                col[unstable] = a
            keep = np.flatnonzero(col >= 0)
            out = sparse.csr_matrix((np.ones(len(keep)), (keep, col[keep])), shape=(len(lo), prog.nv))
            expr.append((out, np.zeros(len(lo))))
        elif node.kind == "maxpool":
            expr.append(_maxpool(prog, node, nodes[j].shape, a_in, c_in, _outward(*boxes[j])))
        else:
            raise AssertionError(node.kind)
    return prog, prog.wide(expr[-1][0]), expr[-1][1]


def _maxpool(prog: _Program, node: Node, in_shape, a_in, c_in, box):
    """y = max over each window: y >= x_i for every candidate, y <= x_i + (U - l_i)(1 - d_i), sum d_i = 1,
    where candidates are the inputs whose upper bound reaches the largest lower bound of the window."""
    m = node.op.module
    k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
    c, h, w = in_shape
    ids = torch.arange(c * h * w, dtype=torch.float64).view(1, c, h, w)
    windows = F.unfold(ids, k, stride=s).view(c, k[0] * k[1], -1).permute(0, 2, 1).reshape(-1, k[0] * k[1])
    windows = windows.long().numpy()                                     # (outputs, kk) input indices
    lo, hi = box
    a_in = prog.wide(a_in)
    rows, consts = [], []
    for win in windows:
        l, u = lo[win], hi[win]
        m_low = l.max()
        cand = win[u >= m_low]
        if len(cand) == 1:
            rows.append(a_in[cand[0]])
            consts.append(c_in[cand[0]])
            continue
        big = hi[cand].max()
        y = prog.new(np.array([m_low]), np.array([big]))
        d = prog.new(np.zeros(len(cand)), np.ones(len(cand)), integer=True)
        yy = prog.unit(np.repeat(y, len(cand)))
        xs = a_in[cand]
        prog.add(yy - xs, c_in[cand], np.full(len(cand), np.inf))                          # y >= x_i
        gap = big - lo[cand]
        prog.add(yy - xs + sparse.diags(gap) @ prog.unit(d), np.full(len(cand), -np.inf), c_in[cand] + gap)
        prog.add(prog.wide(sparse.csr_matrix((np.ones(len(d)), (np.zeros(len(d)), d)), shape=(1, prog.nv))),
                 np.ones(1), np.ones(1))                                                    # sum d = 1
        rows.append(prog.unit(y))
        consts.append(0.0)
    out = sparse.vstack([prog.wide(r) for r in rows]).tocsr()
    return out, np.asarray(consts, float)


# -- one point ------------------------------------------------------------------------------------
def _solve_margin(prog: _Program, a_out, c_out, y: int, j: int, tol: float, time_limit: float):
    """min z_y - z_j subject to it being <= tol. Returns (status, x or None, objective)."""
    a, lo, hi, lb, ub, integer = prog.assemble()
    obj = (a_out[y] - a_out[j]).toarray().ravel()
    const = float(c_out[y] - c_out[j])
    cons = [LinearConstraint(sparse.vstack([a, sparse.csr_matrix(obj)]).tocsr(), np.append(lo, -np.inf),
                             np.append(hi, tol - const))]
    res = milp(obj, integrality=integer, bounds=Bounds(lb, ub), constraints=cons,
               options={"time_limit": max(time_limit, 0.01), "disp": False, "presolve": True})
    value = None if res.x is None else float(obj @ res.x + const)
    return res.status, res.x, value


def _recheck(model: nn.Module, x: torch.Tensor, y: int, candidate: torch.Tensor, eps: float, bounds) -> torch.Tensor | None:
    """The candidate moved inside the ball and the bounds in float32, if the fp32 model gets it wrong."""
    x32 = x.detach().float().unsqueeze(0).cpu()
    cand = enforce(x32, candidate.detach().float().view_as(x32).cpu(), Linf(), eps, bounds)
    # exact check in float64 (fp32 numbers are exact there): one ulp towards x where rounding left the ball
    out = (cand.double() - x32.double()).abs() > eps
    if out.any():
        cand = torch.where(out, torch.nextafter(cand, x32), cand)
    if (cand.double() - x32.double()).abs().max() > eps:
        return None
    if bounds is not None:
        lo, hi = bounds
        if (cand < torch.as_tensor(lo)).any() or (cand > torch.as_tensor(hi)).any():
            return None
    device = model_device(model)
    with torch.no_grad():
        logits = model(cand.to(device))
    return cand[0] if int(logits.argmax(1)) != y else None


class _State(PointState):
    """Decided points by test index: status, margin bound, seconds, the timeout they ran with; and the
    counterexamples found."""

    def __init__(self, path: Path | None, identity: dict[str, Any]):
        super().__init__(path, identity, {"status": torch.long, "margin": torch.float64, "seconds": torch.float64,
                                          "timeout": torch.float64}, "verification")
        self.cex: dict[int, torch.Tensor] = {}
        if "cex" in self.tensors:
            self.cex = {i: c for i, c in zip(self.tensors["cex_index"].tolist(), self.tensors["cex"])}

    def save(self, extra: dict[str, torch.Tensor] | None = None) -> None:
        if self.cex:
            ck = sorted(self.cex)
            extra = {"cex_index": torch.tensor(ck, dtype=torch.long),
                     "cex": torch.stack([self.cex[k].float().cpu() for k in ck]), **(extra or {})}
        super().save(extra)


def _attack(model, x, y, eps, bounds, seed: int, steps: int, restarts: int) -> torch.Tensor:
    """(N, ...) PGD examples (margin loss); the points they fool are checked again later."""
    from ..attacks import PGD
    result = PGD("linf", steps=steps, loss="margin", restarts=restarts, seed=seed)(model, x, y, eps=[eps],
                                                                                  bounds=bounds)
    return result.x_adv[0]


def check_exact_options(eps, timeout, norm: str = "linf") -> None:
    if norm != "linf":
        raise AdvlabError(f"exact verification handles `norm='linf'` only (a MILP; an {norm} ball would make it "
                          "quadratic); use `method='crown'` or `method='alpha-crown'` for l2")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise AdvlabError(f"`timeout` must be a positive number of seconds, got {timeout!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise AdvlabError(f"`eps` must be a finite number >= 0, got {eps!r}")


def verify_exact(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, bounds: Any = None,
                 timeout: float = DEFAULT_TIMEOUT, norm: str = "linf", alpha_steps: int = ALPHA_STEPS,
                 attack_steps: int = 100, attack_restarts: int = 2, batch_size: int = 32, seed: int = 0,
                 state_dir: str | Path | None = None, identity: dict[str, Any] | None = None,
                 indices: torch.Tensor | None = None, progress: bool = True, strategy: str = "bab") -> Certificate:
    """Decide every point of x: verified (no input of the Linf ball of eps intersected with `bounds` changes
    the model's answer from the label), falsified (a counterexample, re-checked in fp32) or unknown (the
    program ran past `timeout` seconds). See the module docstring.

    Returns a Certificate with method "exact": radius eps for a verified point, 0 otherwise;
    `status` per point and `counterexamples` {test index: input}; extra: margin lower bound (the best
    proven, -inf for a falsified point), seconds per point."""
    check_exact_options(eps, timeout, norm)
    _check_options(eps, "linf", "alpha-crown", alpha_steps, "crown")
    started = time.perf_counter()
    dtype = torch.float64
    net, ops, nodes = _prepare(model, dtype, "exact verification")
    device = model_device(model)
    y = y.long().cpu()
    index = torch.arange(len(y)) if indices is None else indices.long().cpu()
    if strategy not in ("milp", "bab"):
        raise AdvlabError(f"`strategy` must be 'milp' or 'bab', got {strategy!r}")
    settings = {"method": "exact", "strategy": strategy, "eps": float(eps), "norm": "linf", "alpha_steps": alpha_steps,
                "attack_steps": attack_steps, "attack_restarts": attack_restarts, "seed": seed, **(identity or {})}
    state = _State(Path(state_dir) / STATE_FILE if state_dir is not None else None, settings)
    todo = [i for i in range(len(y)) if int(index[i]) not in state.done or
            (state.done[int(index[i])][0] == UNKNOWN and state.done[int(index[i])][3] < timeout)]
    was_training = model.training
    model.eval()
    t0 = time.perf_counter() - state.seconds
    bar = progress_bar(range(len(y)), f"exact eps {eps:g}", progress, unit="point", initial=len(y) - len(todo))
    try:
        for g in range(0, len(todo), batch_size):
            rows = todo[g:g + batch_size]
            _decide_batch(model, net, ops, nodes, x[rows], y[rows], index[rows], float(eps), bounds, timeout,
                          alpha_steps, attack_steps, attack_restarts, seed, device, state, bar, t0, strategy)
    except KeyboardInterrupt:
        if state.path is not None:
            write(f"interrupted: verification state saved in {state.path.parent}; run the same command again "
                  "to resume")
        raise
    finally:
        bar.close()
        model.train(was_training)
    done = [state.done[int(i)] for i in index]
    status = torch.tensor([d[0] for d in done], dtype=torch.long)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 256].to(device)).argmax(1).cpu() for i in range(0, len(y), 256)]) \
            if len(y) else torch.zeros(0, dtype=torch.long)
    radius = torch.where(status == VERIFIED, torch.full((len(y),), float(eps), dtype=torch.float64),
                         torch.zeros(len(y), dtype=torch.float64))
    params = {"eps": float(eps), "norm": "linf", "timeout": float(timeout), "strategy": strategy, "alpha_steps": alpha_steps,
              "attack_steps": attack_steps, "attack_restarts": attack_restarts,
              **{s: int((status == k).sum()) for k, s in enumerate(STATUSES)}}
    cex = {int(i): state.cex[int(i)] for i in index if int(i) in state.cex}
    cert = Certificate("exact", params, index, y, pred, radius, time.perf_counter() - started,
                       extra={"margin_lower_bound": torch.tensor([d[1] for d in done], dtype=torch.float64),
                              "point_seconds": torch.tensor([d[2] for d in done], dtype=torch.float64)},
                       status=[STATUSES[int(s)] for s in status], counterexamples=cex)
    return cert


def _decide_batch(model, net, ops, nodes, xb, yb, ib, eps, bounds, timeout, alpha_steps, attack_steps,
                  attack_restarts, seed, device, state, bar, t0, strategy) -> None:
    """Stages 1 and 2 for a batch, then the program point by point (the state is saved after each)."""
    from .crown import _bound_batch, _spec_margins
    started = time.perf_counter()
    xd = xb.to(device=device, dtype=torch.float64)
    yd = yb.to(device)
    with torch.no_grad():
        clean = net(xd)
    tol = (MARGIN_TOLERANCE * clean.abs().amax(1).clamp_min(1.0)).cpu()
    adv = _attack(model, xb.to(device), yb.to(device), eps, bounds, seed, attack_steps, attack_restarts).cpu()
    _forward(nodes, xd[:1])
    k = nodes[-1].shape[0]
    xset = _input_set(xd, torch.tensor(eps, dtype=torch.float64, device=device), "linf", bounds)
    with torch.no_grad():
        stop = tol.to(device).unsqueeze(1).expand(-1, k).masked_fill(F.one_hot(yd, k).bool(), -math.inf)
        lower, bounder = _bound_batch(nodes, xset, _spec_margins(yd, k, xd.dtype, device), None, "alpha-crown",
                                      alpha_steps, 0.1, "crown", stop=stop)
        ibp = margin_lower_bounds(net, Box(*xset.box), yd, ops)
        lower = torch.maximum(lower, ibp).masked_fill(F.one_hot(yd, k).bool(), float("inf")).cpu()
    boxes = [(lo.flatten(1).cpu().numpy(), hi.flatten(1).cpu().numpy()) for lo, hi in bounder.boxes]
    shared = (time.perf_counter() - started) / len(yb)
    for p in range(len(yb)):
        t_point = time.perf_counter()
        i, label = int(ib[p]), int(yb[p])
        margin = float(lower[p].min())
        status, cex = UNKNOWN, None
        if int(clean[p].argmax()) != label:
            cex = _recheck(model, xb[p], label, xb[p], eps, bounds)
        if cex is None:
            cex = _recheck(model, xb[p], label, adv[p], eps, bounds)
        if cex is not None:
            status, margin = FALSIFIED, -math.inf
        elif margin > float(tol[p]):
            status = VERIFIED
        else:
            status, margin, cex = _program(nodes, [(lo[p], hi[p]) for lo, hi in boxes], model, xb[p], label,
                                           lower[p], float(tol[p]), eps, bounds, timeout, device, strategy, net,
                                           [(lo[p], hi[p]) for lo, hi in bounder.boxes])
        state.done[i] = (status, margin, shared + time.perf_counter() - t_point, float(timeout))
        if cex is not None:
            state.cex[i] = cex
        state.seconds = time.perf_counter() - t0
        state.save()
        bar.update(1)


def _bab(nodes, net, model, x, label: int, j: int, tol: float, eps: float, bounds, deadline: float, device,
         root: list[tuple[torch.Tensor, torch.Tensor]], batch: int = 64, steps: int = 8):
    """Branch and bound over the unstable ReLUs for one class j: (status, counterexample or None).

    A domain is a set of ReLUs fixed on (>= 0) or off (<= 0) and the node boxes known to hold on it (its
    parent's, `root` for the first: alpha-CROWN's). Its bound is CROWN's through those boxes, with the
    output's lower slopes and the splits' Lagrange multipliers (beta-CROWN) optimised for `steps` steps; a
    domain whose bound clears tol is closed. Otherwise the minimiser of its linear bound is tried as a
    counterexample, and it is split on the unstable ReLU whose relaxation costs the bound most. A domain
    without unstable ReLUs left is decided by its own linear program."""
    from .crown import _bound_batch, _spec_margins
    x64 = x.to(device=device, dtype=torch.float64).unsqueeze(0)
    pre = [nd.inputs[0] for nd in nodes if nd.kind == "relu"]
    k = nodes[-1].shape[0]
    spec = _spec_margins(torch.tensor([label], device=device), k, torch.float64, device)[:, j:j + 1]   # (1, 1, K)
    start = {p: torch.zeros(math.prod(nodes[p].shape), dtype=torch.int8, device=device) for p in pre}
    queue: list[tuple[float, dict[int, torch.Tensor], list]] = [(-math.inf, start, root)]
    eps_t = torch.tensor(eps, dtype=torch.float64, device=device)
    while queue:
        if time.perf_counter() > deadline:
            return UNKNOWN, None
        queue.sort(key=lambda item: item[0])
        doms, queue = queue[:batch], queue[batch:]
        d = len(doms)
        splits = {p: torch.stack([dom[1][p] for dom in doms]) for p in pre}
        inherit = [(torch.stack([dom[2][i][0] for dom in doms]), torch.stack([dom[2][i][1] for dom in doms]))
                   for i in range(len(nodes))]
        xset = _input_set(x64.expand(d, *x64.shape[1:]), eps_t, "linf", bounds)
        lower, bounder = _bound_batch(nodes, xset, spec.expand(d, 1, k), None, "alpha-crown", steps, 0.1, "crown",
                                      splits=splits, stop=tol, record=True, inherit=inherit)
        lower = lower[:, 0]
        lo, hi = xset.box
        cand = torch.where(bounder.input_lam[0] > 0, lo, hi)                  # (D, ...) the linear bound's minimiser
        with torch.no_grad():
            z = net(cand)
        for c in torch.nonzero(z[:, label] - z[:, j] <= 0).flatten().tolist():
            cex = _recheck(model, x, label, cand[c], eps, bounds)
            if cex is not None:
                return FALSIFIED, cex
        for di in torch.nonzero(lower <= tol).flatten().tolist():
            dom = doms[di][1]
            best_p, best_n, best_score = None, None, -1.0
            for p in pre:
                plo, phi = (t[di].flatten() for t in bounder.boxes[p])
                open_ = (plo < 0) & (phi > 0) & (dom[p] == 0)
                if not bool(open_.any()):
                    continue
                score = bounder.scores.get(p)
                sc = score[di] if score is not None else torch.zeros_like(plo)
                sc = sc + 1e-9 * (-plo * phi / (phi - plo).clamp_min(1e-12))   # a tie-break when lam is 0
                sc = torch.where(open_, sc, torch.full_like(sc, -1.0))
                n = int(sc.argmax())
                if float(sc[n]) > best_score:
                    best_p, best_n, best_score = p, n, float(sc[n])
            boxes = [(a[di].clone(), b[di].clone()) for a, b in bounder.boxes]
            if best_p is None:   # nothing left to split: the domain's own linear program decides it
                flat = [(a.flatten().cpu().numpy(), b.flatten().cpu().numpy()) for a, b in boxes]
                prog, a_out, c_out = build_program(nodes, flat, device=device)
                status, sol, _ = _solve_margin(prog, a_out, c_out, label, j, tol, deadline - time.perf_counter())
                if status == 2:
                    continue
                if sol is not None:
                    cex = _recheck(model, x, label, torch.from_numpy(sol[:len(flat[0][0])]).view_as(x), eps, bounds)
                    if cex is not None:
                        return FALSIFIED, cex
                return UNKNOWN, None
            for side in (1, -1):
                child = {p: t.clone() for p, t in dom.items()}
                child[best_p][best_n] = side
                queue.append((float(lower[di]), child, boxes))
    return VERIFIED, None


def _program(nodes, boxes, model, x, label: int, lower: torch.Tensor, tol: float, eps: float, bounds, timeout: float,
             device, strategy: str = "bab", net=None, root=None):
    """Stage 3 for one point: (status, margin lower bound, counterexample or None)."""
    deadline = time.perf_counter() + timeout
    prog, a_out, c_out = build_program(nodes, boxes, device=device) if strategy == "milp" else (None, None, None)
    proven = []
    order = [j for j in torch.argsort(lower).tolist() if j != label]
    for j in order:
        if float(lower[j]) > tol:
            proven.append(float(lower[j]))
            continue
        left = deadline - time.perf_counter()
        if left <= 0:
            return UNKNOWN, float(lower.min()), None
        if strategy == "bab":
            status, cex = _bab(nodes, net, model, x, label, j, tol, eps, bounds, deadline, device, root)
            if status == FALSIFIED:
                return FALSIFIED, -math.inf, cex
            if status == UNKNOWN:
                return UNKNOWN, float(lower.min()), None
            proven.append(tol)
            continue
        status, sol, value = _solve_margin(prog, a_out, c_out, label, j, tol, left)
        if status == 2:                           # infeasible: z_y - z_j > tol everywhere in the ball
            proven.append(tol)
            continue
        if sol is not None:
            d = len(boxes[0][0])
            cex = _recheck(model, x, label, torch.from_numpy(sol[:d]).view_as(x), eps, bounds)
            if cex is not None:
                return FALSIFIED, -math.inf, cex
        return UNKNOWN, float(lower.min()), None   # out of time, or an optimum in [0, tol] without a real example
    return VERIFIED, min(proven) if proven else math.inf, None
