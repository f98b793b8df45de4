"""Random-transformation wrappers: a randomised defense, and Expectation over Transformation.

- `Randomized(model, transform)`: ONE random transformation per forward pass, at inference too.
  This is the "stochastic gradients" defense family (random resizing and padding, Xie et al. 2018;
  noise at inference): its predictions and gradients change from one identical call to the next,
  which makes a naive gradient attack look weaker than it is.
- `EOT(model, transform, samples=N)` (Athalye, Engstrom, Ilyas & Kwok 2018): the log of the mean
  probability over N random transformations, like `advlab.models.Ensemble` does over members. Its
  gradient is the average of the per-transformation probability gradients, so any gradient
  attack run on `EOT(...)` is an EOT attack. Score the examples it finds on the defense itself
  (e.g. with `advlab.attacks.transfer`), not on the EOT model.

Both draw their randomness from a torch.Generator they hold (seeded from `seed`, created on the
input's device), never from torch's global RNG. `reset()` rewinds it, so a forward-pass sequence
can be repeated exactly.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..errors import AdvlabError
from ..rng import generator as seeded_generator
from .transforms import Transform


class _RandomWrapper(nn.Module):
    """A model plus a transform plus a generator of its own."""

    def __init__(self, model: nn.Module, transform: Optional[Transform], seed: int):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise AdvlabError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.transform = transform
        self.seed = seed
        self._generator: Optional[torch.Generator] = None
        self.train(model.training)  # a wrapper of an eval-mode model starts in eval mode

    def reset(self, seed: Optional[int] = None) -> None:
        """Rewind the random stream (to a new seed if given): the next passes repeat the first ones."""
        if seed is not None:
            self.seed = seed
        self._generator = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = seeded_generator(self.seed, device=device)
        return self._generator

    def _transformed(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return x
        return self.transform(x, self.generator(x.device))

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, seed={self.seed}"


class Randomized(_RandomWrapper):
    """model(transform(x)) with a fresh random transformation on every call, in eval mode too."""

    def __init__(self, model: nn.Module, transform: Transform, seed: int = 0):
        if transform is None:
            raise AdvlabError("Randomized needs a transform, e.g. advlab.models.RandomResizePad()")
        super().__init__(model, transform, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._transformed(x))


class EOT(_RandomWrapper):
    """log mean_s softmax(model(t_s(x))) over `samples` random transformations t_s.

    transform=None averages over the model's own randomness instead (e.g. EOT(Randomized(...))).
    `chunk` caps how many samples go through the model in one batch (default: all at once, so a
    batch of N inputs becomes one pass over N * samples; lower it if memory is short).
    """

    def __init__(self, model: nn.Module, transform: Optional[Transform] = None, samples: int = 10,
                 chunk: Optional[int] = None, seed: int = 0):
        super().__init__(model, transform, seed)
        if samples < 1:
            raise AdvlabError(f"EOT needs samples >= 1, got {samples}")
        if chunk is not None and chunk < 1:
            raise AdvlabError(f"chunk must be >= 1 (samples per forward pass), got {chunk}")
        self.samples = samples
        self.chunk = chunk or samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        parts = []
        for start in range(0, self.samples, self.chunk):
            c = min(self.chunk, self.samples - start)
            xs = x.repeat(c, *[1] * (x.ndim - 1))                             # (c*N, ...): sample-major
            parts.append(self.model(self._transformed(xs)).log_softmax(1).view(c, n, -1))  # (c, N, K)
        log_probs = torch.cat(parts)                                          # (S, N, K)
        return torch.logsumexp(log_probs, dim=0) - math.log(self.samples)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, chunk={self.chunk}, {super().extra_repr()}"
