"""Attack a subject over a list of budgets and record it: the step behind `advlab attack` and the demo.

    from advlab.attacks import build_attack
    from advlab.artifacts import attack_run
    from advlab.subject import open_subject
    record = attack_run(open_subject(run="runs/digits-cnn"), build_attack("pgd", norm="linf", steps=20),
                        eps=[0.05, 0.1], n=500, save=True)
    # record: the `advlab attack --json` object; with save, RUN/attacks/pgd-linf/ holds result.json,
    # adversarial.safetensors and one grid-epsE.png per budget
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..parsing import parse_eps_list
from ..data import rows
from ..errors import AdvlabError
from ..io import save_tensors, write_json
from .. import rundir
from ..records import AttackRecord

if TYPE_CHECKING:
    from ..subject import Subject

Log = Callable[[str], None]


def resolve_budgets(y: torch.Tensor, num_classes: int, norm: str | None, eps: str | Sequence[float] | None = None,
                    eps_per_class: str | os.PathLike | None = None) -> tuple[list, list[float] | None]:
    """The `eps` argument of an attack for the labels `y`: the budgets as floats, or one per-example tensor
    from a per-class budget file. Returns (eps, the per-class budgets for the record, or None)."""
    if (eps is None) == (eps_per_class is None):
        raise AdvlabError("give `eps` (budgets in raw input units, e.g. 0.05,0.1) or `eps_per_class` (a per-class "
                          "budget file from the distance analysis), one of the two")
    if eps is not None:
        return parse_eps_list(eps), None
    from ..analysis.budgets import eps_for_labels, load_eps_per_class

    per_class = load_eps_per_class(eps_per_class, num_classes, norm=norm)
    return [eps_for_labels(per_class, y)], per_class.tolist()


def describe_budgets(eps: str | Sequence[float] | None, eps_per_class: str | os.PathLike | None) -> str:
    """The budgets for a log line: as given (text stays text, so 8/255 reads 8/255)."""
    if eps is None:
        return f"per class from {eps_per_class}"
    return eps if isinstance(eps, str) else ",".join(f"{float(e):g}" for e in eps)


def embedding_attack(name: str, embedding_run: str | os.PathLike | None, **options: Any):
    """The embedding-space attack (`threat="embedding"`) and the embedding run's card."""
    from ..metric.embedding_threat import embedding_attack as build_embedding_attack
    from ..metric.triplet import load_embedding

    if embedding_run is None:
        raise AdvlabError("the embedding threat needs `embedding_run`: an embedding run (train one with "
                          "`advlab analyze embedding --dataset D --out DIR`; it is written to DIR/embedding)")
    if options.get("pixel_eps") is not None and options["pixel_eps"] < 0:
        raise AdvlabError(f"`pixel_eps` must be >= 0, got {options['pixel_eps']}")
    embedding, card = load_embedding(embedding_run)
    return build_embedding_attack(name, embedding, **options), card


def attack_run(subject, attack, *, eps: str | Sequence[float] | None = None,
               eps_per_class: str | os.PathLike | None = None, n: int | None = None, save: bool = False,
               out: str | os.PathLike | None = None, embedding: tuple[str, dict[str, Any]] | None = None,
               progress: bool = True, log: Log | None = None) -> AttackRecord:
    """Run `attack` on the first `n` test points of the subject's data at every budget; return the record.

    `eps`: budgets (a list of numbers, or text such as "0.05,8/255"); or `eps_per_class`: a per-class budget
    file. `save`: write the examples, the record and the grids to `out` (default RUN/attacks/ATTACK-NORM).
    `embedding`: (embedding run, its card) for an attack built by `embedding_attack`."""
    log = log or (lambda message: None)
    data = subject.data
    if embedding is not None and list(embedding[1]["dataset"]["input_shape"]) != list(data.input_shape):
        card = embedding[1]
        raise AdvlabError(f"the embedding run {embedding[0]} takes inputs of shape "
                          f"{tuple(card['dataset']['input_shape'])} ({card['dataset']['name']}) but "
                          f"the model takes {data.input_shape} ({data.name}); use an embedding of the same dataset")
    x, y = data.test_subset(n)
    x = rows(x, progress)  # images read on demand are decoded now: an attack holds its n points
    budgets, per_class = resolve_budgets(y, data.num_classes, getattr(getattr(attack, "norm", None), "name", None),
                                         eps, eps_per_class)
    log(f"{attack.name} ({attack.threat.name}) on {len(y)} {data.name} test points, "
        f"eps {describe_budgets(eps, eps_per_class)}")
    result = attack(subject.model, x, y, budgets, bounds=data.bounds, progress=progress)
    record = _record(subject, attack, result, per_class, embedding)
    if save:
        # result.norm: the attack's budget ("spatial" for the rotation/shift range).
        out = Path(out) if out is not None else rundir.attack_dir(subject.run_dir, attack.name, result.norm)
        save_attack(out, x, result, data.classes, record)
        record["saved"] = str(out)
    return record


def _record(subject: "Subject", attack, result, per_class, embedding) -> AttackRecord:
    record: AttackRecord = {"attack": attack.name, "norm": result.norm, "n": len(result.y), "clean_accuracy": result.clean_accuracy(),
              "seconds": result.seconds, "results": result.summary(), **subject.record(),
              "precision": getattr(attack, "precision", "fp32")}  # the search's; every number is fp32
    if result.passes is not None:
        record["passes"] = result.passes
    if "batch_size_after_oom" in result.info:
        record["batch_size_after_oom"] = result.info["batch_size_after_oom"]
    if per_class is not None:
        record["eps_per_class"] = per_class
    if embedding is not None:
        broken = [result.success[e] & result.clean_correct for e in range(len(result.eps))]
        record["threat"] = "embedding"
        record["embedding"] = str(embedding[0])
        record["pixel_norm"] = result.info["pixel_norm"]
        record["pixel_eps"] = result.info["pixel_eps"]
        record["median_pixel_norm"] = [float(d[b].median()) if b.any() else float("nan")
                                       for d, b in zip(result.info["pixel_distances"], broken)]
    return record


def save_attack(out: str | os.PathLike, x: torch.Tensor, result, classes, record: dict[str, Any],
                per_grid: int = 8) -> Path:
    """Adversarial examples and logits as safetensors, the record as JSON, one PNG grid per epsilon."""
    from ..plotting import adversarial_grid, fooled_first

    out = Path(out)
    x = result.info.get("start", x)  # fooling images start from noise or blank, not from the test points
    tensors = {"x": x, "x_adv": result.x_adv, "logits": result.logits, "y": result.y,
               "clean_logits": result.clean_logits}
    save_tensors(out / rundir.EXAMPLES_FILE, tensors, {"eps": ",".join(map(str, result.eps))})
    write_json(out / rundir.RESULT_FILE, record)
    probs = result.logits.softmax(2)  # (E, N, K)
    for e, eps in enumerate(result.eps):
        # Fooled points first: they are what the grid is for.
        idx = fooled_first(result.success[e] & result.clean_correct, per_grid)
        adversarial_grid(x[idx], result.x_adv[e][idx], result.y[idx], probs[e][idx].argmax(1),
                         probs[e][idx].amax(1), classes, out / rundir.grid_png(eps),
                         title=f"{result.attack} {result.norm} eps={eps:g}")
    return out
