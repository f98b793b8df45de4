"""advlab: adversarial examples for PyTorch. Craft, measure, defend, understand, report."""

__version__ = "0.1.0"

from .data import Dataset, load_dataset  # noqa: E402
from .errors import AdvlabError  # noqa: E402
from .models import build_model  # noqa: E402
from .runs import load_run, save_run  # noqa: E402

__all__ = ["AdvlabError", "Dataset", "__version__", "build_model", "load_dataset", "load_run", "save_run"]
