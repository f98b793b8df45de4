"""The epsilon cascade's rule, in one place (the attack base class and the evaluation both apply it).

Budgets are attacked smallest first, and a point broken at a smaller budget stays broken at every
larger one: its example is inside the larger ball too. So robust accuracy can never rise with
epsilon, and a larger budget attacks only the points the smaller ones left robust.
"""

from __future__ import annotations

import torch


def eps_order(budgets: list[torch.Tensor]) -> list[int]:
    """Indices of the budgets, smallest (by mean, for per-example budgets) first."""
    return sorted(range(len(budgets)), key=lambda e: budgets[e].mean().item())


def still_broken(broken_before: torch.Tensor, eps_before: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: points broken at eps_before whose example also counts at eps (the budget did not
    shrink; per-example budgets can)."""
    return broken_before & (eps_before <= eps)
