"""Pictures of unrestricted adversarial examples: the unattacked sample G(z0, s) above the attacked G(z, s)."""

from __future__ import annotations

import torch

from ..report.figures import plt, save_figure, to_image


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
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n + 0.8, 3.6), squeeze=False)
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
        bottom.set_title(label, fontsize=7, color="#b00020" if bool(result.success[i]) else "black")
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("G(z0, s)", fontsize=8)
    axes[1, 0].set_ylabel("G(z, s)", fontsize=8)
    for col in range(len(idx), n):
        axes[0, col].axis("off")
        axes[1, col].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
