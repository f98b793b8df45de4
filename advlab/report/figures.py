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
