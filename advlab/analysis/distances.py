"""Exact distances between sets of inputs, computed in blocks so memory stays bounded.

Two reductions cover every distance analysis:

- `min_distance_to_classes(queries, refs, ref_labels, K, norm)` -> (Nq, K): for every query, the
  distance to its nearest reference of each class (and which reference it is). Nearest-neighbour
  distance, within-class and between-class nearest neighbours, and 1-NN accuracy all follow.
- `mean_class_distances(a, ya, b, yb, K, norm)` -> (K, K): the average distance between the
  points of class i in `a` and those of class j in `b`.

Both stream (block x block) tiles of the distance matrix and keep only running minima or sums,
so a 60,000 x 10,000 search holds one tile per worker (2048 x 2048 float64 = 32 MiB by default),
never the 4.8 GB matrix; the inputs stay in their own precision (one class-sorted copy of the
references) and each tile is cast to float64. The search is exact (brute force, no approximate index): L2 tiles come
from a float64 matrix product (|a|^2 + |b|^2 - 2 a.b, accurate to ~1e-6 even for duplicates, and
multithreaded by BLAS); L1 and Linf tiles from `scipy.spatial.distance.cdist`, which releases the
GIL, so tiles run on `workers` threads.

`device`: None or the CPU runs exactly that numpy code. A GPU (`device="cuda"`, a torch.device, or
"auto" when one is present) computes the same float64 tiles with torch there instead: the
(class-sorted) references are copied to the device once in their own precision, queries go block
by block, the running minima stay on the device and come back to the CPU once per query block.
Results are numpy arrays on the CPU either way, equal to the CPU's up to float64 rounding (~1e-12);
ties go to the same (first) reference. Apple's MPS has no float64, so it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.spatial.distance import cdist

from ..errors import AdvlabError

NORM_NAMES = ("l1", "l2", "linf")
_SCIPY_METRIC = {"l1": "cityblock", "linf": "chebyshev"}
DEFAULT_BLOCK = 2048


def check_norm(norm: str) -> str:
    if norm not in NORM_NAMES:
        raise AdvlabError(f"unknown norm {norm!r}; choose from {', '.join(NORM_NAMES)}")
    return norm


def as_matrix(x: torch.Tensor | np.ndarray, dtype=np.float64) -> np.ndarray:
    """(N, ...) inputs as a C-contiguous (N, D) array; rejects NaN and inf."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim < 1:
        raise AdvlabError(f"inputs need a batch axis, got shape {a.shape}")
    a = np.ascontiguousarray(a.reshape(len(a), -1), dtype=np.result_type(a.dtype, dtype))
    if not np.isfinite(a).all():
        raise AdvlabError("inputs contain NaN or inf; distances would be meaningless - clean the data first")
    return a


def distance_block(a: np.ndarray, b: np.ndarray, norm: str) -> np.ndarray:
    """Exact (len(a), len(b)) distances between the rows of two float64 matrices."""
    if norm == "l2":
        # |a|^2 + |b|^2 - 2 a.b with a BLAS product: ~4x faster than the direct form; in float64
        # the rounding error is ~1e-13 on d^2, so even duplicates come out within ~1e-6 of 0.
        d = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :]
        d -= 2.0 * (a @ b.T)
        np.maximum(d, 0.0, out=d)
        return np.sqrt(d, out=d)
    return cdist(a, b, _SCIPY_METRIC[check_norm(norm)])


def resolve_tile_device(device) -> torch.device | None:
    """The torch.device to compute tiles on, or None for the numpy path on the CPU."""
    if device is None:
        return None
    from ..device import resolve_device
    dev = resolve_device(device)
    if dev.type == "cpu":
        return None
    if dev.type == "mps":
        raise AdvlabError("exact distances are computed in float64, which Apple's Metal backend (mps) does not "
                          "support; use `device='cpu'` (or a CUDA GPU)")
    return dev


def _torch_block(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """`distance_block` in torch on float64 tensors (any device): the same formulas."""
    if norm == "l2":
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
        d -= 2.0 * (a @ b.T)
        return d.clamp_min_(0.0).sqrt_()
    return torch.cdist(a, b, p=1.0 if check_norm(norm) == "l1" else float("inf"))


def pairwise_distances(a, b, norm: str) -> torch.Tensor:
    """The full (Na, Nb) distance matrix. Only for small inputs; the reductions below stream."""
    return torch.from_numpy(distance_block(as_matrix(a), as_matrix(b), check_norm(norm)))


def _workers(workers: int | None, norm: str) -> int:
    if norm == "l2":
        return 1  # the BLAS product is multithreaded already
    return max(1, workers if workers is not None else torch.get_num_threads())


def _run(tasks: list[Callable[[], None]], workers: int, tick: Callable[[], None] | None) -> None:
    """Run independent tasks (each writes its own rows of the output) on a thread pool."""
    if workers == 1:
        for t in tasks:
            t()
            if tick:
                tick()
        return
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(t) for t in tasks]:
            future.result()
            if tick:
                tick()


def _slices(n: int, block: int) -> Iterator[slice]:
    for start in range(0, n, block):
        yield slice(start, min(start + block, n))


def min_distance_to_classes(queries, refs, ref_labels, num_classes: int, norm: str, *,
                            self_index=None, block: int = DEFAULT_BLOCK, workers: int | None = None,
                            tick: Callable[[], None] | None = None, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query to its nearest reference of every class, by exact search.

    self_index: (Nq,) position of each query inside `refs` (or -1), so a point is not its own
    neighbour when queries are drawn from the references. Exact duplicates elsewhere still count.
    Returns (distance (Nq, K) float64, index into refs (Nq, K) int64); a class with no
    references gives inf and -1. `device`: where the tiles are computed (module docstring);
    `workers` applies to the CPU only.
    """
    check_norm(norm)
    dev = resolve_tile_device(device)
    q, r, labels, self_pos = _check_search(queries, refs, ref_labels, num_classes, self_index, block)

    # Sort references by class so that each class is one contiguous range of columns.
    order = np.argsort(labels, kind="stable")
    r = r[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=num_classes))])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    self_sorted = np.where(self_pos >= 0, position[np.clip(self_pos, 0, None)], -1) if len(order) else self_pos

    best = np.full((len(q), num_classes), np.inf)
    best_idx = np.full((len(q), num_classes), -1, dtype=np.int64)
    if dev is not None:
        _min_distance_on_device(q, r, order, starts, self_sorted, norm, block, dev, best, best_idx, tick)
    else:
        _min_distance_on_cpu(q, r, order, starts, self_sorted, norm, block, workers, best, best_idx, tick)
    return best, best_idx


def _check_search(queries, refs, ref_labels, num_classes: int, self_index, block: int):
    """(queries (Nq, D), references (Nr, D), their labels (Nr,), self positions (Nq,), -1 for none), checked.
    The points are kept in their own precision (float32 images stay float32); each tile is cast to float64."""
    q, r = as_matrix(queries, np.float32), as_matrix(refs, np.float32)
    labels = np.asarray(torch.as_tensor(ref_labels).cpu(), dtype=np.int64)
    if q.shape[1] != r.shape[1]:
        raise AdvlabError(f"queries have {q.shape[1]} features but references have {r.shape[1]}")
    if labels.shape != (len(r),):
        raise AdvlabError(f"ref_labels must have shape ({len(r)},), got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise AdvlabError(f"ref_labels must be in 0..{num_classes - 1}")
    if block < 1:
        raise AdvlabError(f"block must be >= 1, got {block}")
    self_pos = np.full(len(q), -1, dtype=np.int64)
    if self_index is not None:
        self_pos = np.asarray(torch.as_tensor(self_index).cpu(), dtype=np.int64).reshape(-1)
        if self_pos.shape != (len(q),) or (self_pos >= len(r)).any():
            raise AdvlabError(f"self_index must hold ({len(q)},) positions in 0..{len(r) - 1} (or -1)")
    return q, r, labels, self_pos


def _min_distance_on_cpu(q: np.ndarray, r: np.ndarray, order: np.ndarray, starts: np.ndarray,
                         self_sorted: np.ndarray, norm: str, block: int, workers: int | None,
                         best: np.ndarray, best_idx: np.ndarray, tick: Callable[[], None] | None) -> None:
    """The loop of `min_distance_to_classes` with numpy, one task per query block on a thread pool;
    fills `best` and `best_idx` (each task its own rows)."""
    num_classes = best.shape[1]

    def task(qs: slice) -> Callable[[], None]:
        def run() -> None:
            rows = np.arange(qs.start, qs.stop)
            own = self_sorted[qs]
            q64 = q[qs].astype(np.float64)
            for c in range(num_classes):
                for cs in _slices(int(starts[c + 1] - starts[c]), block):
                    lo, hi = starts[c] + cs.start, starts[c] + cs.stop
                    d = distance_block(q64, r[lo:hi].astype(np.float64), norm)  # (bq, br)
                    mine = (own >= lo) & (own < hi)
                    d[mine, own[mine] - lo] = np.inf
                    j = d.argmin(1)
                    m = d[np.arange(len(d)), j]
                    better = m < best[rows, c]
                    best[rows[better], c] = m[better]
                    best_idx[rows[better], c] = order[lo + j[better]]
        return run

    _run([task(s) for s in _slices(len(q), block)], _workers(workers, norm), tick)


@torch.no_grad()
def _min_distance_on_device(q: np.ndarray, r: np.ndarray, order: np.ndarray, starts: np.ndarray,
                            self_sorted: np.ndarray, norm: str, block: int, device: torch.device,
                            best: np.ndarray, best_idx: np.ndarray, tick: Callable[[], None] | None) -> None:
    """The loop of `min_distance_to_classes` with torch on `device`; fills `best` and `best_idx`.

    No host synchronisation inside a query block: the own-point mask and the running minima are
    tensor operations (no boolean indexing); one copy back to the CPU per query block."""
    num_classes = best.shape[1]
    refs = torch.from_numpy(r).to(device)                     # (Nr, D) class-sorted, own precision
    order_t = torch.from_numpy(order).to(device)             # sorted position -> index into refs
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=device)
    for qs in _slices(len(q), block):
        q64 = torch.from_numpy(q[qs]).to(device).to(torch.float64)          # (bq, D)
        own = torch.from_numpy(self_sorted[qs]).to(device)                   # (bq,) sorted position or -1
        best_t = torch.full((len(q64), num_classes), float("inf"), dtype=torch.float64, device=device)
        idx_t = torch.full((len(q64), num_classes), -1, dtype=torch.int64, device=device)
        for c in range(num_classes):
            for cs in _slices(int(starts[c + 1] - starts[c]), block):
                lo, hi = int(starts[c] + cs.start), int(starts[c] + cs.stop)
                d = _torch_block(q64, refs[lo:hi].to(torch.float64), norm)  # (bq, br)
                mine = ((own >= lo) & (own < hi))[:, None]
                col = (own - lo).clamp(0, hi - lo - 1)[:, None]
                d.scatter_(1, col, torch.where(mine, inf, d.gather(1, col)))  # a point is not its own neighbour
                m, j = d.min(1)                                              # first minimum, like numpy's argmin
                better = m < best_t[:, c]
                best_t[:, c] = torch.where(better, m, best_t[:, c])
                idx_t[:, c] = torch.where(better, order_t[lo + j], idx_t[:, c])
        best[qs] = best_t.cpu().numpy()
        best_idx[qs] = idx_t.cpu().numpy()
        if tick:
            tick()


def count_tasks(n_queries: int, block: int = DEFAULT_BLOCK) -> int:
    """How many ticks `min_distance_to_classes` makes (one per block of queries), for progress bars."""
    return math.ceil(n_queries / block)


def mean_class_distances(a, ya, b, yb, num_classes: int, norm: str, *, same: bool = False,
                         block: int = DEFAULT_BLOCK, workers: int | None = None, device=None) -> np.ndarray:
    """(K, K) mean distance between class-i points of `a` and class-j points of `b`.

    same=True means a and b are the same set: a point's zero distance to itself is left out of
    the diagonal's average (n_i (n_i - 1) pairs). Empty classes give NaN. `device`: where the
    tiles are computed (module docstring).
    """
    check_norm(norm)
    dev = resolve_tile_device(device)
    xa, xb = as_matrix(a), as_matrix(b)
    la = np.asarray(torch.as_tensor(ya).cpu(), dtype=np.int64)
    lb = np.asarray(torch.as_tensor(yb).cpu(), dtype=np.int64)
    onehot_a = np.eye(num_classes)[la]  # (Na, K)
    onehot_b = np.eye(num_classes)[lb]  # (Nb, K)
    total = np.zeros((num_classes, num_classes))
    tiles = [(sa, sb) for sa in _slices(len(xa), block) for sb in _slices(len(xb), block)]
    parts: list[np.ndarray] = [None] * len(tiles)  # type: ignore[list-item]

    def task(t: int) -> Callable[[], None]:
        def run() -> None:
            sa, sb = tiles[t]
            # Sum of distances per class pair: onehot_a^T D onehot_b, (K, K).
            parts[t] = onehot_a[sa].T @ distance_block(xa[sa], xb[sb], norm) @ onehot_b[sb]
        return run

    if dev is not None:
        total = _class_sums_on_device(xa, xb, onehot_a, onehot_b, tiles, norm, dev)
    else:
        _run([task(t) for t in range(len(tiles))], _workers(workers, norm), None)
        for p in parts:
            total += p
    na, nb = onehot_a.sum(0), onehot_b.sum(0)
    pairs = np.outer(na, nb)
    if same:
        pairs -= np.diag(na)  # self pairs have distance 0 and do not count
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / np.maximum(pairs, 1), np.nan)


@torch.no_grad()
def _class_sums_on_device(xa: np.ndarray, xb: np.ndarray, onehot_a: np.ndarray, onehot_b: np.ndarray,
                          tiles: list[tuple[slice, slice]], norm: str, device: torch.device) -> np.ndarray:
    """(K, K) sums of distances per class pair, tile by tile on `device` (float64), back on the CPU."""
    ta, tb = torch.from_numpy(xa).to(device), torch.from_numpy(xb).to(device)
    oa, ob = torch.from_numpy(onehot_a).to(device), torch.from_numpy(onehot_b).to(device)
    total = torch.zeros(oa.shape[1], ob.shape[1], dtype=torch.float64, device=device)
    for sa, sb in tiles:
        total += oa[sa].T @ _torch_block(ta[sa], tb[sb], norm) @ ob[sb]
    return total.cpu().numpy()
