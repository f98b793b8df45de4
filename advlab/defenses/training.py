"""The training loop every defense uses: seeded, resumable, with progress and early stopping.

A defense is an *objective*: `objective(model, x, y, generator) -> (loss, logits)`. Plain
training uses `clean_objective`; adversarial training plugs in an objective that crafts
adversarial examples first. The loop itself knows nothing about attacks.

Checkpoints go to `RUN/checkpoint/state.safetensors` after every epoch: one atomic file holding
model, optimizer and best-so-far weights as tensors, and the rest (epoch, history, config) as JSON
metadata. Every epoch draws its randomness from generators derived from (seed, epoch), so a run
resumed from the last completed epoch ends with the same weights as one that never stopped.

Two small extension points keep defenses out of the loop itself:
- hooks (`TrainerHook`): `fit_start(trainer)` and `epoch_end(trainer, metrics)`, which may add
  metrics, roll the model back with `trainer.restore(snapshot)` and return a reason to stop
  (fast adversarial training's catastrophic-overfitting check uses this);
- an epoch plan (`plan(epoch) -> EpochPlan`): which data, objective and learning-rate scale an
  epoch uses (robust self-training alternates clean and adversarial epochs with it).

Under torchrun (advlab.distributed) every rank takes its slice of each batch, gradients are
all-reduced so that all ranks take the same step, and rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .. import distributed, rng
from ..rundir import CHECKPOINT_FILE
from ..errors import AdvlabError
from ..io import flatten_state, load_tensors, read_metadata, save_tensors, unflatten_state
from ..oom import fitting
from ..predict import accuracy, model_device
from ..progress import progress as progress_bar
from ..progress import write

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], "tuple[torch.Tensor, torch.Tensor]"]
ValMetric = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]



def clean_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    logits = model(x)
    return F.cross_entropy(logits, y), logits


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"        # adam | sgd
    lr: float = 1e-3               # peak learning rate for the one-cycle schedule
    momentum: float = 0.9          # sgd only
    weight_decay: float = 0.0
    schedule: str = "onecycle"     # onecycle | step | constant
    warmup: float = 0.3            # onecycle: fraction of steps spent rising to lr
    step_epochs: int = 10          # step: multiply lr by gamma every step_epochs epochs
    gamma: float = 0.1
    patience: Optional[int] = None  # early stopping: epochs without a better validation metric
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "optimizer": self.optimizer in ("adam", "sgd"),
            "schedule": self.schedule in ("onecycle", "step", "constant"),
            "warmup": 0 <= self.warmup < 1, "weight_decay": self.weight_decay >= 0,
            "patience": self.patience is None or self.patience >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            k = bad[0]
            allowed = {"optimizer": "adam or sgd", "schedule": "onecycle, step or constant"}.get(k, "a valid value")
            raise AdvlabError(f"training option {k}={getattr(self, k)!r} is invalid; use {allowed}")


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The schedule as a pure function of the global step (nothing to save on resume)."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        epoch = step * config.epochs // max(total_steps, 1)
        return config.lr * config.gamma ** (epoch // config.step_epochs)
    # One cycle: linear rise from lr/25 to lr, then cosine decay to ~0.
    rise = max(int(config.warmup * total_steps), 1)
    if step < rise:
        return config.lr * (0.04 + 0.96 * step / rise)
    t = (step - rise) / max(total_steps - rise, 1)
    return config.lr * (0.5 * (1 + math.cos(math.pi * min(t, 1.0))) * (1 - 1e-4) + 1e-4)


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    stop_reason: Optional[str] = None  # why training ended before config.epochs (None: it did not)


@dataclass
class EpochPlan:
    """What one epoch trains on: its data, its objective and a factor on the scheduled lr."""
    x: torch.Tensor
    y: torch.Tensor
    objective: Objective
    lr_scale: float = 1.0


class TrainerHook:
    """Called by Trainer.fit; override what you need. Hooks must act the same on every rank."""

    def fit_start(self, trainer: "Trainer") -> None:
        """Before the first epoch of this call to fit (also after a resume)."""

    def epoch_end(self, trainer: "Trainer", metrics: dict[str, Any]) -> Optional[str]:
        """After an epoch and its validation. May add to `metrics` and change the model;
        return a reason (a sentence) to stop training, or None to go on."""
        return None


class Trainer:
    """Fits `model` on (x_train, y_train), validating on (x_val, y_val) after each epoch."""

    def __init__(self, model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                 config: TrainConfig | None = None, objective: Objective = clean_objective,
                 val_metric: ValMetric | None = None, run_dir: str | Path | None = None,
                 progress: bool = True, log: Callable[[str], None] | None = None,
                 identity: dict[str, Any] | None = None, hooks: list[TrainerHook] | None = None,
                 plan: Callable[[int], EpochPlan] | None = None):
        self.model = model
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.config = config or TrainConfig()
        self.objective = objective
        self.val_metric = val_metric or accuracy
        self.run_dir = Path(run_dir) if run_dir else None
        self.progress = progress and distributed.is_main()
        self._log = log or write
        self.hooks = list(hooks or [])
        self.plan = plan or (lambda epoch: EpochPlan(self.x_train, self.y_train, self.objective))
        # What must match for a checkpoint to be resumed: the config plus whatever the caller adds
        # (model spec, dataset, defense).
        self.identity = {"config": dataclasses.asdict(self.config), **(identity or {})}
        self.device = model_device(model)
        self.optimizer = self._make_optimizer()
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stop_reason: str | None = None
        self.stopped_early = False

    def log(self, message: str) -> None:
        if distributed.is_main():
            self._log(message)

    # -- public -------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        start = time.perf_counter()
        if resume:
            self.load_checkpoint()
        for hook in self.hooks:
            hook.fit_start(self)
        try:
            while self.epoch < self.config.epochs and self.stop_reason is None:
                metrics = self.train_epoch(self.epoch)
                metrics.update(self.validate())
                self.epoch += 1
                metrics["epoch"] = self.epoch
                reasons = [hook.epoch_end(self, metrics) for hook in self.hooks]
                reason = next((r for r in reasons if r), None)
                self.history.append(metrics)
                # A hook that stops may have rolled the model back: these metrics no longer describe it.
                improved = self._track_best(metrics) if reason is None else False
                self.log(self._summary(metrics, improved))
                if reason is not None:
                    self.stop_reason = reason
                elif self._should_stop():
                    self.stopped_early = True
                    self.stop_reason = (f"early stopping: no better validation metric for {self.config.patience} "
                                        f"epochs; keeping epoch {self.best_epoch}")
                if self.stop_reason is not None:
                    self.log(self.stop_reason)
                self.save_checkpoint()
        finally:
            self.model.eval()
        if self.config.patience is not None and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return TrainResult(self.epoch, self.best_epoch, list(self.history), self.stopped_early,
                           time.perf_counter() - start, self.stop_reason)

    def snapshot(self) -> dict[str, Any]:
        """Model and optimizer state, copied (for hooks that may roll back)."""
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        plan = self.plan(epoch)
        n = len(plan.y)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        order = torch.randperm(n, generator=rng.generator(cfg.seed, epoch, rng.STREAM_SHUFFLE))
        # Each rank draws its own attack noise and dropout masks; one process draws as before.
        ranks = (distributed.rank(),) if distributed.is_distributed() else ()
        gen = rng.generator(cfg.seed, epoch, rng.STREAM_OBJECTIVE, *ranks, device=self.device)
        # Sums stay on the device: reading them every step would make a GPU wait for the host.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        seen = 0
        check_every = 1 if self.device.type == "cpu" else 25  # divergence checks: free on the CPU
        t0 = time.perf_counter()
        self.model.train()
        # Dropout draws from the global RNG: seed it per epoch, and restore it afterwards.
        with rng.seeded(rng.derive_seed(cfg.seed, epoch, rng.STREAM_GLOBAL, *ranks)):
            bar = progress_bar(range(steps_per_epoch), f"epoch {epoch + 1}/{cfg.epochs}", self.progress, unit="batch")
            for i in bar:
                batch = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                idx = batch[distributed.shard_slice(len(batch))]  # this rank's share (all of it in one process)
                lr = plan.lr_scale * learning_rate(cfg, epoch * steps_per_epoch + i, total_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                if len(idx):
                    batch_loss, batch_correct = self._gradient(plan, idx, gen)
                    finite &= torch.isfinite(batch_loss)
                    if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch:
                        self._check_finite(finite, batch_loss, epoch, i)
                    loss_sum += batch_loss.double() * len(idx)
                    correct += batch_correct
                    seen += len(idx)
                distributed.all_reduce_gradients(self.model, len(idx) / len(batch))
                self.optimizer.step()
                if seen and self.progress and i % 20 == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}",
                                    lr=f"{lr:.2e}")
        loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum.item(), correct.item(), seen])
        return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "epoch_seconds": time.perf_counter() - t0}

    _micro_batch: int | None = None  # set when the device ran out of memory (advlab.oom)

    def _gradient(self, plan: EpochPlan, idx: torch.Tensor, gen) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate the gradient of the batch's mean loss; returns (mean loss, correct count), on the device.

        When the device runs out of memory the batch is split into chunks whose gradients add up to
        the whole batch's (each chunk's mean loss weighted by its share): the same update, except that
        batch-norm statistics are then per chunk. The chunk size that fitted is kept.
        """
        def accumulate(size: int) -> tuple[Any, Any]:
            loss_total, correct = 0.0, 0
            for part in idx.split(size):
                x = plan.x[part].to(self.device, non_blocking=True)
                y = plan.y[part].to(self.device, non_blocking=True)
                loss, logits = plan.objective(self.model, x, y, gen)
                share = len(part) / len(idx)
                (loss * share if share != 1 else loss).backward()
                loss_total = loss_total + loss.detach() * share
                correct = correct + (logits.argmax(1) == y).sum()
            return loss_total, correct

        start = min(len(idx), self._micro_batch or len(idx))
        out, size = fitting(accumulate, start, "training", self.log,
                            on_out_of_memory=lambda: self.optimizer.zero_grad(set_to_none=True))
        if size < start:
            self._micro_batch = size
        return out

    @staticmethod
    def _check_finite(finite: torch.Tensor, loss: torch.Tensor, epoch: int, i: int) -> None:
        if not bool(finite):
            raise AdvlabError(f"training loss became {loss.item()} at epoch {epoch + 1}, batch {i} or before; "
                              "lower the learning rate")

    def validate(self) -> dict[str, Any]:
        """The validation metric (a mean over examples; under torchrun each rank scores its slice)."""
        if self.x_val is None or len(self.x_val) == 0:
            return {}
        sl = distributed.shard_slice(len(self.y_val))
        x, y = self.x_val[sl], self.y_val[sl]
        local = float(self.val_metric(self.model, x, y)) * len(y) if len(y) else 0.0
        total, n = distributed.all_reduce_sum([local, len(y)])
        return {"val_metric": total / n}

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        if not distributed.is_main():
            distributed.barrier()  # wait until rank 0 has written it
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_skeleton = flatten_state(self.optimizer.state_dict(), "optim")
        tensors.update(optim_tensors)
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        meta = {"epoch": self.epoch, "history": self.history, "best_metric": self.best_metric,
                "best_epoch": self.best_epoch, "optimizer": optim_skeleton, "identity": self.identity,
                "stop_reason": self.stop_reason, "stopped_early": self.stopped_early}
        save_tensors(self.run_dir / CHECKPOINT_FILE, tensors, {"advlab": json.dumps(meta, default=str)})
        distributed.barrier()

    def load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT_FILE if self.run_dir else None
        if path is None or not path.is_file():
            raise AdvlabError(f"nothing to resume: {path} does not exist; run without `resume=True` to start")
        meta = json.loads(read_metadata(path)["advlab"])
        tensors = load_tensors(path)
        if _jsonable(meta["identity"]) != _jsonable(self.identity):
            raise AdvlabError(f"cannot resume {self.run_dir}: it was started with different settings "
                              f"({_first_difference(meta['identity'], self.identity)}); "
                              "rerun with the original options, or use a new `out`")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.optimizer.load_state_dict(unflatten_state(meta["optimizer"], tensors))
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        self.epoch, self.history = meta["epoch"], meta["history"]
        self.best_metric = meta["best_metric"] if meta["best_metric"] is not None else -math.inf
        self.best_epoch = meta["best_epoch"]
        self.stop_reason = meta.get("stop_reason")
        self.stopped_early = bool(meta.get("stopped_early", False))
        self.log(f"resuming {self.run_dir} after epoch {self.epoch}")

    # -- internals ----------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _track_best(self, metrics: dict[str, Any]) -> bool:
        value = metrics.get("val_metric")
        if value is None or not value > self.best_metric:
            return False
        self.best_metric, self.best_epoch = value, self.epoch
        if self.config.patience is not None:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return True

    def _should_stop(self) -> bool:
        p = self.config.patience
        return p is not None and self.epoch - self.best_epoch >= p

    def _summary(self, m: dict[str, Any], improved: bool) -> str:
        parts = [f"epoch {m['epoch']}/{self.config.epochs}", f"loss {m['train_loss']:.4f}",
                 f"train acc {m['train_accuracy']:.4f}"]
        if "val_metric" in m:
            parts.append(f"val {m['val_metric']:.4f}{' *' if improved else ''}")
        standard = {"epoch", "train_loss", "train_accuracy", "val_metric", "epoch_seconds"}
        parts += [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items() if k not in standard]
        parts.append(f"{m['epoch_seconds']:.1f}s")
        return "  ".join(parts)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    old, new = _jsonable(old), _jsonable(new)
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                return _first_difference(a, b, f"{prefix}{k}.")
        elif a != b:
            return f"{prefix}{k} was {a!r}, now {b!r}"
    return "unknown difference"
