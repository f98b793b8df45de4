"""Is a generated adversarial example legitimate, or just an image of another class?

Song et al. (2018) ask people whether an unrestricted adversarial example still shows the source
class. Without people at hand, advlab asks two machine questions per example x (source s, label p
that the attacked model gives):

1. What does an independent classifier (trained on real data, different architecture) say?
   A legitimate example should still be s for it (`judge_agrees_source`).
2. Is x closer (L2, pixel space) to a real training image of class p than to any real image of s?
   Then the generator has drawn an image of class p (`closer_to_predicted`): a change of class,
   not an adversarial example.

An example passes when it is a successful attack, the judge says s, and it is not closer to class p.
These are heuristics: a judge can share the attacked model's blind spots, and pixel distance is a
crude proxy for what a person sees. The report says what fraction pass and lists the distances.

The nearest-image search runs on the judge's device unless `device` says otherwise: the reference
images of a class are copied there once, generated images go chunk by chunk, and only the chosen
indices come back; the distance to the chosen image is recomputed exactly on the CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..errors import AdvlabError
from ..predict import model_device, predict_logits


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    from ..device import resolve_device
    return resolve_device(device)


@torch.no_grad()
def nearest_distances(x: torch.Tensor, reference: torch.Tensor, chunk: int = 512, *,
                      device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 distance from each x to its nearest reference point and that point's index, in chunks.

    Candidates come from a matrix product in float32 (fast; on `device`, None: the CPU); the distance
    to the chosen point is recomputed exactly on the CPU, so the returned distance is the true
    distance to the returned index. Both results are on the CPU.
    """
    if len(reference) == 0:
        raise AdvlabError("no reference images to compare with (a class without training images?)")
    a = x.reshape(len(x), -1).float().cpu()                 # (N, D)
    b = reference.reshape(len(reference), -1).float().cpu()  # (M, D)
    if a.shape[1] != b.shape[1]:
        raise AdvlabError(f"images have {a.shape[1]} values each but the reference images have {b.shape[1]}")
    dev = _device(device)
    bd = b.to(dev)                                           # (M, D) on the device (b itself on the CPU)
    b2 = (bd * bd).sum(1)                                    # (M,)
    idx = torch.empty(len(a), dtype=torch.int64)
    for i in range(0, len(a), chunk):
        q = a[i:i + chunk].to(dev)
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bd.T + b2[None]  # (n, M) squared distances
        idx[i:i + chunk] = d2.argmin(1).cpu()
    dist = (a - b[idx]).norm(dim=1)
    return dist, idx


@torch.no_grad()
def nearest_per_class(x: torch.Tensor, x_ref: torch.Tensor, y_ref: torch.Tensor, num_classes: int,
                      chunk: int = 512, *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) distances to the nearest reference image of each class, and (N, K) indices into x_ref
    (inf and -1 for a class without reference images); searched on `device` (None: the CPU)."""
    y_ref = y_ref.cpu()
    dist = torch.full((len(x), num_classes), float("inf"))
    index = torch.full((len(x), num_classes), -1, dtype=torch.int64)
    for c in range(num_classes):
        members = torch.nonzero(y_ref == c).flatten()
        if len(members) == 0:
            continue
        d, i = nearest_distances(x, x_ref[members], chunk, device=device)
        dist[:, c], index[:, c] = d, members[i]
    return dist, index


@dataclasses.dataclass
class Legitimacy:
    judge_label: torch.Tensor          # (N,) independent classifier's label
    dist_source: torch.Tensor          # (N,) L2 to the nearest real training image of the source class
    dist_predicted: torch.Tensor       # (N,) L2 to the nearest real training image of the predicted class
    nearest_source: torch.Tensor       # (N,) index into the reference set
    nearest_predicted: torch.Tensor    # (N,)
    closer_to_predicted: torch.Tensor  # (N,) bool: dist_predicted < dist_source
    passes: torch.Tensor               # (N,) bool: success, judge says source, not closer to predicted

    def summary(self, source: torch.Tensor, pred: torch.Tensor, success: torch.Tensor) -> dict[str, Any]:
        s = success
        n = int(s.sum())

        def frac(mask: torch.Tensor) -> float | None:
            return mask[s].float().mean().item() if n else None

        def med(v: torch.Tensor) -> float | None:
            return v[s].median().item() if n else None

        return {
            "n_successful": n,
            "judge_agrees_source": frac(self.judge_label == source),
            "judge_agrees_predicted": frac(self.judge_label == pred),
            "closer_to_predicted": frac(self.closer_to_predicted),
            "pass_fraction": frac(self.passes),
            "pass_rate_of_all": self.passes.float().mean().item() if len(s) else None,
            "median_dist_source": med(self.dist_source),
            "median_dist_predicted": med(self.dist_predicted),
        }


def check_legitimacy(x: torch.Tensor, source: torch.Tensor, pred: torch.Tensor, success: torch.Tensor,
                     judge: nn.Module, x_ref: torch.Tensor, y_ref: torch.Tensor, num_classes: int,
                     chunk: int = 512, *, device=None) -> Legitimacy:
    """Judge label and nearest-real-image distances for each generated example (see the module doc).
    `device`: where the nearest-image search runs (None: wherever the judge is). Results are on the CPU."""
    n = len(x)
    if not (len(source) == len(pred) == len(success) == n):
        raise AdvlabError(f"x, source, pred and success must have the same length, got "
                          f"{n}, {len(source)}, {len(pred)}, {len(success)}")
    if tuple(x.shape[1:]) != tuple(x_ref.shape[1:]):
        raise AdvlabError(f"generated images have shape {tuple(x.shape[1:])} but the real ones "
                          f"{tuple(x_ref.shape[1:])}: use the dataset the AC-GAN was trained on")
    if not torch.isfinite(x).all():
        raise AdvlabError("generated images contain NaN or inf")
    judge_label = predict_logits(judge, x).argmax(1)
    dist, index = nearest_per_class(x, x_ref, y_ref, num_classes, chunk,
                                    device=device if device is not None else model_device(judge))
    rows = torch.arange(n)
    d_src, d_pred = dist[rows, source], dist[rows, pred]
    closer = d_pred < d_src
    passes = success.bool() & (judge_label == source) & ~closer
    return Legitimacy(judge_label=judge_label, dist_source=d_src, dist_predicted=d_pred,
                      nearest_source=index[rows, source], nearest_predicted=index[rows, pred],
                      closer_to_predicted=closer, passes=passes)
