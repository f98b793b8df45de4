"""Parsing text into values: numbers, epsilon lists and key=value options, from the command line and TOML.

Fractions such as 8/255 are parsed exactly with `fractions.Fraction`, never `eval`ed.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

from .errors import ConfigError


def parse_number(text: str | int | float, name: str = "value") -> float:
    """'0.1', '8/255', '1e-3' or a number -> float. Rejects nan and inf."""
    if isinstance(text, bool):
        raise ConfigError(f"{name} must be a number, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            value = float(Fraction(s)) if "/" in s else float(s)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{name} must be a number such as 0.1 or 8/255, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {text!r}")
    return value


def parse_eps_list(text: str | list, name: str = "eps") -> list[float]:
    """'0,0.05,8/255' -> [0.0, 0.05, 0.0313...]; every epsilon must be >= 0. `name`: the parameter (errors
    name it)."""
    items = list(text) if isinstance(text, (list, tuple)) else [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"`{name}` needs at least one epsilon, e.g. `{name}=0.05,0.1`")
    values = [parse_number(t, f"`{name}`") for t in items]
    negative = [v for v in values if v < 0]
    if negative:
        raise ConfigError(f"`{name}`: epsilon must be >= 0, got {negative[0]}")
    return values


def parse_value(text: str) -> Any:
    """A command-line option value: JSON if it parses (numbers, true/false, lists), else a
    comma-separated list of such values, else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(t) for t in text.split(",")]
    if "/" in text:
        try:
            return parse_number(text)
        except ConfigError:
            pass
    return text


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """['hidden=512,256', 'dropout=0.5'] -> {'hidden': [512, 256], 'dropout': 0.5}."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out
