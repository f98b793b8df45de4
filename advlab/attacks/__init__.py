"""Attacks: hyperparameter holders called as attack(model, x, y, eps=[...], bounds=...)."""

from .apgd import APGD, APGDT
from ..predict import attack_mode
from .base import Attack
from .engine import input_gradient
from .harness import AdvlabWarning, check_inputs, run_attack
from .cw import CW
from .deepfool import DeepFool
from .fooling import Fooling, fooling_images
from .highconf import HighConfidence
from .losses import LOSSES, ce, dlr, margin
from .pgd import BIM, FGSM, MIFGSM, PGD
from .registry import ATTACKS, build_attack
from .result import AttackResult
from .spatial import Spatial
from .square import Square
from .transfer import TransferResult, transfer

__all__ = ["APGD", "APGDT", "ATTACKS", "AdvlabWarning", "Attack", "AttackResult", "BIM", "CW", "DeepFool", "FGSM",
           "Fooling", "HighConfidence", "LOSSES", "MIFGSM", "PGD", "Spatial", "Square", "TransferResult",
           "attack_mode", "build_attack", "ce", "check_inputs", "dlr", "fooling_images", "input_gradient", "margin",
           "run_attack", "transfer"]
