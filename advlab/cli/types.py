"""One validated type per kind of option, for every subcommand's parser.

A bad value is refused while the command line is parsed, before any data is loaded, in one line that
names the option (argparse prefixes "argument --batch-size: "). The checks are the library's own
(`advlab.parsing.parse_number`, `parse_eps_list`), so a value means the same from the CLI and from a
config file. `tests/test_cli_types.py` walks every parser and tries every typed option with junk.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Callable

from ..parsing import parse_eps_list, parse_number
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


def _bounded(name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], must: str, doc: str):
    """A type: `convert`, then refuse a value that is not `ok` ("must be MUST, got TEXT")."""
    def check(text: str):
        value = convert(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text!r}")
        return value

    check.__name__ = check.__qualname__ = name
    check.__doc__ = doc
    return check


positive_int = _bounded("positive_int", _integer, lambda v: v >= 1, "a positive whole number (1 or more)",
                        "1, 2, ...: counts of points, steps, epochs, batch sizes.")
non_negative_int = _bounded("non_negative_int", _integer, lambda v: v >= 0, "a whole number >= 0",
                            "0, 1, ...: counts that may be zero; seeds.")
positive_float = _bounded("positive_float", _number, lambda v: v > 0, "a number > 0",
                          "A finite number > 0 (fractions such as 8/255 allowed): learning rates, step sizes, sigmas.")
non_negative_float = _bounded("non_negative_float", _number, lambda v: v >= 0, "a number >= 0",
                              "A finite number >= 0: weight decay, penalties, margins.")
probability = _bounded("probability", _number, lambda v: 0 < v < 1, "a probability strictly between 0 and 1",
                       "Strictly between 0 and 1: confidence levels, significance levels.")
fraction = _bounded("fraction", _number, lambda v: 0 <= v < 1, "a fraction in [0, 1)",
                    "In [0, 1): a share of the data held out (0 allowed, all of it not).")
percentile = _bounded("percentile", _number, lambda v: 0 <= v <= 100, "a percentile in [0, 100]",
                      "In [0, 100].")


def eps_values(text: str) -> list[float]:
    """Comma-separated budgets >= 0 (0.05,0.1 or 8/255) as floats, checked once, here."""
    try:
        return parse_eps_list(text, "budget")
    except AdvlabError as e:
        # "`budget` needs at least one epsilon, e.g. `budget=0.05,0.1`": argparse names the option itself
        raise argparse.ArgumentTypeError(str(e).replace("`budget`: ", "").replace("`budget` ", "")
                                         .replace("`budget=", "").replace("`", "")) from None


def eps_text(text: str) -> str:
    """Comma-separated budgets >= 0, checked now (`eps_values`) and kept as the user wrote them (8/255 stays
    8/255 in the log, the recorded command and an export): `advlab attack` and `evaluate`'s --eps."""
    eps_values(text)
    return text


def rates(text: str) -> list[float]:
    """Comma-separated rates in [0, 1] (success rates, say) as floats."""
    values = [_number(t) for t in str(text).split(",") if t.strip()]
    if not values or any(not 0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated rates in [0, 1] such as 0.25,0.5, got {text!r}")
    return values


def _items(text: str, check: Callable[[str], Any], what: str) -> str:
    """Comma-separated values, each passing `check`; kept as text, checked now."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"needs at least one {what}, got {text!r}")
    for t in items:
        check(t)
    return text


def number_list(text: str) -> str:
    """Comma-separated finite numbers (per-channel means, say); kept as text, checked now."""
    return _items(text, _number, "number")


def radii(text: str) -> list[float]:
    """Comma-separated numbers >= 0 (radii of a certified-accuracy curve), sorted, without repeats."""
    items = [t for t in str(text).split(",") if t.strip()]
    values = [_number(t) for t in items]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated radii >= 0 such as 0,0.25,0.5, got {text!r}")
    return sorted(set(values))


def positive_int_list(text: str) -> str:
    """Comma-separated whole numbers >= 1 (dimensions, sample sizes); kept as text, checked now."""
    return _items(text, positive_int, "whole number")


def non_negative_int_list(text: str) -> str:
    """Comma-separated whole numbers >= 0; kept as text, checked now."""
    return _items(text, non_negative_int, "whole number")


def _path(text: str, what: str, refused: Callable[[Path], bool], problem: str) -> str:
    """A path: not empty ("needs a WHAT"), and refused with `problem` (naming {text}) when `refused(path)`."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError(f"needs a {what}, got an empty string")
    if refused(Path(text)):
        raise argparse.ArgumentTypeError(problem.format(text=text))
    return text


def existing_file(text: str) -> str:
    return _path(text, "file name", lambda p: not p.is_file(), "no such file: {text}")


def existing_dir(text: str) -> str:
    return _path(text, "folder name", lambda p: not p.is_dir(), "no such folder: {text}")


def existing_path(text: str) -> str:
    """A file or a folder that must exist (--data)."""
    return _path(text, "path", lambda p: not p.exists(), "no such file or folder: {text}")


def output_dir(text: str) -> str:
    """A folder to write into: it may not exist yet, but must not be an existing file or empty."""
    return _path(text, "folder name", Path.is_file, "{text} is a file; give a folder to write into")


def output_file(text: str) -> str:
    """A file to write: it may exist (and is replaced), but must not be a folder or empty."""
    return _path(text, "file name", Path.is_dir, "{text} is a folder; give a file name to write")


def device(text: str) -> str:
    """auto, cpu, cuda, cuda:N or mps: the form is checked now, availability when the command starts."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(text).strip().lower()):
        raise argparse.ArgumentTypeError(f"must be one of auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def preprocessing(text: str) -> str:
    """One of RobustBench's preprocessings (res256crop224, ...), any case; the canonical name is kept."""
    from ..data.preprocessing import check_preprocess
    try:
        return check_preprocess(text)
    except AdvlabError as e:
        raise argparse.ArgumentTypeError(str(e).split(" is ", 1)[-1].replace("not one of", "must be one of", 1)) from None


def adaptations(text: str) -> str:
    """Comma-separated adaptive attacks (bpda, rescale, eot), each once; the canonical text is kept."""
    from ..models.adaptive import parse_adaptations
    try:
        names = parse_adaptations(str(text))
    except AdvlabError as e:
        raise argparse.ArgumentTypeError(str(e).replace(" in `adaptive`", "").replace("`adaptive` ", "")) from None
    if not names:
        raise argparse.ArgumentTypeError(f"needs at least one of bpda, rescale, eot, got {text!r}")
    return ",".join(names)


VALIDATED = (positive_int, non_negative_int, positive_float, non_negative_float, probability, fraction,
             percentile, eps_values, eps_text, rates, number_list, radii, positive_int_list, non_negative_int_list, existing_file,
             existing_dir, existing_path, output_dir, output_file, device, preprocessing, adaptations)
"""Every type above: the parser walk in the tests checks each numeric or path option uses one."""

__all__ = [f.__name__ for f in VALIDATED] + ["VALIDATED"]
