"""Count the calls that make a GPU wait for the host, on any device (the CPU included).

    with HostSyncCounter() as syncs:
        PGD(steps=20, sync_free=True).perturb(model, x, y, 0.1, bounds=(0, 1), early_stop=True)
    print(syncs.count, syncs.by_kind)   # e.g. 7 {'__int__': 5, 'nonzero': 2}

On CUDA, reading a value computed on the device (`.item()`, `bool(t)` in an `if`, `int(t)`,
`.tolist()`, copying to the host) or asking for an output whose size depends on the data
(`nonzero`, indexing or assigning with a boolean mask, `masked_select`) stalls the host until the
device has finished everything queued before it. This counter sees those calls through torch's
function-mode hook, so the engine's design can be checked on a machine without a GPU: the count is
what the same code would cost in synchronisations on one (an upper bound: a `.cpu()` of a tensor
already on the host is counted too).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

_READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "cpu", "nonzero",
          "argwhere", "masked_select", "nonzero_static", "unique", "unique_consecutive"}


def _has_bool_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostSyncCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.by_kind: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.by_kind.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _READS:
            self.by_kind[name] += 1
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _has_bool_mask(args[1]):
            self.by_kind[f"{name}[mask]"] += 1
        elif name == "to" and any(str(a) == "cpu" for a in (*args[1:], kwargs.get("device"))):
            self.by_kind["to(cpu)"] += 1
        return func(*args, **kwargs)
