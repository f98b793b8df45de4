"""Adaptive attacks as model transformations: the same classifier, gradients an attack can use.

A defense that masks gradients is evaluated again with the adaptation that sees through it
(Athalye, Carlini & Wagner 2018; Tramer et al. 2020). Each adaptation returns a new module (the
model given is not changed) that every gradient attack, and so every evaluation suite, can run on:

- "bpda": every `Preprocessed(model, pre)` inside the model becomes `BPDA(model, pre, approx)`: the
  same forward values bit for bit, a backward pass through `pre.backward_approximation` when the
  preprocessing defines one (e.g. a layer that changes the shape), else the identity
  (straight-through). For quantisation, JPEG-like rounding and thresholding layers.
- "rescale": logits divided by their standard deviation over the classes (per row): the same
  predictions (a positive scale per row), a softmax that is no longer saturated, so cross-entropy has
  gradients again. For temperature-scaled or distilled networks whose softmax is saturated in fp32.
- "eot": `EOT(model, samples=S)`: the log of the mean probability over S passes of a randomised model
  (its own randomness; for a `Randomized(model, t)` the transformations t are drawn from the EOT's own
  stream, seeded by `seed`, so a rerun repeats it). The classifier evaluated is then that average, a deterministic stand-in for
  the randomised defense (scored by one random draw per point its accuracy is itself random).

`adapt(model, "bpda,rescale")` applies several, in the order given. What each costs: BPDA and
rescale none (one pass per row, as before); EOT S passes per row.

`bpda_gradients(model)` is BPDA for the length of a `with` block, in place: an attack searches with
the BPDA twins (APGD(bpda=True), the `standard` suite's BPDA stage) while the model it was given, and
every wrapper around it (pass counters, padding), stays the one that scores the examples.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Sequence

import torch
from torch import nn

from ..errors import AdvlabError
from .preprocess import BPDA, Preprocessed
from .stochastic import EOT, Randomized

ADAPTATIONS = ("bpda", "eot", "rescale")
EOT_SAMPLES = 16


class Rescaled(nn.Module):
    """model(x) / std over the classes of model(x), per row: same argmax, an unsaturated softmax."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return z / z.std(dim=1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)


def parse_adaptations(value: str | Sequence[str] | None) -> list[str]:
    """"bpda,eot" or ["bpda", "eot"] -> ["bpda", "eot"]; unknown names are a clear error."""
    if value is None:
        return []
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in ADAPTATIONS]
    if unknown:
        raise AdvlabError(f"unknown adaptation {unknown[0]!r} in `adaptive`; choose from {', '.join(ADAPTATIONS)}")
    if len(set(names)) != len(names):
        raise AdvlabError(f"`adaptive` names an adaptation twice: {','.join(names)}")
    return names


def adapt(model: nn.Module, adaptive: str | Sequence[str], *, samples: int = EOT_SAMPLES, seed: int = 0) -> nn.Module:
    """The model with the adaptations applied (a new module; `model` is not changed)."""
    out = model
    for name in parse_adaptations(adaptive):
        if name == "bpda":
            out, found = _bpda(out)
            if not found:
                raise AdvlabError("adaptive 'bpda' found no preprocessing layer to see through: it replaces "
                                  "advlab.models.Preprocessed(model, preprocess) modules inside the model; wrap "
                                  "the non-differentiable step in one, or use a black-box attack (square)")
        elif name == "rescale":
            out = Rescaled(out)
        elif isinstance(out, Randomized):  # its transformation drawn from the EOT's own seeded stream
            out = EOT(out.model, out.transform, samples=samples, seed=seed)
        else:  # the model's own randomness, whatever it is
            out = EOT(out, transform=None, samples=samples, seed=seed)
    return out


def has_preprocessing(model: nn.Module) -> bool:
    """Whether "bpda" has something to replace: a Preprocessed module anywhere in the model."""
    return any(isinstance(m, Preprocessed) for m in model.modules())


@contextlib.contextmanager
def bpda_gradients(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every Preprocessed layer of `model` is its BPDA twin (same forward values, a backward
    through the preprocessing's approximation); yields the model to call (the twin itself when `model` is a
    Preprocessed). Restored afterwards, even on an error. Refuses a model with nothing to see through."""
    if isinstance(model, Preprocessed):  # no parent to swap it in: the twin is the model to call
        if not has_preprocessing(model.model):
            yield _twin(model)
            return
        with bpda_gradients(model.model) as inner:
            yield BPDA(inner, model.preprocess, getattr(model.preprocess, "backward_approximation", None))
        return
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, Preprocessed)]
    if not swaps:
        raise AdvlabError("bpda found no preprocessing layer to see through: wrap the non-differentiable step "
                          "in advlab.models.Preprocessed(model, preprocess), or use a black-box attack (square)")
    try:
        # Innermost first (swaps are in pre-order): the twin of Preprocessed(Preprocessed(net, a), b) must wrap
        # the inner layer's twin, not the inner layer.
        for parent, name, child in reversed(swaps):
            parent._modules[name] = _twin(child)
        yield model
    finally:
        for parent, name, child in swaps:
            parent._modules[name] = child


def sees_through(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether BPDA can run on this model and input: a Preprocessed layer, and an input gradient through its
    twins for one row (the straight-through backward needs a preprocessing that keeps the input's shape,
    unless it defines `backward_approximation`)."""
    if not has_preprocessing(model):
        return False
    first = x[:1] if isinstance(x, torch.Tensor) else x[:1].load()  # a lazy image folder: decode one row
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), first.device)
    row = first.detach().to(device).requires_grad_(True)
    try:
        with bpda_gradients(model) as twin, torch.enable_grad():
            torch.autograd.grad(twin(row).sum(), row)
    except RuntimeError as e:
        warnings.warn(f"BPDA cannot see through this model's preprocessing ({str(e).splitlines()[0]}); stages that "
                      "need it are left out. A preprocessing layer that changes the input's shape needs a "
                      "`backward_approximation`", UserWarning, stacklevel=3)
        return False
    return True


def _twin(layer: Preprocessed) -> BPDA:
    return BPDA(layer.model, layer.preprocess, getattr(layer.preprocess, "backward_approximation", None))


def _bpda(module: nn.Module) -> tuple[nn.Module, bool]:
    """A copy of the module tree with every Preprocessed replaced by its BPDA twin; (tree, any replaced)."""
    if isinstance(module, Preprocessed):
        inner, _ = _bpda(module.model)
        return BPDA(inner, module.preprocess, getattr(module.preprocess, "backward_approximation", None)), True
    found, children = False, {}
    for name, child in module.named_children():
        new, hit = _bpda(child)
        children[name], found = new, found or hit
    if not found:
        return module, False
    twin = copy.copy(module)  # shares parameters and buffers; its own table of children
    twin._modules = dict(module._modules)
    twin._modules.update(children)
    return twin, True
