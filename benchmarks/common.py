"""Shared pieces of the benchmarks: models trained once and cached, timing with medians."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable


HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("ADVLAB_BENCH_CACHE", HERE / ".cache"))
RESULTS = HERE / "results"


def trained_model(name: str, defense: str = "none", eps: float | None = None, epochs: int = 2,
                  model: str = "cnn-small", seed: int = 0, lr: float = 3e-3, dataset: str = "fashion-mnist",
                  model_kwargs: dict | None = None, defense_kwargs: dict | None = None):
    """A model trained with advlab (Fashion-MNIST unless `dataset`), cached under benchmarks/.cache/NAME."""
    from advlab import load_run
    from advlab.defenses import TrainConfig
    from advlab.defenses.run import train_run

    import fcntl

    run_dir = CACHE / name
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:  # two benchmarks at once: one trains, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run_dir / "card.json").exists():
            if os.environ.get("ADVLAB_BENCH_NO_TRAIN"):  # panel.py --cached-only: report what exists, train nothing
                raise LookupError(f"{name} is not trained yet")
            kwargs = {"eps": eps} if eps is not None else {}
            train_run(dataset, model, run_dir, config=TrainConfig(epochs=epochs, lr=lr, seed=seed),
                      defense=defense, defense_kwargs={**kwargs, **(defense_kwargs or {})},
                      model_kwargs=model_kwargs or {}, overwrite=True, progress=False, log=print)
    return load_run(run_dir)


def median_time(fn: Callable[[], object], repeats: int = 3) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
