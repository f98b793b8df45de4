"""Datasets with train/test tensors, class names and input bounds."""

from .datasets import LOADERS, Dataset, load_dataset
from .files import load_data_path
from .splits import Split, holdout_split

DATASET_NAMES = tuple(LOADERS)

__all__ = ["DATASET_NAMES", "Dataset", "Split", "holdout_split", "load_data_path", "load_dataset"]
