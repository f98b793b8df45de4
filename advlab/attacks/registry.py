"""Attacks by their CLI name. Each entry builds an attack from keyword options."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..errors import AdvlabError
from .apgd import APGD, APGDT
from .base import Attack
from .cw import CW
from .deepfool import DeepFool
from .fooling import Fooling
from .highconf import HighConfidence
from .pgd import BIM, FGSM, MIFGSM, PGD
from .spatial import Spatial
from .square import Square

# Every entry is an Attack subclass. Spatial's budget is a range of rotations and shifts (its threat is a
# SpatialRange) and Fooling's starting point is noise, not x; both return an AttackResult like the rest.
ATTACKS: dict[str, Callable[..., Any]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "mifgsm": MIFGSM,
    "apgd-ce": APGD,
    "apgd-t": APGDT,
    "cw": CW,
    "deepfool": DeepFool,
    "square": Square,
    "highconf": HighConfidence,
    "spatial": Spatial,
    "fooling": Fooling,
}


def attack_parameters(name: str) -> set[str]:
    """The keyword options attack `name` accepts (e.g. spatial takes no `norm`)."""
    if name not in ATTACKS:
        raise AdvlabError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return {k for k in inspect.signature(ATTACKS[name]).parameters if k != "self"}


def build_attack(name: str, **options: Any) -> Attack:
    """build_attack("pgd", norm="l2", steps=50). Unknown options are a clear error.

    The attacks here bound an Lp norm (spatial: rotations and shifts). Their embedding-space versions,
    whose budget is ||f(x') - f(x)||_2 for an embedding net f, build on them one layer up:
    advlab.metric.embedding_attack(name, f, **options) (pgd, bim and fgsm; `norm` is the pixel norm
    of the steps).
    """
    allowed = attack_parameters(name)
    factory = ATTACKS[name]
    unknown = sorted(set(options) - allowed)
    if unknown:
        hint = ("; for an embedding budget use advlab.metric.embedding_attack(name, embedding_net, **options)"
                if {"threat", "embedding"} & set(unknown) else "")
        raise AdvlabError(f"attack {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
                          + hint)
    try:
        return factory(**options)
    except TypeError as e:  # e.g. steps="many": a wrong type that the constructor's checks tripped on
        raise AdvlabError(f"attack {name!r}: an option has the wrong type ({e}); "
                          f"given {', '.join(f'{k}={v!r}' for k, v in options.items())}") from e
