"""AC-GAN (Odena et al. 2017) for small grayscale images: 8x8 (digits) and 28x28 (MNIST, Fashion-MNIST).

    advlab generate train --dataset digits --epochs 150 --out runs/gan-digits

The generator maps a latent code z and a class label to an image inside the dataset's bounds; the
discriminator has two heads: real/fake (one logit) and an auxiliary classifier (K logits). Losses
(the usual AC-GAN ones, both players maximise the log-likelihood of the right class):

    L_D = BCE(D(x), 1) + BCE(D(G(z, c)), 0) + CE(aux(x), y) + CE(aux(G(z, c)), c)
    L_G = BCE(D(G(z, c)), 1) + CE(aux(G(z, c)), c)              (non-saturating)

Training checkpoints both networks and both optimisers after every epoch (safetensors, no pickle),
resumes at an epoch boundary with the same result as an uninterrupted run, and writes a per-class
sample grid after each epoch. The finished run directory holds `model.safetensors` (keys
`generator.*` and `discriminator.*`) and `card.json` with `"kind": "acgan"`.

Devices: `train_gan(..., device=)` and `load_gan(RUN, device=)` put both networks on a device (None:
the CPU). Latent codes and labels are drawn on the CPU from the seed and moved there batch by batch
(so a seed gives the same codes on any device), the loss terms of an epoch are summed on the device
(one host synchronisation per epoch), and samples come back to the CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .. import rng
from ..errors import AdvlabError, CorruptFileError
from ..io import flatten_state, load_tensors, save_tensors, unflatten_state, write_json
from ..predict import model_device
from ..progress import progress as progress_bar
from ..runs import CARD_FILE, MODEL_FILE, environment, read_card
from .figures import quality_figure, sample_grid

CHECKPOINT = Path("checkpoint") / "state.safetensors"
KIND = "acgan"
STREAM_LATENT = 7  # rng stream for the latent codes and fake labels of training batches


# -- networks -----------------------------------------------------------------------------------

def _check_image_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 4 != 0 or shape[1] < 8:
        raise AdvlabError(f"the AC-GAN needs square (C, H, W) images with H divisible by 4 and at least 8 "
                          f"(8x8 digits, 28x28 MNIST/Fashion-MNIST); got input shape {shape}")
    return shape  # type: ignore[return-value]


class Generator(nn.Module):
    """(z, label) -> image. fc -> (2w, H/4, W/4) -> deconv (w, H/2) -> deconv (C, H) -> sigmoid into bounds."""

    def __init__(self, image_shape, num_classes: int, latent_dim: int = 32, width: int = 64,
                 bounds: tuple[float, float] | None = (0.0, 1.0)):
        super().__init__()
        c, h, w = _check_image_shape(image_shape)
        self.image_shape, self.num_classes, self.latent_dim = (c, h, w), int(num_classes), int(latent_dim)
        self.bounds = tuple(bounds) if bounds is not None else (0.0, 1.0)
        self.base = h // 4
        self.fc = nn.Sequential(nn.Linear(latent_dim + num_classes, 2 * width * self.base ** 2),
                                nn.BatchNorm1d(2 * width * self.base ** 2), nn.ReLU())
        self.up = nn.Sequential(
            nn.Unflatten(1, (2 * width, self.base, self.base)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),  # (B, w, H/2, W/2)
            nn.ConvTranspose2d(width, c, 4, 2, 1),                                           # (B, C, H, W)
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.num_classes).to(z.dtype)   # (B, K)
        h = self.fc(torch.cat([z, onehot], dim=1))                 # (B, 2w * base^2)
        lo, hi = self.bounds
        return lo + (hi - lo) * torch.sigmoid(self.up(h))         # (B, C, H, W) inside the bounds


class Discriminator(nn.Module):
    """image -> (real/fake logit (B,), class logits (B, K)). Two stride-2 convs, no batch norm."""

    def __init__(self, image_shape, num_classes: int, width: int = 64):
        super().__init__()
        c, h, w = _check_image_shape(image_shape)
        self.image_shape = (c, h, w)
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.LeakyReLU(0.2),              # (B, w, H/2, W/2)
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),      # (B, 2w, H/4, W/4)
            nn.Flatten(),
        )
        flat = 2 * width * (h // 4) ** 2
        self.adv = nn.Linear(flat, 1)
        self.aux = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x.reshape(x.shape[0], *self.image_shape))
        return self.adv(h).squeeze(1), self.aux(h)


class AuxClassifier(nn.Module):
    """The discriminator's auxiliary head as a classifier (image -> K logits)."""

    def __init__(self, discriminator: Discriminator):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)[1]


class ACGAN(nn.Module):
    def __init__(self, image_shape, num_classes: int, latent_dim: int = 32, width: int = 64,
                 bounds: tuple[float, float] | None = (0.0, 1.0)):
        super().__init__()
        self.generator = Generator(image_shape, num_classes, latent_dim, width, bounds)
        self.discriminator = Discriminator(image_shape, num_classes, width)

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    def aux_classifier(self) -> AuxClassifier:
        return AuxClassifier(self.discriminator)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None,
               z: torch.Tensor | None = None) -> torch.Tensor:
        """Images of the given classes, on the CPU (generator in eval mode; its mode is restored).
        Latent codes are drawn on the CPU, so a seed gives the same images on any device."""
        if z is None:
            z = torch.randn(len(labels), self.latent_dim, generator=generator)
        device = model_device(self.generator)
        was = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z.to(device), torch.as_tensor(labels).to(device)).cpu()
        finally:
            self.generator.train(was)


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


# -- training -----------------------------------------------------------------------------------

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


def build_gan(image_shape, num_classes: int, config: GANConfig, bounds) -> ACGAN:
    with rng.seeded(config.seed):
        return ACGAN(image_shape, num_classes, config.latent_dim, config.width, bounds)


def gan_spec(image_shape, num_classes: int, config: GANConfig, bounds) -> dict[str, Any]:
    return {"name": KIND, "input_shape": list(image_shape), "num_classes": int(num_classes),
            "latent_dim": config.latent_dim, "width": config.width,
            "bounds": list(bounds) if bounds is not None else None}


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
                              "lower --batch-size or use more data")
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
                sample_grid(self.gan, self.classes, self.run_dir / "figures" / f"samples-epoch{self.epoch:03d}.png",
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
        raise AdvlabError(f"AC-GAN training diverged at epoch {epoch} (loss {terms}); lower --lr")

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        tensors = {f"gan.{k}": v for k, v in self.gan.state_dict().items()}
        og, og_skel = flatten_state(self.opt_g.state_dict(), "opt_g")
        od, od_skel = flatten_state(self.opt_d.state_dict(), "opt_d")
        tensors.update(og)
        tensors.update(od)
        meta = {"epoch": self.epoch, "history": self.history, "opt_g": og_skel, "opt_d": od_skel,
                "identity": self.identity}
        save_tensors(self.run_dir / CHECKPOINT, tensors, {"advlab": json.dumps(meta)})

    def load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT if self.run_dir is not None else None
        if path is None or not path.is_file():
            raise AdvlabError(f"nothing to resume: {path} does not exist; run without --resume to start")
        from safetensors import safe_open
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["advlab"])
        except Exception as e:  # noqa: BLE001 - any failure here means the file is damaged
            raise CorruptFileError(f"{path} is not a valid AC-GAN checkpoint ({e}); delete it and start again") from e
        if json.loads(json.dumps(meta["identity"])) != json.loads(json.dumps(self.identity)):
            diff = sorted(k for k in set(meta["identity"]) | set(self.identity)
                          if meta["identity"].get(k) != self.identity.get(k))
            raise AdvlabError(f"cannot resume {self.run_dir}: it was started with different settings "
                              f"({', '.join(diff)}); rerun with the original options, or use a new --out")
        tensors = load_tensors(path)
        self.gan.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gan.")})
        self.opt_g.load_state_dict(unflatten_state(meta["opt_g"], tensors))
        self.opt_d.load_state_dict(unflatten_state(meta["opt_d"], tensors))
        self.epoch, self.history = meta["epoch"], meta["history"]
        self.log(f"resuming {self.run_dir} after epoch {self.epoch}")


# -- quality --------------------------------------------------------------------------------------

@torch.no_grad()
def generation_quality(gan: ACGAN, judge: nn.Module, n_per_class: int = 100, seed: int = 0,
                       batch_size: int = 500) -> dict[str, Any]:
    """Accuracy of an independently trained classifier on generated images, per class.

    A good class-conditional generator makes images the judge labels as the class asked for.
    """
    if n_per_class <= 0:
        raise AdvlabError(f"n_per_class must be positive, got {n_per_class}")
    from ..predict import predict_logits
    k = gan.num_classes
    labels = torch.arange(k).repeat_interleave(n_per_class)
    g = rng.generator(seed, 12345)
    x = torch.cat([gan.sample(labels[i:i + batch_size], generator=g) for i in range(0, len(labels), batch_size)])
    pred = predict_logits(judge, x).argmax(1)
    correct = (pred == labels).float()
    per_class = correct.view(k, n_per_class).mean(1)
    return {"accuracy": correct.mean().item(), "per_class": per_class.tolist(), "n_per_class": n_per_class}


# -- run directories ----------------------------------------------------------------------------

def save_gan(run_dir: str | Path, gan: ACGAN, card: dict[str, Any]) -> Path:
    run_dir = Path(run_dir)
    card = {**card, "kind": KIND, "versions": environment()}
    save_tensors(run_dir / MODEL_FILE, gan.state_dict())
    write_json(run_dir / CARD_FILE, card)
    return run_dir


def load_gan(run_dir: str | Path, *, device=None) -> tuple[ACGAN, dict[str, Any]]:
    """(AC-GAN in eval mode, card) from a run directory written by `advlab generate train`.

    `device`: "auto", "cpu", "cuda", "cuda:N", a torch.device, or None (the CPU)."""
    card = read_card(run_dir)
    if card.get("kind") != KIND:
        raise AdvlabError(f"{run_dir} is not an AC-GAN run (it holds a {card.get('model', {}).get('name', '?')} "
                          "classifier); train a generator with `advlab generate train`")
    spec = card["model"]
    gan = ACGAN(spec["input_shape"], spec["num_classes"], spec["latent_dim"], spec["width"],
                tuple(spec["bounds"]) if spec.get("bounds") else None)
    state = load_tensors(Path(run_dir) / MODEL_FILE)
    try:
        gan.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CorruptFileError(f"{run_dir}: weights do not match the AC-GAN in {CARD_FILE}: {e}") from e
    if device is not None:
        from ..device import resolve_device
        gan.to(resolve_device(device))
    return gan.eval(), card


def train_gan(dataset: str, out: str | Path, config: GANConfig | None = None, *, subset: int | None = None,
              judge_run: str | Path | None = None, data_dir: str | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True, grids: bool = True,
              log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    """Train an AC-GAN on a dataset's training split and save a run; returns the CLI's JSON record.

    `device`: where the GAN trains and the judge runs ("auto", "cpu", "cuda", "cuda:N", a torch.device;
    None: the CPU). The networks are initialised on the CPU from the seed, then moved."""
    from ..data import load_dataset
    from ..device import resolve_device
    from ..runs import load_run

    if device is not None:
        device = resolve_device(device)  # a missing GPU fails here, before any work

    config = config or GANConfig()
    out = Path(out)
    if not resume and not overwrite and ((out / CARD_FILE).exists() or (out / CHECKPOINT).exists()):
        raise AdvlabError(f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                          "or choose another --out")
    if resume and not (out / CHECKPOINT).exists():
        raise AdvlabError(f"nothing to resume in {out}: {CHECKPOINT} is missing; run without --resume to start")
    started = time.perf_counter()
    ds = load_dataset(dataset, data_dir=data_dir)
    if len(ds.input_shape) != 3:
        raise AdvlabError(f"the AC-GAN generates images; {dataset} has feature vectors of shape {ds.input_shape}")
    x, y = ds.x_train, ds.y_train
    if subset is not None:
        if subset <= 0:
            raise AdvlabError(f"--subset must be a positive number of training images, got {subset}")
        x, y = x[:subset], y[:subset]
    judge = None
    if judge_run is not None:
        judge, judge_card = load_run(judge_run, device=device)
        _check_same_data(judge_card, ds, judge_run)
    gan = build_gan(ds.input_shape, ds.num_classes, config, ds.bounds)
    if device is not None:
        gan.to(device)
    spec = gan_spec(ds.input_shape, ds.num_classes, config, ds.bounds)
    # Everything but the epoch count must match to resume (more epochs extend a finished run).
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "epochs"}
    identity = {"model": spec, "dataset": ds.describe(), "config": settings, "subset": subset}
    trainer = GANTrainer(gan, x, y, config, run_dir=out, classes=list(ds.classes), judge=judge,
                         identity=identity, progress=progress, log=log, grids=grids)
    history = trainer.fit(resume=resume)
    metrics: dict[str, Any] = {"history": history}
    if judge is not None:
        quality = generation_quality(gan, judge, 100, seed=config.seed)
        metrics["quality"] = {**quality, "judge": str(judge_run)}
        quality_figure(quality, ds.classes, out / "figures" / "quality.png",
                       title=f"judge ({Path(judge_run).name}) accuracy on generated {dataset}")
    sample_grid(gan, ds.classes, out / "figures" / "samples.png", z=trainer.grid_z, title=f"AC-GAN on {dataset}")
    card = {"model": spec, "dataset": ds.describe(), "seed": config.seed, "epochs": trainer.epoch,
            "train": {**dataclasses.asdict(config), "subset": subset, "n_train": len(y)}, "metrics": metrics}
    save_gan(out, gan, card)
    record = {"run_dir": str(out), "dataset": dataset, "epochs": trainer.epoch, "n_train": len(y),
              "loss_d": history[-1]["loss_d"] if history else None,
              "loss_g": history[-1]["loss_g"] if history else None,
              "aux_accuracy_fake": history[-1]["aux_acc_fake"] if history else None,
              "device": _describe(model_device(gan)), "seconds": time.perf_counter() - started}
    if judge is not None:
        record["judge_accuracy"] = metrics["quality"]["accuracy"]
        record["judge_accuracy_per_class"] = metrics["quality"]["per_class"]
    return record


def _describe(device: torch.device) -> str:
    from ..device import describe
    return describe(device)


def _check_same_data(card: dict[str, Any], ds, where) -> None:
    info = card.get("dataset", {})
    if list(info.get("input_shape", [])) != list(ds.input_shape) or info.get("num_classes") != ds.num_classes:
        raise AdvlabError(f"{where} was trained on {info.get('name')} (input shape {info.get('input_shape')}, "
                          f"{info.get('num_classes')} classes), which does not match {ds.name} "
                          f"{list(ds.input_shape)} with {ds.num_classes} classes")
