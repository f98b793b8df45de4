"""Per-class budgets: a JSON file mapping class -> epsilon, for `--eps-per-class FILE`.

Some classes sit closer to their neighbours than others (a shirt is near a T-shirt, a trouser is
far from everything), so one global epsilon is either too small for some classes or too large for
others. `advlab analyze distances` writes one file per norm, `eps_per_class_NORM.json`:

    {
      "format": "advlab-eps-per-class",      # optional; if present it must be this
      "version": 1,                          # optional
      "norm": "linf",                        # optional; checked against the attack's norm
      "dataset": "fashion-mnist",            # optional, informative
      "rule": "half the smallest ...",       # optional, informative
      "classes": ["T-shirt/top", ...],       # optional; if present, its length must be K
      "eps": {"0": 0.12, "1": 0.31, ...}     # required: every class index 0..K-1 exactly once
    }

`eps` may also be a list of K numbers; a file holding only the mapping ({"0": 0.1, "1": "8/255"})
is accepted too. Values are numbers or fractions such as "8/255" (parsed, never evaluated), finite
and >= 0, in raw input units like every epsilon in advlab. Anything else is an AdvlabError that
names the problem.

    eps = load_eps_per_class("eps_per_class_linf.json", num_classes=10, norm="linf")  # (K,)
    eps_n = eps_for_labels(eps, y)                                                    # (N,)
    attack(model, x, y, eps=eps_n, bounds=ds.bounds)                                  # per-example budget
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..parsing import parse_number
from ..errors import AdvlabError, ConfigError, CorruptFileError
from ..io import write_json

FORMAT = "advlab-eps-per-class"
VERSION = 1
_KEYS = ("format", "version", "norm", "dataset", "rule", "classes", "eps")


def write_eps_per_class(path: str | os.PathLike, eps: Sequence[float], *, norm: str,
                        dataset: str | None = None, classes: Sequence[str] | None = None,
                        rule: str | None = None) -> str:
    """Write a per-class budget file (atomically) in the format above."""
    values = [float(e) for e in eps]
    bad = [i for i, e in enumerate(values) if not (math.isfinite(e) and e >= 0)]
    if bad:
        raise AdvlabError(f"per-class epsilon must be finite and >= 0; class {bad[0]} has {values[bad[0]]}")
    record: dict[str, Any] = {"format": FORMAT, "version": VERSION, "norm": norm}
    if dataset is not None:
        record["dataset"] = dataset
    if rule is not None:
        record["rule"] = rule
    if classes is not None:
        record["classes"] = list(classes)
    record["eps"] = {str(i): e for i, e in enumerate(values)}
    write_json(path, record)
    return str(path)


def load_eps_per_class(path: str | os.PathLike, num_classes: int, norm: str | None = None) -> torch.Tensor:
    """Read and validate a per-class budget file; returns a (num_classes,) float32 tensor.

    `norm`, if given, must match the file's "norm" (when the file names one): an L2 budget used
    for an Linf attack would give a wrong number without any error.
    """
    path = Path(path)
    where = f"`eps_per_class={path}`"
    data = _read_object(path, where)
    _check_keys(data, where, num_classes, norm)
    items = _eps_items(data["eps"], where, num_classes)
    values = []
    for c in range(num_classes):
        value = parse_number(items[c], f"{where}: class {c}")
        if value < 0:
            raise ConfigError(f"{where}: class {c} has a negative epsilon ({value}); budgets must be >= 0")
        values.append(value)
    return torch.tensor(values, dtype=torch.float32)


def _read_object(path: Path, where: str) -> dict[str, Any]:
    """The file's JSON object; a bare {"0": eps0, "1": eps1, ...} mapping comes back as {"eps": mapping}."""
    if not path.is_file():
        raise AdvlabError(f"{where}: no such file; write one with `advlab analyze distances --out DIR` "
                          f"(DIR/eps_per_class_NORM.json) or by hand: {{\"eps\": {{\"0\": 0.1, \"1\": 0.2, ...}}}}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{where} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object such as {{\"eps\": {{\"0\": 0.1, ...}}}}, "
                          f"got {type(data).__name__}")
    if "eps" not in data and data and all(_is_index(k) for k in data):
        data = {"eps": data}  # a bare {"0": eps0, "1": eps1, ...} mapping
    return data


def _check_keys(data: dict[str, Any], where: str, num_classes: int, norm: str | None) -> None:
    """Known keys only, "eps" present; format, version, norm and classes (where given) fit."""
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(_KEYS)}")
    if "eps" not in data:
        raise ConfigError(f"{where}: missing the \"eps\" mapping from class index to epsilon")
    if "format" in data and data["format"] != FORMAT:
        raise ConfigError(f"{where}: \"format\" must be {FORMAT!r}, got {data['format']!r}")
    if "version" in data and data["version"] != VERSION:
        raise ConfigError(f"{where}: version {data['version']!r} is not supported (this advlab reads version {VERSION})")
    if norm is not None and data.get("norm") is not None and data["norm"] != norm:
        raise ConfigError(f"{where}: the budgets are for norm {data['norm']!r} but the attack uses {norm!r}; "
                          f"use the file written for {norm} (eps_per_class_{norm}.json)")
    if "classes" in data and (not isinstance(data["classes"], list) or len(data["classes"]) != num_classes):
        found = len(data["classes"]) if isinstance(data["classes"], list) else type(data["classes"]).__name__
        raise ConfigError(f"{where}: \"classes\" lists {found} classes but the dataset has {num_classes}")


def _eps_items(raw: Any, where: str, num_classes: int) -> dict[int, Any]:
    """{class index: value as written} from "eps" (a list of K values or a mapping), every class once."""
    if isinstance(raw, list):
        if len(raw) != num_classes:
            raise ConfigError(f"{where}: \"eps\" lists {len(raw)} values but the dataset has {num_classes} classes")
        return {i: v for i, v in enumerate(raw)}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: \"eps\" must map class index to epsilon, got {type(raw).__name__}")
    items = {}
    for key, value in raw.items():
        if not _is_index(key) or not 0 <= int(key) < num_classes:
            raise ConfigError(f"{where}: class key {key!r} is not a class index 0..{num_classes - 1}")
        if int(key) in items:
            raise ConfigError(f"{where}: class {int(key)} appears twice")
        items[int(key)] = value
    missing = [c for c in range(num_classes) if c not in items]
    if missing:
        raise ConfigError(f"{where}: no epsilon for class{'es' if len(missing) > 1 else ''} "
                          f"{', '.join(map(str, missing))}; every class 0..{num_classes - 1} needs one")
    return items


def eps_for_labels(eps_per_class: torch.Tensor | Sequence[float], labels: torch.Tensor) -> torch.Tensor:
    """The (N,) per-example budget eps_per_class[labels], ready for `attack(..., eps=...)`."""
    table = torch.as_tensor(eps_per_class, dtype=torch.float32).reshape(-1)
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise AdvlabError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(table)):
        raise AdvlabError(f"labels must be in 0..{len(table) - 1} to pick a per-class epsilon; "
                          f"found {labels.min().item()}..{labels.max().item()}")
    return table[labels.long().cpu()]


def _is_index(key: Any) -> bool:
    return isinstance(key, str) and key.strip().isdigit()
