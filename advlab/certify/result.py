"""What a certification returns: per point a prediction and a certified radius, and the curve they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..evaluate.stats import clopper_pearson

ABSTAIN = -1

# Radii of the default smoothing curve (L2, raw input units); `advlab certify --radii` replaces them.
DEFAULT_RADII = [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 1.75, 2.0]


@dataclass
class Certificate:
    method: str                      # "smoothing" | "ibp" | "crown" | "alpha-crown" | "exact"
    params: dict[str, Any]           # sigma, samples, alpha / eps, norm
    index: torch.Tensor              # (N,) test-set index of each point
    label: torch.Tensor              # (N,)
    prediction: torch.Tensor         # (N,) -1: abstained (smoothing)
    radius: torch.Tensor             # (N,) certified radius; 0 when not certified
    seconds: float = 0.0
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # per point: p_lower, counts, margins
    status: list[str] | None = None  # exact verification: verified | falsified | unknown per point
    counterexamples: dict[int, torch.Tensor] = field(default_factory=dict)  # test index -> input (exact)

    @property
    def n(self) -> int:
        return len(self.label)

    def certified(self, radius: float) -> torch.Tensor:
        """(N,) bool: the prediction is the label and is certified at this radius (radius 0: just correct)."""
        return (self.prediction == self.label) & (self.prediction != ABSTAIN) & (self.radius >= radius)

    def accuracy_at(self, radius: float) -> float:
        return self.certified(radius).float().mean().item() if self.n else float("nan")

    def curve(self, radii: list[float] | None = None, level: float = 0.95) -> list[dict[str, Any]]:
        """[{radius, accuracy, ci95}]: certified accuracy at each radius with its Clopper-Pearson interval
        (the interval covers sampling the test points, on top of the certificate's own confidence)."""
        if radii is None:
            radii = [0.0, float(self.params["eps"])] if "eps" in self.params and \
                not isinstance(self.params["eps"], list) else list(DEFAULT_RADII)
        out = []
        for r in radii:
            k = int(self.certified(r).sum())
            out.append({"radius": float(r), "accuracy": k / self.n if self.n else float("nan"),
                        "ci95": list(clopper_pearson(k, self.n, level))})
        return out

    def points(self) -> list[dict[str, Any]]:
        out = [{"index": int(i), "label": int(lab), "prediction": int(p), "radius": float(r)}
               for i, lab, p, r in zip(self.index.tolist(), self.label.tolist(), self.prediction.tolist(),
                                       self.radius.tolist())]
        if self.status is not None:
            for point, s in zip(out, self.status):
                point["status"] = s
        return out

    def abstained(self) -> int:
        return int((self.prediction == ABSTAIN).sum())

    def record(self, radii: list[float] | None = None) -> dict[str, Any]:
        """The `advlab certify --json` object (without the subject's model/device/data record)."""
        out: dict[str, Any] = {"method": self.method}
        out.update({k: v for k, v in self.params.items()})
        out.update({"n": self.n, "seconds": self.seconds, "seconds_per_point": self.seconds / max(self.n, 1),
                    "certified_accuracy": self.curve(radii), "abstained": self.abstained(),
                    "points": self.points()})
        return out
