"""The epsilon analyses on a dataset, recorded in a folder: the steps behind `advlab analyze distances` and
`advlab analyze perceptibility`, the demo and the epsilon-choice experiment.

    from advlab.artifacts import distances_run, perceptibility_run
    record = distances_run("digits", "runs/analyze/digits", per_class=100, norms=["l2", "linf"])
    # -> distances.json, eps_per_class_NORM.json and the heatmaps (advlab.analysis.epsilon)
    perceptibility_run("digits", "runs/analyze/p", eps=[0, 0.1, 0.2])   # -> perceptibility.json and its grid

`dataset` is a name (loaded with `data_dir` and `dataset_args`) or an advlab.data.Dataset.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..data import Dataset, load_dataset


def _dataset(dataset: str | Dataset, data_dir, dataset_args: dict[str, Any] | None) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(dataset, data_dir=data_dir, **(dataset_args or {}))


def distances_run(dataset: str | Dataset, out: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                  dataset_args: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Class distances, nearest neighbours and suggested budgets (the options: those of
    advlab.analysis.epsilon.analyze_distances)."""
    from ..analysis.epsilon import analyze_distances
    return analyze_distances(_dataset(dataset, data_dir, dataset_args), out=out, **options)


def perceptibility_run(dataset: str | Dataset, out: str | os.PathLike, *, eps: Sequence[float],
                       pairs: Sequence[tuple[int, int]] | None = None, seed: int = 0,
                       data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """clip(x0 + eps * sign(x1)) over an eps grid for pairs of classes (advlab.analysis.perceptibility)."""
    from ..analysis.perceptibility import perceptibility
    return perceptibility(_dataset(dataset, data_dir, None), eps, pairs, seed=seed, out=out)
