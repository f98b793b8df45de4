"""High-confidence adversarial examples: keep attacking until a wrong class has probability >= kappa.

Plain attacks stop at the decision boundary, where the model is unsure; a defense that rejects
low-confidence or out-of-distribution-looking inputs then appears to work. Examples that the model
misclassifies *confidently* pass such detectors (Carlini & Wagner 2017 use a logit margin kappa
for the same purpose; here kappa is a probability, the number a detector thresholds).

HighConfidence is PGD with
- the goal (early stopping, the epsilon cascade, AttackResult.success) redefined by `_goal_met`:
  untargeted, the prediction is wrong and its probability is >= kappa; targeted, the prediction
  is the target and its probability is >= kappa;
- a loss aligned with that goal: the log-probability of the most likely wrong class (targeted:
  of the target), ascended until the goal is met.

    result = HighConfidence(kappa=0.99, steps=100)(model, x, y, eps=[0.1, 0.2], bounds=(0, 1))
    result.success    # (E, N): wrong with >= 99% confidence, inside the ball and bounds
"""

from __future__ import annotations

import torch

from ..errors import AdvlabError
from .pgd import PGD


def wrong_log_prob(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) log-probability of the most likely class other than y (targeted: of the target)."""
    log_p = logits.log_softmax(1)
    if targets is not None:
        return log_p.gather(1, targets[:, None])[:, 0]
    return log_p.scatter(1, y[:, None], float("-inf")).amax(1)


class HighConfidence(PGD):
    name = "highconf"

    def __init__(self, norm="linf", *, kappa: float = 0.9, steps: int = 100, step_size: float | None = None,
                 rel_step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 targeted: bool = False, batch_size: int = 500, seed: int = 0):
        if not 0 < kappa < 1:
            raise AdvlabError(f"kappa is a probability in (0, 1), got {kappa}")
        super().__init__(norm, steps=steps, step_size=step_size, rel_step_size=rel_step_size,
                         random_start=random_start, restarts=restarts, loss=wrong_log_prob, targeted=targeted,
                         batch_size=batch_size, seed=seed)
        self.loss = "wrong_log_prob"
        self.kappa = kappa

    def _goal_met(self, logits, y, targets):
        probs = logits.softmax(1)
        conf, pred = probs.max(1)
        hit = pred == targets if targets is not None else pred != y
        return hit & (conf >= self.kappa)
