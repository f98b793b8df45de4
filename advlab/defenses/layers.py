"""Split a model at a hidden layer: model(x) == tail(head(x)).

Goodfellow et al. (2015) compared perturbing the input with perturbing hidden activations; with
(head, tail) an attack crafts in activation space by attacking `tail` at `head(x)`. Layer k means
"right after the k-th activation (ReLU, maxout, ...)"; layer 0 is the input itself.

Only models whose forward is a plain chain can be split: Sequential, the MLP and maxout nets,
the two CNNs, each optionally inside Normalized. Anything else counts as one opaque step.
"""

from __future__ import annotations

from torch import nn

from ..errors import AdvlabError
from ..models.cnn import MadryCNN, SmallCNN
from ..models.mlp import MLP, Maxout, MaxoutNet
from ..models.shapes import as_image
from ..models.wrappers import Normalized

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, Maxout)


class _Normalize(nn.Module):
    """The normalisation step of a Normalized wrapper, on its own (shares its buffers)."""

    def __init__(self, wrapper: Normalized):
        super().__init__()
        self.wrapper = [wrapper]  # a list: not registered, so the parameters are not listed twice

    def forward(self, x):
        return self.wrapper[0].normalize(x)


class _AsImage(nn.Module):
    def __init__(self, input_shape):
        super().__init__()
        self.input_shape = input_shape

    def forward(self, x):
        return as_image(x, self.input_shape)


def chain(model: nn.Module) -> list[nn.Module]:
    """The model as a list of modules applied one after the other."""
    if isinstance(model, Normalized):
        return [_Normalize(model), *chain(model.net)]
    if isinstance(model, nn.Sequential):
        return [m for child in model for m in chain(child)]
    if isinstance(model, (MLP, MaxoutNet)):
        return chain(model.net)
    if isinstance(model, (SmallCNN, MadryCNN)):
        return [_AsImage(model.input_shape), *chain(model.features), *chain(model.classifier)]
    return [model]


def hidden_layers(model: nn.Module) -> int:
    """How many hidden layers (activations) a split can follow."""
    return sum(isinstance(m, ACTIVATIONS) for m in chain(model))


def split_at_layer(model: nn.Module, layer: int) -> tuple[nn.Module, nn.Module]:
    """(head, tail) with model(x) == tail(head(x)); head's output is the layer-th hidden activation."""
    if layer == 0:
        return nn.Identity(), model
    steps = chain(model)
    positions = [i for i, m in enumerate(steps) if isinstance(m, ACTIVATIONS)]
    if not isinstance(layer, int) or layer < 0 or layer > len(positions):
        raise AdvlabError(f"layer={layer!r} is out of range: this {type(model).__name__} has {len(positions)} "
                          f"hidden layers that can be split off (use 0 for the input, 1..{len(positions)} "
                          "for the activations of a hidden layer)")
    cut = positions[layer - 1] + 1
    return nn.Sequential(*steps[:cut]), nn.Sequential(*steps[cut:])
