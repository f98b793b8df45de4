"""Linear classifiers on Gaussian classes: exact adversarial training and closed-form errors.

For a linear score z = w.x + b, the worst perturbation of norm eps moves z by exactly
eps * ||w||_*, the dual norm (L1 for an Linf attack, L2 for L2, Linf for L1; Goodfellow et al.
2015, section 3). Two consequences used by the blobs, linearity and theory analyses:

- training against the worst case needs no attack: the robust logistic loss is
  softplus(eps * ||w||_* - s * z) with s = +1 for class 1 and -1 for class 0;
- when class k is N(m_k, sigma^2 I), s * z is normal with mean s (w.m_k + b) and standard
  deviation sigma ||w||_2, so the error under attack is a normal tail probability:
      P(error | class 1) = Phi((eps ||w||_* - (w.m_1 + b)) / (sigma ||w||_2))
      P(error | class 0) = Phi((eps ||w||_* + (w.m_0 + b)) / (sigma ||w||_2))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import binomtest
from scipy.stats import norm as normal

from ..errors import AdvlabError
from ..models import LogisticRegression

DUAL = {"linf": 1, "l2": 2, "l1": math.inf}


def dual_norm(w: torch.Tensor | np.ndarray, norm: str) -> float:
    """||w||_* for the attack norm: L1 for linf, L2 for l2, Linf for l1."""
    if norm not in DUAL:
        raise AdvlabError(f"unknown norm {norm!r}; choose linf, l2 or l1")
    return float(np.linalg.norm(np.asarray(torch.as_tensor(w).detach().cpu(), dtype=np.float64).ravel(), DUAL[norm]))


def weights(model: LogisticRegression) -> tuple[np.ndarray, float]:
    return model.weight.detach().cpu().double().numpy().copy(), float(model.bias.detach())


def to_device(model: torch.nn.Module, device=None) -> torch.nn.Module:
    """The (fitted) model moved to `device` ("auto", "cuda", a torch.device...); None leaves it on the CPU.
    The fit itself (L-BFGS in scipy) always runs on the CPU; the device serves the attacks and predictions."""
    if device is None:
        return model
    from ..device import resolve_device
    return model.to(resolve_device(device))


def perturb_on_model_device(attack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                            bounds=None) -> torch.Tensor:
    """`attack.perturb` (one batch, the raw optimiser) on the model's device; the result on the CPU."""
    from ..predict import model_device
    device = model_device(model)
    return attack.perturb(model, x.to(device), y.to(device), eps, bounds=bounds).cpu()


def fit_linear(x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.0, norm: str = "linf",
               weight_decay: float = 1e-4, max_iter: int = 1000) -> LogisticRegression:
    """Logistic regression fitted to convergence by L-BFGS-B (scipy): deterministic, no seed needed.

    Minimises mean(softplus(eps ||w||_* - s (w.x + b))) + weight_decay / 2 ||w||^2. eps > 0 trains
    against the exact worst-case attack of that norm (adversarial training without an attack).
    For linf the L1 term is made smooth by writing w = w_plus - w_minus with both >= 0.
    """
    if eps < 0:
        raise AdvlabError(f"eps must be >= 0, got {eps}")
    if norm not in ("linf", "l2"):
        raise AdvlabError(f"fit_linear trains against linf or l2 attacks, got {norm!r}")
    xs = x.reshape(len(x), -1).detach().cpu().float().numpy()  # (N, D) float32: halves memory
    s = 2.0 * y.detach().cpu().double().numpy() - 1.0  # (N,) +1 for class 1, -1 for class 0
    n, d = xs.shape
    split = eps > 0 and norm == "linf"

    def unpack(theta):
        w = theta[:d] - theta[d:2 * d] if split else theta[:d]
        return w, theta[-1]

    def objective(theta):
        w, b = unpack(theta)
        z = (xs @ w.astype(np.float32)).astype(np.float64) + b
        if eps == 0:
            shift = 0.0
        elif split:
            shift = eps * theta[:2 * d].sum()
        else:
            shift = eps * np.linalg.norm(w)
        m = s * z - shift  # (N,) margins under attack
        loss = np.logaddexp(0.0, -m).mean() + 0.5 * weight_decay * w @ w
        g = expit(-m) / n  # -d loss / d m
        grad_w = -(xs.T @ (s * g).astype(np.float32)).astype(np.float64) + weight_decay * w
        grad_b = -(s * g).sum()
        if split:
            grad = np.concatenate([grad_w + eps * g.sum(), -grad_w + eps * g.sum(), [grad_b]])
        else:
            if eps > 0:
                grad_w = grad_w + eps * g.sum() * w / max(np.linalg.norm(w), 1e-12)
            grad = np.concatenate([grad_w, [grad_b]])
        return loss, grad

    size = 2 * d + 1 if split else d + 1
    bounds = [(0, None)] * (2 * d) + [(None, None)] if split else None
    found = minimize(objective, np.zeros(size), jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": max_iter})
    w, b = unpack(found.x)
    return linear_model(w, b)


def linear_model(w: np.ndarray, b: float = 0.0) -> LogisticRegression:
    """A frozen LogisticRegression module (eval mode) holding the given weights, for the attacks."""
    model = LogisticRegression((len(w),))
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(np.asarray(w), dtype=torch.float32)[None])
        model.linear.bias.fill_(float(b))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def class_errors(w: np.ndarray, b: float, mean0: Sequence[float] | np.ndarray, mean1: Sequence[float] | np.ndarray,
                 sigma: float, eps: float = 0.0, norm: str = "linf") -> tuple[float, float]:
    """(P(error | class 0), P(error | class 1)) under the worst attack of size eps (closed form)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    m0 = np.broadcast_to(np.asarray(mean0, dtype=np.float64), w.shape)
    m1 = np.broadcast_to(np.asarray(mean1, dtype=np.float64), w.shape)
    scale = sigma * np.linalg.norm(w)
    shift = eps * dual_norm(w, norm)
    if scale == 0:  # a constant classifier: predicts class 1 iff b > 0 (ties go to class 0)
        return (float(b > 0), float(b <= 0))
    # Tail probabilities through norm.cdf of the standardised margin, accurate far into the tails.
    e0 = normal.cdf((shift + w @ m0 + b) / scale)
    e1 = normal.cdf((shift - (w @ m1 + b)) / scale)
    return float(e0), float(e1)


def linear_error(w, b, mean0, mean1, sigma: float, eps: float = 0.0, norm: str = "linf",
                 prior1: float = 0.5) -> float:
    """Error rate under the worst attack of size eps, averaged over classes with P(class 1) = prior1."""
    e0, e1 = class_errors(w, b, mean0, mean1, sigma, eps, norm)
    return (1 - prior1) * e0 + prior1 * e1


def wilson(k: int, n: int, level: float = 0.95) -> list[float]:
    """Wilson score interval for a binomial proportion k/n (scipy's binomtest)."""
    if n == 0:
        return [0.0, 1.0]
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]
