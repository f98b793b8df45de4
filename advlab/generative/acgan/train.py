"""Training the AC-GAN: the losses, one optimisation step, the epoch loop with checkpoints and resume,
and `train_gan`, which trains on a dataset and saves a run directory.

    L_D = BCE(D(x), 1) + BCE(D(G(z, c)), 0) + CE(aux(x), y) + CE(aux(G(z, c)), c)
    L_G = BCE(D(G(z, c)), 1) + CE(aux(G(z, c)), c)              (non-saturating)
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ... import rng
from ... import rundir
from ...errors import AdvlabError
from ...predict import model_device
from ...progress import progress as progress_bar
from ..figures import quality_figure, sample_grid
from .model import ACGAN
from .quality import generation_quality
from .store import KIND, read_checkpoint, save_gan, write_checkpoint

STREAM_LATENT = 7  # rng stream for the latent codes and fake labels of training batches


# -- losses -------------------------------------------------------------------------------------

def discriminator_loss(adv_real: torch.Tensor, aux_real: torch.Tensor, y_real: torch.Tensor,
                       adv_fake: torch.Tensor, aux_fake: torch.Tensor, y_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """AC-GAN discriminator loss and its terms (batch means)."""
    terms = {
        "d_real": F.binary_cross_entropy_with_logits(adv_real, torch.ones_like(adv_real)),
        "d_fake": F.binary_cross_entropy_with_logits(adv_fake, torch.zeros_like(adv_fake)),
        "aux_real": F.cross_entropy(aux_real, y_real),
        "aux_fake": F.cross_entropy(aux_fake, y_fake),
    }
    terms["total"] = terms["d_real"] + terms["d_fake"] + terms["aux_real"] + terms["aux_fake"]
    return terms


def generator_loss(adv_fake: torch.Tensor, aux_fake: torch.Tensor, y_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """AC-GAN generator loss (non-saturating) and its terms (batch means)."""
    terms = {"g_adv": F.binary_cross_entropy_with_logits(adv_fake, torch.ones_like(adv_fake)),
             "g_aux": F.cross_entropy(aux_fake, y_fake)}
    terms["total"] = terms["g_adv"] + terms["g_aux"]
    return terms


# -- one step -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GANConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    latent_dim: int = 32
    width: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "latent_dim", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise AdvlabError(f"GAN option {name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise AdvlabError(f"GAN option lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.beta1 < 1:
            raise AdvlabError(f"GAN option beta1 must be in [0, 1), got {self.beta1!r}")


def _optimizers(gan: ACGAN, config: GANConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    betas = (config.beta1, 0.999)
    return (torch.optim.Adam(gan.generator.parameters(), lr=config.lr, betas=betas),
            torch.optim.Adam(gan.discriminator.parameters(), lr=config.lr, betas=betas))


def train_step(gan: ACGAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, z: torch.Tensor, y_fake: torch.Tensor) -> dict[str, float]:
    """One discriminator step then one generator step on a batch (on the GAN's device); returns the loss terms."""
    return {k: v.item() for k, v in _train_step(gan, opt_g, opt_d, x, y, z, y_fake).items()}


def _train_step(gan: ACGAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, z: torch.Tensor, y_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """`train_step` with the loss terms as 0-d tensors on the device (no host synchronisation)."""
    device = model_device(gan)
    x, y, z, y_fake = (t.to(device, non_blocking=True) for t in (x, y, z, y_fake))
    g, d = gan.generator, gan.discriminator
    fake = g(z, y_fake)                                             # (B, C, H, W)
    adv_real, aux_real = d(x)
    adv_fake, aux_fake = d(fake.detach())
    d_terms = discriminator_loss(adv_real, aux_real, y, adv_fake, aux_fake, y_fake)
    opt_d.zero_grad(set_to_none=True)
    d_terms["total"].backward()
    opt_d.step()

    adv_fake, aux_fake = d(fake)
    g_terms = generator_loss(adv_fake, aux_fake, y_fake)
    opt_g.zero_grad(set_to_none=True)
    g_terms["total"].backward()
    opt_g.step()
    with torch.no_grad():
        acc_real = (aux_real.argmax(1) == y).float().mean()
        acc_fake = (aux_fake.argmax(1) == y_fake).float().mean()
    return {"loss_d": d_terms["total"].detach(), "loss_g": g_terms["total"].detach(),
            "aux_real": d_terms["aux_real"].detach(), "aux_fake": d_terms["aux_fake"].detach(),
            "aux_acc_real": acc_real, "aux_acc_fake": acc_fake}


# -- epochs -------------------------------------------------------------------------------------

class GANTrainer:
    """Trains an AC-GAN epoch by epoch, with checkpoints, resume, sample grids and a quality judge."""

    def __init__(self, gan: ACGAN, x: torch.Tensor, y: torch.Tensor, config: GANConfig,
                 run_dir: str | Path | None = None, classes: list[str] | None = None,
                 judge: nn.Module | None = None, identity: dict[str, Any] | None = None,
                 progress: bool = True, log: Callable[[str], None] | None = None, grids: bool = True):
        if x.ndim != 4 or len(x) != len(y):
            raise AdvlabError(f"AC-GAN training needs images (N, C, H, W) and N labels; got {tuple(x.shape)} "
                              f"and {tuple(y.shape)}")
        if len(y) < config.batch_size:
            raise AdvlabError(f"only {len(y)} training images for batch size {config.batch_size}; "
                              "lower `batch_size` or use more data")
        self.gan, self.x, self.y, self.config = gan, x, y, config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.classes = classes or [str(i) for i in range(gan.num_classes)]
        self.judge, self.identity = judge, identity or {}
        self.progress, self._log, self.grids = progress, log, grids
        self.device = model_device(gan)
        self.opt_g, self.opt_d = _optimizers(gan, config)
        self.epoch, self.history = 0, []
        # The same latent codes every epoch, so the grids show the generator changing, not the noise.
        self.grid_z = torch.randn(gan.num_classes * 8, gan.latent_dim, generator=rng.generator(config.seed, 999))

    def log(self, message: str) -> None:
        if self._log:
            self._log(message)

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        if resume:
            self.load_checkpoint()
        while self.epoch < self.config.epochs:
            metrics = self.train_epoch(self.epoch + 1)
            self.epoch += 1
            if self.judge is not None:
                metrics["judge_accuracy"] = generation_quality(self.gan, self.judge, 50, seed=self.config.seed)["accuracy"]
            self.history.append(metrics)
            if self.run_dir is not None and self.grids:
                sample_grid(self.gan, self.classes,
                            self.run_dir / rundir.FIGURES_DIR / f"samples-epoch{self.epoch:03d}.png",
                            z=self.grid_z, title=f"AC-GAN samples after epoch {self.epoch}")
            self.save_checkpoint()
            judge = f", judge accuracy {metrics['judge_accuracy']:.3f}" if "judge_accuracy" in metrics else ""
            self.log(f"epoch {self.epoch}/{self.config.epochs}: loss D {metrics['loss_d']:.3f}, "
                     f"G {metrics['loss_g']:.3f}, aux acc real {metrics['aux_acc_real']:.3f} "
                     f"fake {metrics['aux_acc_fake']:.3f}{judge} ({metrics['seconds']:.1f} s)")
        return self.history

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, started = self.config, time.perf_counter()
        self.gan.train()
        order = torch.randperm(len(self.y), generator=rng.generator(cfg.seed, epoch, rng.STREAM_SHUFFLE))
        latent = rng.generator(cfg.seed, epoch, STREAM_LATENT)
        n_batches = len(order) // cfg.batch_size  # drop the ragged last batch (batch norm dislikes tiny ones)
        # Sums in float64 on the device: the same additions, in the same order, as Python floats on the CPU.
        sums: dict[str, torch.Tensor] = {}
        on_cpu = self.device.type == "cpu"
        for b in progress_bar(range(n_batches), f"AC-GAN epoch {epoch}", enabled=self.progress):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            z = torch.randn(len(idx), self.gan.latent_dim, generator=latent)  # drawn on the CPU: any device, same codes
            y_fake = torch.randint(0, self.gan.num_classes, (len(idx),), generator=latent)
            terms = _train_step(self.gan, self.opt_g, self.opt_d, self.x[idx], self.y[idx], z, y_fake)
            if on_cpu and not all(math.isfinite(v.item()) for v in terms.values()):  # free on the CPU: stop at once
                self._diverged(epoch, terms)
            for k, v in terms.items():
                sums[k] = sums[k] + v.double() if k in sums else v.double()
        means = {k: v.item() / n_batches for k, v in sums.items()}  # one synchronisation per epoch
        if not all(math.isfinite(v) for v in means.values()):
            self._diverged(epoch, means)
        self.gan.eval()
        return {"epoch": epoch, **means, "seconds": time.perf_counter() - started}

    @staticmethod
    def _diverged(epoch: int, terms: dict[str, Any]) -> None:
        terms = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in terms.items()}
        raise AdvlabError(f"AC-GAN training diverged at epoch {epoch} (loss {terms}); lower `lr`")

    def save_checkpoint(self) -> None:
        if self.run_dir is not None:
            write_checkpoint(self.run_dir, self.gan, self.opt_g, self.opt_d, self.epoch, self.history, self.identity)

    def load_checkpoint(self) -> None:
        self.epoch, self.history = read_checkpoint(self.run_dir, self.gan, self.opt_g, self.opt_d, self.identity)
        self.log(f"resuming {self.run_dir} after epoch {self.epoch}")


# -- a run directory ----------------------------------------------------------------------------

def build_gan(image_shape, num_classes: int, config: GANConfig, bounds) -> ACGAN:
    with rng.seeded(config.seed):
        return ACGAN(image_shape, num_classes, config.latent_dim, config.width, bounds)


def gan_spec(image_shape, num_classes: int, config: GANConfig, bounds) -> dict[str, Any]:
    return {"name": KIND, "input_shape": list(image_shape), "num_classes": int(num_classes),
            "latent_dim": config.latent_dim, "width": config.width,
            "bounds": list(bounds) if bounds is not None else None}


def train_gan(dataset: str, out: str | Path, config: GANConfig | None = None, *, subset: int | None = None,
              judge_run: str | Path | None = None, data_dir: str | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True, grids: bool = True,
              log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    """Train an AC-GAN on a dataset's training split and save a run; returns the CLI's JSON record.

    `device`: where the GAN trains and the judge runs ("auto", "cpu", "cuda", "cuda:N", a torch.device;
    None: the CPU). The networks are initialised on the CPU from the seed, then moved."""
    from ...device import resolve_device
    from ...runs import check_same_data, load_run

    if device is not None:
        device = resolve_device(device)  # a missing GPU fails here, before any work
    config = config or GANConfig()
    out = Path(out)
    _check_out(out, resume, overwrite)
    started = time.perf_counter()
    ds, x, y = _training_data(dataset, subset, data_dir)
    judge = None
    if judge_run is not None:
        judge, judge_card = load_run(judge_run, device=device)
        check_same_data(judge_card, ds, judge_run)
    gan = build_gan(ds.input_shape, ds.num_classes, config, ds.bounds)
    if device is not None:
        gan.to(device)
    spec = gan_spec(ds.input_shape, ds.num_classes, config, ds.bounds)
    # Everything but the epoch count must match to resume (more epochs extend a finished run).
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "epochs"}
    identity = {"model": spec, "dataset": ds.describe(), "config": settings, "subset": subset}
    trainer = GANTrainer(gan, x, y, config, run_dir=out, classes=list(ds.classes), judge=judge,
                         identity=identity, progress=progress, log=log, grids=grids)
    trainer.fit(resume=resume)
    metrics = _save_run(trainer, ds, dataset, spec, judge_run, subset)
    return _record(trainer, dataset, metrics, started)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if not resume and not overwrite and ((out / rundir.CARD_FILE).exists() or (out / rundir.CHECKPOINT_FILE).exists()):
        raise AdvlabError(f"{out} already holds a run; pass `resume=True` to continue it, `overwrite=True` to "
                          "replace it, or choose another `out`")
    if resume and not (out / rundir.CHECKPOINT_FILE).exists():
        raise AdvlabError(f"nothing to resume in {out}: {rundir.CHECKPOINT_FILE} is missing; run without `resume=True` to start")


def _training_data(dataset: str, subset: int | None, data_dir: str | None):
    """(dataset, x, y): the training images, the first `subset` of them when given."""
    from ...data import load_dataset

    ds = load_dataset(dataset, data_dir=data_dir)
    if len(ds.input_shape) != 3:
        raise AdvlabError(f"the AC-GAN generates images; {dataset} has feature vectors of shape {ds.input_shape}")
    x, y = ds.x_train, ds.y_train
    if subset is not None:
        if subset <= 0:
            raise AdvlabError(f"`subset` must be a positive number of training images, got {subset}")
        x, y = x[:subset], y[:subset]
    return ds, x, y


def _save_run(trainer: GANTrainer, ds, dataset: str, spec: dict[str, Any], judge_run,
              subset: int | None) -> dict[str, Any]:
    """After training: the judge's final verdict, the final pictures and the run's card; returns the card's metrics."""
    gan, config, out = trainer.gan, trainer.config, trainer.run_dir
    metrics: dict[str, Any] = {"history": trainer.history}
    if trainer.judge is not None:
        quality = generation_quality(gan, trainer.judge, 100, seed=config.seed)
        metrics["quality"] = {**quality, "judge": str(judge_run)}
        quality_figure(quality, ds.classes, out / rundir.FIGURES_DIR / rundir.QUALITY_PNG,
                       title=f"judge ({Path(judge_run).name}) accuracy on generated {dataset}")
    sample_grid(gan, ds.classes, out / rundir.FIGURES_DIR / rundir.SAMPLES_PNG, z=trainer.grid_z,
                title=f"AC-GAN on {dataset}")
    card = {"model": spec, "dataset": ds.describe(), "seed": config.seed, "epochs": trainer.epoch,
            "train": {**dataclasses.asdict(config), "subset": subset, "n_train": len(trainer.y)}, "metrics": metrics}
    save_gan(out, gan, card)
    return metrics


def _record(trainer: GANTrainer, dataset: str, metrics: dict[str, Any], started: float) -> dict[str, Any]:
    from ...device import describe

    history = trainer.history
    record = {"run_dir": str(trainer.run_dir), "dataset": dataset, "epochs": trainer.epoch, "n_train": len(trainer.y),
              "loss_d": history[-1]["loss_d"] if history else None,
              "loss_g": history[-1]["loss_g"] if history else None,
              "aux_accuracy_fake": history[-1]["aux_acc_fake"] if history else None,
              "device": describe(model_device(trainer.gan)), "seconds": time.perf_counter() - started}
    if "quality" in metrics:
        record["judge_accuracy"] = metrics["quality"]["accuracy"]
        record["judge_accuracy_per_class"] = metrics["quality"]["per_class"]
    return record
