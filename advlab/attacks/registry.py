"""Attacks by their CLI name. Each entry builds an attack from keyword options."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..errors import AdvlabError
from .base import Attack
from .pgd import BIM, FGSM, MIFGSM, PGD

ATTACKS: dict[str, Callable[..., Attack]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "mifgsm": MIFGSM,
}


def build_attack(name: str, **options: Any) -> Attack:
    """build_attack("pgd", norm="l2", steps=50). Unknown options are a clear error."""
    if name not in ATTACKS:
        raise AdvlabError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    factory = ATTACKS[name]
    allowed = {k for k in inspect.signature(factory).parameters if k != "self"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise AdvlabError(f"attack {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    try:
        return factory(**options)
    except TypeError as e:  # e.g. steps="many": a wrong type that the constructor's checks tripped on
        raise AdvlabError(f"attack {name!r}: an option has the wrong type ({e}); "
                          f"given {', '.join(f'{k}={v!r}' for k, v in options.items())}") from e
