"""Errors that mean "bad input or usage": the CLI prints them in one line and exits with code 2.

They subclass ValueError so Python users can catch them the usual way.

A message names the caller's parameters in backticks: `eps`, or `norm='l2'` with the value that was
given. The library speaks in parameters; the command line in flags: the CLI words each backticked
name as the flag of the running command (`eps` -> --eps, `norm='l2'` -> --norm l2, `resume=True` ->
--resume) with `reword`, and leaves a name it has no flag for as it is.
"""

from __future__ import annotations

import re
from typing import Callable

# `name` or `name=value`, where name is a Python identifier (so `advlab train` is not a parameter).
PARAMETER = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)(?:=([^`]*))?`")


class AdvlabError(ValueError):
    """Bad input or usage. The message says what is wrong and how to fix it."""

    @property
    def params(self) -> list[str]:
        """The parameters the message names, in order."""
        return list(dict.fromkeys(m.group(1) for m in PARAMETER.finditer(str(self))))


class DataNotFoundError(AdvlabError):
    """A dataset's files are not in any of the places advlab looks, and could not be downloaded."""


class CorruptFileError(AdvlabError):
    """A file exists but is truncated, has a wrong header, or fails its checksum."""


class ConfigError(AdvlabError):
    """A configuration has an unknown key, a wrong type, or a value out of range."""


def reword(message: str, flag: Callable[[str], str | None]) -> str:
    """`message` with each parameter the `flag` function knows worded as that flag: `eps` -> --eps,
    `norm='l2'` -> --norm l2, `resume=True` -> --resume."""

    def one(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        option = flag(name)
        if option is None:
            return m.group(0)
        if value is None or value == "True":
            return option
        return f"{option} {value.strip(chr(39) + chr(34))}"

    return PARAMETER.sub(one, message)
