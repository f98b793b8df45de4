"""Out of GPU memory: halve the batch and go on, instead of losing the run.

An attack, a prediction, randomized smoothing or a training step that runs out of device memory on
a batch retries it in halves, down to one row, through one helper (`fitting`); the batch size that
fitted is kept for the rest of the work, said on stderr, and recorded in the results. On the CPU an allocation failure is not caught: it means the machine is
out of memory, and halving would only hide it.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    # Other accelerators (MPS) raise a plain RuntimeError.
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower() and "mps" in str(error).lower()


def free_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def halved(batch_size: int, error: BaseException, what: str, warn) -> int:
    """The next batch size after an out-of-memory error (re-raises it when one row does not fit)."""
    if batch_size <= 1:
        raise error
    free_device_memory()
    smaller = batch_size // 2
    warn(f"{what}: out of device memory at batch size {batch_size}; going on with {smaller}")
    return smaller


def fitting(run: Callable[[int], T], size: int, what: str, warn: Callable[[str], None],
            on_out_of_memory: Callable[[], None] | None = None) -> tuple[T, int]:
    """run(size), halving size after each out-of-memory error until it fits: (what run returned, the size that
    fitted). `on_out_of_memory` cleans up a failed try first (e.g. drops accumulated gradients). The caller
    keeps the size for the rest of its work; one row that does not fit re-raises the error."""
    while True:
        try:
            return run(size), size
        except RuntimeError as e:
            if not is_out_of_memory(e):
                raise
            if on_out_of_memory is not None:
                on_out_of_memory()
            size = halved(size, e, what, warn)
