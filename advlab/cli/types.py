"""One validated type per kind of option, for every subcommand's parser.

A bad value is refused while the command line is parsed, before any data is loaded, in one line that
names the option (argparse prefixes "argument --batch-size: "). The checks are the library's own
(`advlab.config.parse_number`, `parse_eps_list`), so a value means the same from the CLI and from a
config file. `tests/test_cli_types.py` walks every parser and tries every typed option with junk.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..config import parse_eps_list, parse_number
from ..errors import AdvlabError


def _number(text: str) -> float:
    try:
        return parse_number(text, "value")
    except AdvlabError as e:  # "value must be a number such as 0.1 or 8/255, got 'x'"
        raise argparse.ArgumentTypeError(str(e).replace("value ", "", 1)) from None


def _integer(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    return value


def positive_int(text: str) -> int:
    """1, 2, ...: counts of points, steps, epochs, batch sizes."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (1 or more), got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """0, 1, ...: counts that may be zero; seeds."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (fractions such as 8/255 allowed): learning rates, step sizes, sigmas."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0: weight decay, penalties, margins."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """Strictly between 0 and 1: confidence levels, significance levels."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a probability strictly between 0 and 1, got {text!r}")
    return value


def fraction(text: str) -> float:
    """In [0, 1): a share of the data held out (0 allowed, all of it not)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
    return value


def percentile(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentile in [0, 100], got {text!r}")
    return value


def eps_list(text: str) -> str:
    """Comma-separated budgets >= 0 (0.05,0.1 or 8/255); kept as text for the records, checked now."""
    try:
        parse_eps_list(text, "budget")
    except AdvlabError as e:
        raise argparse.ArgumentTypeError(str(e).replace("budget: ", "").replace("budget ", "")) from None
    return text


def number_list(text: str) -> str:
    """Comma-separated finite numbers (per-channel means, say); kept as text, checked now."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"needs at least one number, got {text!r}")
    for t in items:
        _number(t)
    return text


def radii(text: str) -> list[float]:
    """Comma-separated numbers >= 0 (radii of a certified-accuracy curve), sorted, without repeats."""
    items = [t for t in str(text).split(",") if t.strip()]
    values = [_number(t) for t in items]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated radii >= 0 such as 0,0.25,0.5, got {text!r}")
    return sorted(set(values))


def positive_int_list(text: str) -> str:
    """Comma-separated whole numbers >= 1 (dimensions, sample sizes); kept as text, checked now."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"needs at least one whole number, got {text!r}")
    for t in items:
        positive_int(t)
    return text


def non_negative_int_list(text: str) -> str:
    """Comma-separated whole numbers >= 0; kept as text, checked now."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"needs at least one whole number, got {text!r}")
    for t in items:
        non_negative_int(t)
    return text


def existing_file(text: str) -> str:
    if not str(text).strip():
        raise argparse.ArgumentTypeError("needs a file name, got an empty string")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def existing_dir(text: str) -> str:
    if not str(text).strip():
        raise argparse.ArgumentTypeError("needs a folder name, got an empty string")
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return text


def existing_path(text: str) -> str:
    """A file or a folder that must exist (--data)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("needs a path, got an empty string")
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text}")
    return text


def output_dir(text: str) -> str:
    """A folder to write into: it may not exist yet, but must not be an existing file or empty."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("needs a folder name, got an empty string")
    if Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder to write into")
    return text


def output_file(text: str) -> str:
    """A file to write: it may exist (and is replaced), but must not be a folder or empty."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("needs a file name, got an empty string")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name to write")
    return text


def device(text: str) -> str:
    """auto, cpu, cuda, cuda:N or mps: the form is checked now, availability when the command starts."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(text).strip().lower()):
        raise argparse.ArgumentTypeError(f"must be one of auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


VALIDATED = (positive_int, non_negative_int, positive_float, non_negative_float, probability, fraction,
             percentile, eps_list, number_list, radii, positive_int_list, non_negative_int_list, existing_file,
             existing_dir, existing_path, output_dir, output_file, device)
"""Every type above: the parser walk in the tests checks each numeric or path option uses one."""

__all__ = [f.__name__ for f in VALIDATED] + ["VALIDATED"]
