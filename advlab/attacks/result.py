"""What an attack returns: adversarial examples and their scores, for every epsilon at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..records import AttackRow


@dataclass
class BatchOutput:
    """What the harness gets back from one batch (harness._attack_batch), on the CPU: every budget at once."""
    x_adv: torch.Tensor                          # (E, n, ...)
    logits: torch.Tensor                         # (E, n, K)
    clean_logits: torch.Tensor                   # (n, K)
    distances: torch.Tensor                      # (E, n)
    min_distance: Optional[torch.Tensor] = None  # (n,) minimal-norm attacks
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # (E, n, ...) per-example extras for
                                                                    # AttackResult.info (e.g. Spatial's angle, shift)

    @staticmethod
    def join(outputs: list["BatchOutput"]) -> "BatchOutput":
        """The batches in order, as one: per-budget tensors joined on the example axis (1), the rest on 0."""
        first = outputs[0]
        return BatchOutput(
            torch.cat([o.x_adv for o in outputs], dim=1), torch.cat([o.logits for o in outputs], dim=1),
            torch.cat([o.clean_logits for o in outputs]), torch.cat([o.distances for o in outputs], dim=1),
            torch.cat([o.min_distance for o in outputs]) if first.min_distance is not None else None,
            {k: torch.cat([o.extras[k] for o in outputs], dim=1) for k in first.extras})


@dataclass
class AttackResult:
    attack: str
    norm: str
    eps: list[float]             # as given (per-example budgets are summarised by their mean)
    x_adv: torch.Tensor          # (E, N, ...) adversarial examples, inside ball and bounds
    logits: torch.Tensor         # (E, N, K) model outputs on x_adv
    clean_logits: torch.Tensor   # (N, K)
    y: torch.Tensor              # (N,)
    distances: torch.Tensor      # (E, N) size of each perturbation in the attack's norm
    targets: Optional[torch.Tensor] = None
    seconds: float = 0.0
    min_distance: Optional[torch.Tensor] = None  # (N,) minimal-norm attacks: smallest perturbation found (inf if none)
    info: dict[str, Any] = field(default_factory=dict)
    goal: Optional[torch.Tensor] = None  # (E, N) the attack's own success criterion, when it has one
    passes: Optional[dict[str, int]] = None  # {"forward", "backward"} model rows (advlab.passes)

    @property
    def clean_correct(self) -> torch.Tensor:  # (N,)
        return self.clean_logits.argmax(1) == self.y

    @property
    def predictions(self) -> torch.Tensor:  # (E, N)
        return self.logits.argmax(2)

    @property
    def correct(self) -> torch.Tensor:  # (E, N): the model still gives the true label
        return self.predictions == self.y

    @property
    def success(self) -> torch.Tensor:  # (E, N): the attack's goal is met
        if self.goal is not None:
            return self.goal
        if self.targets is not None:
            return self.predictions == self.targets
        return ~self.correct

    def robust_accuracy(self) -> list[float]:
        return self.correct.float().mean(1).tolist()

    def clean_accuracy(self) -> float:
        return self.clean_correct.float().mean().item()

    def success_rate(self) -> list[float]:
        """Share of the clean-correct points on which the attack met its goal."""
        ok = self.clean_correct
        if not ok.any():
            return [float("nan")] * len(self.eps)
        return self.success[:, ok].float().mean(1).tolist()

    def mean_wrong_confidence(self) -> list[float]:
        """Mean probability the model gives its (wrong) answer on misclassified adversarial examples."""
        probs = self.logits.softmax(2).amax(2)  # (E, N)
        wrong = ~self.correct
        return [probs[e][wrong[e]].mean().item() if wrong[e].any() else float("nan") for e in range(len(self.eps))]

    def median_norm(self) -> list[float]:
        """Median perturbation size over the clean-correct points the attack fooled."""
        fooled = self.success & self.clean_correct
        return [self.distances[e][fooled[e]].median().item() if fooled[e].any() else float("nan")
                for e in range(len(self.eps))]

    def summary(self) -> list[AttackRow]:
        """One record per epsilon, with the names `advlab attack --json` prints."""
        rows = zip(self.eps, self.robust_accuracy(), self.success_rate(), self.mean_wrong_confidence(),
                   self.median_norm())
        return [AttackRow(eps=e, robust_accuracy=r, success_rate=s, mean_wrong_confidence=c, median_norm=m)
                for e, r, s, c, m in rows]
