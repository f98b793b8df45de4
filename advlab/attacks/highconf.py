"""High-confidence adversarial examples: keep attacking until a wrong class has probability >= kappa.

Plain attacks stop at the decision boundary, where the model is unsure; a defense that rejects
low-confidence or out-of-distribution-looking inputs then appears to work. Examples that the model
misclassifies *confidently* pass such detectors (Carlini & Wagner 2017 use a logit margin kappa
for the same purpose; here kappa is a probability, the number a detector thresholds).

HighConfidence is PGD with the goal `goals.Confident(kappa)`:
- the goal (early stopping, the epsilon cascade, AttackResult.success):
  untargeted, the prediction is wrong and its probability is >= kappa; targeted, the prediction
  is the target and its probability is >= kappa;
- a loss aligned with that goal: the log-probability of the most likely wrong class (targeted:
  of the target), ascended until the goal is met.

    result = HighConfidence(kappa=0.99, steps=100)(model, x, y, eps=[0.1, 0.2], bounds=(0, 1))
    result.success    # (E, N): wrong with >= 99% confidence, inside the ball and bounds
"""

from __future__ import annotations

from .goals import Confident, wrong_log_prob
from .pgd import PGD

__all__ = ["HighConfidence", "wrong_log_prob"]


class HighConfidence(PGD):
    name = "highconf"

    def __init__(self, norm="linf", *, kappa: float = 0.9, steps: int = 100, step_size: float | None = None,
                 rel_step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 targeted: bool = False, batch_size: int | None = None, seed: int = 0, sync_free: bool | None = None):
        goal = Confident(kappa)  # checks kappa before anything else
        super().__init__(norm, steps=steps, step_size=step_size, rel_step_size=rel_step_size,
                         random_start=random_start, restarts=restarts, loss=wrong_log_prob, targeted=targeted,
                         batch_size=batch_size, seed=seed, sync_free=sync_free)
        self.loss = "wrong_log_prob"
        self.kappa = kappa
        self.goal = goal
