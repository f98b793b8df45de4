"""AC-GAN samples and unrestricted adversarial examples, recorded: the steps behind `advlab generate sample`
and `advlab generate attack` (training is advlab.generative.acgan.train_gan, which writes its own run).

    from advlab.artifacts import sample_run, unrestricted_run
    from advlab.generative.unrestricted import UnrestrictedAttack
    sample_run("runs/gan-digits", judge="runs/digits-mlp")      # -> GAN/samples/samples.png, quality.json
    unrestricted_run("runs/gan-digits", "runs/digits-cnn", UnrestrictedAttack(steps=200), judge="runs/digits-mlp",
                     target="untargeted", n=10)                  # -> GAN/attacks/digits-cnn-untargeted/unrestricted.json
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import AdvlabError
from ..io import save_tensors, write_json
from .. import rundir


def sample_run(gan_run: str | os.PathLike, *, judge: str | os.PathLike | None = None, n_per_class: int = 100,
               seed: int = 0, out: str | os.PathLike | None = None, device=None) -> dict[str, Any]:
    """A sample grid (OUT, default GAN/samples) and, with a `judge` classifier run, its accuracy on generated
    images per class (quality.json)."""
    from ..generative.acgan import generation_quality, load_gan
    from ..generative.figures import quality_figure, sample_grid

    gan, card = load_gan(gan_run, device=device)
    classes = card["dataset"]["classes"]
    out = Path(out) if out is not None else Path(gan_run) / "samples"
    sample_grid(gan, classes, out / rundir.SAMPLES_PNG, seed=seed, title=f"AC-GAN samples ({Path(gan_run).name})")
    record = {"gan": str(gan_run), "out": str(out), "grid": str(out / rundir.SAMPLES_PNG)}
    if judge is not None:
        quality = generation_quality(gan, load_classifier(judge, card, "judge", device), n_per_class, seed=seed)
        quality_figure(quality, classes, out / rundir.QUALITY_PNG)
        record.update(judge=str(judge), judge_accuracy=quality["accuracy"],
                      judge_accuracy_per_class=quality["per_class"], n_per_class=n_per_class)
        write_json(out / rundir.QUALITY_FILE, record)
    return record


def unrestricted_run(gan_run: str | os.PathLike, model_run: str | os.PathLike, attack, *,
                     judge: str | os.PathLike | None = None, source: str | Sequence[int] = "all",
                     target: str | int = "untargeted", n: int = 10, save: bool = False,
                     out: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None, device=None,
                     progress: bool = True) -> dict[str, Any]:
    """Search the AC-GAN's latent space for images `model_run` misclassifies (`attack`: an UnrestrictedAttack),
    `n` latent codes per (source, target) pair; with a `judge`, the legitimacy checks on the results and on the
    unattacked samples. Writes OUT (default GAN/attacks/MODEL-TARGET)/unrestricted.json and the example grid;
    with `save`, the examples too."""
    from ..generative.acgan import load_gan
    from ..generative.figures import unrestricted_grid
    from ..generative.unrestricted import make_tasks

    gan, card = load_gan(gan_run, device=device)
    k = gan.num_classes
    sources, target_ = parse_sources(source, k), parse_target(target, k)
    source_, target_ = make_tasks(sources, target_, n, k)
    model = load_classifier(model_run, card, "model_run", device)
    judge_net = load_classifier(judge, card, "judge", device) if judge else None
    started = time.perf_counter()
    result = attack(gan, model, source_, target_, progress=progress)
    seconds = time.perf_counter() - started
    record = {"gan": str(gan_run), "model": str(model_run), "judge": judge, "target": target, "n": len(source_),
              "seconds": seconds, "settings": result.settings, **result.summary()}
    legit = _legitimacy(record, result, source_, judge_net, card, data_dir, k) if judge_net is not None else None
    record["per_source"] = _per_source(result, legit, k)
    out = Path(out) if out is not None else Path(gan_run) / rundir.ATTACKS_DIR / f"{Path(model_run).name}-{target}"
    unrestricted_grid(result, card["dataset"]["classes"], out / rundir.UNRESTRICTED_PNG,
                      judge_label=legit.judge_label if legit else None,
                      title=f"unrestricted ({target}) vs {Path(model_run).name}")
    record["out"] = str(out)
    record["figures"] = {"examples": rundir.UNRESTRICTED_PNG}
    write_json(out / rundir.UNRESTRICTED_FILE, record)
    if save:
        _save_examples(out, result, legit)
    return record


def _legitimacy(record: dict[str, Any], result, source, judge, card, data_dir, k: int):
    """Record the legitimacy checks on the attack's successes and, as a control, on the unattacked G(z0, s)
    against the same predicted class (without it one cannot tell how much of a flag rate the attack caused)."""
    from ..generative.legitimacy import check_legitimacy
    from ..runs import dataset_from_card

    data = dataset_from_card(card, data_dir)
    legit = check_legitimacy(result.x, source, result.pred, result.success, judge, data.x_train, data.y_train, k)
    record["legitimacy"] = legit.summary(source, result.pred, result.success)
    control = check_legitimacy(result.x0, source, result.pred, result.success, judge, data.x_train, data.y_train, k)
    record["legitimacy_unattacked"] = control.summary(source, result.pred, result.success)
    return legit


def _save_examples(out: Path, result, legit) -> None:
    tensors = {"x": result.x, "x0": result.x0, "z": result.z, "z0": result.z0, "source": result.source,
               "target": result.target, "pred": result.pred, "aux_pred": result.aux_pred,
               "success": result.success.to(torch.uint8)}
    if legit is not None:
        tensors.update(judge_label=legit.judge_label, dist_source=legit.dist_source,
                       dist_predicted=legit.dist_predicted, passes=legit.passes.to(torch.uint8))
    save_tensors(out / rundir.UNRESTRICTED_EXAMPLES, tensors)


def _per_source(result, legit, k: int) -> list[dict[str, Any]]:
    rows = []
    for c in range(k):
        m = result.source == c
        if not m.any():
            continue
        row = {"source": c, "n": int(m.sum()), "success_rate": result.success[m].float().mean().item()}
        if legit is not None:
            row["pass_rate"] = legit.passes[m].float().mean().item()
        rows.append(row)
    return rows


def parse_sources(value: str | Sequence[int], k: int) -> list[int]:
    """'all', comma-separated class indices, or a list of them."""
    if isinstance(value, str) and value.strip() == "all":
        return list(range(k))
    try:
        values = [int(t) for t in value.split(",") if t.strip()] if isinstance(value, str) else [int(v) for v in value]
    except (TypeError, ValueError):
        raise AdvlabError(f"`source` must be 'all' or comma-separated class indices 0..{k - 1}, "
                          f"got {value!r}") from None
    if not values or any(not 0 <= v < k for v in values):
        raise AdvlabError(f"`source` must be 'all' or class indices in 0..{k - 1}, got {value!r}")
    return values


def parse_target(value: str | int, k: int) -> str | int:
    """'untargeted', 'all' (every other class, targeted) or one class index."""
    if value in ("untargeted", "all"):
        return value
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise AdvlabError(f"`target` must be 'untargeted', 'all' or a class index 0..{k - 1}, got {value!r}") from None
    if not 0 <= index < k:
        raise AdvlabError(f"`target` must be a class index in 0..{k - 1}, got {index}")
    return index


def load_classifier(run_dir: str | os.PathLike, gan_card: dict[str, Any], param: str, device=None):
    """A classifier run that takes the GAN's images (`param`: which argument named it, for errors)."""
    from types import SimpleNamespace

    from ..generative.acgan import KIND
    from ..runs import check_same_data, load_run, read_card

    if read_card(run_dir).get("kind") == KIND:
        raise AdvlabError(f"`{param}` {run_dir} is an AC-GAN run; give a classifier run from `advlab train`")
    model, card = load_run(run_dir, device=device)
    info = gan_card["dataset"]
    gan_data = SimpleNamespace(name=info["name"], input_shape=tuple(info["input_shape"]),
                               num_classes=info["num_classes"])
    check_same_data(card, gan_data, f"`{param}` {run_dir}")
    return model
