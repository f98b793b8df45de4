"""Experiment configs (experiments/NAME.toml), validated strictly, and the verdict logic.

    experiment = "blobs"            # the protocol (advlab.reproduce.protocols)
    title = "..."                   # shown in the terminal and the report
    reference = "..."               # the paper
    out = "blobs"                   # folder inside the run directory (relative, no ..)
    note = "..."                    # optional: anything a reader must know
    [settings]                      # the protocol's options (unknown keys are errors)
    [quick]                         # overrides for --quick (tiny, for tests and smoke checks)
    [[published]]                   # one row per number we compare
    key = "fgsm_error"              # the measured quantity (the protocol returns it)
    quantity = "FGSM error"         # label
    setting = "eps 0.25"            # the paper's setting
    value = 0.894                   # published number (omit for a number without a published counterpart)
    tolerance = 0.05                # accepted difference
    compare = "abs"                 # abs: |ours - value| <= tol; at_most: ours <= value + tol;
                                    # at_least: ours >= value - tol; info: shown, no verdict
    unit = "%"                      # "%" (fractions shown as percent) or "" (plain numbers)
    dataset = "mnist"               # optional: compare only when we ran on this dataset (else: info)
    reference_key = "predicted"     # instead of value: compare with a number the protocol computes
                                    # (a closed-form prediction for our own model, say)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import relative_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
TOP_KEYS = {"experiment": str, "title": str, "reference": str, "out": str, "note": str, "settings": dict,
            "quick": dict, "published": list}
ROW_KEYS = {"key": str, "quantity": str, "setting": str, "value": (int, float), "tolerance": (int, float),
            "compare": str, "unit": str, "dataset": str, "reference_key": str}
COMPARES = ("abs", "at_most", "at_least", "info")
PATH_SUFFIXES = ("out", "_dir", "_file", "_path")


@dataclass
class Published:
    key: str
    quantity: str
    setting: str = ""
    value: float | None = None
    tolerance: float = 0.0
    compare: str = "abs"
    unit: str = "%"
    dataset: str | None = None
    reference_key: str | None = None


@dataclass
class Experiment:
    name: str
    experiment: str
    title: str
    reference: str
    out: str
    settings: dict[str, Any]
    quick: dict[str, Any]
    published: list[Published]
    note: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_settings(self, quick: bool) -> dict[str, Any]:
        return {**self.settings, **(self.quick if quick else {})}


# Kept under its old name for callers and tests; the check lives in advlab.io.
safe_relative = relative_path


def _check_type(value: Any, expected, key: str) -> None:
    if isinstance(value, bool) and expected is not bool and bool not in (expected if isinstance(expected, tuple)
                                                                           else (expected,)):
        raise ConfigError(f"{key} must be {_type_name(expected)}, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{key} must be {_type_name(expected)}, got {value!r} ({type(value).__name__})")


def _type_name(expected) -> str:
    names = {str: "a string", dict: "a table", list: "a list", bool: "true or false", int: "an integer",
             float: "a number"}
    if isinstance(expected, tuple) and set(expected) == {int, float}:
        return "a number"
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


def check_settings(settings: dict[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """Every key must be one of the protocol's, with the type of its default (ints are accepted for floats;
    None defaults accept an integer). Path-like keys must stay inside the run directory."""
    for key, value in settings.items():
        if key not in defaults:
            raise ConfigError(f"{where}: unknown setting {key!r}; allowed: {', '.join(sorted(defaults))}")
        default = defaults[key]
        name = f"{where}.{key}"
        if default is None:
            if value is not None:
                _check_type(value, int, name)
        elif isinstance(default, bool):
            _check_type(value, bool, name)
        elif isinstance(default, float):
            _check_type(value, (int, float), name)
            if not math.isfinite(float(value)):
                raise ConfigError(f"{name} must be finite, got {value!r}")
        elif isinstance(default, int):
            _check_type(value, int, name)
        elif isinstance(default, list):
            _check_type(value, list, name)
        else:
            _check_type(value, type(default), name)
        if key.endswith(PATH_SUFFIXES) and isinstance(value, str):
            safe_relative(value, name)
    return settings


def find_config(name: str) -> Path:
    """NAME (experiments/NAME.toml) or a path to a TOML file."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"{name}: no such experiment file")
        return path
    candidate = EXPERIMENTS_DIR / f"{name}.toml"
    if not candidate.is_file():
        known = ", ".join(available()) or "none found"
        raise ConfigError(f"unknown experiment {name!r}; available: {known} (or pass a path to a .toml file)")
    return candidate


def available() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml")) if EXPERIMENTS_DIR.is_dir() else []


def load_experiment(name: str, defaults_for=None) -> Experiment:
    path = find_config(name)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return parse_experiment(doc, path.stem, str(path), defaults_for)


def parse_experiment(doc: dict[str, Any], name: str, source: str = "<config>", defaults_for=None) -> Experiment:
    where = Path(source).name
    _check_table(doc, TOP_KEYS, ("experiment", "title"), where, f"{where}: ")
    out = safe_relative(doc.get("out", name), f"{where}: out")
    if defaults_for is None:
        from .protocols import defaults as defaults_for
    defaults = defaults_for(doc["experiment"])
    settings = check_settings(dict(doc.get("settings", {})), defaults, f"{where}: settings")
    quick = check_settings(dict(doc.get("quick", {})), defaults, f"{where}: quick")
    rows = [_published(row, f"{where}: published[{i}]") for i, row in enumerate(doc.get("published", []))]
    return Experiment(name=name, experiment=doc["experiment"], title=doc["title"], reference=doc.get("reference", ""),
                      out=out, settings=settings, quick=quick, published=rows, note=doc.get("note", ""), source=source)


def _check_table(table: dict[str, Any], allowed: dict[str, Any], required: tuple[str, ...], where: str,
                 prefix: str) -> None:
    """Only the `allowed` keys, each of its type (named `prefix` + key), and every `required` one."""
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
        _check_type(value, allowed[key], f"{prefix}{key}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where}: missing {key!r}")


def _published(row: Any, here: str) -> Published:
    _check_type(row, dict, here)
    _check_table(row, ROW_KEYS, ("key", "quantity"), here, f"{here}.")
    if "value" in row and "reference_key" in row:
        raise ConfigError(f"{here}: give either value or reference_key, not both")
    compare = row.get("compare", "abs" if ("value" in row or "reference_key" in row) else "info")
    if compare not in COMPARES:
        raise ConfigError(f"{here}.compare must be one of {', '.join(COMPARES)}, got {compare!r}")
    if compare != "info" and "value" not in row and "reference_key" not in row:
        raise ConfigError(f"{here}: compare = {compare!r} needs a published value (or a reference_key)")
    tolerance = float(row.get("tolerance", 0.0))
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ConfigError(f"{here}.tolerance must be >= 0, got {tolerance}")
    if row.get("unit", "%") not in ("%", ""):
        raise ConfigError(f"{here}.unit must be \"%\" or \"\", got {row['unit']!r}")
    return Published(key=row["key"], quantity=row["quantity"], setting=row.get("setting", ""),
                     value=float(row["value"]) if "value" in row else None, tolerance=tolerance, compare=compare,
                     unit=row.get("unit", "%"), dataset=row.get("dataset"), reference_key=row.get("reference_key"))


# -- verdicts ---------------------------------------------------------------------------------------
def verdict(ours: float | None, published: float | None, tolerance: float, compare: str) -> str:
    """'match', 'differs', 'info' (no comparison asked for) or 'not measured'."""
    if compare == "info" or published is None:
        return "info"
    if ours is None or not math.isfinite(ours):
        return "not measured"
    slack = 1e-9 * max(1.0, abs(published))  # float noise in a value that sits on the boundary
    if compare == "abs":
        ok = abs(ours - published) <= tolerance + slack
    elif compare == "at_most":
        ok = ours <= published + tolerance + slack
    elif compare == "at_least":
        ok = ours >= published - tolerance - slack
    else:
        raise ConfigError(f"compare must be one of {', '.join(COMPARES)}, got {compare!r}")
    return "match" if ok else "differs"


def overall(verdicts: list[str]) -> str:
    """Over the rows that were compared ('not measured' rows - an optional step that was not run - and
    'info' rows do not count)."""
    compared = [v for v in verdicts if v in ("match", "differs")]
    if not compared:
        return "nothing compared"
    matched = sum(v == "match" for v in compared)
    if matched == len(compared):
        return "reproduced"
    return f"partly reproduced ({matched} of {len(compared)} match)"


def fmt_value(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:.1f}%" if unit == "%" else f"{v:.4g}"


def fmt_tolerance(row: Published) -> str:
    if row.compare == "info" or row.value is None:
        return "-"
    if row.tolerance == 0:
        return {"abs": "exact", "at_most": "≤", "at_least": "≥"}[row.compare]
    t = f"{100 * row.tolerance:.1f} pts" if row.unit == "%" else f"{row.tolerance:.3g}"
    return {"abs": "±", "at_most": "≤ +", "at_least": "≥ -"}[row.compare] + t


def compare_rows(published: list[Published], measured: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    rows = []
    for p in published:
        ours = measured.get(p.key)
        ours = None if ours is None else float(ours)
        value = p.value
        if p.reference_key is not None:
            value = measured.get(p.reference_key)
            value = None if value is None else float(value)
        compare = p.compare
        setting = p.setting
        if p.dataset is not None and p.dataset != dataset:
            compare = "info"  # published for another dataset: shown, not judged
            setting = f"{setting} (reference for {p.dataset}; this run: {dataset})".strip()
        v = verdict(ours, value, p.tolerance, compare)
        rows.append({"key": p.key, "quantity": p.quantity, "setting": setting, "ours": ours, "published": value,
                     "tolerance": p.tolerance if compare != "info" else None, "compare": compare, "unit": p.unit,
                     "verdict": v, "ours_text": fmt_value(ours, p.unit), "published_text": fmt_value(value, p.unit),
                     "tolerance_text": fmt_tolerance(Published(**{**p.__dict__, "value": value, "compare": compare}))})
    return rows
