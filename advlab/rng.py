"""Seeded randomness without hidden global state.

Every random choice comes from a torch.Generator derived from (seed, epoch, stream), so a run that
is resumed at an epoch boundary makes the same choices as one that never stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

STREAM_SHUFFLE = 0
STREAM_OBJECTIVE = 1
STREAM_GLOBAL = 2


def derive_seed(seed: int, *keys: int) -> int:
    value = int(seed) & 0xFFFFFFFFFFFF
    for k in keys:
        value = (value * 1_000_003 + int(k) + 1) % (2**62)
    return value


def generator(seed: int, *keys: int, device: torch.device | str | None = None) -> torch.Generator:
    g = torch.Generator(device=device or "cpu")
    g.manual_seed(derive_seed(seed, *keys))
    return g


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside the block and restore it afterwards.

    Only for code we do not control that draws from the global RNG (parameter init, dropout).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
