"""Unrestricted adversarial examples from a class-conditional GAN (Song et al. 2018).

`acgan` trains the AC-GAN, `unrestricted` searches its latent space for images a classifier gets
wrong while the GAN's own auxiliary classifier still sees the source class, `legitimacy`
checks whether such an image is a real adversarial example or just an image of another class, and
`figures` draws the sample grids and the examples.
"""

from .acgan import (ACGAN, Discriminator, GANConfig, GANTrainer, Generator, discriminator_loss, generation_quality,
                    generator_loss, load_gan, save_gan, train_gan, train_step)
from .figures import sample_grid
from .legitimacy import Legitimacy, check_legitimacy, nearest_distances, nearest_per_class
from .unrestricted import (UNTARGETED, UnrestrictedAttack, UnrestrictedResult, attack_loss, latent_penalty,
                           make_tasks, unrestricted_loss)

__all__ = ["ACGAN", "Discriminator", "GANConfig", "GANTrainer", "Generator", "Legitimacy", "UNTARGETED",
           "UnrestrictedAttack", "UnrestrictedResult", "attack_loss", "check_legitimacy", "discriminator_loss",
           "generation_quality", "generator_loss", "latent_penalty", "load_gan", "make_tasks", "nearest_distances",
           "nearest_per_class", "sample_grid", "save_gan", "train_gan", "train_step", "unrestricted_loss"]
