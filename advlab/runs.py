"""Run directories: `model.safetensors` plus `card.json`, written atomically, loaded without pickle.

The names of everything a run directory holds are in advlab.rundir."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .rundir import CARD_FILE, CHECKPOINT_DIR, MODEL_FILE
from .errors import AdvlabError, CorruptFileError
from .io import load_tensors, read_json, save_tensors, write_json


def git_commit() -> str | None:
    """The commit advlab itself was installed from, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    from .version import __version__
    return {"advlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "git_commit": git_commit(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def save_run(run_dir: str | os.PathLike, model: nn.Module, card: dict[str, Any]) -> Path:
    """Write weights and card. The card must hold `model` (a model spec) for `load_run`."""
    run_dir = Path(run_dir)
    if "model" not in card or "name" not in card["model"]:
        raise ValueError("card['model'] must be a model spec from advlab.models.model_spec")
    card = {**card, "versions": environment()}
    save_tensors(run_dir / MODEL_FILE, model.state_dict())
    write_json(run_dir / CARD_FILE, card)
    return run_dir


def read_card(run_dir: str | os.PathLike) -> dict[str, Any]:
    run_dir = Path(run_dir)
    card_path = run_dir / CARD_FILE
    if not card_path.is_file():
        hint = (" (training was interrupted: rerun `advlab train` with --resume, or train_run with resume=True)"
                if (run_dir / CHECKPOINT_DIR).is_dir() else "")
        raise AdvlabError(f"{run_dir} is not a run directory: {CARD_FILE} is missing{hint}")
    return read_json(card_path)


def load_run(run_dir: str | os.PathLike, device: str | torch.device | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run from its card and weights. Returns (model in eval mode, card).

    `device`: "auto" (CUDA when available), "cpu", "cuda", "cuda:N", a torch.device, or None (the CPU)."""
    card = read_card(run_dir)
    if card.get("kind") == "embedding":
        raise AdvlabError(f"{run_dir} is an embedding run (a triplet network), not a classifier; use it as a "
                          "threat (`advlab attack --run CLASSIFIER --threat embedding --embedding RUN`) or load it with "
                          "advlab.metric.load_embedding")
    if card.get("kind") == "external":  # the user's own model: rebuilt from its spec and weights file
        from .models.external import load_external_model
        info = card["model"]
        norm = info.get("normalize") or {}
        zoo = info.get("zoo") or {}
        if zoo:  # RobustBench's model: rebuilt from its zoo name, leaderboard and checkpoint folder
            from .models.robustbench_zoo import load_robustbench_model
            model, _ = load_robustbench_model(info["spec"], dataset=zoo["dataset"], norm=zoo["norm"],
                                              model_dir=zoo["model_dir"], expected_sha256=info.get("weights_sha256"))
        else:
            model, _ = load_external_model(info["spec"], weights=info.get("weights"),
                                           model_args=info.get("model_args"), mean=norm.get("mean"),
                                           std=norm.get("std"), input_shape=info["input_shape"],
                                           num_classes=info["num_classes"], expected_sha256=info.get("weights_sha256"))
    else:
        model = _load_trained(run_dir, card)
    if device is not None:
        from .device import resolve_device
        model.to(resolve_device(device))
    return model.eval(), card


def _load_trained(run_dir: str | os.PathLike, card: dict[str, Any]) -> nn.Module:
    model = build_model_from_card(card)
    state = load_tensors(Path(run_dir) / MODEL_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CorruptFileError(f"{run_dir}: weights do not match the architecture in {CARD_FILE}: {e}") from e
    return model


def check_same_data(card: dict[str, Any], ds, where: str | os.PathLike) -> None:
    """Refuse a classifier run (its `card`) trained on data of another input shape or number of classes than `ds`
    (anything with `name`, `input_shape` and `num_classes`); `where` names the run in the message."""
    info = card.get("dataset", {})
    if list(info.get("input_shape", [])) != list(ds.input_shape) or info.get("num_classes") != ds.num_classes:
        raise AdvlabError(f"{where} was trained on {info.get('name')} (input shape {info.get('input_shape')}, "
                          f"{info.get('num_classes')} classes), which does not match {ds.name} "
                          f"{list(ds.input_shape)} with {ds.num_classes} classes")


def build_model_from_card(card: dict[str, Any]) -> nn.Module:
    from .models import build_from_spec
    if card.get("kind") == "acgan":
        raise AdvlabError("this run directory holds an AC-GAN, not a classifier: load it with "
                          "advlab.generative.load_gan, or use it with `advlab generate sample|attack --gan`")
    return build_from_spec(card["model"])


def dataset_from_card(card: dict[str, Any], data_dir: str | os.PathLike | None = None):
    """The dataset a run was trained on: generated ones are rebuilt from their parameters."""
    from .data import load_dataset
    from .data.datasets import FILE_BASED, TEST_ONLY

    info = card["dataset"]
    if info["name"] in TEST_ONLY:  # imagenet: read from the folder it was found in unless data_dir says otherwise
        params = info.get("params", {})
        return load_dataset(info["name"], data_dir=data_dir or params["source"],
                            **{k: params[k] for k in ("preprocess", "subset") if k in params})
    if "format" in info.get("params", {}):  # the user's own file or folder (--data)
        from .data.files import load_data_path
        bounds = tuple(info["bounds"]) if info.get("bounds") else None
        read = info["params"].get("labels", "name")  # folders numbered by class: matched by number again
        classes = len(info["classes"]) if read == "number" else list(info["classes"])
        return load_data_path(info["params"]["path"], classes=classes, bounds=bounds,
                              labels="filename" if read == "filename" else "folder",
                              preprocess=info["params"].get("preprocess"))
    if info["name"] in FILE_BASED:
        return load_dataset(info["name"], data_dir=data_dir)
    return load_dataset(info["name"], **info.get("params", {}))
