"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016): the minimal perturbation by linearisation.

    DeepFool(norm="l2")(model, x, y, eps=[0.5, 1.0], bounds=(0, 1))    # or norm="linf"

At each step the model is linearised around the current point; for every candidate class k (the
`candidates` most likely wrong classes of the clean input) the boundary f_k = z_k - z_y = 0 is a
hyperplane at distance |f_k| / ||w_k||_q, w_k = grad f_k, q the dual norm (2 for L2, 1 for Linf).
The step goes to the nearest of them: r = (|f| + 1e-4) w / ||w||_2^2 (L2) or (|f| + 1e-4) sign(w) /
||w||_1 (Linf); the steps add up to r_tot and the iterate is x + (1 + overshoot) r_tot, clipped to
the bounds. A point stops as soon as its label changes. For a linear model one step is exact.

advlab then pulls each example back along its ray to just past the boundary (refine_steps
bisections), which removes most of the overshoot; refine_steps=0 gives the original algorithm.
Targeted: the target is the only candidate.
"""

from __future__ import annotations

import torch

from ..errors import AdvlabError
from ..threat import clip_to_bounds
from .base import Attack
from .minimal import goal_reached, shrink


class DeepFool(Attack):
    name = "deepfool"
    minimal = True

    def __init__(self, norm="l2", *, steps: int = 50, overshoot: float = 0.02, candidates: int = 10,
                 refine_steps: int = 10, targeted: bool = False, batch_size: int | None = None, seed: int = 0):
        super().__init__(norm, targeted=targeted, batch_size=batch_size, seed=seed)
        if self.norm.name not in ("l2", "linf"):
            raise AdvlabError(f"deepfool supports l2 and linf, not {self.norm.name!r}")
        if steps < 1 or candidates < 2 or overshoot < 0 or refine_steps < 0:
            raise AdvlabError("deepfool needs steps >= 1, candidates >= 2 (the true class and at least one "
                              "other), overshoot >= 0 and refine_steps >= 0")
        self.steps, self.overshoot, self.candidates, self.refine_steps = steps, overshoot, candidates, refine_steps

    def _minimize(self, model, x, y, targets, bounds, generator):
        with torch.no_grad():
            clean = model(x)  # (N, K)
        if targets is not None:
            classes = targets[:, None]  # (N, 1)
        else:  # the most likely wrong classes, best first
            k = min(self.candidates - 1, clean.shape[1] - 1)
            classes = clean.scatter(1, y[:, None], -torch.inf).topk(k, dim=1).indices  # (N, k)
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        idx = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            xa = x_adv[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xa)
                done = goal_reached(logits, y[idx], targets[idx] if targets is not None else None)
                keep = ~done
                if not keep.any():
                    break
                f, grads = _differences(logits, xa, y[idx], classes[idx], keep)  # (M, k), (k, M, ...)
            idx = idx[keep]
            grads = grads.flatten(2)  # (k, M, D)
            q = 2.0 if self.norm.name == "l2" else 1.0
            dist = f.abs() / (torch.linalg.vector_norm(grads, ord=q, dim=2).T + 1e-12)  # (M, k)
            best = dist.argmin(1)  # (M,)
            m = torch.arange(len(idx), device=x.device)
            w = grads[best, m]  # (M, D)
            fb = f[m, best].abs() + 1e-4
            if self.norm.name == "l2":
                r = fb[:, None] * w / (w.pow(2).sum(1, keepdim=True) + 1e-12)
            else:
                r = fb[:, None] * w.sign() / (w.abs().sum(1, keepdim=True) + 1e-12)
            r_tot[idx] += r.view(len(idx), *x.shape[1:])
            x_adv[idx] = clip_to_bounds(x[idx] + (1 + self.overshoot) * r_tot[idx], bounds)
        return shrink(model, x, x_adv, y, targets, self.refine_steps)


def _differences(logits, xa, y, classes, keep):
    """f_k = z_k - z_y (M, k) and their input gradients (k, M, ...) for the rows in keep.

    One backward pass per candidate class; the gradients of other rows are not needed but are
    cheap next to the forward pass, which all candidates share.
    """
    zy = logits.gather(1, y[:, None])  # (B, 1)
    f = logits.gather(1, classes) - zy  # (B, k)
    grads = []
    for j in range(f.shape[1]):
        g, = torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < f.shape[1] - 1)
        grads.append(g[keep])
    return f[keep].detach(), torch.stack(grads)
