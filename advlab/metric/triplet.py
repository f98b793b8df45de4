"""Triplet embedding networks: metric learning so that distance tracks class (Schroff et al. 2015).

    advlab analyze embedding --dataset digits --epochs 10 --out runs/analyze/embedding-digits

An embedding net f maps an input to a point on the unit sphere in R^dim (L2-normalised output).
The triplet loss for an anchor a, a positive p of the same class and a negative n of another class
is relu(||f(a) - f(p)|| - ||f(a) - f(n)|| + margin) (Euclidean, not squared). Which triplets of a
batch are used is the mining rule:

- `all`: every valid triplet of the batch, averaged.
- `batch-hard` (Hermans et al. 2017): per anchor, its farthest positive and its nearest negative.
- `semi-hard` (Schroff et al. 2015, as TensorFlow implements it): per (anchor, positive) pair, the
  nearest negative that is still farther than the positive; if there is none, the farthest negative.

Training reuses the defenses' Trainer (seeded shuffling, one-cycle lr, a progress bar, a resumable
checkpoint after every epoch). The trainer's "train acc" is the in-batch 1-NN accuracy and the
validation metric is Recall@1 on the validation split. The run directory is a normal run
(model.safetensors + card.json) whose card has `"kind": "embedding"`; load it with
`load_embedding(RUN)`.

Devices: `train_embedding(..., device=)` and `load_embedding(RUN, device=)` put the network on a
device (None: the CPU); batches move there one at a time and embeddings (`embed`) come back to
the CPU, where the k-NN search and Recall@1 run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import rng
from ..analysis.distances import min_distance_to_classes
from ..data import Dataset, holdout_split
from ..errors import AdvlabError
from ..io import load_tensors
from ..models import build_from_spec, model_spec
from ..predict import model_device
from ..rundir import CARD_FILE, CHECKPOINT_FILE, MODEL_FILE
from ..runs import read_card, save_run

MINING = ("batch-hard", "semi-hard", "all")
KIND = "embedding"


# -- the network ------------------------------------------------------------------------------------
class EmbeddingNet(nn.Module):
    """A backbone from the model registry whose `dim` outputs are the embedding, L2-normalised."""

    def __init__(self, backbone: nn.Module, l2_normalize: bool = True):
        super().__init__()
        self.backbone = backbone
        self.l2_normalize = l2_normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (N, dim)
        z = self.backbone(x)
        return F.normalize(z, dim=1) if self.l2_normalize else z


def default_arch(input_shape) -> str:
    return "cnn-small" if len(input_shape) == 3 else "mlp"


def build_embedding(card: dict[str, Any]) -> EmbeddingNet:
    return EmbeddingNet(build_from_spec(card["model"]), card["embedding"]["l2_normalize"])


def load_embedding(run_dir, device=None) -> tuple[EmbeddingNet, dict[str, Any]]:
    """(embedding net in eval mode, card) of a run written by `train_embedding`.

    `device`: "auto", "cpu", "cuda", "cuda:N", a torch.device, or None (the CPU)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise AdvlabError(f"embedding run {run_dir} does not exist; train one with "
                          f"`advlab analyze embedding --dataset D --out DIR` (it is written to DIR/embedding)")
    card = read_card(run_dir)
    if card.get("kind") != KIND:
        raise AdvlabError(f"{run_dir} is a classifier run, not an embedding run; pass the run directory of a "
                          "triplet network (written by `advlab analyze embedding` to OUT/embedding)")
    net = build_embedding(card)
    try:
        net.load_state_dict(load_tensors(run_dir / MODEL_FILE), strict=True)
    except RuntimeError as e:
        raise AdvlabError(f"{run_dir}: weights do not match the architecture in {CARD_FILE}: {e}") from e
    if device is not None:
        from ..device import resolve_device
        net.to(resolve_device(device))
    return net.eval(), card


# -- distances, mining and the loss ------------------------------------------------------------------
def pairwise_distances(z: torch.Tensor) -> torch.Tensor:
    """(B, B) Euclidean distances from differences (exact, no |a|^2 + |b|^2 - 2ab cancellation);
    the sqrt is clamped away from 0 so the gradient stays finite on the diagonal."""
    return (z[:, None, :] - z[None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()


def mine_triplets(d: torch.Tensor, y: torch.Tensor, mining: str = "batch-hard"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor, positive, negative) index tensors of the triplets the rule picks from a (B, B)
    distance matrix. Anchors without a positive or a negative in the batch are left out."""
    if mining not in MINING:
        raise AdvlabError(f"unknown mining {mining!r}; choose one of {', '.join(MINING)}")
    d = d.detach()
    b = len(y)
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(b, dtype=torch.bool, device=d.device)
    neg = ~same
    if mining == "all":
        return (pos[:, :, None] & neg[:, None, :]).nonzero(as_tuple=True)
    if mining == "batch-hard":
        a = (pos.any(1) & neg.any(1)).nonzero().flatten()
        p = d.masked_fill(~pos, -torch.inf).argmax(1)[a]
        n = d.masked_fill(~neg, torch.inf).argmin(1)[a]
        return a, p, n
    a, p = pos.nonzero(as_tuple=True)  # semi-hard: one triplet per (anchor, positive) pair
    keep = neg[a].any(1)
    a, p = a[keep], p[keep]
    dan, negs = d[a], neg[a]                    # (P, B)
    farther = negs & (dan > d[a, p][:, None])
    semi = dan.masked_fill(~farther, torch.inf).argmin(1)
    easiest = dan.masked_fill(~negs, -torch.inf).argmax(1)
    return a, p, torch.where(farther.any(1), semi, easiest)


def triplet_loss(z: torch.Tensor, y: torch.Tensor, margin: float = 0.2, mining: str = "batch-hard") -> torch.Tensor:
    """Mean of relu(d(a, p) - d(a, n) + margin) over the mined triplets (0 if there are none)."""
    d = pairwise_distances(z)
    a, p, n = mine_triplets(d, y, mining)
    if len(a) == 0:
        return z.sum() * 0.0
    return F.relu(d[a, p] - d[a, n] + margin).mean()


class TripletObjective:
    """A Trainer objective. Its "logits" are the in-batch 1-NN label as one-hot, so the trainer's
    train accuracy is the in-batch nearest-neighbour accuracy."""

    def __init__(self, margin: float, mining: str, num_classes: int):
        if margin < 0:
            raise AdvlabError(f"the triplet margin must be >= 0, got {margin}")
        if mining not in MINING:
            raise AdvlabError(f"unknown mining {mining!r}; choose one of {', '.join(MINING)}")
        self.margin, self.mining, self.num_classes = margin, mining, num_classes

    def __call__(self, model, x, y, generator):
        z = model(x)
        d = pairwise_distances(z)
        a, p, n = mine_triplets(d, y, self.mining)
        loss = F.relu(d[a, p] - d[a, n] + self.margin).mean() if len(a) else z.sum() * 0.0
        with torch.no_grad():
            dd = d.detach().clone()
            dd.fill_diagonal_(torch.inf)
            logits = F.one_hot(y[dd.argmin(1)], self.num_classes).float()
        return loss, logits


# -- quality -----------------------------------------------------------------------------------------
@torch.no_grad()
def embed(net: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(N, dim) embeddings in eval mode, on the CPU."""
    was = net.training
    net.eval()
    device = model_device(net)
    try:
        out = [net(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        net.train(was)
    return torch.cat(out)


def knn_predict(queries: torch.Tensor, refs: torch.Tensor, ref_labels: torch.Tensor, num_classes: int,
                k: int = 5, block: int = 1024) -> torch.Tensor:
    """Majority label of the k nearest references (Euclidean); a tie goes to the class of the nearer
    neighbour. Computed where `queries` are; the labels come back on the CPU."""
    if k < 1 or k > len(refs):
        raise AdvlabError(f"k must be in 1..{len(refs)} (the number of references), got {k}")
    device = queries.device
    refs, ref_labels = refs.to(device), ref_labels.to(device)
    ranks = torch.arange(k, device=device).expand(1, k)
    out = []
    for i in range(0, len(queries), block):
        d = torch.cdist(queries[i:i + block].double(), refs.double())
        labels = ref_labels[d.topk(k, dim=1, largest=False).indices]       # (b, k), nearest first
        votes = torch.zeros(len(labels), num_classes, dtype=torch.long, device=device).scatter_add_(
            1, labels, torch.ones_like(labels))
        first = torch.full((len(labels), num_classes), k, dtype=torch.long, device=device)
        first.scatter_reduce_(1, labels, ranks.expand_as(labels).contiguous(), "amin")
        out.append((votes * (k + 1) - first).argmax(1))  # most votes; among those, the nearest neighbour
    return torch.cat(out).cpu()


def recall_at_1(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Share of points whose nearest other point of the same set has the same label."""
    mins, _ = min_distance_to_classes(z, z, y, num_classes, "l2", self_index=torch.arange(len(z)))
    return float(np.mean(mins.argmin(1) == y.cpu().numpy()))


def embedding_quality(net: nn.Module, ds: Dataset, k: int = 5, n_test: int | None = None) -> dict[str, Any]:
    """k-NN accuracy (training set as references) and Recall@1 (within the test set) on the test set."""
    x_test, y_test = ds.test_subset(n_test)
    z_train, z_test = embed(net, ds.x_train), embed(net, x_test)
    pred = knn_predict(z_test, z_train, ds.y_train, ds.num_classes, k)
    return {"knn_accuracy": float((pred == y_test).float().mean()), "k": k,
            "recall_at_1": recall_at_1(z_test, y_test, ds.num_classes), "n_test": len(y_test)}


def recall_metric(num_classes: int) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], float]:
    def metric(model, x, y):
        return recall_at_1(embed(model, x), y.cpu(), num_classes)
    return metric


# -- training ----------------------------------------------------------------------------------------
def train_embedding(ds: Dataset, out: str | Path | None = None, *, arch: str | None = None, dim: int = 32,
                    l2_normalize: bool = True, margin: float = 0.2, mining: str = "semi-hard", epochs: int = 10,
                    batch_size: int = 128, lr: float = 1e-3, seed: int = 0, val_fraction: float = 0.1,
                    k: int = 5, model_kwargs: dict[str, Any] | None = None, resume: bool = False,
                    overwrite: bool = False, progress: bool = True,
                    log: Callable[[str], None] | None = None, device=None) -> tuple[EmbeddingNet, dict[str, Any]]:
    """Train a triplet network on `ds`; with `out`, checkpoint every epoch and save a run there.
    Returns (net in eval mode, card). `device`: where it trains ("auto", "cuda", a torch.device...;
    None: the CPU); the returned net stays there."""
    from ..defenses.training import TrainConfig, Trainer

    if dim < 1:
        raise AdvlabError(f"the embedding dimension must be >= 1, got {dim}")
    out = Path(out) if out is not None else None
    if out is not None and not resume and not overwrite and ((out / CARD_FILE).exists() or (out / CHECKPOINT_FILE).exists()):
        raise AdvlabError(f"{out} already holds a run; pass `resume=True` to continue it, `overwrite=True` "
                          "to replace it, or choose another output directory")
    started = time.perf_counter()
    arch = arch or default_arch(ds.input_shape)
    objective = TripletObjective(margin, mining, ds.num_classes)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    mean, std = ds.channel_stats()
    spec = model_spec(arch, ds.input_shape, dim, {"mean": mean, "std": std}, **(model_kwargs or {}))
    with rng.seeded(seed):
        net = EmbeddingNet(build_from_spec(spec), l2_normalize)  # built on the CPU: the same weights anywhere
    if device is not None:
        from ..device import resolve_device
        net.to(resolve_device(device))
    split = holdout_split(ds.x_train, ds.y_train, val=val_fraction, seed=seed)
    settings = {"dim": dim, "l2_normalize": l2_normalize, "margin": margin, "mining": mining}
    identity = {"kind": KIND, "model": spec, "dataset": ds.describe(), "embedding": settings,
                "val_fraction": val_fraction}
    trainer = Trainer(net, split.x_train, split.y_train, split.x_val, split.y_val, config=config,
                      objective=objective, val_metric=recall_metric(ds.num_classes), run_dir=out,
                      progress=progress, log=log or (lambda m: None), identity=identity)
    result = trainer.fit(resume=resume and out is not None and (out / CHECKPOINT_FILE).exists())
    net.eval()
    quality = embedding_quality(net, ds, k)
    card = {"kind": KIND, "model": spec, "embedding": settings, "dataset": ds.describe(), "seed": seed,
            "epochs": result.epochs_run, "train": {**dataclasses.asdict(config), "val_fraction": val_fraction},
            "metrics": {**quality, "train_seconds": result.seconds, "history": result.history},
            "seconds": time.perf_counter() - started}
    if out is not None:
        save_run(out, net, card)
    return net, card
