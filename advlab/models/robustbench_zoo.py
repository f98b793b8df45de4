"""RobustBench's model zoo by name: `--model robustbench:NAME --dataset cifar10|cifar100|imagenet --norm linf|l2`.

    net, info = load_robustbench_model("Wong2020Fast", dataset="cifar10", norm="linf")

The architecture is RobustBench's own: its registry (robustbench.model_zoo) builds the network, which
takes images in [0, 1] and normalises inside itself, so epsilon stays in raw pixel units as everywhere
in advlab. The checkpoint lies where RobustBench keeps it, MODEL_DIR/DATASET/THREAT/NAME.pt (THREAT
`Linf` or `L2`; an ensemble's members NAME.pt_m0.pt, NAME.pt_m1.pt, ...; default MODEL_DIR
~/.cache/advlab/robustbench), and is downloaded through RobustBench (Google Drive) when missing and the
network allows. advlab reads it itself with torch.load(weights_only=True), never unpickling anything but
tensors in plain containers, then applies RobustBench's own key conventions (its prefix stripping and
the architectures whose checkpoints lack normalisation buffers). ImageNet models come with the
preprocessing RobustBench evaluates them with (`preprocess_for`: advlab's --preprocess name).

robustbench 1.1.1 as published imports AutoAttack as `autoattack`, while the distribution it depends on
(pyautoattack, the same code) installs the module as `pyautoattack`: advlab registers the second under
the first name when only it is present, so the package imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AdvlabError
from .external import ROBUSTBENCH_PREFIX, file_sha256, import_optional, read_checkpoint

DATASETS = ("cifar10", "cifar100", "imagenet")
THREATS = {"linf": "Linf", "l2": "L2"}  # advlab's norm -> RobustBench's threat model (its folder name)
EXTRA = "pip install 'advlab[robustbench]'"
# RobustBench's preprocessing names (robustbench.data.PREPROCESSINGS) -> advlab's --preprocess names.
PREPROCESS = {"Res256Crop224": "res256crop224", "Crop288": "crop288", "Res224": "res224",
              "BicubicRes256Crop224": "bicubicres256crop224"}
# Facts about RobustBench's checkpoints that its load_model states inline (robustbench 1.1.x):
LAST_KEY = ("Kireev2021Effectiveness", "Andriushchenko2020Understanding")  # the weights are under "last"
SWIN_FILTERED = ("Liu2023Comprehensive_Swin-B", "Liu2023Comprehensive_Swin-L", "Mo2022When_Swin-B",
                 "RodriguezMunoz2024Characterizing_Swin-B", "RodriguezMunoz2024Characterizing_Swin-L")
IMAGENET_UNPREFIXED = ("Singh2023Revisiting_ConvNeXt-T-ConvStem", "Singh2023Revisiting_ViT-B-ConvStem",
                       "Singh2023Revisiting_ConvNeXt-S-ConvStem", "Singh2023Revisiting_ConvNeXt-B-ConvStem",
                       "Singh2023Revisiting_ConvNeXt-L-ConvStem", "Peng2023Robust", "Chen2024Data_WRN_50_2",
                       "Xu2024MIMIR_Swin-B", "Xu2024MIMIR_Swin-L")  # the rest get a "model." prefix (normaliser first)
UNSUPPORTED_ENSEMBLES = ("Bai2023Improving", "Bai2024MixedNUTS")  # members of different kinds, loaded one by one


def default_model_dir() -> Path:
    """~/.cache/advlab/robustbench (under $XDG_CACHE_HOME when set)."""
    from ..data.locate import cache_dir
    return cache_dir() / "robustbench"


def threat_of(norm: str | None, spec: str = "robustbench:NAME") -> str:
    """RobustBench's threat model (`Linf`, `L2`) for advlab's norm."""
    if norm not in THREATS:
        raise AdvlabError(f"`model={spec}` needs `norm` linf or l2: the leaderboard (threat model) the model is "
                          f"from{'' if norm is None else f', got {norm!r}'}")
    return THREATS[norm]


def checkpoint_path(model_dir: str | Path | None, dataset: str, norm: str, name: str) -> Path:
    """Where RobustBench keeps NAME's checkpoint: MODEL_DIR/DATASET/THREAT/NAME.pt."""
    root = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    return root / dataset / threat_of(norm) / f"{name}.pt"


def preprocess_for(name: str, dataset: str, norm: str) -> str | None:
    """The preprocessing RobustBench evaluates NAME with, as advlab's --preprocess name (`res256crop224`,
    ...), or None where the images are used as they are (CIFAR: ToTensor only)."""
    entry = zoo_entry(name, dataset, norm)
    return PREPROCESS.get(entry.get("preprocessing")) if dataset == "imagenet" else None


def zoo_entry(name: str, dataset: str | None, norm: str | None) -> dict[str, Any]:
    """RobustBench's registry entry for NAME on the leaderboard (dataset, norm): {"model", "gdrive_id", ...}."""
    spec = f"{ROBUSTBENCH_PREFIX}{name}"
    if dataset not in DATASETS:
        raise AdvlabError(f"`model={spec}` needs `dataset` {', '.join(DATASETS)}: the leaderboard the model is from"
                          f"{'' if dataset is None else f', got {dataset!r}'}")
    threat = threat_of(norm, spec)
    import_robustbench(spec)
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    boards = model_dicts[BenchmarkDataset(dataset)]
    if ThreatModel(threat) not in boards:
        raise AdvlabError(f"RobustBench has no {dataset} {threat} leaderboard (it has "
                          f"{', '.join(t.value for t in boards if t.value in THREATS.values())}); choose another `norm`")
    models = boards[ThreatModel(threat)]
    if name not in models:
        import difflib
        close = difflib.get_close_matches(name, list(models), n=3, cutoff=0.5)
        raise AdvlabError(f"`model={spec}`: RobustBench's {dataset} {threat} zoo has no {name!r} "
                          f"({len(models)} models{'; did you mean ' + ', '.join(close) if close else ''}); "
                          f"robustbench.model_zoo.model_dicts lists them")
    return models[name]


def load_robustbench_model(name: str, *, dataset: str | None, norm: str | None, model_dir: str | Path | None = None,
                           expected_sha256: str | None = None, download: bool | None = None,
                           ) -> tuple[nn.Module, dict[str, Any]]:
    """(RobustBench's NAME in eval mode on the CPU, with its checkpoint loaded; info for results and cards).
    NAME may carry the spec's `robustbench:` prefix.

    `download`: fetch a missing checkpoint through RobustBench (default: unless $ADVLAB_OFFLINE is set)."""
    name = name.strip().removeprefix(ROBUSTBENCH_PREFIX)
    spec = f"{ROBUSTBENCH_PREFIX}{name}"
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise AdvlabError(f"`model={spec}`: name a model of RobustBench's zoo after the colon, e.g. "
                          "robustbench:Carmon2019Unlabeled")
    entry = zoo_entry(name, dataset, norm)
    threat = THREATS[norm]
    rb = importlib.import_module("robustbench.utils")  # imported by zoo_entry
    ids = entry.get("gdrive_id")
    if not ids:  # '' or None: RobustBench builds it with weights torchvision or timm download themselves
        raise AdvlabError(f"`model={spec}`: RobustBench builds this model with weights that torchvision or timm "
                          "download when it is built, not from a checkpoint in `model_dir`; advlab does not load it "
                          "(for a torchvision or timm architecture use torchvision:NAME or timm:NAME with `weights`)")
    if isinstance(ids, list) and name.startswith(UNSUPPORTED_ENSEMBLES):
        raise AdvlabError(f"`model={spec}`: an ensemble whose members RobustBench loads one by one in its own way; "
                          "advlab does not load it yet")
    path = checkpoint_path(model_dir, dataset, norm, name)
    paths = [path] if not isinstance(ids, list) else [path.with_name(f"{path.name}_m{i}.pt") for i in range(len(ids))]
    if download is None:
        download = not os.environ.get("ADVLAB_OFFLINE")
    for file, gdrive_id in zip(paths, ids if isinstance(ids, list) else [ids]):
        if not file.is_file():
            _fetch(rb, spec, gdrive_id, file, download)
    hashes = [file_sha256(p) for p in paths]
    sha = hashes[0] if len(paths) == 1 else \
        hashlib.sha256("".join(f"{p.name}\t{h}\n" for p, h in zip(paths, hashes)).encode()).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise AdvlabError(f"{path} has changed since this run was recorded (SHA-256 {sha[:12]}, recorded "
                          f"{expected_sha256[:12]}); evaluate it again with `model` as a new run")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # building draws random weights: not ours
        warnings.simplefilter("ignore")
        try:
            net = entry["model"]()
        except Exception as e:  # RobustBench's code: say which model, in one line
            raise AdvlabError(f"`model={spec}`: building RobustBench's architecture failed: "
                              f"{type(e).__name__}: {_first_line(e)}") from e
    if isinstance(ids, list):
        for i, file in enumerate(paths):
            state = _state_dict(read_checkpoint(file, None), name, dataset, file, ensemble=True)
            _load(rb, net.models[i], name, state, dataset, file)
    else:
        state = _state_dict(read_checkpoint(path, None), name, dataset, path, ensemble=False)
        if dataset == "imagenet":
            state = _imagenet_keys(rb, net, name, state)
        _load(rb, net, name, state, dataset, path)
    for key, value in net.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise AdvlabError(f"{path}: {key} contains NaN or inf; the checkpoint is broken, and no robustness number "
                              "computed from it would mean anything")
    rb_name = entry.get("preprocessing") if dataset == "imagenet" else None
    zoo = {"source": "robustbench", "name": name, "dataset": dataset, "threat": threat, "norm": norm,
           "model_dir": str(path.parents[2].resolve()), "checkpoints": [str(p.resolve()) for p in paths],
           "checkpoint_sha256": hashes, "preprocessing": rb_name, "preprocess": PREPROCESS.get(rb_name),
           "inputs": "images in [0, 1]; the model normalises them itself",
           "robustbench_version": _version("robustbench")}
    info = {"external": True, "spec": spec, "model_args": {}, "weights": str(path.resolve()), "weights_sha256": sha,
            "normalize": None, "zoo": zoo}
    return net.eval(), info


def _fetch(rb, spec: str, gdrive_id: str, path: Path, download: bool) -> None:
    where = f"put RobustBench's checkpoint for it at {path} (Google Drive id {gdrive_id})"
    if not download:
        raise AdvlabError(f"`model={spec}`: no checkpoint at {path}, and the download is skipped because "
                          f"ADVLAB_OFFLINE is set; {where}")
    part = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):  # RobustBench prints progress; stdout is for --json
            rb.download_gdrive_new(gdrive_id, part)
        if not part.is_file() or part.stat().st_size == 0:
            raise OSError("nothing was downloaded")
        os.replace(part, path)
    except Exception as e:  # gdown and requests raise many kinds; every one means "not downloaded"
        part.unlink(missing_ok=True)
        raise AdvlabError(f"`model={spec}`: no checkpoint at {path}, and downloading it through RobustBench failed "
                          f"({type(e).__name__}: {_first_line(e)[:160]}); {where}") from e


def _state_dict(obj: Any, name: str, dataset: str, path: Path, ensemble: bool) -> dict[str, torch.Tensor]:
    """The tensors by name in a RobustBench checkpoint, with its prefixes stripped the way RobustBench does."""
    from robustbench.utils import rm_substr_from_state_dict
    if not ensemble and isinstance(obj, dict) and name.startswith(LAST_KEY) and "last" in obj:
        obj = obj["last"]  # RobustBench takes the last epoch's model of these (not "best")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
        raise AdvlabError(f"{path}: no state dict found (top level: {keys}); RobustBench's checkpoints hold the "
                          "tensors by name, or under state_dict")
    state = rm_substr_from_state_dict(obj, "module.")
    return state if ensemble else rm_substr_from_state_dict(state, "model.")


def _imagenet_keys(rb, net: nn.Module, name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RobustBench's ImageNet conventions: newer timm Swin key names; a "model." prefix where its wrapper puts
    the normaliser first."""
    if name in SWIN_FILTERED:
        try:
            from timm.models.swin_transformer import checkpoint_filter_fn
            state = checkpoint_filter_fn(state, net.model)
        except Exception:  # as RobustBench: an older checkpoint layout is used as it is
            pass
    if name not in IMAGENET_UNPREFIXED:
        state = rb.add_substr_to_state_dict(state, "model.")
    return state


def _load(rb, net: nn.Module, name: str, state: dict[str, torch.Tensor], dataset: str, path: Path) -> None:
    """RobustBench's loading: strict, except for the architectures whose published checkpoints lack known
    buffers (normalisation constants the architecture sets itself)."""
    from robustbench.model_zoo.enums import BenchmarkDataset
    expected = net.state_dict()
    wrong = [f"{k} {tuple(v.shape)} in the file, {tuple(expected[k].shape)} in the model"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise AdvlabError(f"{path} does not fit RobustBench's {name}: {len(wrong)} tensor(s) have the wrong shape, "
                          f"e.g. {wrong[0]}; is it the checkpoint of another model or leaderboard?")
    try:
        rb._safe_load_state_dict(net, name, state, BenchmarkDataset(dataset))
    except RuntimeError as e:
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        raise AdvlabError(f"{path} does not fit RobustBench's {name}: {_few(missing)} missing, {_few(unexpected)} "
                          "unexpected; is it the checkpoint of another model or leaderboard?") from e


def import_robustbench(spec: str):
    """robustbench.utils (with robustbench's model zoo imported), or one line saying what is wrong."""
    import_optional("torchvision", spec, EXTRA)  # a torchvision that does not fit torch: its own clear error
    import_optional("timm", spec, EXTRA)
    if importlib.util.find_spec("robustbench") is None:
        raise AdvlabError(f"`model={spec}` needs the robustbench package: {EXTRA}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _alias_autoattack()  # before robustbench's first import, so that it imports whole, once
            importlib.import_module("robustbench.model_zoo")
            return importlib.import_module("robustbench.utils")
    except ModuleNotFoundError as e:
        if e.name == "pkg_resources":
            raise AdvlabError(f"`model={spec}`: robustbench imports pkg_resources, which setuptools 81 removed: "
                              f"pip install 'setuptools<81' (the robustbench extra pins it: {EXTRA})") from e
        problem: Exception = e
    except (ImportError, RuntimeError, OSError, AttributeError) as e:
        problem = e
    raise AdvlabError(f"`model={spec}`: robustbench is installed but cannot be imported "
                      f"({type(problem).__name__}: {_first_line(problem)[:160]}); reinstall it: {EXTRA}") from problem


def _alias_autoattack() -> None:
    """robustbench imports `autoattack`; the pyautoattack distribution it requires installs that code as
    `pyautoattack`. Register it under the name robustbench imports, when no `autoattack` is installed."""
    if "autoattack" in sys.modules or importlib.util.find_spec("autoattack") is not None \
            or importlib.util.find_spec("pyautoattack") is None:
        return
    import pyautoattack
    import pyautoattack.state
    sys.modules["autoattack"] = pyautoattack
    sys.modules["autoattack.state"] = pyautoattack.state


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _first_line(e: BaseException) -> str:
    from .external import ANSI_ESCAPE
    lines = ANSI_ESCAPE.sub("", str(e)).strip().splitlines()
    return lines[0] if lines else ""


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    return f"{len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"
