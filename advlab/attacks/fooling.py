"""Fooling ("rubbish class") inputs: images of nothing that the model assigns to a class with high
confidence (Nguyen, Yosinski & Clune 2015; Goodfellow et al. 2015's "rubbish class examples").

Start from noise or a blank image inside the bounds and ascend the log-probability of a chosen
class, optionally minus `l2 * ||x - start||^2` to keep the change small, with steepest-ascent
steps of the chosen norm, until the class has `target_confidence` (then the image is frozen).
`eps` limits how far the image may move from its start (inf: anywhere inside the bounds).

    images, conf = fooling_images(model, classes=range(10), shape=(1, 8, 8), bounds=(0, 1))

`Fooling` puts the same search behind the attack interface so `advlab attack --attack fooling`
works. It does not perturb the given inputs: x only tells it the input shape (and device), y is
ignored, and it makes `per_class` images for every class (or one per entry of `targets`). The
AttackResult then reads:
- x_adv (E, M, ...): the fooling images per eps; clean_logits: the model on the start images;
- y: the model's prediction on each start image (a rubbish input has no true label), so
  clean_accuracy is 1 by construction and robust_accuracy is the share still given that class;
- targets: the requested classes; success (goal): the requested class has >= target_confidence;
- distances: the norm of (image - start).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

from .. import rng
from ..errors import AdvlabError
from ..predict import model_device, predict_logits
from ..threat import Bounds, LpBall, Norm, clip_to_bounds, get_norm
from ..predict import attack_mode
from .base import Attack
from .engine import ascend
from .goals import Rubbish
from .result import AttackResult

Start = Union[str, torch.Tensor]


def start_images(n: int, shape: Sequence[int], bounds: Bounds, start: Start, generator: torch.Generator,
                 device=None) -> torch.Tensor:
    """(n, *shape) start points: "noise" (uniform in the bounds; N(0, 1) when unbounded), "blank"
    (the middle of the bounds; 0 when unbounded), or a given tensor (clipped to the bounds)."""
    shape = tuple(shape)
    if isinstance(start, torch.Tensor):
        if start.shape != (n, *shape) and start.shape != shape:
            raise AdvlabError(f"start images must have shape {(n, *shape)} or {shape}, got {tuple(start.shape)}")
        return clip_to_bounds(start.to(device, torch.float32).expand(n, *shape).clone(), bounds)
    if start == "noise":
        if bounds is None:
            return torch.randn((n, *shape), generator=generator, device=device)
        u = torch.rand((n, *shape), generator=generator, device=device)
        lo, hi = (torch.as_tensor(b, dtype=torch.float32, device=device) for b in bounds)
        return lo + (hi - lo) * u
    if start == "blank":
        if bounds is None:
            return torch.zeros((n, *shape), device=device)
        lo, hi = (torch.as_tensor(b, dtype=torch.float32, device=device) for b in bounds)
        return ((lo + hi) / 2).expand(n, *shape).clone()
    raise AdvlabError(f"start must be 'noise', 'blank' or a tensor of images, got {start!r}")


def fooling_images(model: nn.Module, classes, shape: Sequence[int], bounds: Bounds = None, *,
                   start: Start = "noise", steps: int = 200, step_size: float = 0.01,
                   target_confidence: float = 0.99, l2: float = 0.0, eps: float = math.inf,
                   norm: str | Norm = "linf", generator: torch.Generator | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (M, *shape) the model puts in classes[i] (M,), and that class's probability (M,).

    Runs in eval mode and restores the model's mode and requires_grad flags afterwards. Images
    that never reach target_confidence are returned as they are after `steps` steps.
    """
    norm = get_norm(norm)
    device = model_device(model)
    classes = torch.as_tensor(list(classes) if not isinstance(classes, torch.Tensor) else classes).long().to(device)
    if classes.ndim != 1 or len(classes) == 0:
        raise AdvlabError("classes must be a non-empty list of class indices")
    _check_options(steps, step_size, target_confidence, l2, eps)
    gen = generator or rng.generator(0, device=device)
    x0 = start_images(len(classes), shape, bounds, start, gen, device)
    with attack_mode(model, evaluation=True):
        _check_classes(model, x0, classes)
        budget = torch.full((len(x0),), float(eps), device=device)
        x, _, _ = ascend(model, x0, classes, classes, budget, torch.full_like(budget, step_size), threat=LpBall(norm),
                         goal=Rubbish(target_confidence, l2), steps=steps, random_start=False, generator=gen,
                         early_stop=True, bounds=bounds)
        with torch.no_grad():
            conf = model(x).softmax(1).gather(1, classes[:, None])[:, 0]
    return x.detach(), conf


class Fooling(Attack):
    """The fooling search as an ordinary attack (see the module docstring): the engine's loop with
    the goal `goals.Rubbish`, from start images of nothing instead of the given inputs.

    attack(model, x, y, eps=[...], bounds=...) -> AttackResult with per_class images per class;
    eps: how far (in `norm`) each image may move from its start; inf means anywhere in the bounds.
    A start image that already meets the goal at a smaller eps keeps its image at the larger ones.
    """

    name = "fooling"

    def __init__(self, norm: str | Norm = "linf", *, start: str = "noise", steps: int = 200, step_size: float = 0.01,
                 target_confidence: float = 0.99, l2: float = 0.0, per_class: int = 1, batch_size: int | None = None,
                 seed: int = 0, sync_free: bool | None = None):
        if start not in ("noise", "blank"):
            raise AdvlabError(f"start must be 'noise' or 'blank', got {start!r}")
        if per_class < 1:
            raise AdvlabError(f"per_class must be >= 1, got {per_class}")
        _check_options(steps, step_size, target_confidence, l2, 0.0)
        super().__init__(norm, targeted=True, batch_size=batch_size, seed=seed)
        self.start, self.steps, self.step_size = start, steps, step_size
        self.target_confidence, self.l2 = target_confidence, l2
        self.per_class, self.sync_free = per_class, sync_free
        self.goal = Rubbish(target_confidence, l2)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps=math.inf, *,
                 bounds: Bounds = None, targets: torch.Tensor | None = None, progress: bool = False,
                 seed: int | None = None) -> AttackResult:
        seed = self.seed if seed is None else seed
        if not isinstance(model, nn.Module):
            raise AdvlabError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise AdvlabError("x must be a batch of example inputs (N, ...): fooling uses it for the input shape")
        device = model_device(model)
        with attack_mode(model, evaluation=True), torch.no_grad():
            k = model(x[:1].to(device)).shape[1]
        classes = (torch.as_tensor(targets).long() if targets is not None
                   else torch.arange(k).repeat_interleave(self.per_class)).to(device)
        x0 = start_images(len(classes), x.shape[1:], bounds, self.start, rng.generator(seed, device=device), device)
        with attack_mode(model, evaluation=True):
            _check_classes(model, x0, classes)
        # A rubbish image has no true label: y is what the model says about its start image.
        labels = predict_logits(model, x0).argmax(1)
        result = super().__call__(model, x0.cpu(), labels, eps, bounds=bounds, targets=classes.cpu(), progress=progress,
                                  seed=seed)
        result.info.update(start=x0.cpu(), target_confidence=self.target_confidence)
        return result

    def _perturb(self, model, x, y, eps, targets, bounds, generator, early_stop):
        out, _, _ = ascend(model, x, y, targets, eps, torch.full_like(eps, self.step_size), threat=self.threat,
                           goal=self.goal, steps=self.steps, random_start=False, generator=generator,
                           early_stop=True, bounds=bounds, sync_free=self.sync_free)
        return out


def _check_options(steps, step_size, target_confidence, l2, eps):
    if steps < 0 or step_size <= 0:
        raise AdvlabError(f"steps must be >= 0 and step_size > 0, got steps={steps}, step_size={step_size}")
    if not 0 < target_confidence <= 1:
        raise AdvlabError(f"target_confidence is a probability in (0, 1], got {target_confidence}")
    if l2 < 0 or eps < 0:
        raise AdvlabError(f"l2 and eps must be >= 0, got l2={l2}, eps={eps}")


def _check_classes(model, x0, classes):
    with torch.no_grad():
        probe = model(x0[:1])
    if probe.ndim != 2:
        raise AdvlabError(f"the model must return logits of shape (N, K); it returned {tuple(probe.shape)}")
    k = probe.shape[1]
    if classes.min() < 0 or classes.max() >= k:
        raise AdvlabError(f"classes must be in 0..{k - 1} (the model has {k} outputs); "
                          f"got {classes.min().item()}..{classes.max().item()}")
