"""Attacks: hyperparameter holders called as attack(model, x, y, eps=[...], bounds=...)."""

from .base import Attack, AdvlabWarning, attack_mode, check_inputs, input_gradient
from .losses import LOSSES, ce, dlr, margin
from .pgd import BIM, FGSM, MIFGSM, PGD
from .registry import ATTACKS, build_attack
from .result import AttackResult

__all__ = ["ATTACKS", "AdvlabWarning", "Attack", "AttackResult", "BIM", "FGSM", "LOSSES", "MIFGSM", "PGD",
           "attack_mode", "build_attack", "ce", "check_inputs", "dlr", "input_gradient", "margin"]
