"""Unrestricted adversarial examples (Song, Shu, Kushman, Ermon 2018): search the AC-GAN's latent space.

    advlab generate attack --gan runs/gan-digits --model runs/digits-cnn --judge runs/digits-mlp --n 10

For a source class s and a random latent code z0, find z near z0 such that x = G(z, s) is classified
as the target class t (targeted) or as anything but s (untargeted) by the attacked model f, while the
AC-GAN's auxiliary classifier c still says s. Per example the loss is

    L(z) = L0 + lambda1 * L1 + lambda2 * L2
    L0 = -log f(t | x)                                  targeted
         -log(1 - f(s | x))                             untargeted
    L1 = mean_i max(|z_i - z0_i| - latent_eps, 0)       (latent_eps = 0: ||z - z0||_1 / m)
    L2 = -log c(s | x)

minimised with Adam. Optionally `latent_radius` also projects z onto the Linf ball of that radius
around z0 after every step (a hard constraint), and `noise = tau` adds the paper's small bounded
noise x = clip(G(z, s) + tau * tanh(q), bounds), optimised together with z.

An example succeeds when f's prediction is t (or not s) and c's prediction is s; the attack keeps
the first successful image of each example (closest to z0 along the optimisation path).

The search runs on the generator's device (the attacked model's inputs move to its device if that
differs); latent codes are drawn on the CPU from the seed, batches move to the device one at a time,
the optimisation loop keeps its bookkeeping on the device (no boolean indexing), and results come
back to the CPU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import rng
from ..errors import AdvlabError
from ..predict import attack_mode, model_device, predict_logits
from ..progress import progress as progress_bar
from .acgan import ACGAN

UNTARGETED = -1


def attack_loss(logits: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L0 per example: -log f(t|x) where target >= 0, -log(1 - f(s|x)) where target == -1."""
    logp = F.log_softmax(logits, dim=1)                                       # (B, K)
    targeted = -logp.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
    # log(1 - p_s) = logsumexp over the other classes - logsumexp over all (stable)
    others = logits.scatter(1, source[:, None], float("-inf"))
    untargeted = -(torch.logsumexp(others, 1) - torch.logsumexp(logits, 1))
    return torch.where(target >= 0, targeted, untargeted)


def latent_penalty(z: torch.Tensor, z0: torch.Tensor, latent_eps: float = 0.0) -> torch.Tensor:
    """L1 per example: mean over the m latent coordinates of max(|z - z0| - latent_eps, 0)."""
    return F.relu((z - z0).abs() - latent_eps).mean(1)


def unrestricted_loss(model_logits: torch.Tensor, aux_logits: torch.Tensor, source: torch.Tensor,
                      target: torch.Tensor, z: torch.Tensor, z0: torch.Tensor, lambda1: float, lambda2: float,
                      latent_eps: float = 0.0) -> dict[str, torch.Tensor]:
    """The three terms and the total, per example (shape (B,))."""
    terms = {"attack": attack_loss(model_logits, source, target),
             "latent": latent_penalty(z, z0, latent_eps),
             "aux": F.cross_entropy(aux_logits, source, reduction="none")}
    terms["total"] = terms["attack"] + lambda1 * terms["latent"] + lambda2 * terms["aux"]
    return terms


def is_success(pred: torch.Tensor, aux_pred: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    fooled = torch.where(target >= 0, pred == target, pred != source)
    return fooled & (aux_pred == source)


@dataclasses.dataclass
class UnrestrictedResult:
    source: torch.Tensor          # (N,)
    target: torch.Tensor          # (N,) -1 for untargeted
    z0: torch.Tensor              # (N, m)
    z: torch.Tensor               # (N, m) latent code of the returned image
    x0: torch.Tensor              # (N, C, H, W) G(z0, s): the unattacked sample
    x: torch.Tensor               # (N, C, H, W) the returned image
    pred0: torch.Tensor           # (N,) attacked model on x0
    pred: torch.Tensor            # (N,) attacked model on x
    confidence: torch.Tensor      # (N,) softmax probability of pred
    aux_pred: torch.Tensor        # (N,) AC-GAN auxiliary classifier on x
    success: torch.Tensor         # (N,) bool, recomputed from pred and aux_pred on x
    steps: torch.Tensor           # (N,) optimisation step of the returned image (-1: never succeeded)
    settings: dict[str, Any]

    @property
    def latent_linf(self) -> torch.Tensor:
        return (self.z - self.z0).abs().amax(1)

    @property
    def latent_l2(self) -> torch.Tensor:
        return (self.z - self.z0).norm(dim=1)

    def summary(self) -> dict[str, Any]:
        n = len(self.source)
        src_ok = self.pred0 == self.source
        succ = self.success
        return {
            "n": n,
            "success_rate": succ.float().mean().item() if n else float("nan"),
            "success_rate_initially_correct": succ[src_ok].float().mean().item() if src_ok.any() else float("nan"),
            "initially_correct": src_ok.float().mean().item() if n else float("nan"),
            "aux_agrees": (self.aux_pred == self.source).float().mean().item() if n else float("nan"),
            "median_steps": self.steps[succ].float().median().item() if succ.any() else None,
            "median_latent_linf": self.latent_linf[succ].median().item() if succ.any() else None,
            "median_latent_l2": self.latent_l2[succ].median().item() if succ.any() else None,
        }


@dataclasses.dataclass
class UnrestrictedAttack:
    """Hyperparameters of the latent-space attack; call it with (gan, model, source, target, ...)."""

    steps: int = 200
    lr: float = 0.05
    lambda1: float = 10.0
    lambda2: float = 10.0
    latent_eps: float = 0.1
    latent_radius: float | None = None
    noise: float = 0.0
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps <= 0:
            raise AdvlabError(f"steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise AdvlabError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        for name in ("lr", "lambda1", "lambda2", "latent_eps", "noise"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise AdvlabError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise AdvlabError(f"lr must be positive, got {self.lr!r}")
        if self.latent_radius is not None and not (math.isfinite(self.latent_radius) and self.latent_radius > 0):
            raise AdvlabError(f"latent_radius must be a positive number (or None for no hard limit), "
                              f"got {self.latent_radius!r}")

    def __call__(self, gan: ACGAN, model: nn.Module, source: torch.Tensor, target: torch.Tensor | None = None,
                 z0: torch.Tensor | None = None, progress: bool = False) -> UnrestrictedResult:
        """Attack one latent code per entry of `source`. `target` (N,) holds target classes, -1 meaning
        untargeted; None means untargeted for all. `z0` defaults to N(0, I) draws from the seed."""
        k, m = gan.num_classes, gan.latent_dim
        source = torch.as_tensor(source, dtype=torch.int64).reshape(-1)
        target = (torch.full_like(source, UNTARGETED) if target is None
                  else torch.as_tensor(target, dtype=torch.int64).reshape(-1))
        _check_labels(source, target, k)
        if z0 is None:
            z0 = torch.randn(len(source), m, generator=rng.generator(self.seed, 4242))
        z0 = torch.as_tensor(z0, dtype=torch.float32)
        if z0.shape != (len(source), m):
            raise AdvlabError(f"z0 must have shape ({len(source)}, {m}) (one latent code per source label), "
                              f"got {tuple(z0.shape)}")
        if not torch.isfinite(z0).all():
            raise AdvlabError("z0 contains NaN or inf")
        if len(source):  # a classifier for other data fails here, clearly, not inside the loop
            probe = gan.sample(source[:1], z=z0[:1])
            try:
                out = predict_logits(model, probe)
            except RuntimeError as e:
                raise AdvlabError(f"the attacked model cannot take the AC-GAN's images of shape "
                                  f"{tuple(probe.shape[1:])} ({e}); attack a classifier trained on the GAN's dataset") from e
            _check_model_output(out, k)
        else:
            raise AdvlabError("nothing to attack: source is empty")
        parts = []
        starts = range(0, len(source), self.batch_size)
        for i in progress_bar(starts, "unrestricted attack", enabled=progress, total=len(starts)):
            sl = slice(i, i + self.batch_size)
            parts.append(self._batch(gan, model, source[sl], target[sl], z0[sl], i))
        cat = {key: torch.cat([p[key] for p in parts]) for key in parts[0]} if parts else {}
        # Flags come from the returned images, so they agree with what the models actually say.
        logits = predict_logits(model, cat["x"])
        pred = logits.argmax(1)
        aux_pred = predict_logits(gan.aux_classifier(), cat["x"]).argmax(1)
        pred0 = predict_logits(model, cat["x0"]).argmax(1)
        success = is_success(pred, aux_pred, source, target)
        steps = torch.where(success, cat["steps"], torch.full_like(cat["steps"], -1))
        return UnrestrictedResult(source=source, target=target, z0=z0, z=cat["z"], x0=cat["x0"], x=cat["x"],
                                  pred0=pred0, pred=pred, confidence=logits.softmax(1).amax(1), aux_pred=aux_pred,
                                  success=success, steps=steps, settings=dataclasses.asdict(self))

    def _batch(self, gan: ACGAN, model: nn.Module, source, target, z0, offset: int) -> dict[str, torch.Tensor]:
        g, aux = gan.generator, gan.aux_classifier()
        with attack_mode(g, evaluation=True), attack_mode(gan.discriminator, evaluation=True), \
                attack_mode(model, evaluation=True):
            return self._optimise(g, aux, model, source, target, z0, offset)

    def _optimise(self, g, aux, model, source, target, z0, offset):
        """One batch on the generator's device; returns CPU tensors."""
        device, model_dev = model_device(g), model_device(model)
        source, target, z0 = source.to(device), target.to(device), z0.to(device)
        lo, hi = g.bounds
        z = z0.clone().requires_grad_(True)
        params = [z]
        q = None
        if self.noise > 0:
            q = torch.zeros(len(source), *g.image_shape, device=device, requires_grad=True)
            params.append(q)
        opt = torch.optim.Adam(params, lr=self.lr)
        with torch.no_grad():
            x0 = g(z0, source)
        best_x, best_z = x0.clone(), z0.clone()
        found = torch.zeros(len(source), dtype=torch.bool, device=device)
        found_step = torch.full((len(source),), -1, dtype=torch.int64, device=device)
        # "Everything found?" costs a host synchronisation: every step on the CPU, every 16th elsewhere.
        # Steps after that change nothing that is returned (ok is empty), so the result is the same.
        check_every = 1 if device.type == "cpu" else 16
        image_mask = (-1, *[1] * len(g.image_shape))

        def image(z_, q_):
            x = g(z_, source)
            if q_ is not None:
                x = (x + self.noise * torch.tanh(q_)).clamp(lo, hi)
            return x

        def classify(x):
            return model(x) if model_dev == device else model(x.to(model_dev)).to(device)

        for step in range(self.steps + 1):
            x = image(z, q)
            logits, aux_logits = classify(x), aux(x)
            with torch.no_grad():
                ok = is_success(logits.argmax(1), aux_logits.argmax(1), source, target) & ~found
                best_x = torch.where(ok.view(image_mask), x.detach(), best_x)
                best_z = torch.where(ok[:, None], z.detach(), best_z)
                found_step = torch.where(ok, torch.full_like(found_step, step), found_step)
                found |= ok
            if step == self.steps or (step % check_every == 0 and bool(found.all())):
                break
            terms = unrestricted_loss(logits, aux_logits, source, target, z, z0, self.lambda1, self.lambda2,
                                      self.latent_eps)
            opt.zero_grad(set_to_none=True)
            terms["total"].sum().backward()
            opt.step()
            if self.latent_radius is not None:
                with torch.no_grad():
                    z.copy_(z0 + (z - z0).clamp(-self.latent_radius, self.latent_radius))
        with torch.no_grad():
            last = image(z, q)
        keep = ~found
        best_x = torch.where(keep.view(image_mask), last, best_x)
        best_z = torch.where(keep[:, None], z.detach(), best_z)
        return {"x": best_x.cpu(), "z": best_z.cpu(), "x0": x0.cpu(), "steps": found_step.cpu()}


def make_tasks(sources: list[int], targets: str | int, n: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) label vectors: n latent codes per source class (and per target class for 'all')."""
    if n <= 0:
        raise AdvlabError(f"`n` must be a positive number of latent codes per class, got {n}")
    src, tgt = [], []
    for s in sources:
        if targets == "untargeted":
            chosen = [UNTARGETED]
        elif targets == "all":
            chosen = [t for t in range(num_classes) if t != s]
        else:
            chosen = [int(targets)]
        for t in chosen:
            if t == s:
                raise AdvlabError(f"target class {t} equals source class {s}; choose another `target` "
                                  "or `target='untargeted'`")
            src += [s] * n
            tgt += [t] * n
    source, target = torch.tensor(src, dtype=torch.int64), torch.tensor(tgt, dtype=torch.int64)
    _check_labels(source, target, num_classes)
    return source, target


def _check_labels(source: torch.Tensor, target: torch.Tensor, k: int) -> None:
    if source.shape != target.shape:
        raise AdvlabError(f"source and target must have the same length, got {len(source)} and {len(target)}")
    if len(source) and (source.min() < 0 or source.max() >= k):
        raise AdvlabError(f"source classes must be in 0..{k - 1}, got {sorted(set(source.tolist()))}")
    if len(target) and (target.min() < UNTARGETED or target.max() >= k):
        raise AdvlabError(f"target classes must be in 0..{k - 1} (or -1 for untargeted), "
                          f"got {sorted(set(target.tolist()))}")
    if ((target >= 0) & (target == source)).any():
        raise AdvlabError("a target class equals its source class; a targeted attack needs a different class")


def _check_model_output(logits: torch.Tensor, k: int) -> None:
    if logits.ndim != 2 or logits.shape[1] != k:
        raise AdvlabError(f"the attacked model returns shape {tuple(logits.shape)}, but the AC-GAN has {k} classes; "
                          "attack a classifier trained on the GAN's dataset")
