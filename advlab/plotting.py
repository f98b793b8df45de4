"""Drawing, in one place: the figure helpers behind every PNG advlab writes or inlines in a report.

matplotlib's object API on the Agg canvas, one `Figure` per call and no pyplot: there is no global
figure state (safe from several threads, nothing to close) and importing advlab leaves the user's
matplotlib backend alone. A figure is rendered to bytes first; files are written with
`atomic_write`, so a crash never leaves half a PNG.

Two page styles, as the figures have always been drawn:
- figure files of the analyses: `new_figure(w, h)` (constrained layout), `save_png(fig, path)`;
- pictures cropped to their content: `new_figure(w, h, layout=None)`, then `save_png(..., tight=True)`
  for a file or `png_bytes(fig)` for a report's data URI.

Only matplotlib, numpy, torch (and Pillow for `tile_png`) and advlab's file helpers are imported
here: every layer that draws imports this module, so it imports none of them.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_write

# A palette that stays readable in grayscale print; line style and marker per attack (or suite).
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
WRONG = "#b00020"  # caption colour of a wrong (fooled) prediction


# -- canvas and output ------------------------------------------------------------------------------

def new_figure(width: float = 6.0, height: float = 4.5, layout: str | None = "constrained") -> Figure:
    """A figure on its own Agg canvas. `layout=None` for figures cropped with `tight=True` when saved."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = 100, tight: bool = True) -> bytes:
    """The figure as PNG bytes; `tight` crops the page to what is drawn on it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110, tight: bool = False) -> str:
    """Write the figure as a PNG file, atomically; returns the path as a string."""
    atomic_write(path, png_bytes(fig, dpi, tight))
    return str(path)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- inputs as pictures -----------------------------------------------------------------------------

def to_image(x: torch.Tensor) -> np.ndarray:
    """One input as something imshow can show: (H, W) gray or (H, W, 3); feature vectors as a row."""
    a = x.detach().cpu().float().numpy()
    if a.ndim == 3:
        return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0)).clip(0, 1)
    if a.ndim == 1:
        return a[None, :]
    return a


def tile(x: torch.Tensor, rows: int, cols: int, pad: int = 1, fill: float = 1.0) -> torch.Tensor:
    """(rows*cols, C, H, W) images -> one (C, rows*(H+pad)-pad, cols*(W+pad)-pad) image, row-major."""
    n, c, h, w = x.shape
    out = torch.full((c, rows * (h + pad) - pad, cols * (w + pad) - pad), fill, dtype=x.dtype)
    for i in range(min(n, rows * cols)):
        r, k = divmod(i, cols)
        out[:, r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = x[i]
    return out


def tile_png(x: torch.Tensor, size: int = 112) -> bytes:
    """One input as a small PNG (nearest-neighbour upscaling keeps pixels visible)."""
    from PIL import Image

    a = to_image(x)
    a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(a)  # (H, W) -> L, (H, W, 3) -> RGB
    scale = max(1, size // max(img.size))
    img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def no_ticks(*axes) -> None:
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


# -- grids of images --------------------------------------------------------------------------------

def fooled_first(fooled: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of at most k points for an example grid: the fooled ones first (what the grid is for), in order."""
    return torch.cat([fooled.nonzero().flatten(), (~fooled).nonzero().flatten()])[:k]


def adversarial_grid_png(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
                         confidence: torch.Tensor, classes: Sequence[str], title: str = "",
                         magnify: float | None = None) -> bytes:
    """Rows: original, perturbation (magnified to the full gray range), adversarial; with labels. PNG bytes."""
    n = len(x)
    fig = new_figure(1.3 * n + 0.6, 4.3, layout=None)
    axes = fig.subplots(3, n, squeeze=False)
    delta = x_adv - x
    scale = magnify or (0.5 / max(delta.abs().max().item(), 1e-12))
    for i in range(n):
        ax0, ax1, ax2 = axes[0, i], axes[1, i], axes[2, i]
        ax0.imshow(to_image(x[i]), cmap="gray", vmin=0, vmax=1)
        ax0.set_title(f"true {classes[y[i]]}", fontsize=7)
        ax1.imshow(to_image(0.5 + scale * delta[i]), cmap="gray", vmin=0, vmax=1)
        ax2.imshow(to_image(x_adv[i]), cmap="gray", vmin=0, vmax=1)
        wrong = int(pred[i]) != int(y[i])
        ax2.set_title(f"{classes[pred[i]]} {100 * float(confidence[i]):.0f}%", fontsize=7,
                      color=WRONG if wrong else "black")
        no_ticks(ax0, ax1, ax2)
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel(f"perturbation\nx{scale:.0f}", fontsize=8)
    axes[2, 0].set_ylabel("adversarial", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return png_bytes(fig, dpi=110, tight=True)


def adversarial_grid(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
                     confidence: torch.Tensor, classes: Sequence[str], path: str | os.PathLike,
                     title: str = "", magnify: float | None = None) -> None:
    """`adversarial_grid_png` written to `path`."""
    atomic_write(path, adversarial_grid_png(x, x_adv, y, pred, confidence, classes, title, magnify))


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
            no_ticks(ax)
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    return save_png(fig, path)


# -- curves -----------------------------------------------------------------------------------------

def _accuracy_axes(ax, xlabel: str, ylabel: str, title: str, legend_size: float) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=legend_size, loc="upper right", frameon=False)


def robustness_figure(series: Sequence[dict], title: str = "", xlabel: str = "epsilon") -> Figure:
    """The figure of `robustness_curves`, for tests and callers that save it themselves."""
    fig = new_figure(7.0, 4.2, layout=None)
    ax = fig.subplots()
    styles = list(dict.fromkeys(s.get("style", "") for s in series))
    # A series measured at one budget (plus its clean accuracy at 0) is two points: a line between them
    # would claim knowledge between 0 and eps. Such series are markers with error bars, set slightly apart
    # so that equal numbers of different series do not hide each other.
    single = [i for i, s in enumerate(series) if sum(1 for e in s["eps"] if e > 0) <= 1]
    widest = max((float(e) for s in series for e in s["eps"]), default=0.0) or 1.0
    apart = 0.012 * widest
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]  # one colour per line: two suites on one model are told apart
        k = styles.index(s.get("style", ""))
        ls, marker = STYLES[k % len(STYLES)], MARKERS[k % len(MARKERS)]
        if i in single:
            shift = (single.index(i) - (len(single) - 1) / 2) * apart
            x = np.asarray(s["eps"], dtype=float) + shift
            acc, lo, hi = (np.asarray(s[key], dtype=float) for key in ("acc", "lo", "hi"))
            ax.errorbar(x, acc, yerr=np.stack([acc - lo, hi - acc]).clip(min=0), fmt=marker, linestyle="none",
                        ms=6, capsize=3, color=color, label=s["label"])
        else:
            ax.plot(s["eps"], s["acc"], ls, marker=marker, ms=4, color=color, label=s["label"])
            ax.fill_between(s["eps"], s["lo"], s["hi"], color=color, alpha=0.12, linewidth=0)
    _accuracy_axes(ax, xlabel, "robust accuracy", title, 7.5)
    return fig


def robustness_curves(series: Sequence[dict], title: str = "", xlabel: str = "epsilon") -> bytes:
    """series: [{"label", "style", "eps": [..], "acc": [..], "lo": [..], "hi": [..]}]; one colour per series,
    `style` (the attack or suite) picks the marker and the dash; the shaded band is the 95% Clopper-Pearson
    interval. A series with one budget is two points (clean, robust) with error bars, no line."""
    return png_bytes(robustness_figure(series, title, xlabel))


def bracket_curves(series: Sequence[dict], title: str = "", xlabel: str = "epsilon") -> bytes:
    """Robust accuracy bracketed: per model an attacked line (upper bound) and a certified line (lower bound).

    series: [{"label", "eps", "attacked", "certified", "certified_lo", "attacked_hi", "same_model"}]. When the
    certificate is for the attacked model itself (IBP), the band between the two lines is shaded: the true robust
    accuracy lies in it (up to the intervals, drawn as thin dotted lines). A certificate of another classifier
    (randomized smoothing certifies the smoothed one) is drawn as a dash-dot line without a band."""
    fig = new_figure(7.0, 4.2, layout=None)
    ax = fig.subplots()
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        eps = s["eps"]
        ax.plot(eps, s["attacked"], "-", marker="o", ms=3.5, color=color, label=f"{s['label']}: attacked (upper bound)")
        if s.get("same_model", True):
            ax.plot(eps, s["certified"], "--", marker="s", ms=3.5, color=color,
                    label=f"{s['label']}: certified (lower bound)")
            ax.fill_between(eps, s["certified"], s["attacked"], color=color, alpha=0.15, linewidth=0,
                            label=f"{s['label']}: not yet known")
            if s.get("certified_lo") and s.get("attacked_hi"):
                ax.plot(eps, s["certified_lo"], ":", color=color, linewidth=0.8)
                ax.plot(eps, s["attacked_hi"], ":", color=color, linewidth=0.8)
        else:
            ax.plot(eps, s["certified"], "-.", marker="s", ms=3.5, color=color,
                    label=f"{s['label']}: certified, smoothed classifier")
    _accuracy_axes(ax, xlabel, "robust accuracy", title, 7)
    return png_bytes(fig)


def certified_curves(series: Sequence[dict], title: str = "", xlabel: str = "radius") -> bytes:
    """Certified accuracy against radius: series [{"label", "radius", "acc", "lo", "hi"}], bands 95% intervals."""
    fig = new_figure(7.0, 4.2, layout=None)
    ax = fig.subplots()
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        # Between two radii of the grid only the value at the larger one is known to hold: steps "pre".
        ax.step(s["radius"], s["acc"], where="pre", color=color, label=s["label"])
        ax.plot(s["radius"], s["acc"], "o", ms=3.5, color=color)
        ax.fill_between(s["radius"], s["lo"], s["hi"], step="pre", color=color, alpha=0.12, linewidth=0)
    _accuracy_axes(ax, xlabel, "certified accuracy", title, 7.5)
    return png_bytes(fig)


def curves(x: Sequence[float], lines: dict[str, dict], title: str, xlabel: str, ylabel: str,
           path: str | os.PathLike, logx: bool = False, logy: bool = False,
           ylim: tuple[float, float] | None = None) -> str:
    """Measured points and predicted lines against a common x.

    `lines` maps a label to {"y": values, "style": "measured"|"predicted", "yerr": optional
    (2, n) asymmetric error bars, "x": optional own x, "color": optional}. Measured series are
    markers, predicted series are lines.
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


# -- matrices and distributions ---------------------------------------------------------------------

def matrix_heatmap(matrix, row_labels: Sequence[str], col_labels: Sequence[str], title: str = "",
                   xlabel: str = "", ylabel: str = "", fmt: str = "{:.2f}", vmin=None, vmax=None,
                   cmap: str = "viridis") -> bytes:
    """An annotated heatmap as PNG bytes, for the report (small matrices: transfer errors, per-class accuracies)."""
    m = np.asarray(matrix, dtype=float)
    w = max(3.2, 0.55 * m.shape[1] + 1.8)
    h = max(2.4, 0.45 * m.shape[0] + 1.2)
    fig = new_figure(w, h, layout=None)
    ax = fig.subplots()
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    slanted = max((len(str(c)) for c in col_labels), default=0) > 6
    ax.set_xticks(range(m.shape[1]), [str(c) for c in col_labels], fontsize=8, rotation=30 if slanted else 0,
                  ha="right" if slanted else "center")
    ax.set_yticks(range(m.shape[0]), [str(r) for r in row_labels], fontsize=8)
    if m.size <= 400:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = m[i, j]
                if np.isfinite(v):
                    r, g, b, _ = im.cmap(im.norm(v))  # dark cell: white text
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                            color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return png_bytes(fig)


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str, path: str | os.PathLike,
            row_label: str = "row class", col_label: str = "column class", fmt: str = ".2f",
            highlight: Sequence[tuple[int, int]] = ()) -> str:
    """An annotated K x K heatmap file; cells in `highlight` get a box (e.g. a row's smallest entry)."""
    from matplotlib.patches import Rectangle

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
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    return save_png(fig, path)


def histograms(series: dict[str, np.ndarray], title: str, xlabel: str, path: str | os.PathLike,
               markers: dict[str, float] | None = None, bins: int = 50) -> str:
    """Overlaid histograms (one per named series, on shared bin edges) with optional vertical marker lines."""
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
