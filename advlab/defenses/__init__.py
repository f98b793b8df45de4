"""Training loops and defenses (adversarial training and its relatives)."""

from .training import TrainConfig, Trainer, TrainResult, clean_objective, learning_rate

__all__ = ["TrainConfig", "TrainResult", "Trainer", "clean_objective", "learning_rate"]
