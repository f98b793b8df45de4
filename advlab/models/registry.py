"""Build models by their CLI name, and describe them for the run card so they can be rebuilt."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..errors import AdvlabError
from .cnn import MadryCNN, SmallCNN
from .linear import LogisticRegression, SoftmaxRegression
from .mlp import MLP, MaxoutNet
from .rbf import RBFNet
from .resnet import PreActResNet18, ResNet18, WideResNet
from .wrappers import Normalized

MODELS: dict[str, Callable[..., nn.Module]] = {
    "logistic": LogisticRegression,
    "softmax": SoftmaxRegression,
    "mlp": MLP,
    "maxout": MaxoutNet,
    "cnn-small": SmallCNN,
    "cnn-madry": MadryCNN,
    "rbf": RBFNet,
    "preact-resnet18": PreActResNet18,
    "resnet18": ResNet18,
    "wrn": WideResNet,
}


def model_options(name: str) -> dict[str, Any]:
    """Keyword arguments the model accepts, with their defaults."""
    params = inspect.signature(MODELS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in ("input_shape", "num_classes")}


def build_model(name: str, input_shape: tuple[int, ...] | list[int], num_classes: int,
                normalize: dict[str, list[float]] | None = None, **kwargs: Any) -> nn.Module:
    """Build a model that maps raw inputs of `input_shape` to (N, num_classes) logits.

    `normalize={"mean": [...], "std": [...]}` puts per-channel normalisation inside the model,
    so attacks work in raw input units.
    """
    if name not in MODELS:
        raise AdvlabError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    allowed = model_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise AdvlabError(f"model {name!r} has no option {', '.join(unknown)}; "
                          f"allowed: {', '.join(f'{k} (default {v!r})' for k, v in allowed.items()) or 'none'}")
    try:
        net = MODELS[name](tuple(input_shape), num_classes, **kwargs)
    except (ValueError, TypeError) as e:
        raise AdvlabError(f"cannot build model {name!r} for input shape {tuple(input_shape)} "
                          f"and {num_classes} classes: {e}") from e
    if normalize is not None:
        net = Normalized(net, normalize["mean"], normalize["std"])
    return net


def model_spec(name: str, input_shape, num_classes: int, normalize=None, **kwargs) -> dict[str, Any]:
    """What the run card stores so `build_model(**spec)` rebuilds the same architecture."""
    return {"name": name, "input_shape": list(input_shape), "num_classes": num_classes,
            "normalize": normalize, "kwargs": kwargs}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    return build_model(spec["name"], spec["input_shape"], spec["num_classes"], spec.get("normalize"),
                       **spec.get("kwargs", {}))
