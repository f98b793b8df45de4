"""Datasets with train/test tensors, class names and input bounds."""

from .datasets import LOADERS, TEST_ONLY, Dataset, load_dataset
from .files import load_data_path
from .lazy import LazyImages, rows
from .splits import Split, holdout_split

DATASET_NAMES = tuple(LOADERS)  # datasets with a training split: every subcommand
TEST_DATASET_NAMES = (*LOADERS, *TEST_ONLY)  # also the test-only ones: attack, evaluate, certify

__all__ = ["DATASET_NAMES", "Dataset", "LazyImages", "Split", "TEST_DATASET_NAMES", "holdout_split", "load_data_path",
           "load_dataset", "rows"]
