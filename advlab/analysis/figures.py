"""Figures for the analyses: annotated heatmaps, histograms, measured-versus-predicted curves.

matplotlib's object API with the Agg canvas (no pyplot, so no global figure state); every PNG is
rendered to bytes first and then written with `atomic_write`, so a crash never leaves half a file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_write


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write(path, buf.getvalue())
    return str(path)


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str, path: str | os.PathLike,
            row_label: str = "row class", col_label: str = "column class", fmt: str = ".2f",
            highlight: Sequence[tuple[int, int]] = ()) -> str:
    """An annotated K x K heatmap; cells in `highlight` get a box (e.g. a row's smallest entry)."""
    m = np.asarray(matrix, dtype=float)
    k = len(labels)
    size = max(4.5, 0.62 * k + 2.0)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="viridis")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = [str(label)[:12] for label in labels]
    ax.set_xticks(range(k), ticks, rotation=45, ha="right")
    ax.set_yticks(range(k), ticks)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    middle = np.nanmin(m) + 0.5 * (np.nanmax(m) - np.nanmin(m))
    font = 8 if k <= 10 else 6
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=font,
                    color="black" if m[i, j] > middle else "white")
    for i, j in highlight:
        ax.add_patch(_box(i, j))
    return save_png(fig, path)


def _box(i: int, j: int):
    from matplotlib.patches import Rectangle
    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2)


def histograms(series: dict[str, np.ndarray], title: str, xlabel: str, path: str | os.PathLike,
               markers: dict[str, float] | None = None, bins: int = 50) -> str:
    """Overlaid histograms (one per named series) with optional vertical marker lines."""
    fig = new_figure()
    ax = fig.add_subplot()
    values = [np.asarray(v, dtype=float) for v in series.values() if len(v)]
    if values:
        lo = min(v.min() for v in values)
        hi = max(v.max() for v in values)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, bins + 1)
        for name, v in series.items():
            if len(v):
                ax.hist(np.asarray(v, dtype=float), bins=edges, alpha=0.5, label=f"{name} (n={len(v)})")
    for i, (name, x) in enumerate((markers or {}).items()):
        ax.axvline(x, color=f"C{i + 3}", linestyle="--", label=f"{name} = {x:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def curves(x: Sequence[float], lines: dict[str, dict], title: str, xlabel: str, ylabel: str,
           path: str | os.PathLike, logx: bool = False, logy: bool = False,
           ylim: tuple[float, float] | None = None) -> str:
    """Measured points and predicted lines against a common x.

    `lines` maps a label to {"y": values, "style": "measured"|"predicted", "yerr": optional
    (2, n) asymmetric error bars}. Measured series are markers, predicted series are lines.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    xs = np.asarray(x, dtype=float)
    for i, (label, spec) in enumerate(lines.items()):
        y = np.asarray(spec["y"], dtype=float)
        xx = np.asarray(spec.get("x", xs), dtype=float)
        color = spec.get("color", f"C{i}")
        if spec.get("style") == "measured":
            yerr = spec.get("yerr")
            ax.errorbar(xx, y, yerr=None if yerr is None else np.abs(np.asarray(yerr, dtype=float)),
                        fmt="o", color=color, label=label, capsize=3, markersize=5)
        else:
            ax.plot(xx, y, "-", color=color, label=label, linewidth=1.8, alpha=0.85)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def image_grid(images: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
               path: str | os.PathLike, vmin: float = 0.0, vmax: float = 1.0) -> str:
    """A grid of images (R, C, H, W) or (R, C, H, W, 3) with row and column captions."""
    rows, cols = images.shape[:2]
    fig = new_figure(1.3 * cols + 1.0, 1.35 * rows + 0.6)
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            img = images[r, c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    return save_png(fig, path)
