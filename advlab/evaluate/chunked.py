"""An evaluation of images read on demand, a chunk of points at a time, in memory that does not grow with N.

    ev = evaluate_in_chunks(model, data.x_test[:5000], y, [4/255], suite, chunk_size=500, state_dir=out)

Each chunk of `chunk_size` points is decoded (advlab.data.lazy), evaluated by `evaluate_robustness`
exactly as in-memory data is (the cascade, the per-batch state, resuming), and its adversarial examples
are written to OUT/chunks/NNNNN/adversarial.safetensors with its logits and which attack broke each
point. Only those small per-point results stay in memory; the returned Evaluation has no `x_adv`.
A chunk that finished is not run again: an interrupted evaluation resumes at the first unfinished one
(and inside it at its last batch). The seeds of chunk c are derived from (seed, c), so the result
depends on the chunk size, which is part of the evaluation's identity.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import distributed, rng
from .. import rundir
from ..attacks.budget import describe_eps, per_example_budgets
from ..data.lazy import LazyImages
from ..errors import AdvlabError
from ..io import load_tensors, read_record, write_json
from ..passes import add_counts
from ..progress import write
from ..threat import Bounds
from .recorded import save_examples
from .robust import Evaluation, evaluate_robustness
from .suites import SuiteEntry

DEFAULT_CHUNK_SIZE = 1000


def evaluate_in_chunks(model: nn.Module, x: LazyImages, y: torch.Tensor, eps: Sequence[float] | Any,
                       suite: Sequence[SuiteEntry], *, norm: str = "linf", bounds: Bounds = None, seed: int = 0,
                       batch_size: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                       state_dir: str | Path | None = None, progress: bool = True,
                       identity: dict[str, Any] | None = None, precision: str = "fp32", graphs: bool = False,
                       shares: int | None = None) -> Evaluation:
    """evaluate_robustness over `x` chunk by chunk (see the module docstring); the same arguments, plus
    `chunk_size` (points decoded and held at once)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise AdvlabError(f"`chunk_size` must be a positive number of points, got {chunk_size!r}")
    if len(x) != len(y):
        raise AdvlabError(f"{len(x)} images but {len(y)} labels")
    n = len(y)
    budgets = per_example_budgets(eps, n)
    eps_values = describe_eps(eps)
    # What a finished chunk must have been evaluated with to be reused (the budgets themselves, not only their
    # means: per-class budgets with the same mean are another evaluation).
    settings = {"eps": eps_values, "budgets": hashlib.sha256(torch.stack(budgets).numpy().tobytes()).hexdigest(),
                "norm": norm, "suite": [[s.label, s.attack, s.options] for s in suite], "seed": seed,
                "batch_size": batch_size}
    if precision != "fp32":
        settings["precision"] = precision
    root = Path(state_dir) / rundir.CHUNKS_DIR if state_dir is not None else None
    parts: list[Evaluation] = []
    starts = range(0, n, chunk_size)
    for c, start in enumerate(starts):
        stop = min(start + chunk_size, n)
        where = root / f"{c:05d}" if root is not None else None
        ident = {**(identity or {}), **settings, "chunk": [start, stop], "chunk_size": chunk_size, "n": n}
        done = _finished(where, ident, norm)
        if done is None:
            if progress and distributed.is_main():
                write(f"chunk {c + 1}/{len(starts)}: points {start}..{stop - 1}")
            rows = x[start:stop].load(progress)
            done = evaluate_robustness(model, rows, y[start:stop], [b[start:stop] for b in budgets], suite,
                                       norm=norm, bounds=bounds, seed=rng.derive_seed(seed, c), batch_size=batch_size,
                                       state_dir=where, progress=progress, identity=ident, precision=precision,
                                       graphs=graphs, shares=shares)
            if where is not None and distributed.is_main():
                _finish(where, rows, done, [b[start:stop] for b in budgets], ident)
            del rows
            done.x_adv = None  # on disk; only the per-point results stay
        parts.append(done)
    merged = _merge(parts, eps_values)
    merged.precision = precision
    return merged


def _finish(where: Path, rows: torch.Tensor, ev: Evaluation, budgets: list[torch.Tensor], ident: dict[str, Any]) -> None:
    """A finished chunk: its examples and results on disk, its resumable state no longer needed."""
    save_examples(where, rows, ev, budgets)
    write_json(where / rundir.DONE_FILE, {"identity": json.loads(json.dumps(ident, default=str)), "eps": ev.eps,
                                   "attacks": ev.attacks, "seconds": ev.seconds, "attack_seconds": ev.attack_seconds,
                                   "passes": ev.passes, "attack_passes": ev.attack_passes,
                                   "oom_batch_sizes": ev.oom_batch_sizes})
    (where / rundir.STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(where / rundir.PARTS_DIR, ignore_errors=True)


def _finished(where: Path | None, ident: dict[str, Any], norm: str) -> Evaluation | None:
    """The results of a chunk that finished with this identity, read without its images; else None."""
    if where is None:
        return None
    done = read_record(where / rundir.DONE_FILE)
    if done is None or done.get("identity") != json.loads(json.dumps(ident, default=str)):
        return None
    t = load_tensors(where / rundir.EXAMPLES_FILE, keys=["y", "clean_logits", "broken_by", "logits"])
    return Evaluation(done["eps"], norm, done["attacks"], t["y"], t["clean_logits"], t["broken_by"],
                      None, t["logits"], done["seconds"], done["attack_seconds"], done["passes"],
                      done["attack_passes"], done["oom_batch_sizes"])


def _merge(parts: list[Evaluation], eps_values: list[float]) -> Evaluation:
    """One Evaluation of all the points, chunk after chunk (no x_adv: each chunk's file holds its examples)."""
    first = parts[0]
    attack_seconds: dict[str, float] = {}
    attack_passes: dict[str, dict[str, int]] = {}
    oom: dict[str, int] = {}
    for p in parts:
        for k, v in p.attack_seconds.items():
            attack_seconds[k] = attack_seconds.get(k, 0.0) + v
        for k, v in p.attack_passes.items():
            attack_passes[k] = add_counts(attack_passes.get(k), v)
        for k, v in p.oom_batch_sizes.items():
            oom[k] = min(oom.get(k, v), v)
    return Evaluation(eps_values, first.norm, first.attacks, torch.cat([p.y for p in parts]),
                      torch.cat([p.clean_logits for p in parts]), torch.cat([p.broken_by for p in parts], dim=1),
                      None, torch.cat([p.logits for p in parts], dim=1), sum(p.seconds for p in parts),
                      attack_seconds, add_counts(*(p.passes for p in parts)), attack_passes, oom)
