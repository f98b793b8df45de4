"""Defenses by CLI name. Each builds a training objective (see training.Objective)."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import AdvlabError
from .training import Objective, clean_objective


def _none(**options: Any) -> Objective:
    return clean_objective


DEFENSES: dict[str, Callable[..., Objective]] = {
    "none": _none,
}


def build_defense(name: str, **options: Any) -> Objective:
    if name not in DEFENSES:
        raise AdvlabError(f"unknown defense {name!r}; choose one of {', '.join(DEFENSES)}")
    return DEFENSES[name](**options)
