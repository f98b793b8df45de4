"""Defenses by CLI name. Each factory takes the defense's options plus `bounds` (from the
dataset) and returns a training objective (see training.Objective); `rst` returns the settings of
robust self-training, which train_run runs as its own two-stage pipeline."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable

from ..errors import AdvlabError
from .adversarial import TRADES, FastAT, Goodfellow, L1Penalty, Noise, PGDTraining
from .certified import GaussianAugmentation, IBPTraining
from .rst import RSTSettings
from .training import Objective, clean_objective


def _none(*, bounds=None) -> Objective:
    return clean_objective


def _rst(eps: float | None = None, **options: Any) -> RSTSettings:
    """Robust self-training over a base defense named in this table, which builds it."""
    return RSTSettings(eps, bases=DEFENSES, build_base=build_defense, **options)


DEFENSES: dict[str, Callable[..., Any]] = {
    "none": _none,
    "goodfellow": Goodfellow,
    "pgd": PGDTraining,
    "trades": TRADES,
    "fgsm-rs": FastAT,
    "noise-sign": partial(Noise, kind="sign"),
    "noise-uniform": partial(Noise, kind="uniform"),
    "l1": L1Penalty,
    "rst": _rst,
    "gaussian": GaussianAugmentation,
    "ibp": IBPTraining,
}


def defense_options(name: str) -> list[str]:
    if name == "rst":
        return RSTSettings.options()
    factory = DEFENSES[name]
    params = inspect.signature(factory).parameters
    fixed = factory.keywords if isinstance(factory, partial) else {}
    return [k for k in params if k not in ("self", "bounds", *fixed)]


def build_defense(name: str, **options: Any):
    """build_defense("pgd", eps=0.1, steps=7, bounds=(0, 1)). Unknown options are a clear error."""
    if name not in DEFENSES:
        raise AdvlabError(f"unknown defense {name!r}; choose one of {', '.join(DEFENSES)}")
    allowed = defense_options(name)
    if name == "rst":  # rst passes the base defense's options on
        base = options.get("base", "trades")
        allowed = [*RSTSettings.options(), *(o for o in defense_options(base) if o not in RSTSettings.options())] \
            if base in DEFENSES and base != "rst" else RSTSettings.options()
    unknown = sorted(set(options) - set(allowed) - {"bounds"})
    if unknown:
        what = "takes no `eps`" if unknown == ["eps"] else f"has no option {', '.join(unknown)}"
        raise AdvlabError(f"defense {name!r} {what}; its options: {', '.join(allowed) or 'none'}")
    return DEFENSES[name](**options)
