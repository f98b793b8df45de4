"""Data-parallel training and sharded evaluation with torch.distributed.

`torchrun --nproc_per_node=N -m advlab train ...` starts N processes; each calls `setup()`,
which joins the process group (gloo on CPU, nccl on GPU) from the variables torchrun sets. Then:

- training: every rank takes its slice of each batch (`shard_slice`), computes its gradient, and
  `all_reduce_gradients` makes every rank hold the gradient of the *whole* batch (each rank's
  gradient weighted by its share), so all ranks apply the same update and stay bitwise equal;
- evaluation: `shard_evaluate(fn, x)` runs `fn` on this rank's contiguous slice of x and gathers
  the results in order on every rank, so the result is the same as `fn(x)` in one process;
- rank 0 alone writes checkpoints, the run directory and the output (`is_main()`).

Without torchrun (WORLD_SIZE unset or 1) every function is the single-process identity, so the
rest of advlab never needs to ask whether it runs distributed. Multi-machine use: docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Callable

import torch
from torch import distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    """nccl only moves CUDA tensors; gloo takes CPU ones."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def setup(device: torch.device | None = None, backend: str | None = None,
          timeout_s: float = 1800) -> Iterator[torch.device | None]:
    """Join the process group torchrun describes (if any) and leave it at the end.

    `device` is the one --device resolved to (advlab.device.resolve_device gives each rank
    cuda:LOCAL_RANK under torchrun). The backend follows it: nccl for CUDA, gloo otherwise; with
    device=None, nccl whenever CUDA is available (each rank on cuda:LOCAL_RANK). Yields the device
    this rank should use (None: stay where the caller is).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield device
        return
    if device is None and (backend == "nccl" or (backend is None and torch.cuda.is_available())):
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if backend is None:
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield device
        # Every rank done before any tears down: a rank that left while the other was still inside gloo's
        # teardown once aborted ("terminate called without an active exception", tests/test_distributed.py).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def shard_slice(n: int, r: int | None = None, w: int | None = None) -> slice:
    """Rank r's contiguous share of n items; shares differ in size by at most one."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def all_reduce_gradients(model: nn.Module, weight: float) -> None:
    """Replace each rank's gradient g_r by sum_r weight_r * g_r on every rank.

    With weight_r = (rank r's share of the batch), each rank's mean-loss gradient becomes the
    gradient of the mean loss over the whole batch, as in one process. One flat buffer, one call.
    """
    if not is_distributed():
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:  # a rank with an empty shard (or an unused layer) still takes part
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]) * weight
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        k = p.numel()
        p.grad.copy_(flat[offset:offset + k].view_as(p))
        offset += k


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few numbers (counts, loss sums) over ranks."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """t reduced over ranks ("sum" or "max"), on t's device and dtype."""
    if not is_distributed():
        return t
    buf = t.to(_collective_device()).contiguous()
    dist.all_reduce(buf, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return buf.to(t.device)


def all_gather_rows(local: torch.Tensor, n_total: int) -> torch.Tensor:
    """Concatenate every rank's rows in rank order. Shards may differ in length (padded for gloo)."""
    if not is_distributed():
        return local
    w = world_size()
    sizes = [shard_slice(n_total, r, w).stop - shard_slice(n_total, r, w).start for r in range(w)]
    biggest = max(sizes)
    padded = torch.zeros((biggest, *local.shape[1:]), dtype=local.dtype, device=_collective_device())
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(local.device)


def shard_evaluate(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """fn(*tensors) computed with each rank taking a contiguous slice of the rows; every rank gets
    the full result in the original order. fn must act row by row (logits, per-example losses,
    correctness flags) and return a tensor with one row per input row."""
    n = len(tensors[0])
    if not is_distributed():
        return fn(*tensors)
    sl = shard_slice(n)
    local = fn(*(t[sl] for t in tensors))
    return all_gather_rows(local.contiguous(), n)


def stage_batches(n: int, batch_size: int, shares: int = 1) -> list[slice]:
    """The batches an evaluation cuts one attack's n still-robust points into; batch b goes to rank
    b % world_size().

    shares == 1 (one process): full batches of batch_size, then the rest. shares > 1 (default under
    torchrun: the number of processes): shares * ceil(n / (shares * batch_size)) batches whose sizes
    differ by at most one, so every rank gets the same number of batches and, within one point per
    batch, the same number of points, however few are left. The numbers depend on this layout (each
    batch draws its own random stream), not on how many processes run it: a one-process evaluation
    with shares=K gives exactly the numbers of a K-process one.
    """
    if n == 0:
        return []
    if shares <= 1:
        return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    m = shares * -(-n // (shares * batch_size))
    return [shard_slice(n, b, m) for b in range(m)]
