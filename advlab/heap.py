"""Give freed memory back to the operating system between batches.

PyTorch's CPU tensors come from glibc malloc. An attack on a batch allocates and frees hundreds
of megabytes of activations and gradients of varying sizes; glibc keeps the freed pages in its
heap, and over many batches of different sizes (the active set shrinks as points break) the
fragmented heap grows with the number of batches, not with what is alive. `malloc_trim(0)`
returns those free pages; calling it once per batch keeps resident memory flat at the cost of a
heap walk (microseconds next to an attack). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


def release_freed_memory() -> None:
    """Return free heap pages to the OS (glibc only; a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
