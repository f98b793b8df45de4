"""Attack suites for evaluation: `fast`, `standard`, `autoattack` (AutoAttack's protocol) and `custom` (TOML).

A suite is a list of (label, attack name, options). Attacks run in order, each only on the points
the previous ones left robust, and a point counts as broken if any attack broke it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import build_attack
from ..attacks.base import Attack
from ..errors import ConfigError
from ..models.adaptive import sees_through

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


NEEDS = ("preprocessing",)


@dataclass(frozen=True)
class SuiteEntry:
    label: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict)
    # "preprocessing": the stage runs only on a model with a layer BPDA can see through (advlab.models.Preprocessed);
    # on any other model the evaluation leaves it out.
    needs: str | None = None

    def build(self, norm: str, seed: int = 0) -> Attack:
        return build_attack(self.attack, norm=norm, seed=seed, **self.options)

    def applies_to(self, model: nn.Module, x: torch.Tensor) -> bool:
        """Whether the stage runs on this model (inputs like x): always, unless it needs what BPDA sees through."""
        return self.needs is None or sees_through(model, x)


SUITES: dict[str, list[SuiteEntry]] = {
    # Converges on the models a user meets first (the demo's: the convergence check, PGD-100 x 2 restarts,
    # finds nothing it missed) at a few times PGD-20's cost: APGD's step-size schedule does in 50 steps
    # what PGD needs restarts for, and two targeted runs on the most promising wrong classes (ranked by
    # the linearised distance to their boundary) catch most of what the untargeted loss misses.
    "fast": [
        SuiteEntry("apgd-ce-50", "apgd-ce", {"steps": 50}),
        SuiteEntry("apgd-t-2x50", "apgd-t", {"steps": 50, "n_target_classes": 2, "ranking": "linear",
                                             "give_up": 3.0}),
    ],
    # AutoAttack's strength at about a tenth of its passes where gradients work (benchmarks/results/panel.md):
    # - APGD-CE as in AutoAttack, and up to 3 more random starts for a point that ends unbroken within 5% of
    #   its clean margin of the boundary (near_restarts): on the panel's Gaussian-noise and L2 models such a
    #   point was a coin flip (APGD-CE broke one with 5 of 12 seeds) that AutoAttack's longer runs won;
    # - APGD-T on the 3 targets closest in the model's linear approximation (MALT's ranking) instead of
    #   the 9 largest logits: on the FGSM-RS Fashion-MNIST CNN the top 2 held every point any of the 9
    #   targets broke (the top 4 logits were needed); a target stops on a point once 3x its progress
    #   could not reach the boundary in the steps left (give_up, A3's discarding);
    # - on a model with a preprocessing layer (advlab.models.Preprocessed: quantisation, JPEG-like rounding, a
    #   threshold), APGD-CE again through its BPDA twin (straight-through gradients; examples scored on the model):
    #   such a layer usually zeroes the gradient, and the model says where it is, so the evaluation uses it
    #   rather than leaving the work to Square (the panel's quantised model: 1/3.3 of AutoAttack's passes before);
    # - Square, the black-box stage that catches masked gradients, escalates only where it has to:
    #   after 250 queries, unless Square has broken a point the gradient attacks missed, only points whose
    #   margin has halved go on (screen=250); until then a point also stops once its margin, falling at its
    #   recent rate, could not reach zero in the queries left (give_up=1 at 5, 10, 20, 40, 60 and 80% of the
    #   budget); after a break the points the screen or give_up stopped come back and every point gets all
    #   5000 queries. On the panel Square broke nothing after the gradient attacks on the ordinary models, and
    #   on the quantised model (Square alone) it broke its first points within 100 queries
    #   (benchmarks/results/panel.md, square_screen.md).
    # FAB-T is left out: it broke nothing after APGD-T on the panel's Linf models (AutoAttack's own log); at L2
    # the one point it broke on the standard CNN was such a coin flip, which near_restarts now takes.
    "standard": [
        SuiteEntry("apgd-ce", "apgd-ce", {"near_restarts": 3}),
        SuiteEntry("apgd-t", "apgd-t", {"n_target_classes": 3, "ranking": "linear", "give_up": 3.0}),
        SuiteEntry("apgd-ce-bpda", "apgd-ce", {"bpda": True}, needs="preprocessing"),
        SuiteEntry("square", "square", {"n_queries": 5000, "give_up": 1.0, "screen": 250}),
    ],
    # AutoAttack's standard protocol with its full budgets (without FAB-T), for comparisons: APGD-CE,
    # APGD-T on the 9 largest wrong logits, Square with 5000 queries on every point.
    "autoattack": [
        SuiteEntry("apgd-ce", "apgd-ce", {}),
        SuiteEntry("apgd-t", "apgd-t", {}),
        SuiteEntry("square", "square", {"n_queries": 5000}),
    ],
}


# APGD and Square exist for linf and l2 only; for l1 the suites are PGD with restarts on two losses
# (no AutoAttack reference for l1 here).
L1_SUITES = {
    "fast": [SuiteEntry("pgd-20", "pgd", {"steps": 20})],
    "standard": [
        SuiteEntry("pgd-100-ce", "pgd", {"steps": 100, "restarts": 3, "rel_step_size": 0.1}),
        SuiteEntry("pgd-100-margin", "pgd", {"steps": 100, "restarts": 3, "rel_step_size": 0.1, "loss": "margin"}),
    ],
}


def get_suite(name: str, path: str | Path | None = None, norm: str = "linf") -> list[SuiteEntry]:
    if norm == "l1" and name in SUITES:
        if name not in L1_SUITES:
            raise ConfigError(f"suite {name!r} needs APGD and Square, which exist for linf and l2 only; "
                              f"for l1 use {' or '.join(L1_SUITES)}")
        return list(L1_SUITES[name])
    if path is not None and name != "custom":
        raise ConfigError(f"a `suite_file` is read only with `suite='custom'` (the suite is {name!r}); "
                          f"use `suite='custom'` or leave the file out")
    if name == "custom":
        if path is None:
            raise ConfigError("`suite='custom'` needs `suite_file=FILE.toml` listing the attacks")
        return load_suite_file(path)
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; choose one of {', '.join([*SUITES, 'custom'])}")
    return list(SUITES[name])


def load_suite_file(path: str | Path) -> list[SuiteEntry]:
    """A TOML file with one [[attack]] table per attack:

        [[attack]]
        name = "pgd"        # any advlab attack name
        label = "pgd-50"    # optional, defaults to the name
        steps = 50          # any option the attack accepts
        needs = "preprocessing"   # optional: run it only on a model with a Preprocessed layer (e.g. bpda = true)
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"suite file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    unknown = sorted(set(doc) - {"attack"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; a suite file holds only [[attack]] tables")
    entries = doc.get("attack")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: needs at least one [[attack]] table")
    suite = []
    for i, table in enumerate(entries):
        options = dict(table)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"{path}: attack #{i + 1} needs name = \"...\" (a string)")
        label = options.pop("label", name)
        needs = options.pop("needs", None)
        if needs is not None and needs not in NEEDS:
            raise ConfigError(f"{path}: attack #{i + 1}: needs = {needs!r}; the one condition is "
                              f"{' or '.join(repr(n) for n in NEEDS)} (the stage runs only on a model with a BPDA-able layer)")
        if "norm" in options or "seed" in options:
            raise ConfigError(f"{path}: attack #{i + 1}: norm and seed come from the command line, not the suite file")
        entry = SuiteEntry(str(label), name, options, needs)
        entry.build("linf")  # validates the name and every option now, not halfway through a run
        suite.append(entry)
    return suite
