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

# Spatial and Fooling are not Attack subclasses (their budget is not an Lp ball around x) but have
# the same call signature and return an AttackResult.
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


THREATS = ("lp", "embedding")


def build_attack(name: str, threat: str = "lp", **options: Any) -> Attack:
    """build_attack("pgd", norm="l2", steps=50). Unknown options are a clear error.

    threat="embedding" builds the embedding-space version (advlab.metric): the budget is
    ||f(x') - f(x)||_2 for the embedding net passed as embedding=..., and `norm` is the pixel norm
    of the steps (pgd, bim and fgsm only).
    """
    if threat not in THREATS:
        raise AdvlabError(f"unknown threat model {threat!r}; choose one of {', '.join(THREATS)}")
    if threat == "embedding":
        from ..metric.embedding_threat import embedding_attack  # advlab.metric builds on the attacks
        if "embedding" not in options:
            raise AdvlabError("the embedding threat model needs embedding=NET (an embedding network)")
        return embedding_attack(name, options.pop("embedding"), **options)
    allowed = attack_parameters(name)
    factory = ATTACKS[name]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise AdvlabError(f"attack {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    try:
        return factory(**options)
    except TypeError as e:  # e.g. steps="many": a wrong type that the constructor's checks tripped on
        raise AdvlabError(f"attack {name!r}: an option has the wrong type ({e}); "
                          f"given {', '.join(f'{k}={v!r}' for k, v in options.items())}") from e
