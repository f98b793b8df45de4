"""Transfer attacks: craft adversarial examples on a source model, score them on target models.

    t = transfer(PGD(steps=20), source, {"cnn": cnn, "mlp": mlp}, x, y, eps=[0.1, 0.2], bounds=(0, 1))
    t.scores["mlp"].robust_accuracy()   # per eps, the target's accuracy on the source's examples
    t.summary()                         # one row per (target, eps)

Each target's score is an AttackResult holding the source's examples and the target's logits, so
every metric an attack reports (robust accuracy, success rate, confidence on mistakes) is computed
the same way for the source and for the targets. Scoring the source itself as a target gives the
attack's own numbers. This is also how an EOT or BPDA attack is scored against the defense it
approximates: craft on EOT(model, t) or BPDA(model, pre), score on Randomized(model, t) or
Preprocessed(model, pre).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import AdvlabError
from ..predict import predict_logits
from ..threat import Bounds
from .result import AttackResult


@dataclass
class TransferResult:
    source: AttackResult                                      # the attack on the source model
    scores: dict[str, AttackResult] = field(default_factory=dict)  # per target: its logits on source examples

    @property
    def eps(self) -> list[float]:
        return self.source.eps

    def error(self, target: str) -> list[float]:
        """Per eps, the share of all points the target misclassifies (1 - robust accuracy)."""
        return [1 - a for a in self.scores[target].robust_accuracy()]

    def summary(self) -> list[dict[str, Any]]:
        """One record per (target, eps): clean and robust accuracy, error, success and confidence."""
        rows = []
        for name, res in self.scores.items():
            clean = res.clean_accuracy()
            for rec, err in zip(res.summary(), self.error(name)):
                rows.append({"target": name, "clean_accuracy": clean, "error": err, **rec})
        return rows


def transfer(attack, source: nn.Module, targets: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
             eps, bounds: Bounds = None, *, target_classes: torch.Tensor | None = None, progress: bool = False,
             batch_size: int = 1024) -> TransferResult:
    """Run `attack` on `source` once (all epsilons), then score its examples on every target model.

    target_classes: the classes of a targeted attack (N,). Targets are scored in eval mode, their
    mode restored afterwards.
    """
    if not isinstance(targets, dict) or not targets:
        raise AdvlabError("targets must be a non-empty dict {name: model}")
    for name, model in targets.items():
        if not isinstance(model, nn.Module):
            raise AdvlabError(f"target {name!r} must be a torch.nn.Module, got {type(model).__name__}")
    result = attack(source, x, y, eps, bounds=bounds, targets=target_classes, progress=progress)
    scores = {}
    for name, model in targets.items():
        clean = predict_logits(model, x, batch_size)
        logits = torch.stack([predict_logits(model, xa, batch_size) for xa in result.x_adv])  # (E, N, K)
        scores[name] = dataclasses.replace(result, logits=logits, clean_logits=clean, goal=None,
                                           min_distance=None, info={"scored_on": name})
    return TransferResult(result, scores)
