"""A detection defense: the classifier abstains on inputs it is not confident about.

Detectors of this kind (a threshold on the top probability, or an out-of-distribution score)
reject most adversarial examples made by attacks that stop at the decision boundary, where the
model is unsure. They fall to an attacker who asks for confident mistakes: the high-confidence
attack (advlab.attacks.HighConfidence with kappa above the threshold).

Under detection, a point counts as robust when the model is right *or* the input is rejected.
"""

from __future__ import annotations

import torch
from torch import nn

from ..predict import predict_logits


class ConfidenceDetector(nn.Module):
    """Wraps a classifier; forward returns its logits, `accepts` says which inputs pass the detector."""

    def __init__(self, model: nn.Module, threshold: float = 0.9):
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model, self.threshold = model, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def accepts(self, x: torch.Tensor) -> torch.Tensor:  # (N,) bool
        return predict_logits(self.model, x).softmax(1).amax(1) >= self.threshold

    def robust_accuracy(self, x_adv: torch.Tensor, y: torch.Tensor) -> float:
        """Share of points where the model is right or the (adversarial) input is rejected."""
        right = predict_logits(self.model, x_adv).argmax(1) == y.cpu()
        return (right | ~self.accepts(x_adv)).float().mean().item()
