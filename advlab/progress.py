"""Progress bars for long work: shown on an interactive terminal, silent in logs and pipes."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, enabled: bool = True, total: int | None = None, **kwargs) -> tqdm:
    # disable=None lets tqdm hide itself when stderr is not a terminal (CI logs, pipes).
    return tqdm(iterable, desc=desc, total=total, disable=None if enabled else True, leave=False,
                mininterval=0.5, dynamic_ncols=True, **kwargs)


def write(message: str) -> None:
    """Print a line without breaking an active progress bar."""
    tqdm.write(message, file=sys.stderr)
