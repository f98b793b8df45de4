"""Out of GPU memory: halve the batch and go on, instead of losing the run.

An attack or a prediction that runs out of device memory on a batch retries it in halves, down to
one row; the batch size that fitted is kept for the rest of the work, said once on stderr, and
recorded in the results. On the CPU an allocation failure is not caught: it means the machine is
out of memory, and halving would only hide it.
"""

from __future__ import annotations

import torch


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
