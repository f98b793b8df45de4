"""Artefacts: what a run directory holds, and the steps that do a thing and record it there.

The file and folder names of a run directory are in advlab.rundir (the bottom layer).

- `attack_run` (attack.py), `evaluate_run` (evaluate.py), `certify_run` (certify.py),
  `transfer_run` (transfer.py), `distances_run` / `perceptibility_run` (analysis.py),
  `sample_run` / `unrestricted_run` (generate.py): each takes Python values (a Subject, budgets as
  numbers), does the step, writes its files and returns its record, the dict `--json` prints.

The CLI parses flags, calls these and prints; the demo and `advlab reproduce` call the same functions.
They sit above attacks, evaluate, analysis and advlab.subject, below cli, demo and reproduce.
Importing this package is cheap: the functions load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_FUNCTIONS = {
    "attack_run": "attack", "save_attack": "attack", "evaluate_run": "evaluate", "certify_run": "certify",
    "transfer_run": "transfer", "distances_run": "analysis", "perceptibility_run": "analysis",
    "sample_run": "generate", "unrestricted_run": "generate",
}

__all__ = list(_FUNCTIONS)


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
