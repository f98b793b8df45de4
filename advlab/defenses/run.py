"""One training run end to end: data, model, defense, training, test accuracy, run directory.

Under torchrun every rank runs this function: training is data-parallel, the test accuracy is
computed on shards and gathered, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from .. import distributed, rng
from ..data import holdout_split, load_dataset
from ..errors import AdvlabError
from ..models import build_model, model_spec
from ..predict import predict_logits
from ..rundir import CARD_FILE, CHECKPOINT_FILE
from ..runs import save_run
from .layers import split_at_layer
from .registry import build_defense
from .rst import RSTSettings, robust_self_training
from .training import TrainConfig, Trainer, TrainResult


def train_run(dataset: str, model: str, out: str | Path, *, config: TrainConfig | None = None,
              model_kwargs: dict[str, Any] | None = None, dataset_kwargs: dict[str, Any] | None = None,
              defense: str = "none", defense_kwargs: dict[str, Any] | None = None, normalize: bool = True,
              val_fraction: float = 0.1, data_dir: str | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True,
              log: Callable[[str], None] | None = None, device: Any = None) -> dict[str, Any]:
    """Train and save a run; returns the `advlab train --json` record. `device`: where to train
    ("auto", "cpu", "cuda", "cuda:N", a torch.device; None: the CPU)."""
    config = config or TrainConfig()
    if device is not None:  # "auto", "cuda:1", a torch.device: checked before any work
        from ..device import resolve_device
        device = resolve_device(device)
    out = Path(out)
    if not resume and not overwrite and ((out / CARD_FILE).exists() or (out / CHECKPOINT_FILE).exists()):
        raise AdvlabError(f"{out} already holds a run; pass `resume=True` to continue it, `overwrite=True` to "
                          "replace it, or choose another `out`")
    started = time.perf_counter()
    ds = load_dataset(dataset, data_dir=data_dir, **(dataset_kwargs or {}))
    defense_kwargs = dict(defense_kwargs or {})
    objective = build_defense(defense, bounds=ds.bounds, **defense_kwargs)
    rst = objective if isinstance(objective, RSTSettings) else None
    split = holdout_split(ds.x_train, ds.y_train, val=val_fraction, pool=_pool_size(rst, ds, val_fraction),
                          seed=config.seed)
    norm = None
    if normalize:
        mean, std = ds.channel_stats()
        norm = {"mean": mean, "std": std}
    spec = model_spec(model, ds.input_shape, ds.num_classes, norm, **(model_kwargs or {}))

    def make_model():
        with rng.seeded(config.seed):
            net = build_model(model, ds.input_shape, ds.num_classes, norm, **(model_kwargs or {}))
        return net.to(device) if device is not None else net

    net = make_model()
    identity = {"model": spec, "dataset": ds.describe(), "defense": [defense, defense_kwargs],
                "val_fraction": val_fraction, "world_size": distributed.world_size()}
    result, extra = _fit(net, make_model, objective, split, config, out, spec=spec, identity=identity, resume=resume,
                         progress=progress, log=log)
    correct = distributed.shard_evaluate(lambda x, y: (predict_logits(net, x).argmax(1) == y).float(),
                                         ds.x_test, ds.y_test)
    test_acc = correct.mean().item()
    seconds = time.perf_counter() - started
    card = _card(spec, ds, config, defense, defense_kwargs, objective, val_fraction, result, test_acc, extra)
    if distributed.is_main():
        save_run(out, net, card)
    distributed.barrier()
    return {"run_dir": str(out), "dataset": dataset, "model": model, "defense": defense,
            "epochs": result.epochs_run, "test_accuracy": test_acc, "seconds": seconds}


def _pool_size(rst: RSTSettings | None, ds, val_fraction: float) -> int:
    """The unlabelled pool of robust self-training: the training split less validation and labels."""
    if rst is None:
        return 0
    n_val = int(round(val_fraction * len(ds.y_train))) if val_fraction < 1 else int(val_fraction)
    pool = len(ds.y_train) - n_val - rst.labels
    if pool < 0:
        raise AdvlabError(f"rst: labels={rst.labels} is more than the {len(ds.y_train) - n_val} training "
                          "examples left after the validation split")
    return pool


def _fit(net, make_model: Callable[[], Any], objective, split, config: TrainConfig, out: Path, *,
         spec: dict[str, Any], identity: dict[str, Any], resume: bool, progress: bool,
         log: Callable[[str], None] | None) -> tuple[TrainResult, dict[str, Any]]:
    """Train `net` in place with the defense's objective (robust self-training runs its own stages);
    returns the result and the card's extra metrics."""
    rst = objective if isinstance(objective, RSTSettings) else None
    inner = rst.objective if rst is not None else objective
    if getattr(inner, "layer", 0):
        split_at_layer(net, inner.layer)  # a bad layer number fails now, not after the teacher or an epoch
    val_metric = getattr(inner, "val_metric", None)
    hooks = inner.hooks(split.x_val, split.y_val) if hasattr(inner, "hooks") else []
    if rst is not None:
        out_rst = robust_self_training(net, make_model, rst, split.x_train, split.y_train, split.x_pool,
                                       split.x_val, split.y_val, config, y_pool=split.y_pool, run_dir=out,
                                       resume=resume, progress=progress, log=log, identity=identity,
                                       teacher_spec=spec, val_metric=val_metric, hooks=hooks)
        return out_rst.result, {"rst": out_rst.info}
    trainer = Trainer(net, split.x_train, split.y_train, split.x_val, split.y_val, config=config,
                      objective=objective, val_metric=val_metric, run_dir=out, progress=progress, log=log,
                      identity=identity, hooks=hooks)
    return trainer.fit(resume=resume and (out / CHECKPOINT_FILE).exists()), {}


def _card(spec: dict[str, Any], ds, config: TrainConfig, defense: str, defense_kwargs: dict[str, Any], objective,
          val_fraction: float, result: TrainResult, test_acc: float, extra: dict[str, Any]) -> dict[str, Any]:
    rolled_back = [m["rolled_back_to_epoch"] for m in result.history if "rolled_back_to_epoch" in m]
    return {
        "model": spec,
        "dataset": ds.describe(),
        "seed": config.seed,
        "epochs": result.epochs_run,
        "defense": {"name": defense, **defense_kwargs,
                    "resolved": objective.describe() if hasattr(objective, "describe") else {}},
        "train": {**dataclasses.asdict(config), "val_fraction": val_fraction,
                  "world_size": distributed.world_size()},
        "metrics": {"test_accuracy": test_acc, "best_epoch": result.best_epoch,
                    "stopped_early": result.stopped_early, "stop_reason": result.stop_reason,
                    "rolled_back_to_epoch": rolled_back[-1] if rolled_back else None,
                    "train_seconds": result.seconds, "history": result.history, **extra},
    }
