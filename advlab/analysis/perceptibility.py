"""Perceptibility: an Linf budget that is small by the number can be obvious to a person.

    advlab analyze perceptibility --dataset digits --eps 0,0.05,0.1,0.2,0.3 --pairs 0:5,1:6

For a pair of classes (a, b), take a test image x0 of class a and x1 of class b and show
clip(x0 + eps * sign(x1)) over a grid of eps: every pixel moves by at most eps (the blend is inside
the Linf ball around x0 and inside the dataset's bounds), yet x1's shape shows through. For images
in [0, 1], sign(x1) is 1 on x1's strokes and 0 on its background. Distances are measured after
clipping, so they are what an attack with that budget could actually use.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plotting as figures
from .. import rng
from .. import rundir
from ..data import Dataset
from ..errors import AdvlabError
from ..io import write_json
from ..threat import clip_to_bounds


def blend(x0: torch.Tensor, x1: torch.Tensor, eps: float, bounds) -> torch.Tensor:
    """clip(x0 + eps * sign(x1)) to the bounds."""
    return clip_to_bounds(x0 + eps * torch.sign(x1), bounds)


def default_pairs(num_classes: int) -> list[tuple[int, int]]:
    """Classes 0..3 paired with the class half-way round: (0, K/2), (1, K/2 + 1), ..."""
    return [(c, (c + num_classes // 2) % num_classes) for c in range(min(4, num_classes))]


def perceptibility(ds: Dataset, eps: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
                   pairs: Sequence[tuple[int, int]] | None = None, *, seed: int = 0,
                   out: str | Path | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    if ds.x_test.ndim != 4:
        raise AdvlabError(f"the perceptibility grid needs images (N, C, H, W); {ds.name} has inputs of shape "
                          f"{tuple(ds.x_test.shape[1:])} - use digits, fashion-mnist, mnist or cifar10")
    eps = [float(e) for e in eps]
    if not eps or any(e < 0 for e in eps):
        raise AdvlabError(f"`eps` needs values >= 0, got {eps}")
    pairs = [tuple(p) for p in (pairs if pairs is not None else default_pairs(ds.num_classes))]
    k = ds.num_classes
    for a, b in pairs:
        if not (0 <= a < k and 0 <= b < k):
            raise AdvlabError(f"`pairs`: class indices must be in 0..{k - 1}, got {a}:{b}")
    g = rng.generator(seed)

    def pick(c: int) -> int:
        idx = (ds.y_test == c).nonzero().flatten()
        if len(idx) == 0:
            raise AdvlabError(f"class {c} has no test images")
        return int(idx[torch.randint(len(idx), (1,), generator=g)].item())

    rows, images = [], []
    for a, b in pairs:
        i0, i1 = pick(a), pick(b)
        x0, x1 = ds.x_test[i0], ds.x_test[i1]
        blends = [blend(x0, x1, e, ds.bounds) for e in eps]
        delta = torch.stack([xb - x0 for xb in blends]).flatten(1)  # (E, D)
        rows.append({"source_class": a, "source_name": ds.classes[a], "source_index": i0,
                     "target_class": b, "target_name": ds.classes[b], "target_index": i1,
                     "linf": delta.abs().amax(1).tolist(), "l2": delta.norm(dim=1).tolist(),
                     "changed_fraction": (delta != 0).double().mean(1).tolist()})
        images.append([_display(x) for x in [*blends, x1]])
    record: dict[str, Any] = {"analysis": "perceptibility", "dataset": ds.name, "seed": seed, "eps": eps,
                              "bounds": list(ds.bounds) if ds.bounds else None, "pairs": rows}
    if out is not None:
        out = Path(out)
        lo, hi = ds.bounds if ds.bounds else (float(ds.x_test.min()), float(ds.x_test.max()))
        record["figures"] = {"grid": figures.image_grid(
            np.array(images), [f"{r['source_name']} + {r['target_name']}" for r in rows],
            [f"eps = {e:g}" for e in eps] + ["x1 (source of sign)"],
            f"{ds.name}: clip(x0 + eps * sign(x1)) - every pixel moves by at most eps",
            out / rundir.PERCEPTIBILITY_PNG, vmin=float(lo), vmax=float(hi))}
        record["json"] = str(out / rundir.PERCEPTIBILITY_FILE)
    record["seconds"] = time.perf_counter() - started
    if out is not None:
        write_json(out / rundir.PERCEPTIBILITY_FILE, record)
    return record


def _display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> (H, W) for one channel, (H, W, 3) for colour."""
    a = x.detach().cpu().numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
