"""Robust self-training (Carmon et al. 2019): unlabelled data buys robustness.

1. Train a standard (clean) teacher on the labelled data.
2. Pseudo-label the unlabelled pool with the teacher's predictions.
3. Train adversarially (the `base` defense, TRADES by default as in the paper) on labelled plus
   pseudo-labelled data ("joint"), or alternate: clean epochs on the labelled data, adversarial
   epochs on the pseudo-labelled pool at `pool_lr` times the scheduled learning rate ("alternate").

`use_pool=false` trains the base defense on the labelled data alone, with the same split: the
control the experiment compares against. Joint training concatenates the two sets and shuffles
them; the paper instead draws half of each batch from each (with a 10x larger pool, concatenation
gives the pseudo-labels more weight).

The teacher has its own run directory (RUN/teacher: checkpoints, weights, card), so an
interrupted RST run resumes at whichever stage it stopped in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import torch
from torch import nn

from ..errors import AdvlabError
from ..predict import predict_logits
from ..progress import write
from ..rundir import CHECKPOINT_DIR
from ..runs import save_run
from .training import EpochPlan, Trainer, TrainConfig, TrainResult, clean_objective

VARIANTS = ("joint", "alternate")


class RSTSettings:
    """The `rst` defense's options; `base_options` go to the base defense (steps, beta, ...).

    The base defense is named, so the registry that knows the names (advlab.defenses.registry, which
    also lists rst) passes itself in: `bases`, the names it holds, and `build_base(name, **options)`."""

    name = "rst"

    def __init__(self, eps: float | None = None, *, labels: int | None = None, base: str = "trades",
                 variant: str = "joint", teacher_epochs: int | None = None, pool_lr: float = 0.1,
                 use_pool: bool = True, bounds=None, bases: Collection[str],
                 build_base: Callable[..., Any], **base_options: Any):
        if isinstance(labels, bool) or not isinstance(labels, int) or labels < 1:
            raise AdvlabError("defense 'rst' needs the number of labelled training examples: `defense_kwargs` "
                              "labels=5000 (the rest of the training split becomes the unlabelled pool)")
        if base in ("rst", "none", "l1") or base not in bases:
            raise AdvlabError(f"rst: base={base!r} must be an adversarial defense: pgd, trades, fgsm-rs, goodfellow, "
                              "noise-sign or noise-uniform")
        if variant not in VARIANTS:
            raise AdvlabError(f"rst: variant={variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
        if teacher_epochs is not None and (not isinstance(teacher_epochs, int) or teacher_epochs < 1):
            raise AdvlabError(f"rst: teacher_epochs must be an integer >= 1, got {teacher_epochs!r}")
        if isinstance(pool_lr, bool) or not isinstance(pool_lr, (int, float)) or pool_lr <= 0:
            raise AdvlabError(f"rst: pool_lr (a factor on the learning rate) must be > 0, got {pool_lr!r}")
        if not isinstance(use_pool, bool):
            raise AdvlabError(f"rst: use_pool must be true or false, got {use_pool!r}")
        self.eps, self.labels, self.base, self.variant = eps, labels, base, variant
        self.teacher_epochs, self.pool_lr, self.use_pool = teacher_epochs, float(pool_lr), use_pool
        self.base_options = dict(base_options)
        self.objective = build_base(base, eps=eps, bounds=bounds, **base_options)

    @staticmethod
    def options() -> list[str]:
        return ["eps", "labels", "base", "variant", "teacher_epochs", "pool_lr", "use_pool"]

    def describe(self) -> dict[str, Any]:
        return {"labels": self.labels, "base": self.base, "variant": self.variant,
                "teacher_epochs": self.teacher_epochs, "pool_lr": self.pool_lr, "use_pool": self.use_pool,
                "base_defense": self.objective.describe() if hasattr(self.objective, "describe") else {}}


@dataclass
class RSTResult:
    result: TrainResult                       # of the robust stage
    pseudo_labels: torch.Tensor | None        # (P,) the teacher's predictions on the pool
    info: dict[str, Any] = field(default_factory=dict)


def pseudo_label(teacher: nn.Module, x_pool: torch.Tensor) -> torch.Tensor:
    """(P,) the teacher's predicted classes."""
    return predict_logits(teacher, x_pool).argmax(1)


def robust_self_training(model: nn.Module, make_teacher: Callable[[], nn.Module], settings: RSTSettings,
                         x_lab: torch.Tensor, y_lab: torch.Tensor, x_pool: torch.Tensor,
                         x_val: torch.Tensor | None, y_val: torch.Tensor | None, config: TrainConfig, *,
                         y_pool: torch.Tensor | None = None, run_dir: str | Path | None = None,
                         resume: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                         identity: dict[str, Any] | None = None, teacher_spec: dict[str, Any] | None = None,
                         val_metric=None, hooks=None) -> RSTResult:
    """Run the RST stages; `model` ends with the robust weights. y_pool, if known, only scores
    the pseudo-labels for the report."""
    run_dir = Path(run_dir) if run_dir else None
    log = log or write
    info: dict[str, Any] = {"n_labelled": len(y_lab), "n_pool": len(x_pool) if settings.use_pool else 0}
    pseudo = None
    objective = settings.objective
    x_train, y_train, plan = x_lab, y_lab, None
    if settings.use_pool:
        if len(x_pool) == 0:
            raise AdvlabError("rst: the unlabelled pool is empty; lower labels=")
        teacher = make_teacher()
        teacher_dir = run_dir / "teacher" if run_dir else None
        tconfig = TrainConfig(**{**vars(config), "epochs": settings.teacher_epochs or config.epochs, "patience": None})
        trainer = Trainer(teacher, x_lab, y_lab, x_val, y_val, config=tconfig, objective=clean_objective,
                          run_dir=teacher_dir, progress=progress, log=log,
                          identity={**(identity or {}), "stage": "teacher"})
        log("rst: training the standard teacher on the labelled data")
        tresult = trainer.fit(resume=resume and teacher_dir is not None and (teacher_dir / CHECKPOINT_DIR).exists())
        pseudo = pseudo_label(teacher, x_pool)
        info["teacher_val_accuracy"] = tresult.history[-1].get("val_metric") if tresult.history else None
        if y_pool is not None:
            info["pseudo_label_accuracy"] = (pseudo == y_pool).float().mean().item()
        if teacher_dir is not None and teacher_spec is not None:
            save_run(teacher_dir, teacher, {"model": teacher_spec, "role": "rst teacher", "metrics": info.copy()})
        if settings.variant == "joint":
            x_train, y_train = torch.cat([x_lab, x_pool]), torch.cat([y_lab, pseudo])
        else:
            def plan(epoch: int) -> EpochPlan:
                if epoch % 2 == 0:
                    return EpochPlan(x_lab, y_lab, clean_objective, 1.0)
                return EpochPlan(x_pool, pseudo, objective, settings.pool_lr)
    trainer = Trainer(model, x_train, y_train, x_val, y_val, config=config, objective=objective,
                      val_metric=val_metric, run_dir=run_dir, progress=progress, log=log,
                      identity={**(identity or {}), "stage": "robust"}, hooks=hooks, plan=plan)
    log(f"rst: adversarial training ({settings.base}, {settings.variant}) on "
                f"{len(y_lab)} labelled + {info['n_pool']} pseudo-labelled examples")
    result = trainer.fit(resume=resume and run_dir is not None and (run_dir / CHECKPOINT_DIR).exists())
    return RSTResult(result, pseudo, info)
