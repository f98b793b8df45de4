"""One training run end to end: data, model, defense, training, test accuracy, run directory."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from .. import rng
from ..data import holdout_split, load_dataset
from ..errors import AdvlabError
from ..models import build_model, model_spec
from ..predict import accuracy
from ..runs import CARD_FILE, save_run
from .registry import build_defense
from .training import CHECKPOINT, TrainConfig, Trainer


def train_run(dataset: str, model: str, out: str | Path, *, config: TrainConfig | None = None,
              model_kwargs: dict[str, Any] | None = None, dataset_kwargs: dict[str, Any] | None = None,
              defense: str = "none", defense_kwargs: dict[str, Any] | None = None, normalize: bool = True,
              val_fraction: float = 0.1, data_dir: str | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and save a run; returns the `advlab train --json` record."""
    config = config or TrainConfig()
    out = Path(out)
    if not resume and not overwrite and ((out / CARD_FILE).exists() or (out / CHECKPOINT).exists()):
        raise AdvlabError(f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                          "or choose another --out")
    started = time.perf_counter()
    ds = load_dataset(dataset, data_dir=data_dir, **(dataset_kwargs or {}))
    split = holdout_split(ds.x_train, ds.y_train, val=val_fraction, seed=config.seed)
    norm = None
    if normalize:
        mean, std = ds.channel_stats()
        norm = {"mean": mean, "std": std}
    spec = model_spec(model, ds.input_shape, ds.num_classes, norm, **(model_kwargs or {}))
    with rng.seeded(config.seed):
        net = build_model(model, ds.input_shape, ds.num_classes, norm, **(model_kwargs or {}))
    defense_kwargs = dict(defense_kwargs or {})
    objective = build_defense(defense, bounds=ds.bounds, **defense_kwargs)
    trainer = Trainer(net, split.x_train, split.y_train, split.x_val, split.y_val, config=config,
                      objective=objective, run_dir=out, progress=progress, log=log,
                      identity={"model": spec, "dataset": ds.describe(), "defense": [defense, defense_kwargs],
                                "val_fraction": val_fraction})
    result = trainer.fit(resume=resume and (out / CHECKPOINT).exists())
    test_acc = accuracy(net, ds.x_test, ds.y_test)
    seconds = time.perf_counter() - started
    card = {
        "model": spec,
        "dataset": ds.describe(),
        "seed": config.seed,
        "epochs": result.epochs_run,
        "defense": {"name": defense, **defense_kwargs},
        "train": {**dataclasses.asdict(config), "val_fraction": val_fraction},
        "metrics": {"test_accuracy": test_acc, "best_epoch": result.best_epoch,
                    "stopped_early": result.stopped_early, "train_seconds": result.seconds,
                    "history": result.history},
    }
    save_run(out, net, card)
    return {"run_dir": str(out), "dataset": dataset, "model": model, "defense": defense,
            "epochs": result.epochs_run, "test_accuracy": test_acc, "seconds": seconds}
