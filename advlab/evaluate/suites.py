"""Attack suites for evaluation: `fast`, `standard` (AutoAttack's protocol) and `custom` (TOML).

A suite is a list of (label, attack name, options). Attacks run in order, each only on the points
the previous ones left robust, and a point counts as broken if any attack broke it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attacks import build_attack
from ..attacks.base import Attack
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class SuiteEntry:
    label: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, norm: str, seed: int = 0) -> Attack:
        return build_attack(self.attack, norm=norm, seed=seed, **self.options)


SUITES: dict[str, list[SuiteEntry]] = {
    "fast": [SuiteEntry("pgd-20", "pgd", {"steps": 20})],
    # AutoAttack's standard version: APGD-CE, APGD-T (DLR, 9 target classes), FAB-T, Square (5000 queries).
    # FAB-T is left out; benchmarks/results/evaluate.md counts the points AutoAttack (which runs it)
    # breaks and this suite does not. Square gives up on a point once even 5x its recent progress
    # could not reach the boundary in the queries left: on a robust model that saves more than half
    # of its queries (benchmarks/results/evaluate.md; 3x lost one point in 103 on a standard model).
    "standard": [
        SuiteEntry("apgd-ce", "apgd-ce", {}),
        SuiteEntry("apgd-t", "apgd-t", {}),
        SuiteEntry("square", "square", {"n_queries": 5000, "give_up": 5.0}),
    ],
}


# APGD and Square exist for linf and l2 only; for l1 the standard suite is strong PGD with
# restarts on two losses (no AutoAttack reference for l1 here).
L1_STANDARD = [
    SuiteEntry("pgd-100-ce", "pgd", {"steps": 100, "restarts": 3, "rel_step_size": 0.1}),
    SuiteEntry("pgd-100-margin", "pgd", {"steps": 100, "restarts": 3, "rel_step_size": 0.1, "loss": "margin"}),
]


def get_suite(name: str, path: str | Path | None = None, norm: str = "linf") -> list[SuiteEntry]:
    if name == "standard" and norm == "l1":
        return list(L1_STANDARD)
    if name == "custom":
        if path is None:
            raise ConfigError("--suite custom needs --suite-file FILE.toml listing the attacks")
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
        if "norm" in options or "seed" in options:
            raise ConfigError(f"{path}: attack #{i + 1}: norm and seed come from the command line, not the suite file")
        entry = SuiteEntry(str(label), name, options)
        entry.build("linf")  # validates the name and every option now, not halfway through a run
        suite.append(entry)
    return suite
