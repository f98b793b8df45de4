"""Pictures of the generative models: AC-GAN sample grids and judge accuracy, and unrestricted
adversarial examples (the unattacked sample G(z0, s) above the attacked G(z, s))."""

from __future__ import annotations

from typing import Any

import torch

from .. import rng
from ..plotting import WRONG, new_figure, no_ticks, save_png, tile, to_image


def sample_grid(gan, classes, path, z: torch.Tensor | None = None, per_class: int = 8,
                title: str = "", seed: int = 0) -> None:
    """One row per class of images from `gan` (an ACGAN); one imshow of a tiled image: fast enough for every epoch."""
    k = gan.num_classes
    if z is None:
        z = torch.randn(k * per_class, gan.latent_dim, generator=rng.generator(seed, 999))
    per_class = len(z) // k
    labels = torch.arange(k).repeat_interleave(per_class)
    lo, hi = gan.generator.bounds
    x = gan.sample(labels, z=z[:k * per_class])
    h = x.shape[2]
    fig = new_figure(0.45 * per_class + 1.2, 0.45 * k + 0.5, layout=None)
    ax = fig.subplots()
    ax.imshow(to_image(tile(x, k, per_class, fill=hi)), cmap="gray", vmin=lo, vmax=hi)
    ax.set_xticks([])
    ax.set_yticks([(h + 1) * i + h / 2 - 0.5 for i in range(k)], [str(c)[:12] for c in classes], fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    save_png(fig, path, tight=True)


def quality_figure(quality: dict[str, Any], classes, path, title: str = "") -> None:
    """Bars: the judge's accuracy per class on generated images (`generation_quality`), a line at the mean."""
    per_class = quality["per_class"]
    fig = new_figure(0.6 * len(per_class) + 1.5, 2.8, layout=None)
    ax = fig.subplots()
    ax.bar(range(len(per_class)), per_class, color="#4060a0")
    ax.axhline(quality["accuracy"], color="#b00020", lw=1, ls="--", label=f"mean {quality['accuracy']:.2f}")
    ax.set_xticks(range(len(per_class)), [str(c)[:10] for c in classes], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("judge accuracy")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "independent classifier on generated images", fontsize=9)
    save_png(fig, path, tight=True)


def pick_examples(result, limit: int = 10) -> list[int]:
    """Up to `limit` indices: a successful example per source class first (preferring ones whose
    unattacked sample the model got right: those show what the attack did), then other successes,
    then failures."""
    chosen: list[int] = []
    succ = result.success.tolist()
    was_right = (result.pred0 == result.source).tolist()
    for c in torch.unique(result.source).tolist():
        idx = sorted((i for i in range(len(succ)) if succ[i] and int(result.source[i]) == c),
                     key=lambda i: not was_right[i])
        if idx:
            chosen.append(idx[0])
    chosen += [i for i in range(len(succ)) if succ[i] and i not in chosen]
    chosen += [i for i in range(len(succ)) if not succ[i]]
    return chosen[:limit]


def unrestricted_grid(result, classes, path, judge_label: torch.Tensor | None = None, title: str = "",
                      limit: int = 10) -> None:
    """Top row: G(z0, s) with the attacked model's label; bottom: G(z, s) with its label (red when the
    attack succeeded) and, when given, the independent judge's label."""
    idx = pick_examples(result, limit)
    n = max(len(idx), 1)
    fig = new_figure(1.3 * n + 0.8, 3.6, layout=None)
    axes = fig.subplots(2, n, squeeze=False)
    for col, i in enumerate(idx):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(to_image(result.x0[i]), cmap="gray", vmin=0, vmax=1)
        top.set_title(f"source {classes[result.source[i]]}\nmodel: {classes[result.pred0[i]]}", fontsize=7)
        bottom.imshow(to_image(result.x[i]), cmap="gray", vmin=0, vmax=1)
        label = f"model: {classes[result.pred[i]]} {100 * float(result.confidence[i]):.0f}%"
        if int(result.target[i]) >= 0:
            label = f"target {classes[result.target[i]]}\n" + label
        if judge_label is not None:
            label += f"\njudge: {classes[judge_label[i]]}"
        bottom.set_title(label, fontsize=7, color=WRONG if bool(result.success[i]) else "black")
        no_ticks(top, bottom)
    axes[0, 0].set_ylabel("G(z0, s)", fontsize=8)
    axes[1, 0].set_ylabel("G(z, s)", fontsize=8)
    for col in range(len(idx), n):
        axes[0, col].axis("off")
        axes[1, col].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    save_png(fig, path, tight=True)
