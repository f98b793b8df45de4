"""Understanding: which epsilon makes sense for the data, and why adversarial examples exist.

- `distances`: exact, chunked distance kernels (nearest neighbour per class, class-mean distances).
- `epsilon`: the class-distance analysis with suggested budgets (`advlab analyze distances`).
- `budgets`: per-class budget files for `--eps-per-class` (load_eps_per_class, eps_for_labels).
- `perceptibility`: clip(x0 + eps * sign(x1)) grids.
- `linear`: linear classifiers on Gaussian classes: exact robust training, closed-form errors.
- `linearity`: the linear explanation, eps * ||w||_1 against the input dimension.
- `theory`: Schmidt et al. 2018 on the Gaussian model: dimension and sample-size experiments.
- `blobs`: the first picture, logistic regression and FGSM on two Gaussian blobs.
- `figures`: heatmaps, histograms and curves written atomically as PNG.

Only the kernels and the budget-file helpers are imported here; the analyses (and matplotlib) load
when their submodule is imported. JSON layouts: docs/analysis.md.
"""

from .budgets import eps_for_labels, load_eps_per_class, write_eps_per_class
from .distances import NORM_NAMES, mean_class_distances, min_distance_to_classes, pairwise_distances

__all__ = ["NORM_NAMES", "eps_for_labels", "load_eps_per_class", "mean_class_distances",
           "min_distance_to_classes", "pairwise_distances", "write_eps_per_class"]
