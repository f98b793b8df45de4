"""Goals: what an attack wants, as objects the engine applies (Foolbox 3's criteria).

A goal knows the loss to ascend and when a point is done:
- Misclassify(loss): the label changes (targeted: the prediction becomes the target);
- Confident(kappa): as Misclassify, with the winning class's probability >= kappa;
- Rubbish(confidence, l2): a given class reaches `confidence`, from an image of nothing (fooling).

`met` runs on whatever device the logits are on and never synchronises with the host.
"""

from __future__ import annotations

import torch

from ..errors import AdvlabError
from .losses import get_loss


class Goal:
    name = "goal"
    targeted = False

    def loss(self, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """(N,) what the attack ascends and ranks its candidates (restarts) by."""
        raise NotImplementedError

    def penalty(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor | None:
        """(N,) what the gradient step pays for moving from x0 to x (None: nothing)."""
        return None

    def met(self, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """(N,) bool: is the point done?"""
        raise NotImplementedError

    def check_targets(self, y: torch.Tensor, targets: torch.Tensor) -> None:
        if (targets == y).any():
            raise AdvlabError("some targets equal the true label; a targeted attack needs a different class")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


class Misclassify(Goal):
    """The prediction leaves the true class (or, given targets, becomes the target)."""

    name = "misclassify"

    def __init__(self, loss="ce"):
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self._loss = get_loss(loss)

    def loss(self, logits, y, targets):
        return self._loss(logits, y, targets)

    def met(self, logits, y, targets):
        pred = logits.argmax(1)
        return pred == targets if targets is not None else pred != y


def wrong_log_prob(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) log-probability of the most likely class other than y (targeted: of the target)."""
    log_p = logits.log_softmax(1)
    if targets is not None:
        return log_p.gather(1, targets[:, None])[:, 0]
    return log_p.scatter(1, y[:, None], float("-inf")).amax(1)


class Confident(Misclassify):
    """Misclassified with probability >= kappa (targeted: the target with >= kappa); the loss is the
    log-probability of the most likely wrong class (of the target)."""

    name = "confident"

    def __init__(self, kappa: float = 0.9):
        if not 0 < kappa < 1:
            raise AdvlabError(f"kappa is a probability in (0, 1), got {kappa}")
        super().__init__(wrong_log_prob)
        self.loss_name = "wrong_log_prob"
        self.kappa = kappa

    def met(self, logits, y, targets):
        conf, pred = logits.softmax(1).max(1)
        hit = pred == targets if targets is not None else pred != y
        return hit & (conf >= self.kappa)


class Rubbish(Goal):
    """A rubbish-class input: the target class wins with probability >= `confidence`. The loss is its
    log-probability; the gradient also pays `l2 * ||x - start||^2` to keep the change small. There is
    no true label: `y` is whatever the model said about the start image, and may equal the target."""

    name = "rubbish"
    targeted = True

    def __init__(self, confidence: float = 0.99, l2: float = 0.0):
        if not 0 < confidence <= 1:
            raise AdvlabError(f"target_confidence is a probability in (0, 1], got {confidence}")
        if l2 < 0:
            raise AdvlabError(f"l2 must be >= 0, got {l2}")
        self.confidence, self.l2 = confidence, l2

    def loss(self, logits, y, targets):
        return logits.log_softmax(1).gather(1, targets[:, None])[:, 0]

    def penalty(self, x, x0):
        return self.l2 * (x - x0).flatten(1).pow(2).sum(1) if self.l2 else None

    def met(self, logits, y, targets):
        log_p = logits.log_softmax(1)
        return (log_p.argmax(1) == targets) & (log_p.gather(1, targets[:, None])[:, 0].exp() >= self.confidence)

    def check_targets(self, y, targets):
        pass  # the start image's predicted class may be the class asked for
