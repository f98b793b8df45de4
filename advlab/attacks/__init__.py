"""Attacks: hyperparameter holders called as attack(model, x, y, eps=[...], bounds=...)."""

from .apgd import APGD, APGDT
from .base import Attack, AdvlabWarning, attack_mode, check_inputs, input_gradient
from .cw import CW
from .deepfool import DeepFool
from .losses import LOSSES, ce, dlr, margin
from .pgd import BIM, FGSM, MIFGSM, PGD
from .registry import ATTACKS, build_attack
from .result import AttackResult
from .square import Square

__all__ = ["APGD", "APGDT", "ATTACKS", "AdvlabWarning", "Attack", "AttackResult", "BIM", "CW", "DeepFool", "FGSM",
           "LOSSES", "MIFGSM", "PGD", "Square", "attack_mode", "build_attack", "ce", "check_inputs", "dlr", "input_gradient", "margin"]
