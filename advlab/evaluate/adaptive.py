"""Three defenses that do not work, each against a naive and an adaptive attack.

Athalye et al. (2018) and Carlini & Wagner (2017) broke defenses that looked robust because the
attack used to evaluate them was the wrong one. For each kind advlab has a small wrapper, a
gradient-masking check that flags it, and the attack that breaks it:

1. shattered gradients: input quantisation in front of the model -> BPDA (straight-through);
2. stochastic gradients: a random resize-and-pad at inference -> EOT plus confident mistakes;
3. detection: rejecting low-confidence inputs -> high-confidence adversarial examples.

Each study returns the naive and the adaptive robust accuracy and the checks that failed.
    python examples/broken_defenses.py       prints the table on digits
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import PGD, HighConfidence, transfer
from ..models import EOT, ConfidenceDetector, Preprocessed, Quantize, Randomized, RandomResizePad
from ..models.adaptive import has_preprocessing
from ..threat import Bounds
from .checks import check_detector, check_gradient_consistency, check_gradients, check_randomness


def _row(defense, naive_attack, naive, adaptive_attack, adaptive, checks) -> dict[str, Any]:
    return {"defense": defense, "naive_attack": naive_attack, "naive_robust_accuracy": naive,
            "adaptive_attack": adaptive_attack, "adaptive_robust_accuracy": adaptive,
            "flags": [c.name for c in checks if not c.passed], "checks": [c.as_dict() for c in checks]}


def quantisation_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bounds: Bounds,
                       levels: int = 4) -> dict[str, Any]:
    defended = Preprocessed(model, Quantize(levels, bounds=bounds)).eval()
    naive = PGD(steps=20)(defended, x, y, [eps], bounds=bounds).robust_accuracy()[0]
    # Craft through the straight-through twin, score on the real defense.
    adaptive = transfer(PGD(steps=20), defended.bpda(), {"defense": defended}, x, y, [eps], bounds)
    checks = [check_gradients(defended, x, y),
              check_gradient_consistency(defended, x, y, step=eps / 20, bounds=bounds)]
    return _row(f"quantisation ({levels} levels)", "PGD-20", naive, "BPDA PGD-20",
                adaptive.scores["defense"].robust_accuracy()[0], checks)


def randomisation_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bounds: Bounds,
                        samples: int = 16, seed: int = 0) -> dict[str, Any]:
    transform = RandomResizePad(min_scale=0.75)
    defended = Randomized(model, transform, seed=seed).eval()
    naive = transfer(PGD(steps=20), defended, {"defense": defended}, x, y, [eps], bounds)
    eot = EOT(model, transform, samples=samples, seed=seed + 1).eval()
    adaptive = transfer(HighConfidence(kappa=0.9, steps=20), eot, {"defense": defended}, x, y, [eps], bounds)
    checks = [check_randomness(defended, x)]
    return _row("random resize-and-pad", "PGD-20", naive.scores["defense"].robust_accuracy()[0],
                f"EOT-{samples} high-confidence", adaptive.scores["defense"].robust_accuracy()[0], checks)


def detection_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bounds: Bounds,
                    threshold: float = 0.9) -> dict[str, Any]:
    detector = ConfidenceDetector(model, threshold).eval()
    naive = PGD(steps=20)(detector, x, y, [eps], bounds=bounds)
    strong = HighConfidence(kappa=min(0.99, threshold + 0.05), steps=100)(detector, x, y, [eps], bounds=bounds)
    checks = [check_detector(detector, x, y, eps=eps, bounds=bounds)]
    return _row(f"confidence detector (threshold {threshold})", "PGD-20",
                detector.robust_accuracy(naive.x_adv[0], y), "high-confidence",
                detector.robust_accuracy(strong.x_adv[0], y), checks)


def broken_defenses(model: nn.Module, x, y, eps: float, bounds: Bounds, randomised_model: nn.Module | None = None):
    """All three studies; `randomised_model` is a model trained under the random transformation
    (the randomised defense is pointless on a model that cannot classify transformed inputs)."""
    return [quantisation_study(model, x, y, eps, bounds),
            randomisation_study(randomised_model or model, x, y, eps, bounds),
            detection_study(model, x, y, eps, bounds)]


# Failed checks -> the adaptation that answers them (advlab.models.adaptive, `advlab evaluate --adaptive`).
SHATTERED = ("gradients", "gradient_consistency", "black_box", "unbounded")


def recommend(checks, model: nn.Module | None = None) -> list[str]:
    """The adaptations the failed checks point to, in the order to apply them: "bpda" for zero, NaN or
    inconsistent gradients and for black-box or unbounded failures (only when the model has a
    preprocessing layer BPDA can see through, `advlab.models.Preprocessed`), "rescale" for a saturated
    softmax, "eot" for a randomised model. Empty when nothing failed or nothing applies; a model whose
    gradients mislead for another reason still has Square, the black-box stage of the `standard` suite."""
    failed = {c.name for c in checks if not c.passed}
    out = []
    if failed & set(SHATTERED) and (model is None or has_preprocessing(model)) and "randomness" not in failed:
        out.append("bpda")
    if "saturation" in failed:
        out.append("rescale")
    if "randomness" in failed:
        out.append("eot")
    return out
