"""Transfer between models: who is fooled by whose adversarial examples, and ensembles.

    m = transfer_matrix({"std": a, "adv": b}, x, y, eps=[0.1], attack=FGSM(), bounds=(0, 1))
    m.error["std"]["adv"]   # per eps: error of model `adv` on examples crafted on `std`

The diagonal is each model's white-box error. Goodfellow et al. (2015) report 19.6% / 40.9% for
a standard and an adversarially trained maxout network crafted on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks.transfer import transfer
from ..errors import AdvlabError
from ..models import Ensemble
from ..predict import predict_logits
from ..threat import Bounds


@dataclass
class TransferMatrix:
    names: list[str]
    eps: list[float]
    error: dict[str, dict[str, list[float]]]                 # error[source][target][eps index]
    clean_error: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict, repr=False)  # per source: its TransferResult (examples)

    def table(self, e: int = -1) -> list[list[float]]:
        """Rows are sources, columns targets, at epsilon index e."""
        return [[self.error[s][t][e] for t in self.names] for s in self.names]

    def as_dict(self) -> dict[str, Any]:
        return {"names": self.names, "eps": self.eps, "error": self.error, "clean_error": self.clean_error,
                "tables": [self.table(e) for e in range(len(self.eps))]}


def transfer_matrix(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps, attack,
                    bounds: Bounds = None, progress: bool = False) -> TransferMatrix:
    """Craft with `attack` on every model; score each model's examples on every model."""
    if len(models) < 1:
        raise AdvlabError("transfer_matrix needs at least one model")
    error: dict[str, dict[str, list[float]]] = {}
    eps_values: list[float] = []
    results = {}
    for source_name, source in models.items():
        t = results[source_name] = transfer(attack, source, models, x, y, eps, bounds, progress=progress)
        eps_values = t.eps
        error[source_name] = {name: t.error(name) for name in models}
    clean = {name: 1 - (predict_logits(m, x).argmax(1) == y).float().mean().item() for name, m in models.items()}
    return TransferMatrix(list(models), eps_values, error, clean, results)


def ensemble_transfer(members: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps, attack,
                      bounds: Bounds = None) -> dict[str, Any]:
    """Error of the probability-averaging ensemble when the attacker targets the whole ensemble,
    versus when the attacker targets one member only (Goodfellow et al.: 91.1% vs 87.9%)."""
    ensemble = Ensemble(list(members.values())).eval()
    whole = attack(ensemble, x, y, eps, bounds=bounds)
    per_member = {}
    for name, member in members.items():
        t = transfer(attack, member, {"ensemble": ensemble}, x, y, eps, bounds)
        per_member[name] = t.error("ensemble")
    return {"eps": whole.eps, "attack_ensemble": [1 - a for a in whole.robust_accuracy()],
            "attack_one_member": per_member,
            "attack_one_member_mean": [sum(v[e] for v in per_member.values()) / len(per_member)
                                       for e in range(len(whole.eps))]}
