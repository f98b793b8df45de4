"""Square attack (Andriushchenko, Croce, Flammarion & Hein 2020): a score-based black-box attack.

    Square(norm="linf", n_queries=5000)(model, x, y, eps=[0.1], bounds=(0, 1))

No gradients: it only reads the logits. Starting from a corner of the ball (vertical stripes of
+-eps for Linf, a grid of +-"pseudo-Gaussian" tiles on the sphere for L2) it proposes random
square-window changes and keeps a proposal when it lowers the margin z_y - max_{j != y} z_j
(targeted: max_{j != t} z_j - z_t). The window covers a share p of the image that shrinks with the
query count (p_init / 2, / 4, ... at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000,
rescaled to n_queries). Each example draws its own window and signs from the seeded generator;
only points that are still robust are queried (with early_stop), so each costs at most n_queries
forward passes.

give_up=h (off by default; the `standard` evaluation suite uses 1) stops querying a point at 5, 10,
20, 40, 60 or 80% of the budget when even h times its progress since the last of those checkpoints
would not bring its margin to zero with the queries left. On a robust model most points plateau
far from the boundary and h=5 saves more than half of the queries; benchmarks/results/evaluate.md has
what it costs in points found (benchmarks/give_up.py measures it with side-by-side runs).

screen=s (off by default; the `standard` suite uses 250) makes it the cheap black-box stage that
escalates only where it has to: after s queries, if the run has broken no point yet, only the points
whose margin has at least halved since the start keep querying (they are getting close to the
boundary); once any point has been broken, every point gets the full budget: the points the screen
or give_up had stopped come back for the queries left, and give_up stops dropping points (on the panel's
thresholded model, after the `standard` suite's BPDA stage, Square broke its first point after the screen had
stopped three that it breaks once they come back; and on the panel's quantised model give_up dropped a slow point that AutoAttack's Square broke
after about 4,000 queries). In an evaluation Square runs on what the gradient attacks left, so a break
there is the sign of misleading gradients; on a model whose gradients work, most points stop after s queries.

Inputs that are not (N, C, H, W) images are treated as one row of pixels (N, 1, 1, D), where the
window becomes a run of consecutive features covering the same share p.
"""

from __future__ import annotations

import math

import torch

from ..errors import AdvlabError
from ..threat import clip_to_bounds
from .base import Attack
from .budget import finite_eps
from .give_up import check_give_up, hopeless
from .losses import margin

SCREEN_SHARE = 0.5  # screen: a point goes on when its margin is at most this share of its margin at the start

# (share of the schedule in 1/10000, divisor of p_init) from the paper's code.
P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
              (8000, 256), (10000, 512))


class Square(Attack):
    name = "square"
    needs_finite_eps = True
    needs_gradients = False

    def __init__(self, norm="linf", *, n_queries: int = 5000, p_init: float = 0.8, give_up: float | None = None,
                 screen: int | None = None, targeted: bool = False, batch_size: int | None = None, seed: int = 0):
        super().__init__(norm, targeted=targeted, batch_size=batch_size, seed=seed)
        if self.norm.name not in ("linf", "l2"):
            raise AdvlabError(f"the Square attack supports linf and l2, not {self.norm.name!r}")
        if n_queries < 1:
            raise AdvlabError(f"n_queries must be >= 1, got {n_queries}")
        if not 0 < p_init <= 1:
            raise AdvlabError(f"p_init is a share of the image, in (0, 1]; got {p_init}")
        check_give_up(give_up)
        if screen is not None and (isinstance(screen, bool) or not isinstance(screen, int) or screen < 1):
            raise AdvlabError(f"screen is a number of queries >= 1 (or None), got {screen!r}")
        self.n_queries, self.p_init, self.give_up, self.screen = n_queries, p_init, give_up, screen

    def p_selection(self, query: int) -> float:
        """Share of the pixels the window covers at this query."""
        t = int(query / self.n_queries * 10000)
        for limit, divisor in P_SCHEDULE:
            if t <= limit:
                return self.p_init / divisor
        return self.p_init / 512

    def checkpoints(self) -> set[int]:
        """Queries at which `give_up` looks at each point's progress: 5, 10, 20, 40, 60, 80%."""
        return {max(1, round(self.n_queries * f)) for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)}

    @torch.no_grad()
    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        eps = finite_eps(eps, x, self.norm, bounds, self.name)
        n = len(x)
        c, h, w = x.shape[1:] if x.ndim == 4 else (1, 1, x[0].numel())
        shape = x.shape

        def clip(z):  # bounds apply in the input's own shape
            return clip_to_bounds(z.reshape(len(z), *shape[1:]), bounds).reshape(z.shape)

        def score(z, yy, tt):  # (N,) margin to minimise, and whether the goal is met
            logits = model(z.reshape(len(z), *shape[1:]))
            return -margin(logits, yy, tt), self.goal.met(logits, yy, tt)

        x4 = x.reshape(n, c, h, w)
        e4 = eps.view(-1, 1, 1, 1).to(x.dtype)
        if self.norm.name == "linf":
            init = e4 * _signs((n, c, 1, w), generator, x)  # vertical stripes
        else:
            init = e4 * _normalize(_tiled_init(n, c, h, w, generator, x))
        best = clip(x4 + init)
        best_margin, hit = score(best, y, targets)

        idx = torch.arange(n, device=x.device)
        active = ~hit if early_stop else torch.ones(n, dtype=torch.bool, device=x.device)
        checkpoints = self.checkpoints() if early_stop and self.give_up is not None else set()
        last_q, last_margin = 0, best_margin.clone()
        start_margin, broke = best_margin.clone(), hit.clone()
        dropped = torch.zeros(n, dtype=torch.bool, device=x.device)  # stopped by the screen or give_up, unbroken
        for q in range(1, self.n_queries):
            if early_stop and q == self.screen and not bool(broke.any()):
                # Nothing broken so far: only points whose margin has fallen to SCREEN_SHARE of its start go on.
                keep = best_margin <= SCREEN_SHARE * start_margin
                dropped |= active & ~keep
                active &= keep
            if q in checkpoints and not (self.screen is not None and bool(broke.any())):
                # With a screen, a break is the sign of misleading gradients: give_up stops too (the full budget).
                stalled = hopeless(best_margin[idx], last_margin[idx], q - last_q, self.n_queries - q, self.give_up)
                active[idx[stalled]] = False
                dropped[idx[stalled]] = True
                last_q, last_margin = q, best_margin.clone()
            idx = idx[active[idx]] if early_stop else idx
            if len(idx) == 0:
                break
            x0, xb, ee = x4[idx], best[idx], e4[idx]
            p = self.p_selection(q)
            if self.norm.name == "linf":
                new = _linf_proposal(x0, xb, ee, p, clip, generator)
            else:
                new = _l2_proposal(x0, xb, ee, p, clip, generator)
            tt = targets[idx] if targets is not None else None
            m, hit = score(new, y[idx], tt)
            better = m < best_margin[idx]
            best[idx[better]] = new[better]
            best_margin[idx[better]] = m[better]
            if early_stop:
                active[idx[hit & better]] = False
                broke[idx[hit & better]] = True
                if self.screen is not None and bool((hit & better).any()) and bool(dropped.any()):
                    # The first break under a screen: the points it or give_up stopped come back for the queries left.
                    active |= dropped
                    dropped.zero_()
                    idx = active.nonzero().flatten()
        return best.reshape(shape)


def _window(p: float, h: int, w: int, smallest: int) -> tuple[int, int]:
    """Window (height, width) covering about p * h * w pixels: a square where it fits."""
    area = p * h * w
    s = max(int(round(math.sqrt(area))), smallest)
    sh = min(h, s)
    sw = s if sh == s else int(round(area / sh))  # too few rows for a square: a wider rectangle
    return sh, min(w, max(sw, smallest))


def _positions(n, h, w, sh, sw, generator, like):
    """Per-example top-left corners (N,), (N,) of an (sh, sw) window inside (h, w)."""
    u = torch.rand(2, n, generator=generator, device=like.device)
    return (u[0] * (h - sh + 1)).long(), (u[1] * (w - sw + 1)).long()


def _mask(vh, vw, sh, sw, h, w):
    """(N, 1, h, w) boolean mask of each example's window."""
    rows = torch.arange(h, device=vh.device)
    cols = torch.arange(w, device=vh.device)
    in_h = (rows >= vh[:, None]) & (rows < vh[:, None] + sh)  # (N, h)
    in_w = (cols >= vw[:, None]) & (cols < vw[:, None] + sw)  # (N, w)
    return (in_h[:, :, None] & in_w[:, None, :])[:, None]


def _signs(size, generator, like):
    return torch.randint(0, 2, size, generator=generator, device=like.device).to(like.dtype) * 2 - 1


def _linf_proposal(x0, xb, eps, p, clip, generator, tries: int = 8):
    """Set one random window per example to x0 +- eps (one sign per channel); redraw the signs
    where that would not change the current best point (the paper's code loops until it does)."""
    n, c, h, w = x0.shape
    sh, sw = _window(p, h, w, 1)
    vh, vw = _positions(n, h, w, sh, sw, generator, x0)
    mask = _mask(vh, vw, sh, sw, h, w)
    signs = _signs((n, c, 1, 1), generator, x0)
    for attempt in range(tries + 1):
        new = clip(torch.where(mask, x0 + eps * signs, xb))
        same = ((new - xb).abs() < 1e-7).flatten(1).all(1)
        if not same.any():
            break
        # After a few redraws flip the signs: with one channel that is the only choice that changes.
        redraw = -signs if attempt == tries - 1 else _signs((n, c, 1, 1), generator, x0)
        signs = torch.where(same.view(-1, 1, 1, 1), redraw, signs)
    return new


def _l2_proposal(x0, xb, eps, p, clip, generator):
    """Move the perturbation's mass out of a second window into a first one and add a fresh
    +-pseudo-Gaussian pattern there, keeping the total norm at eps (the paper's L2 update)."""
    n, c, h, w = x0.shape
    sh, sw = _window(p, h, w, 3)
    sh, sw = sh + (sh % 2 == 0 and sh < h), sw + (sw % 2 == 0 and sw < w)  # odd sides, as the paper's code
    delta = xb - x0
    vh, vw = _positions(n, h, w, sh, sw, generator, x0)
    vh2, vw2 = _positions(n, h, w, sh, sw, generator, x0)
    mask1, mask2 = _mask(vh, vw, sh, sw, h, w), _mask(vh2, vw2, sh, sw, h, w)
    rows = vh[:, None] + torch.arange(sh, device=x0.device)  # (N, sh)
    cols = vw[:, None] + torch.arange(sw, device=x0.device)  # (N, sw)

    old = _take(delta, rows, cols)  # (N, c, sh, sw)
    old = old / (_norm(old, (-2, -1)) + 1e-12)
    norm_image = _norm(delta, (1, 2, 3))  # (N, 1, 1, 1)
    norm_windows = _norm(delta * (mask1 | mask2), (1, 2, 3))
    fresh = _pattern(n, sh, sw, generator, x0) * _signs((n, c, 1, 1), generator, x0)
    new = fresh + old
    # Per channel: what is left of the budget, plus the mass the two windows held.
    room = ((eps ** 2 - norm_image ** 2).clamp_min(0) / c + norm_windows ** 2).sqrt()
    new = new / (_norm(new, (-2, -1)) + 1e-12) * room
    delta = torch.where(mask2, torch.zeros_like(delta), delta)
    delta = _put(delta, rows, cols, new)
    return clip(x0 + eps * _normalize(delta))


def _norm(t, dims):
    return t.pow(2).sum(dim=dims, keepdim=True).sqrt()


def _normalize(t):
    return t / (_norm(t, tuple(range(1, t.ndim))) + 1e-12)


def _take(t, rows, cols):
    """Each example's window: t (N, c, h, w), rows (N, sh), cols (N, sw) -> (N, c, sh, sw)."""
    n = torch.arange(len(t), device=t.device)[:, None, None]
    return t.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _put(t, rows, cols, values):
    n = torch.arange(len(t), device=t.device)[:, None, None]
    out = t.permute(0, 2, 3, 1).clone()
    out[n, rows[:, :, None], cols[:, None, :]] = values.permute(0, 2, 3, 1)
    return out.permute(0, 3, 1, 2)


def _rectangles(a: int, b: int) -> torch.Tensor:
    """(a, b) pattern of nested centred rectangles with weights 1/k^2: a cheap 'Gaussian' bump."""
    delta = torch.zeros(a, b)
    ca, cb = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        delta[max(ca - k, 0):min(ca + k + 1, a), max(cb - k, 0):min(cb + k + 1, b)] += 1.0 / (k + 1) ** 2
    return delta / delta.norm()


def _eta(sh: int, sw: int, split_rows: bool) -> torch.Tensor:
    """Two bumps of opposite sign side by side (split along rows or columns), unit norm."""
    if split_rows and sh >= 2:
        delta = torch.cat([_rectangles(sh // 2, sw), -_rectangles(sh - sh // 2, sw)], dim=0)
    elif sw >= 2:
        delta = torch.cat([_rectangles(sh, sw // 2), -_rectangles(sh, sw - sw // 2)], dim=1)
    elif sh >= 2:
        return _eta(sh, sw, True)
    else:
        delta = torch.ones(sh, sw)
    return delta / delta.norm()


def _pattern(n, sh, sw, generator, like):
    """(N, 1, sh, sw): per example, the eta pattern split along rows or columns at random."""
    a = _eta(sh, sw, True).to(like)
    b = _eta(sh, sw, False).to(like)
    pick = torch.rand(n, generator=generator, device=like.device) < 0.5
    return torch.where(pick.view(-1, 1, 1, 1), a, b)


def _tiled_init(n, c, h, w, generator, like):
    """L2 start: a grid of eta tiles (about 5 x 5) with a random sign per example, channel and tile."""
    th, tw = max(h // 5, 1), max(w // 5, 1)
    nh, nw = h // th, w // tw
    oh, ow = (h - th * nh) // 2, (w - tw * nw) // 2
    tile = _eta(th, tw, True).to(like)
    delta = torch.zeros(n, c, h, w, device=like.device, dtype=like.dtype)
    signs = _signs((n, c, nh, nw), generator, like)
    for i in range(nh):
        for j in range(nw):
            rows, cols = slice(oh + i * th, oh + (i + 1) * th), slice(ow + j * tw, ow + (j + 1) * tw)
            delta[:, :, rows, cols] += tile * signs[:, :, i, j, None, None]
    return delta
