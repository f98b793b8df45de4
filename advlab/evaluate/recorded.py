"""Adversarial examples a run directory already holds, as the first attack of an evaluation.

    sources = recorded_sources("runs/digits-cnn", norm="linf", exclude=["runs/digits-cnn/eval/fast-linf"])
    ev = evaluate_robustness(model, x, y, [0.1], [*sources, *get_suite("fast")], ...)

An evaluation is the per-example worst case over everything recorded in the run at the same threat:
examples saved by `advlab attack --save` (RUN/attacks/NAME-NORM/adversarial.safetensors), by earlier
evaluations (RUN/eval/SUITE-NORM/adversarial.safetensors) and transferred from other models
(RUN/transfer/ATTACK-from-SOURCE-NORM/, the same format; `save_transfer`). A recorded example counts for a point when

- its clean input and label are the point's, bit for bit (rows are matched by content, so any subset
  or order of the test set works);
- it lies in the point's ball (distance <= eps, up to float rounding; it is then projected, so what
  is scored is inside the ball and the bounds exactly);
- the model misclassifies it when asked again now (saved logits only pick the candidates).

The report applies the same rule to examples recorded *after* an evaluation (`fold_record`, from
saved logits: the report does not load the model), so it never shows a worst case above an attack
on the same page.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import rundir
from ..attacks.base import Attack
from ..attacks.result import BatchOutput
from ..errors import AdvlabError
from ..io import load_tensors, read_json, read_metadata, read_record, save_tensors, write_json
from ..predict import model_device
from ..progress import write
from ..threat import LpBall
from .stats import clopper_pearson, per_class_accuracy
from .suites import SuiteEntry

RECORD_FILE = rundir.RESULT_FILE
KINDS = rundir.RECORDED_KINDS  # sub-directories of a run that hold recorded examples


def within(distance: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """distance <= eps up to float32 rounding of the saved example (it is projected afterwards)."""
    return distance <= eps * (1 + 1e-5) + 1e-6


def _row_keys(x: torch.Tensor) -> list[bytes]:
    flat = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def _threat_of(record: dict[str, Any]) -> str | None:
    """The Lp norm a recorded file's examples were made under, or None when it is not an Lp ball
    (embedding threat, spatial transformations, fooling images that start from noise)."""
    if record.get("threat", "lp") != "lp" or record.get("attack") == "fooling":
        return None
    norm = record.get("norm")
    return norm if norm in ("linf", "l2", "l1") else None


@dataclass(frozen=True)
class RecordedEntry(SuiteEntry):
    """One recorded file as a suite entry: built into a `RecordedExamples`, an attack that proposes what the file holds."""

    def build(self, norm: str, seed: int = 0) -> "RecordedExamples":
        return RecordedExamples(Path(self.options["path"]), norm)


def recorded_sources(run_dir: str | os.PathLike, norm: str, exclude: Sequence[str | os.PathLike] = ()
                     ) -> list[RecordedEntry]:
    """Every RUN/attacks/*/ and RUN/eval/*/ holding adversarial examples made under `norm`, except
    the directories in `exclude` (an evaluation does not read what it is about to overwrite)."""
    root = Path(run_dir)
    skip = {Path(p).resolve() for p in exclude}
    out = []
    for kind in KINDS:
        for path in sorted((root / kind).glob(f"*/{rundir.EXAMPLES_FILE}")):
            if path.parent.resolve() in skip or not (path.parent / RECORD_FILE).is_file():
                continue
            try:
                record = read_json(path.parent / RECORD_FILE)
            except (OSError, AdvlabError):
                continue
            if not isinstance(record, dict) or _threat_of(record) != norm:
                continue
            stat = path.stat()
            label = f"recorded {kind}/{path.parent.name}"
            # Size and modification time make the evaluation's resume identity change when the file does.
            out.append(RecordedEntry(label, "recorded", {"path": str(path), "bytes": stat.st_size,
                                                        "mtime_ns": stat.st_mtime_ns}))
    return out


class _Examples:
    """A recorded file, loaded: clean rows indexed by content, adversarial candidates per budget."""

    def __init__(self, path: Path):
        t = load_tensors(path)
        missing = {"x", "x_adv", "logits", "y"} - set(t)
        if missing:
            raise AdvlabError(f"{path} lacks {sorted(missing)}: not a file of recorded adversarial examples")
        self.x, self.x_adv, self.logits, self.y = t["x"], t["x_adv"], t["logits"], t["y"].long()
        if self.x_adv.ndim == self.x.ndim:  # one budget saved without its axis
            self.x_adv, self.logits = self.x_adv[None], self.logits[None]
        self.index = {k: i for i, k in enumerate(_row_keys(self.x))}
        self.fooled = self.logits.argmax(2) != self.y[None]  # (E, M): candidates, by the saved logits

    def match(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(n,) index of each row of x in this file, -1 where it is not there (or its label differs)."""
        rows = torch.tensor([self.index.get(k, -1) for k in _row_keys(x)], dtype=torch.long)
        found = rows >= 0
        ok = torch.zeros(len(x), dtype=torch.bool)
        if found.any():
            j = rows[found]
            ok[found] = (self.y[j] == y.cpu()[found]) & (self.x[j].reshape(len(j), -1)
                                                         == x.cpu()[found].reshape(len(j), -1)).all(1)
        return torch.where(ok, rows, torch.full_like(rows, -1))


class RecordedExamples(Attack):
    """A recorded file as a source of proposals, run by the harness like any attack: for each point and
    budget, the file's examples that fit its ball and fooled the model when recorded, projected into the
    ball and scored again; the first that still fools the model breaks the point (else it keeps its
    clean input). Costs one forward pass per candidate (and the harness's clean pass per point), no gradients."""

    name = "recorded"
    needs_gradients = False
    searches_every_budget = True  # every budget picks from the same recorded candidates

    def __init__(self, path: Path, norm: str):
        super().__init__(norm)
        self.path = path
        self._examples: _Examples | None = None
        self._unreadable = False

    @property
    def examples(self) -> _Examples | None:
        """The file, loaded once; None (said once) when it cannot be read: it then breaks nothing."""
        if self._examples is None and not self._unreadable:
            try:
                self._examples = _Examples(self.path)
            except AdvlabError as e:
                self._unreadable = True
                write(f"skipping the recorded examples in {self.path}: {e}")
        return self._examples

    @torch.no_grad()
    def _search_every_budget(self, model, x, y, targets, budgets, bounds) -> BatchOutput:
        clean = model(x).float().cpu()
        x, y = x.cpu(), y.cpu()
        rows = self.examples.match(x, y) if self.examples is not None else torch.full((len(x),), -1)
        found = [self._first_break(model, x, y, rows, e.cpu(), bounds) for e in budgets]
        x_adv = torch.stack([xe for xe, _ in found])
        logits = torch.stack([torch.where(hit[:, None], lg, clean) if lg is not None else clean
                              for (_, (hit, lg)) in found])
        distances = torch.stack([self.threat.distance(x, xe) for xe in x_adv])
        return BatchOutput(x_adv, logits, clean, distances)

    def _first_break(self, model, x, y, rows, eps, bounds):
        """At budget eps (n,): the examples ((n, ...), the clean input where nothing breaks the point) and
        (which rows broke, their logits or None)."""
        rec = self.examples
        broken = torch.zeros(len(x), dtype=torch.bool)
        x_adv = x.clone()
        logits: torch.Tensor | None = None
        for k in range(len(rec.x_adv) if rec is not None else 0):  # every recorded budget: a larger one's may fit
            todo = (rows >= 0) & ~broken
            if not todo.any():
                break
            i = todo.nonzero().flatten()
            j = rows[i]
            cand = rec.x_adv[k, j].to(x.dtype)
            fits = rec.fooled[k, j] & within(self.threat.distance(x[i], cand), eps[i])
            if not fits.any():
                continue
            i, cand = i[fits], cand[fits]
            cand = self.threat.enforce(x[i], cand, eps[i], bounds)
            out = model(cand.to(model_device(model))).float().cpu()
            if logits is None:
                logits = torch.zeros(len(x), out.shape[1])
            hit = self.goal.met(out, y[i], None)
            broken[i[hit]] = True
            x_adv[i[hit]] = cand[hit]
            logits[i[hit]] = out[hit]
        return x_adv, (broken, logits)


# -- what an evaluation leaves for the next one and for the report --------------------------------------------
def save_examples(out: str | os.PathLike, x: torch.Tensor, ev, eps) -> Path:
    """OUT/adversarial.safetensors: the evaluation's examples in `advlab attack --save`'s format, plus
    which attack broke each point (broken_by, labels in the metadata) and each point's budget (`eps`: the
    budgets the evaluation was given)."""
    from ..attacks.budget import per_example_budgets

    eps = per_example_budgets(eps, len(x))
    path = Path(out) / rundir.EXAMPLES_FILE
    save_tensors(path, {"x": x, "x_adv": ev.x_adv, "logits": ev.logits, "y": ev.y, "clean_logits": ev.clean_logits,
                        "broken_by": ev.broken_by, "eps": torch.stack([torch.as_tensor(e).float() for e in eps])},
                 {"eps": ",".join(map(str, ev.eps)), "labels": json.dumps(["clean mistake", *ev.attacks])})
    return path


def save_transfer(run_dir: str | os.PathLike, source: str, x: torch.Tensor, scored, norm: str) -> Path:
    """RUN/transfer/ATTACK-from-SOURCE-NORM/: examples crafted on model `source`, with this run's model's
    logits on them (`scored`: the AttackResult a transfer scored on this model), for later evaluations
    and the report."""
    out = rundir.transfer_examples_dir(run_dir, scored.attack, source, norm)
    save_tensors(out / rundir.EXAMPLES_FILE, {"x": x, "x_adv": scored.x_adv, "logits": scored.logits,
                                       "y": scored.y, "clean_logits": scored.clean_logits},
                 {"eps": ",".join(map(str, scored.eps))})
    write_json(out / RECORD_FILE, {"attack": f"{scored.attack} transferred from {source}", "norm": norm,
                                   "threat": "lp", "n": len(scored.y), "source": source,
                                   "results": scored.summary()})
    return out


def fold_record(run_dir: str | os.PathLike, eval_dir: str | os.PathLike, record: dict[str, Any]) -> dict[str, Any]:
    """The evaluation `record` (result.json) with every example recorded in `run_dir` at its threat
    folded in from saved logits (the report does not load the model): per budget the robust accuracy,
    its interval, per-class accuracy and `broken_by` (a recorded source that broke points the
    evaluation left robust gets its own entry). Unchanged when nothing new breaks a point or when
    the evaluation left no examples (older versions)."""
    saved = _saved_evaluation(Path(eval_dir), record)
    if saved is None:
        return record
    x, y, broken_by, eps, labels = saved
    threat = LpBall(record["norm"])
    sha = (record.get("model") or {}).get("weights_sha256")
    changed = False
    for source in recorded_sources(run_dir, record["norm"], exclude=[eval_dir]):
        src_dir = Path(source.options["path"]).parent
        src_sha = ((read_record(src_dir / RECORD_FILE) or {}).get("model") or {}).get("weights_sha256")
        if sha and src_sha and sha != src_sha:
            continue  # examples made on other weights say nothing about this model
        try:
            rec = _Examples(Path(source.options["path"]))
        except AdvlabError:
            continue
        changed |= _mark_breaks(rec, source.label, threat, x, y, eps, broken_by, labels)
    return _refolded(record, broken_by, labels, y) if changed else record


def _saved_evaluation(eval_dir: Path, record: dict[str, Any]):
    """(x, y, broken_by, eps, labels) the evaluation saved beside `record`, or None when it saved none
    this version can read (older versions, another threat)."""
    path = eval_dir / rundir.EXAMPLES_FILE
    if not path.is_file() or record.get("norm") not in ("linf", "l2", "l1"):
        return None
    try:
        t = load_tensors(path)
        labels = json.loads(read_metadata(path).get("labels", "[]"))
    except (AdvlabError, ValueError):
        return None
    if not {"x", "y", "broken_by", "eps"} <= set(t) or len(t["broken_by"]) != len(record["results"]):
        return None
    labels = list(labels) if len(labels) else ["clean mistake"]
    return t["x"], t["y"].long(), t["broken_by"].clone(), t["eps"], labels


def _mark_breaks(rec: _Examples, label: str, threat: LpBall, x: torch.Tensor, y: torch.Tensor,
                 eps: torch.Tensor, broken_by: torch.Tensor, labels: list[str]) -> bool:
    """Credit `label` with the points of `rec` that break what the evaluation left robust, per budget
    (in place in `broken_by` and `labels`); whether any did."""
    rows = rec.match(x, y)
    changed = False
    for e in range(len(broken_by)):
        todo = (rows >= 0) & (broken_by[e] < 0)
        if not todo.any():
            continue
        i = todo.nonzero().flatten()
        j = rows[i]
        hit = torch.zeros(len(i), dtype=torch.bool)
        for k in range(len(rec.x_adv)):
            d = threat.distance(x[i], rec.x_adv[k, j].to(x.dtype))
            hit |= rec.fooled[k, j] & within(d, eps[e, i])
        if hit.any():
            if label not in labels:
                labels.append(label)
            broken_by[e, i[hit]] = labels.index(label)
            changed = True
    return changed


def _refolded(record: dict[str, Any], broken_by: torch.Tensor, labels: list[str], y: torch.Tensor) -> dict[str, Any]:
    """`record` with its per-budget numbers recomputed from `broken_by`."""
    k = len(record.get("classes") or []) or int(y.max()) + 1
    results = []
    for e, r in enumerate(record["results"]):
        robust = broken_by[e] < 0
        counts = {name: int((broken_by[e] == c).sum()) for c, name in enumerate(labels)}
        results.append({**r, "robust_accuracy": robust.float().mean().item(),
                        "ci95": list(clopper_pearson(int(robust.sum()), len(robust))),
                        "per_class": per_class_accuracy(robust, y, k), "broken_by": counts,
                        "folded": True})
    folded = {**record, "results": results, "folded_recorded": True}
    if isinstance(record.get("summary"), dict):
        folded["summary"] = {**record["summary"], "robust_accuracy": [r["robust_accuracy"] for r in results],
                             "ci95": [r["ci95"] for r in results]}
    return folded


__all__ = ["RecordedEntry", "RecordedExamples", "fold_record",
           "recorded_sources", "save_examples", "save_transfer", "within"]
