"""Honest robustness evaluation: worst case over attacks, statistics, checks for gradient masking."""

from .checks import CheckResult, Checks, run_checks, verdict
from .robust import Evaluation, evaluate_robustness
from .stats import clopper_pearson, confusion, distribution, per_class_accuracy
from .suites import SUITES, SuiteEntry, get_suite, load_suite_file

__all__ = ["CheckResult", "Checks", "Evaluation", "SUITES", "SuiteEntry", "clopper_pearson", "confusion", "distribution",
           "evaluate_robustness", "get_suite", "load_suite_file", "per_class_accuracy", "run_checks", "verdict"]
