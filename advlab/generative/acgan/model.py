"""The AC-GAN's networks: a class-conditional generator and a discriminator with an auxiliary classifier head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import AdvlabError
from ...predict import model_device


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
