"""Threat models: where an attack may move a point. Linf, L2 and L1 balls, and box bounds.

The engine's hook is a `Threat` (start, move, distance, enforce): the projected-gradient loop
(attacks/engine.py) and the Attack base class call only it, so an embedding ball
(metric/embedding_threat.py) plugs into the same loop. `LpBall` is the threat of an Lp ball; it
delegates to a `Norm`, a small object with four hooks: `distance`, `project`, `step` (steepest
ascent of a given size) and `random_init`. Epsilon may be a float or a per-example tensor of
shape (N,). Everything works on any input shape: (N, D) and (N, C, H, W) alike, by flattening
all but the batch axis.
"""

from __future__ import annotations

from typing import Union

import torch

from .errors import AdvlabError

Bounds = Union[tuple[float, float], tuple[torch.Tensor, torch.Tensor], None]
Eps = Union[float, torch.Tensor]


def per_example(value: Eps, x: torch.Tensor) -> torch.Tensor:
    """Epsilon (float or (N,)) as a tensor broadcastable against x: shape (N, 1, ..., 1)."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


class Norm:
    name: str = ""
    p: float = 0.0

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        """(N,) norms of the perturbations."""
        return torch.linalg.vector_norm(_flat(delta), ord=self.p, dim=1)

    def project(self, delta: torch.Tensor, eps: Eps) -> torch.Tensor:
        raise NotImplementedError

    def step(self, grad: torch.Tensor, size: Eps) -> torch.Tensor:
        """The steepest-ascent direction for `grad` with norm `size`."""
        raise NotImplementedError

    def random_init(self, x: torch.Tensor, eps: Eps, generator: torch.Generator) -> torch.Tensor:
        """A perturbation drawn uniformly from the ball."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Linf(Norm):
    name, p = "linf", float("inf")

    def project(self, delta, eps):
        e = per_example(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    def step(self, grad, size):
        return per_example(size, grad) * grad.sign()

    def random_init(self, x, eps, generator):
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * per_example(eps, x)


class L2(Norm):
    name, p = "l2", 2.0

    def project(self, delta, eps):
        norm = self.distance(delta).clamp_min(1e-12)
        factor = torch.clamp(per_example(eps, delta).flatten() / norm, max=1.0)
        return delta * factor.view(-1, *([1] * (delta.ndim - 1)))

    def step(self, grad, size):
        norm = self.distance(grad).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
        return per_example(size, grad) * grad / norm

    def random_init(self, x, eps, generator):
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / self.distance(direction).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
        return direction * radius.view(-1, *([1] * (x.ndim - 1))) * per_example(eps, x)


class L1(Norm):
    """L1 ball. The step moves the top `sparsity` share of coordinates by the sign of the
    gradient (Tramer & Boneh 2019's SLIDE): the exact steepest ascent touches one coordinate per
    step and converges far too slowly."""

    name, p = "l1", 1.0

    def __init__(self, sparsity: float = 0.01):
        self.sparsity = sparsity

    def project(self, delta, eps):
        return project_l1(delta, eps)

    def step(self, grad, size):
        g = _flat(grad)
        k = max(1, int(round(self.sparsity * g.shape[1])))
        top = g.abs().topk(k, dim=1).indices
        direction = torch.zeros_like(g).scatter_(1, top, g.gather(1, top).sign())
        direction = direction / direction.abs().sum(1, keepdim=True).clamp_min(1e-12)
        return direction.view_as(grad) * per_example(size, grad)

    def random_init(self, x, eps, generator):
        d = x[0].numel()
        # Uniform in the L1 ball: Laplace direction normalised to the sphere, radius ~ U^(1/d).
        e = -torch.log(torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).clamp_min(1e-12))
        sign = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        direction = e * sign
        direction = direction / self.distance(direction).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
        return direction * radius.view(-1, *([1] * (x.ndim - 1))) * per_example(eps, x)


def project_l1(delta: torch.Tensor, eps: Eps) -> torch.Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al. 2008), per example, by sorting."""
    v = _flat(delta)
    e = per_example(eps, v).flatten()
    inside = v.abs().sum(1) <= e
    if bool(inside.all()):
        return delta
    u = v.abs().sort(dim=1, descending=True).values
    cssv = u.cumsum(1) - e[:, None]
    ks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    cond = u - cssv / ks > 0
    rho = cond.to(v.dtype).mul(ks).argmax(1)  # last index where cond holds
    theta = (cssv.gather(1, rho[:, None]) / (rho[:, None] + 1).to(v.dtype)).clamp_min(0)
    projected = v.sign() * (v.abs() - theta).clamp_min(0)
    # |v| - theta cancels catastrophically when eps << |v|; rescale so the float result is inside.
    over = projected.abs().sum(1, keepdim=True) / e[:, None].clamp_min(torch.finfo(v.dtype).tiny)  # eps 0: 0 / tiny
    projected = projected / over.clamp_min(1.0)
    out = torch.where(inside[:, None], v, projected)
    return out.view_as(delta)


NORMS = {"linf": Linf, "l2": L2, "l1": L1}


def get_norm(norm: str | Norm) -> Norm:
    if isinstance(norm, Norm):
        return norm
    if norm not in NORMS:
        raise AdvlabError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return NORMS[norm]()


def clip_to_bounds(x: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    if bounds is None:
        return x
    lo, hi = bounds
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        return torch.maximum(torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device)),
                             torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    return x.clamp(lo, hi)


def enforce(x: torch.Tensor, x_adv: torch.Tensor, norm: Norm, eps: Eps, bounds: Bounds) -> torch.Tensor:
    """Bring x_adv inside the eps-ball around x and inside the bounds.

    x is inside the bounds, so clipping after projecting only shrinks each coordinate of the
    perturbation: the result stays inside the ball for every Lp norm.
    """
    delta = norm.project(x_adv - x, eps)
    return clip_to_bounds(x + delta, bounds)


class Threat:
    """Where an attack may move a point: the engine (attacks/engine.py) asks it to start, to take a
    step, to measure, and the Attack base class to enforce the budget on whatever is returned.

    `context(x0, eps)` returns per-row tensors the other hooks need (the engine keeps them aligned
    with the rows still under attack); eps is (N,) everywhere.
    """

    name = "threat"

    def context(self, x0: torch.Tensor, eps: torch.Tensor, bounds: Bounds) -> dict[str, torch.Tensor]:
        return {}

    def start(self, x0, eps, alpha, bounds, generator, ctx) -> torch.Tensor:
        """A random starting point inside the threat."""
        raise NotImplementedError

    def move(self, x0, x, grad, alpha, eps, bounds, ctx) -> torch.Tensor:
        """x after one steepest-ascent step of size alpha (N,) on grad, brought back inside the threat."""
        raise NotImplementedError

    def penalty(self, x, x0, ctx) -> torch.Tensor | None:
        """(N,) differentiable cost the gradient step pays for x (None: no penalty)."""
        return None

    def distance(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def enforce(self, x0, x, eps, bounds) -> torch.Tensor:
        raise NotImplementedError


class LpBall(Threat):
    """||x - x0|| <= eps in an Lp norm, inside the bounds: steps are the norm's steepest ascent."""

    def __init__(self, norm: str | Norm = "linf"):
        self.norm = get_norm(norm)
        self.name = self.norm.name

    def start(self, x0, eps, alpha, bounds, generator, ctx):
        return clip_to_bounds(x0 + self.norm.random_init(x0, eps, generator), bounds)

    def move(self, x0, x, grad, alpha, eps, bounds, ctx):
        x = x + self.norm.step(grad, alpha)
        return clip_to_bounds(x0 + self.norm.project(x - x0, eps), bounds)

    def distance(self, x0, x):
        return self.norm.distance(x - x0)

    def enforce(self, x0, x, eps, bounds):
        return enforce(x0, x, self.norm, eps, bounds)

    def __repr__(self) -> str:
        return f"LpBall({self.norm.name})"
