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
                            tick: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query to its nearest reference of every class, by exact search.

    self_index: (Nq,) position of each query inside `refs` (or -1), so a point is not its own
    neighbour when queries are drawn from the references. Exact duplicates elsewhere still count.
    Returns (distance (Nq, K) float64, index into refs (Nq, K) int64); a class with no
    references gives inf and -1.
    """
    check_norm(norm)
    # Kept in their own precision (float32 images stay float32); each tile is cast to float64.
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

    # Sort references by class so that each class is one contiguous range of columns.
    order = np.argsort(labels, kind="stable")
    r = r[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=num_classes))])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    self_sorted = np.where(self_pos >= 0, position[np.clip(self_pos, 0, None)], -1) if len(order) else self_pos

    best = np.full((len(q), num_classes), np.inf)
    best_idx = np.full((len(q), num_classes), -1, dtype=np.int64)

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
    return best, best_idx


def count_tasks(n_queries: int, block: int = DEFAULT_BLOCK) -> int:
    """How many ticks `min_distance_to_classes` makes (one per block of queries), for progress bars."""
    return math.ceil(n_queries / block)


def mean_class_distances(a, ya, b, yb, num_classes: int, norm: str, *, same: bool = False,
                         block: int = DEFAULT_BLOCK, workers: int | None = None) -> np.ndarray:
    """(K, K) mean distance between class-i points of `a` and class-j points of `b`.

    same=True means a and b are the same set: a point's zero distance to itself is left out of
    the diagonal's average (n_i (n_i - 1) pairs). Empty classes give NaN.
    """
    check_norm(norm)
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

    _run([task(t) for t in range(len(tiles))], _workers(workers, norm), None)
    for p in parts:
        total += p
    na, nb = onehot_a.sum(0), onehot_b.sum(0)
    pairs = np.outer(na, nb)
    if same:
        pairs -= np.diag(na)  # self pairs have distance 0 and do not count
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / np.maximum(pairs, 1), np.nan)
