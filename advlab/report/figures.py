"""Matplotlib figures, rendered off-screen and written atomically as PNG."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..io import atomic_write  # noqa: E402


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def to_image(x: torch.Tensor) -> np.ndarray:
    """One input as something imshow can show: (H, W) gray or (H, W, 3); feature vectors as a row."""
    a = x.detach().cpu().float().numpy()
    if a.ndim == 3:
        return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0)).clip(0, 1)
    if a.ndim == 1:
        return a[None, :]
    return a


def adversarial_grid(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
                     confidence: torch.Tensor, classes: Sequence[str], path: str | os.PathLike,
                     title: str = "", magnify: float | None = None) -> None:
    """Rows: original, perturbation (magnified to the full gray range), adversarial; with labels."""
    n = len(x)
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n + 0.6, 4.3), squeeze=False)
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
                      color="#b00020" if wrong else "black")
        for ax in (ax0, ax1, ax2):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel(f"perturbation\nx{scale:.0f}", fontsize=8)
    axes[2, 0].set_ylabel("adversarial", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


# -- figures for the HTML report: rendered to PNG bytes, inlined as data URIs --------------------
def png_bytes(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    import base64
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# A palette that stays readable in grayscale print: colour per model, line style per attack.
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
STYLES = ["-", "--", ":", "-."]


def robustness_curves(series: Sequence[dict], title: str = "", xlabel: str = "epsilon") -> bytes:
    """series: [{"label", "group", "style", "eps": [..], "acc": [..], "lo": [..], "hi": [..]}]; a shaded
    band per line is its 95% Clopper-Pearson interval. `group` picks the colour, `style` the dash."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    groups = list(dict.fromkeys(s.get("group", s["label"]) for s in series))
    styles = list(dict.fromkeys(s.get("style", "") for s in series))
    for s in series:
        color = COLORS[groups.index(s.get("group", s["label"])) % len(COLORS)]
        ls = STYLES[styles.index(s.get("style", "")) % len(STYLES)]
        ax.plot(s["eps"], s["acc"], ls, marker="o", ms=3.5, color=color, label=s["label"])
        ax.fill_between(s["eps"], s["lo"], s["hi"], color=color, alpha=0.12, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="upper right", frameon=False)
    return png_bytes(fig)


def bracket_curves(series: Sequence[dict], title: str = "", xlabel: str = "epsilon") -> bytes:
    """Robust accuracy bracketed: per model an attacked line (upper bound) and a certified line (lower bound).

    series: [{"label", "eps", "attacked", "certified", "certified_lo", "attacked_hi", "same_model"}]. When the
    certificate is for the attacked model itself (IBP), the band between the two lines is shaded: the true robust
    accuracy lies in it (up to the intervals, drawn as thin dotted lines). A certificate of another classifier
    (randomized smoothing certifies the smoothed one) is drawn as a dash-dot line without a band."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    return png_bytes(fig)


def certified_curves(series: Sequence[dict], title: str = "", xlabel: str = "radius") -> bytes:
    """Certified accuracy against radius: series [{"label", "radius", "acc", "lo", "hi"}], bands 95% intervals."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        # Between two radii of the grid only the value at the larger one is known to hold: steps "pre".
        ax.step(s["radius"], s["acc"], where="pre", color=color, label=s["label"])
        ax.plot(s["radius"], s["acc"], "o", ms=3.5, color=color)
        ax.fill_between(s["radius"], s["lo"], s["hi"], step="pre", color=color, alpha=0.12, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="upper right", frameon=False)
    return png_bytes(fig)


def matrix_heatmap(matrix, row_labels: Sequence[str], col_labels: Sequence[str], title: str = "",
                   xlabel: str = "", ylabel: str = "", fmt: str = "{:.2f}", vmin=None, vmax=None,
                   cmap: str = "viridis") -> bytes:
    """An annotated heatmap (small matrices: transfer errors, per-class accuracies)."""
    m = np.asarray(matrix, dtype=float)
    w = max(3.2, 0.55 * m.shape[1] + 1.8)
    h = max(2.4, 0.45 * m.shape[0] + 1.2)
    fig, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(m.shape[1]), [str(c) for c in col_labels], fontsize=8, rotation=30 if
                  max((len(str(c)) for c in col_labels), default=0) > 6 else 0, ha="right" if
                  max((len(str(c)) for c in col_labels), default=0) > 6 else "center")
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
