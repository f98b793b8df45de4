"""What an attack, an evaluation or a certificate runs on: a model, its data and a device.

    subject = open_subject(run="runs/digits-cnn", device="auto")
    subject = open_subject(model="nets.py:resnet", weights="ckpt.pt", data="test.npz", mean=[0.5], std=[0.5])

Either a run directory (`advlab train`'s) or the user's own model (`--model SPEC --weights FILE`,
see advlab.models.external). The data is the run's dataset unless `dataset` (a name) or `data` (an
.npz/.safetensors file or an image folder, see advlab.data.files) says otherwise. An external
model gets a run directory of its own, like a trained one: `card.json` records the spec, the
weights' path and SHA-256 and the data, results go below it (eval/, attacks/), `advlab report`
renders it, and `load_run` rebuilds the model from it (checking the weights have not changed).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .data import Dataset, load_dataset, rows
from .device import describe, resolve_device
from .errors import AdvlabError
from .rundir import CARD_FILE
from .io import write_json
from .records import DataInfo, ModelInfo, SubjectInfo
from .runs import dataset_from_card, environment, load_run, read_card


@dataclass
class Subject:
    model: nn.Module                 # in eval mode, on `device`
    card: dict[str, Any]
    data: Dataset
    device: torch.device
    run_dir: Path                    # where results go by default
    model_record: ModelInfo = field(default_factory=ModelInfo)  # {"spec", "weights_sha256"} for results

    def record(self) -> SubjectInfo:
        """What results record about the model, the data and the device."""
        return SubjectInfo(model=self.model_record, device=describe(self.device), data=_data_record(self.data))

    def identity(self) -> dict[str, Any]:
        """What a saved evaluation state must match to be resumed (not the device: results do not depend on it
        beyond floating-point noise, and a run started on a GPU may finish on the CPU)."""
        return {"run": str(self.run_dir.resolve()), "model": self.model_record, "data": _data_record(self.data)}


def open_subject(*, run: str | Path | None = None, model: str | None = None, weights: str | Path | None = None,
                 model_args: dict[str, Any] | None = None, mean: list[float] | None = None,
                 std: list[float] | None = None, dataset: str | None = None, dataset_args: dict[str, Any] | None = None,
                 data: str | Path | None = None, classes: Any = None, bounds: Any = "auto", labels: str = "folder",
                 preprocess: str | None = None, workers: int | None = None,
                 data_dir: str | Path | None = None, device: str | torch.device | None = "auto",
                 run_dir: str | Path | None = None, norm: str | None = None,
                 model_dir: str | Path | None = None) -> Subject:
    """`run_dir` (an external model only): its run directory, default runs/FUNCTION-HASH. `preprocess` (an image
    folder, or dataset='imagenet'): read the images lazily through that RobustBench preprocessing
    (advlab.data.preprocessing); `workers`: the processes that decode them. `norm` and `model_dir` are for
    `model=robustbench:NAME`: the leaderboard's threat model (linf, l2) and where its checkpoints lie
    (advlab.models.robustbench_zoo); `dataset` names its leaderboard's dataset, and an ImageNet model's
    images go through RobustBench's preprocessing for it unless `preprocess` says otherwise."""
    if (run is None) == (model is None):
        raise AdvlabError("give either `run=RUN_DIR` (a model trained by advlab) or `model=SPEC` (your own model), "
                          "not both" if run is not None else
                          "give `run=RUN_DIR` (a model trained by advlab) or `model=SPEC` (your own model, e.g. "
                          "`model=nets.py:build` `weights=ckpt.pt` `dataset=cifar10`)")
    if dataset is not None and data is not None:
        raise AdvlabError("give either `dataset=NAME` or `data=FILE_OR_DIR`, not both")
    dev = resolve_device(device)  # fail on a missing GPU before loading anything
    if run is not None:
        for param, value in (("weights", weights), ("model_args", model_args), ("mean", mean), ("std", std)):
            if value:
                raise AdvlabError(f"`{param}` belongs to `model` (your own model); a run directory holds its weights")
        card = read_card(run)
        ds = _load_data(dataset, dataset_args, data, classes, bounds, labels, preprocess, workers, data_dir,
                        model_classes=card.get("dataset", {}).get("classes")) \
            if (dataset or data) else dataset_from_card(card, data_dir)
        net, card = load_run(run)
        if dataset or data:
            _check_fits(card, ds, f"the run {run}")
        record = {"run": str(run), "spec": card["model"].get("spec", card["model"]["name"]),
                  "weights_sha256": card["model"].get("weights_sha256")}
        if card["model"].get("zoo"):
            record["zoo"] = {k: card["model"]["zoo"].get(k) for k in ZOO_RECORD}
        return Subject(net.to(dev), card, ds, dev, Path(run), record)
    if dataset is None and data is None:
        raise AdvlabError(f"`model={model}` needs data: `dataset=NAME` (e.g. cifar10) or `data=FILE_OR_DIR` "
                          "(.npz, .safetensors or an image folder)")
    from .models.external import ROBUSTBENCH_PREFIX, absolute_spec, check_classifier, load_external_model
    zoo = isinstance(model, str) and model.strip().startswith(ROBUSTBENCH_PREFIX)
    if isinstance(model, str) and not zoo:
        model = absolute_spec(model)  # the card and the recorded command find the file from any folder
    if zoo and dataset is None:
        raise AdvlabError(f"`model={model}` needs `dataset` cifar10, cifar100 or imagenet (its leaderboard's data), "
                          "not `data`")
    if not zoo and model_dir is not None:
        raise AdvlabError("`model_dir` is where RobustBench's checkpoints lie, for `model=robustbench:NAME`; "
                          f"`model={model}` takes its weights from `weights`")
    if zoo:  # the model first: a missing checkpoint or a wrong name fails before the data is read
        for param, value in (("weights", weights), ("model_args", model_args), ("mean", mean), ("std", std)):
            if value:
                raise AdvlabError(f"`{param}` is not for `model={model.strip()}`: RobustBench's models build their "
                                  "own architecture and normalisation, and their weights come from `model_dir`")
        from .models.robustbench_zoo import load_robustbench_model
        net, info = load_robustbench_model(model, dataset=dataset, norm=norm, model_dir=model_dir)
        if dataset == "imagenet" and preprocess is None:
            preprocess = info["zoo"]["preprocess"]  # as RobustBench evaluates this model
    ds = _load_data(dataset, dataset_args, data, classes, bounds, labels, preprocess, workers, data_dir)
    if not zoo:
        net, info = load_external_model(model, weights=weights, model_args=model_args, mean=mean, std=std,
                                        input_shape=ds.input_shape, num_classes=ds.num_classes)
    net = net.to(dev)
    check_classifier(net, rows(ds.x_test[:4]), ds.num_classes, f"`model={model}`")
    info.update(name=model, input_shape=list(ds.input_shape), num_classes=ds.num_classes)
    card = {"kind": "external", "model": info, "dataset": ds.describe(), "defense": {"name": "unknown"}}
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / external_run_name(info)
    _write_card(run_dir, card)
    record = {"spec": model, "weights": info["weights"], "weights_sha256": info["weights_sha256"]}
    if zoo:
        record["zoo"] = {k: info["zoo"][k] for k in ZOO_RECORD}
    return Subject(net, card, ds, dev, run_dir, record)


# What results record of a zoo model (the card has all of advlab.models.robustbench_zoo's info).
ZOO_RECORD = ("source", "name", "dataset", "threat", "preprocessing")


def external_run_name(info: dict[str, Any]) -> str:
    """runs/<function>-<hash of spec, options, weights and normalisation>: one folder per model."""
    fields = {k: info[k] for k in ("spec", "model_args", "weights_sha256", "normalize")}
    if info.get("zoo"):  # the same name on two leaderboards is two models
        fields["zoo"] = [info["zoo"]["dataset"], info["zoo"]["threat"]]
    key = json.dumps(fields, sort_keys=True, default=str)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", info["spec"].rpartition(":")[2] or info["spec"]).strip("-.") or "model"
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _write_card(run_dir: Path, card: dict[str, Any]) -> None:
    path = run_dir / CARD_FILE
    if path.is_file():
        old = read_card(run_dir)
        same = ("spec", "model_args", "weights_sha256", "normalize")
        from .models.external import absolute_spec
        previous = {**old.get("model", {}), "spec": absolute_spec(old.get("model", {}).get("spec", ""))}
        if old.get("kind") != "external" or any(previous.get(k) != card["model"][k] for k in same):
            raise AdvlabError(f"{run_dir} already holds another model's run ({old.get('model', {}).get('name')}); "
                              "choose another `run_dir` or remove it")
        if old.get("dataset") == card["dataset"]:
            return
    write_json(path, {**card, "versions": environment()})


def _load_data(dataset, dataset_args, data, classes, bounds, labels, preprocess, workers, data_dir,
               model_classes=None) -> Dataset:
    """model_classes: the class names the model was trained with, matched to an image folder's sub-folders."""
    if data is not None:
        from .data.files import load_data_path
        return load_data_path(data, classes=classes, bounds=bounds, labels=labels, model_classes=model_classes,
                              preprocess=preprocess, workers=workers)
    if classes is not None or bounds != "auto" or labels != "folder":
        raise AdvlabError("`classes`, `bounds` and `labels` describe a `data` file or folder; a named `dataset` "
                          "knows its own")
    from .data.datasets import TEST_ONLY
    args = dict(dataset_args or {})
    if dataset in TEST_ONLY:
        args.update({k: v for k, v in (("preprocess", preprocess), ("workers", workers)) if v is not None})
    elif preprocess is not None or workers is not None:
        raise AdvlabError(f"`preprocess` and `workers` read image folders lazily (`data=DIR`, or `dataset=imagenet`); "
                          f"dataset {dataset!r} is held in memory as it is")
    return load_dataset(dataset, data_dir=data_dir, **args)


def _check_fits(card: dict[str, Any], ds: Dataset, what: str) -> None:
    shape, k = list(card["model"]["input_shape"]), card["model"]["num_classes"]
    if shape != list(ds.input_shape) or k != ds.num_classes:
        raise AdvlabError(f"{what} takes inputs of shape {tuple(shape)} with {k} classes, but the data "
                          f"({ds.name}) has shape {ds.input_shape} and {ds.num_classes} classes")


def _data_record(ds: Dataset) -> DataInfo:
    keep = ("path", "format", "sha256", "source", "labels", "preprocess", "subset")
    return cast(DataInfo, {"name": ds.name, "n_test": len(ds.y_test), "input_shape": list(ds.input_shape),
                           **{k: v for k, v in ds.params.items() if k in keep}})
