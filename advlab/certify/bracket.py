"""The bracket: certified accuracy (a proof, lower bound) beside attacked robust accuracy (upper bound).

`advlab evaluate --certify [METHOD]` calls `certified_rows` on the points it evaluated. The rule:

- `ibp`, `crown`, `alpha-crown` (Linf; CROWN and alpha-CROWN L2 too), at each evaluated eps. They
  certify the model that was attacked, so certified <= robust holds point by point; a point that is
  certified and yet broken by an attack would be a bug, and is counted in `contradictions` (and said
  loudly). Where certified equals attacked, every point is decided: the row says
  `robust_accuracy_exact`.
- `exact` (Linf): each point verified, falsified (a counterexample re-checked in fp32) or unknown.
  Its verified points are the certified ones; its falsified points that the attacks left standing
  are counted in `missed_by_attacks` (the suite's own error against the truth); with no unknowns,
  robust accuracy is exact.
- `smoothing` (L2 with `sigma`): one certification whose radii are read at each eps. It certifies
  the *smoothed* classifier g, not the attacked model: a useful reference (how robust this network
  can be made to look with noise), but not a bound on the model's own robust accuracy, and it may lie
  above the attacked number. The record says which one it certifies.
- The bare flag (`auto`) keeps the old default: IBP for Linf, smoothing for L2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..errors import AdvlabError
from ..evaluate.stats import clopper_pearson
from ..progress import write
from .crown import certify_crown
from .exact import DEFAULT_TIMEOUT, verify_exact
from .ibp import certify_ibp
from .smoothing import certify_smoothing

MODEL_ITSELF = ("ibp", "crown", "alpha-crown", "exact")   # certificates of the attacked model itself
CERTIFIES_ITSELF = "the model itself (the one attacked)"


def default_method(norm: str) -> str:
    """What the bare `--certify` means: IBP for linf, randomized smoothing for l2."""
    return "smoothing" if norm == "l2" else "ibp"


def _eps_points(e: Any, n: int) -> torch.Tensor:
    t = torch.as_tensor(e, dtype=torch.float64).flatten().cpu()
    return t.expand(n) if t.numel() == 1 else t


def _exact_masks(subject, x, y, e, timeout: float, seed: int, state_dir, progress: bool):
    """(verified, falsified, unknown) masks at budget e (a number or one per point: grouped by value)."""
    n = len(y)
    eps = _eps_points(e, n)
    verified, falsified = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    unknown = torch.zeros(n, dtype=torch.bool)
    for value in torch.unique(eps).tolist():
        rows = torch.nonzero(eps == value).flatten()
        folder = None if state_dir is None else Path(state_dir) / f"exact-linf-eps{value:g}"
        cert = verify_exact(subject.model, x[rows], y[rows], value, bounds=subject.data.bounds, timeout=timeout,
                            seed=seed, state_dir=folder, identity=subject.identity(), indices=rows, progress=progress)
        status = cert.status or []
        verified[rows] = torch.tensor([s == "verified" for s in status], dtype=torch.bool) & cert.certified(0.0)
        falsified[rows] = torch.tensor([s == "falsified" for s in status], dtype=torch.bool)
        unknown[rows] = torch.tensor([s == "unknown" for s in status], dtype=torch.bool)
    return verified, falsified, unknown


def certified_rows(subject, x: torch.Tensor, y: torch.Tensor, eps: list, norm: str, rows: list[dict[str, Any]], *,
                   method: str | None = None, robust: torch.Tensor | None = None, sigma: float | None = None,
                   samples: int = 1000, samples0: int = 100, alpha: float = 0.001, seed: int = 0,
                   state_dir: str | Path | None = None, timeout: float | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Add `certified_accuracy`, `certified_ci95` and `gap` (robust - certified) to each row (one per eps, in
    order), and `robust_accuracy_exact` where every point is decided; return what the evaluation records
    under "certify". `method`: ibp, crown, alpha-crown, exact or smoothing (None: the default for `norm`)."""
    started = time.perf_counter()
    method = method or default_method(norm)
    n = len(y)
    y = y.cpu()
    masks: list[torch.Tensor] = []
    exact: list[tuple[torch.Tensor, torch.Tensor]] = []   # (falsified, unknown) per eps
    info: dict[str, Any]
    if norm not in ("linf", "l2"):
        raise AdvlabError(f"no certificate for norm {norm}; linf (IBP, CROWN, exact) and l2 (CROWN, randomized "
                          "smoothing) have one")
    if method == "smoothing":
        if norm != "l2" or sigma is None:
            raise AdvlabError("certified accuracy by randomized smoothing needs norm l2 and sigma")
        cert = certify_smoothing(subject.model, x, y, sigma, n0=samples0, n=samples, alpha=alpha, seed=seed,
                                 state_dir=state_dir, progress=progress, identity=subject.identity())
        masks = [cert.certified(0.0) & (cert.radius >= _eps_points(e, n)) for e in eps]
        info = {"method": "smoothing", "norm": "l2", "sigma": sigma, "samples": samples, "samples0": samples0,
                "alpha": alpha, "abstained": cert.abstained(),
                "smoothed_accuracy": float(cert.certified(0.0).float().mean()) if n else float("nan"),
                "certifies": "the smoothed classifier g, not the attacked model: not a bound on its robust accuracy"}
    elif method in MODEL_ITSELF:
        for e in eps:
            e = e if not torch.is_tensor(e) else e.cpu()
            if method == "ibp":
                cert = certify_ibp(subject.model, x, y, e, bounds=subject.data.bounds, progress=progress)
            elif method == "exact":
                verified, falsified, unknown = _exact_masks(subject, x, y, e, timeout or DEFAULT_TIMEOUT, seed,
                                                            state_dir, progress)
                masks.append(verified)
                exact.append((falsified, unknown))
                continue
            else:
                cert = certify_crown(subject.model, x, y, e, norm=norm, bounds=subject.data.bounds, method=method,
                                     progress=progress)
            masks.append(cert.certified(0.0) & (cert.radius >= _eps_points(e, n)))
        info = {"method": method, "norm": norm, "certifies": CERTIFIES_ITSELF}
        if method == "exact":
            info["timeout"] = timeout or DEFAULT_TIMEOUT
    else:
        raise AdvlabError(f"unknown certification method {method!r}; choose ibp, crown, alpha-crown, exact or "
                          "smoothing")
    contradictions = 0
    for i, (row, mask) in enumerate(zip(rows, masks)):
        k = int(mask.sum())
        row["certified_accuracy"] = k / n if n else float("nan")
        row["certified_ci95"] = list(clopper_pearson(k, n))
        row["gap"] = row["robust_accuracy"] - row["certified_accuracy"]
        if method not in MODEL_ITSELF:
            continue
        standing = robust[i].cpu().bool() if robust is not None else None
        if standing is not None:
            broken = int((mask & ~standing).sum())
            row["certified_but_broken"] = broken
            contradictions += broken
        if method == "exact":
            falsified, unknown = exact[i]
            row["falsified"], row["unknown"] = int(falsified.sum()), int(unknown.sum())
            if standing is not None:
                # breakable points the attacks left standing: the suite's error against the truth
                row["missed_by_attacks"] = int((falsified & standing).sum())
            decided = not bool(unknown.any())
        else:
            decided = standing is not None and bool(torch.equal(mask, standing))
        row["robust_accuracy_exact"] = row["certified_accuracy"] if decided else None
    if contradictions:
        write(f"WARNING: {contradictions} point(s) certified by {method} were broken by an attack: the certificate "
              "or the attack is wrong; please report it with this run")
    missed = sum(r.get("missed_by_attacks", 0) for r in rows)
    if missed:
        write(f"exact verification found {missed} breakable point(s) that every attack of the suite left standing "
              "(missed_by_attacks in each row)")
    info.update(seconds=time.perf_counter() - started,
                contradictions=contradictions if method in MODEL_ITSELF else None)
    return info
