"""Training loops and defenses (adversarial training and its relatives)."""

from .adversarial import TRADES, CollapseCheck, FastAT, Goodfellow, L1Penalty, Noise, PGDTraining
from .registry import DEFENSES, build_defense
from .rst import RSTSettings, pseudo_label, robust_self_training
from .run import train_run
from .training import EpochPlan, TrainConfig, Trainer, TrainerHook, TrainResult, clean_objective, learning_rate

__all__ = ["DEFENSES", "CollapseCheck", "EpochPlan", "FastAT", "Goodfellow", "L1Penalty", "Noise", "PGDTraining",
           "RSTSettings", "TRADES", "TrainConfig", "TrainResult", "Trainer", "TrainerHook", "build_defense",
           "clean_objective", "learning_rate", "pseudo_label", "robust_self_training", "train_run"]
