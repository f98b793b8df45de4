"""advlab: adversarial examples for PyTorch. Craft, measure, defend, understand, report."""

from .data import Dataset, load_dataset
from .errors import AdvlabError
from .models import build_model
from .runs import load_run, save_run
from .version import __version__

__all__ = ["AdvlabError", "Dataset", "__version__", "build_model", "load_dataset", "load_run", "save_run"]
