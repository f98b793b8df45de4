"""The give-up rule that Square and APGD share: stop spending budget on a point that cannot make it.

At a checkpoint, a point is hopeless when its margin z_y - max_{j != y} z_j (the distance to the goal
in logits; <= 0 means broken) would stay above zero for the rest of the budget even if it kept
falling at `factor` times its rate since the previous checkpoint. Both attacks slow down as they go
(Square's windows shrink, APGD halves its step), so the recent rate already overstates what is left.
"""

from __future__ import annotations

import torch

from ..errors import AdvlabError


def check_give_up(factor) -> None:
    if factor is not None and not factor > 0:
        raise AdvlabError(f"give_up is a factor > 0 (or None to spend the whole budget on every point), got {factor}")


def hopeless(margin_now: torch.Tensor, margin_then: torch.Tensor, spent: int, left: int, factor: float) -> torch.Tensor:
    """(N,) bool: margins that `factor` x their progress over the last `spent` units of budget
    could not bring to zero in the `left` units that remain."""
    rate = (margin_then - margin_now).clamp_min(0) / spent
    return margin_now > factor * rate * left
