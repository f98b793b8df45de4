"""What the protocols share: the dataset (with its fallback, never downloading) and a model trained
into OUT/runs/NAME. Both protocols.py and certified.py build on these; neither imports the other's
protocols."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import DataNotFoundError

Log = Callable[[str], None]


@contextlib.contextmanager
def _offline():
    old = os.environ.get("ADVLAB_OFFLINE")
    os.environ["ADVLAB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ADVLAB_OFFLINE", None)
        else:
            os.environ["ADVLAB_OFFLINE"] = old


def pick_dataset(preferred: str, fallback: str | None, data_dir: str | None) -> tuple[Any, str]:
    """Load `preferred` from local files (never downloading); else `fallback`, with a note saying so."""
    from ..data import load_dataset

    try:
        with _offline():
            return load_dataset(preferred, data_dir=data_dir), ""
    except DataNotFoundError:
        if not fallback or fallback == preferred:
            raise
    ds = load_dataset(fallback, data_dir=data_dir)
    return ds, (f"{preferred} files were not found, so this ran on {fallback} with the same protocol: the published "
                f"numbers are for {preferred}, ours for {fallback}")


def train(name: str, model: str, out: Path, s: dict[str, Any], ds_name: str, *, epochs: int, seed: int = 0,
          model_kwargs=None, defense: str = "none", defense_kwargs=None, data_dir=None, progress=True,
          log: Log | None = None, device=None):
    """Train `model` (with `defense`) into OUT/runs/NAME with the settings' lr and batch size; returns
    (the model loaded back from the run, on `device`; the training record)."""
    from ..defenses.run import train_run
    from ..defenses.training import TrainConfig
    from ..runs import load_run

    if log:
        log(f"  training {name}: {model}" + ("" if defense == "none" else f" + {defense}") + f", {epochs} epochs")
    record = train_run(ds_name, model, out / "runs" / name, data_dir=data_dir, model_kwargs=model_kwargs or {},
                       defense=defense, defense_kwargs=defense_kwargs or {}, overwrite=True, progress=progress,
                       log=None, config=TrainConfig(epochs=epochs, lr=s.get("lr", 3e-3),
                                                    batch_size=s.get("batch_size", 128), seed=seed), device=device)
    model_, _ = load_run(out / "runs" / name, device=device)
    return model_, record
