"""AC-GAN (Odena et al. 2017) for small grayscale images: 8x8 (digits) and 28x28 (MNIST, Fashion-MNIST).

    advlab generate train --dataset digits --epochs 150 --out runs/gan-digits

The generator maps a latent code z and a class label to an image inside the dataset's bounds; the
discriminator has two heads: real/fake (one logit) and an auxiliary classifier (K logits).

- `model`: the networks (`Generator`, `Discriminator`, `ACGAN`).
- `train`: the losses, one training step, `GANTrainer` (epochs, checkpoints, resume, per-epoch sample
  grids) and `train_gan` (a dataset in, a run directory out).
- `quality`: `generation_quality`, an independent classifier's accuracy on generated images.
- `store`: the run directory (`model.safetensors` with keys `generator.*` and `discriminator.*`,
  `card.json` with `"kind": "acgan"`; `save_gan`, `load_gan`) and the training checkpoint
  (safetensors, no pickle), from which a resumed run ends as an uninterrupted one would.
The pictures are drawn in `advlab.generative.figures`.

Devices: `train_gan(..., device=)` and `load_gan(RUN, device=)` put both networks on a device (None:
the CPU). Latent codes and labels are drawn on the CPU from the seed and moved there batch by batch
(so a seed gives the same codes on any device), the loss terms of an epoch are summed on the device
(one host synchronisation per epoch), and samples come back to the CPU.
"""

from .model import ACGAN, AuxClassifier, Discriminator, Generator
from .quality import generation_quality
from .store import KIND, load_gan, save_gan
from .train import GANConfig, GANTrainer, discriminator_loss, generator_loss, train_gan, train_step

__all__ = ["ACGAN", "AuxClassifier", "Discriminator", "GANConfig", "GANTrainer", "Generator", "KIND",
           "discriminator_loss", "generation_quality", "generator_loss", "load_gan", "save_gan", "train_gan",
           "train_step"]
