"""The bracket: certified accuracy (a proof, lower bound) beside attacked robust accuracy (upper bound).

`advlab evaluate --certify` calls `certified_rows` on the points it evaluated. The rule:

- Linf: interval bound propagation at each evaluated eps. It certifies the model that was attacked,
  so certified <= robust holds point by point; a point that is certified and yet broken by an attack
  would be a bug, and is counted in `contradictions` (and said loudly).
- L2 with `sigma`: randomized smoothing, one certification whose radii are read at each eps. It
  certifies the *smoothed* classifier g, not the attacked model: a useful reference (how robust
  this network can be made to look with noise), but not a bound on the model's own robust accuracy,
  and it may lie above the attacked number. The record says which one it certifies.
- L1, or L2 without sigma: no certificate (an AdvlabError before the evaluation starts).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..errors import AdvlabError
from ..evaluate.stats import clopper_pearson
from ..progress import write
from .ibp import certify_ibp
from .smoothing import certify_smoothing


def _eps_points(e: Any, n: int) -> torch.Tensor:
    t = torch.as_tensor(e, dtype=torch.float64).flatten().cpu()
    return t.expand(n) if t.numel() == 1 else t


def certified_rows(subject, x: torch.Tensor, y: torch.Tensor, eps: list, norm: str, rows: list[dict[str, Any]], *,
                   robust: torch.Tensor | None = None, sigma: float | None = None, samples: int = 1000,
                   samples0: int = 100, alpha: float = 0.001, seed: int = 0, state_dir: str | Path | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Add `certified_accuracy`, `certified_ci95` and `gap` (robust - certified) to each row (one per eps, in
    order); return what the evaluation records under "certify"."""
    started = time.perf_counter()
    n = len(y)
    y = y.cpu()
    masks: list[torch.Tensor] = []
    info: dict[str, Any]
    if norm == "linf":
        for e in eps:
            cert = certify_ibp(subject.model, x, y, e if not torch.is_tensor(e) else e.cpu(),
                               bounds=subject.data.bounds, progress=progress)
            masks.append(cert.certified(0.0) & (cert.radius >= _eps_points(e, n)))
        info = {"method": "ibp", "norm": "linf", "certifies": "the model itself (the one attacked)"}
    elif norm == "l2":
        if sigma is None:
            raise AdvlabError("certified accuracy for l2 needs sigma (randomized smoothing)")
        cert = certify_smoothing(subject.model, x, y, sigma, n0=samples0, n=samples, alpha=alpha, seed=seed,
                                 state_dir=state_dir, progress=progress, identity=subject.identity())
        masks = [cert.certified(0.0) & (cert.radius >= _eps_points(e, n)) for e in eps]
        info = {"method": "smoothing", "norm": "l2", "sigma": sigma, "samples": samples, "samples0": samples0,
                "alpha": alpha, "abstained": cert.abstained(),
                "smoothed_accuracy": float(cert.certified(0.0).float().mean()) if n else float("nan"),
                "certifies": "the smoothed classifier g, not the attacked model: not a bound on its robust accuracy"}
    else:
        raise AdvlabError(f"no certificate for norm {norm}; linf (IBP) and l2 (randomized smoothing) have one")
    contradictions = 0
    for i, (row, mask) in enumerate(zip(rows, masks)):
        k = int(mask.sum())
        row["certified_accuracy"] = k / n if n else float("nan")
        row["certified_ci95"] = list(clopper_pearson(k, n))
        row["gap"] = row["robust_accuracy"] - row["certified_accuracy"]
        if norm == "linf" and robust is not None:
            broken = int((mask & ~robust[i].cpu().bool()).sum())
            row["certified_but_broken"] = broken
            contradictions += broken
    if contradictions:
        write(f"WARNING: {contradictions} point(s) certified by IBP were broken by an attack: the certificate or the "
              "attack is wrong; please report it with this run")
    info.update(seconds=time.perf_counter() - started, contradictions=contradictions if norm == "linf" else None)
    return info
