"""Bring your own model: build it from a spec, load its weights safely, check it returns logits.

    model, info = load_external_model("my_models.py:resnet", weights="ckpt.pt", mean=[0.5], std=[0.5])

A spec is one of
    path/to/file.py:function      a function (or class) in a Python file: it runs the user's own code
    package.module:function       the same, importable from sys.path
    torchvision:NAME | timm:NAME  an architecture from those packages (the `advlab[zoo]` extra);
                                  weights only from --weights, nothing is downloaded
    robustbench:NAME              a model of RobustBench's zoo (the `advlab[robustbench]` extra): loaded by
                                  advlab.models.robustbench_zoo.load_robustbench_model, which needs its
                                  leaderboard (`dataset`, `norm`) and takes its weights from `model_dir`
    cnn-small, resnet18, ...      an advlab architecture (needs the data's input shape)
called with the --model-arg options as keyword arguments. Weights are a .safetensors file or a
.pt/.pth/.bin state dict read with torch.load(weights_only=True), so a pickle of arbitrary objects
is refused, never run. The common layouts are accepted (a bare state dict, or one under
`state_dict` / `model_state_dict` / `model`, keys with `module.` / `model.` / `_orig_mod.` prefixes).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import AdvlabError, CorruptFileError
from .wrappers import Normalized

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")
PREFIXES = ("module.", "model.", "_orig_mod.")
ZOO_EXTRA = "pip install 'advlab[zoo]'"
ROBUSTBENCH_PREFIX = "robustbench:"
# A torch and a torchvision built for each other (both from the registry; CUDA builds that run on the CPU too).
MATCHED_PAIR = "pip install torch==2.14.1 torchvision==0.29.1"


def load_external_model(spec: str, *, weights: str | Path | None = None, model_args: dict[str, Any] | None = None,
                        mean: list[float] | None = None, std: list[float] | None = None,
                        input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                        expected_sha256: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on the CPU, info for results and cards: spec, weights, weights_sha256, ...)."""
    model_args = dict(model_args or {})
    net = build_external(spec, model_args, input_shape, num_classes)
    info: dict[str, Any] = {"external": True, "spec": spec, "model_args": model_args, "weights": None,
                            "weights_sha256": None, "normalize": None}
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise AdvlabError(f"`weights={path}`: no such file")
        info["weights"] = str(path.resolve())
        info["weights_sha256"] = file_sha256(path)
        if expected_sha256 is not None and info["weights_sha256"] != expected_sha256:
            raise AdvlabError(f"{path} has changed since this run was recorded (SHA-256 {info['weights_sha256'][:12]}, "
                              f"recorded {expected_sha256[:12]}); evaluate the new file with `model` and `weights`")
        load_weights(net, read_state_dict(path), str(path))
    if (mean is None) != (std is None):
        raise AdvlabError("`mean` and `std` go together: give both (per-channel values, e.g. `mean=0.49,0.48,0.45` "
                          "`std=0.25,0.24,0.26`) or neither")
    if mean is not None:
        if any(not math.isfinite(s) or s <= 0 for s in std):
            raise AdvlabError(f"`std` must be positive, got {std}")
        net = Normalized(net, mean, std)
        info["normalize"] = {"mean": list(mean), "std": list(std)}
    return net.eval(), info


def absolute_spec(spec: str) -> str:
    """path/to/file.py:FUNCTION with the file's absolute path (what cards and recorded commands keep); any other
    spec as it is."""
    source, sep, name = str(spec).strip().rpartition(":")
    if sep and (source.endswith(".py") or "/" in source or "\\" in source):
        return f"{Path(source).expanduser().resolve()}:{name}"
    return str(spec).strip()


# -- building -------------------------------------------------------------------------------------
def build_external(spec: str, model_args: dict[str, Any], input_shape=None, num_classes=None) -> nn.Module:
    if not isinstance(spec, str) or not spec.strip():
        raise AdvlabError("`model` needs a spec: path/to/file.py:function, package.module:function, "
                          "torchvision:NAME, timm:NAME or an advlab model name")
    source, sep, name = spec.strip().rpartition(":")
    if not sep:
        return _advlab_model(spec, model_args, input_shape, num_classes)
    if source in ("torchvision", "timm"):
        return _zoo_model(source, name, model_args, input_shape, num_classes)
    if source == "robustbench":
        raise AdvlabError(f"`model={spec}` is loaded with its leaderboard (`dataset`, `norm`) by "
                          "advlab.models.robustbench_zoo.load_robustbench_model (advlab.subject.open_subject calls it)")
    fn = _find_callable(source, name, spec)
    try:
        net = fn(**model_args)
    except TypeError as e:
        raise AdvlabError(f"{spec}: cannot call it with {_show(model_args)}: {e}; its parameters are "
                          f"{_signature(fn)} (pass them in `model_args`)") from e
    if not isinstance(net, nn.Module):
        raise AdvlabError(f"{spec} returned {type(net).__name__}, not a torch.nn.Module; it must return the network "
                          "(mapping inputs in the data's raw range, or normalised with `mean`/`std`, to logits)")
    return net


def _find_callable(source: str, name: str, spec: str) -> Callable[..., Any]:
    if not name:
        raise AdvlabError(f"`model={spec!r}`: name the function after the colon, e.g. my_models.py:build")
    if source.endswith(".py") or "/" in source or "\\" in source:
        module = _import_file(Path(source), spec)
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as e:
            raise AdvlabError(f"`model={spec!r}`: cannot import {source!r} ({e}); give a path to a .py file "
                              f"(path/to/{source.split('.')[-1]}.py:{name}) or install the package") from e
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            available = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                               and getattr(v, "__module__", None) == module.__name__)
            raise AdvlabError(f"`model={spec!r}`: {source} has no {name!r}; it defines {', '.join(available) or 'nothing callable'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise AdvlabError(f"`model={spec!r}`: {name} is a {type(obj).__name__}, not a function or class")
    return obj


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise AdvlabError(f"`model={spec!r}`: no such file {path}")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"advlab_external_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise AdvlabError(f"`model={spec!r}`: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so the file can import its neighbours
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise AdvlabError(f"`model={spec!r}`: importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(folder)
    return module


def import_optional(package: str, spec: str, extra: str = ZOO_EXTRA):
    """Import an optional package `spec` needs, or one line that says what is wrong and how to fix it: not
    installed, or installed but broken (e.g. a torchvision built for another torch: `operator
    torchvision::nms does not exist`)."""
    try:
        with warnings.catch_warnings():  # their deprecation notes at import time are not the user's business
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module(package)
    except (ImportError, RuntimeError, OSError, AttributeError) as e:  # RuntimeError, OSError: a compiled part
        problem = e                                                       # that does not fit the installed torch
    if importlib.util.find_spec(package) is None:
        raise AdvlabError(f"`model={spec}` needs the {package} package: {extra} (or pip install {package})") from problem
    detail = ANSI_ESCAPE.sub("", str(problem)).strip().splitlines()
    detail = f"{type(problem).__name__}: {detail[0][:160] if detail else ''}"
    raise AdvlabError(f"`model={spec}`: {package} is installed but cannot be imported ({detail}); its build does "
                      f"not fit torch {torch.__version__}: install torch and torchvision built for each other, e.g. "
                      f"`{MATCHED_PAIR}` (as `make zoo` does in .venv-zoo), then {extra}") from problem


def _zoo_model(package: str, name: str, model_args, input_shape, num_classes) -> nn.Module:
    module = import_optional(package, f"{package}:{name}")
    args = dict(model_args)
    if num_classes is not None:
        args.setdefault("num_classes", num_classes)
    try:
        if package == "torchvision":
            return module.models.get_model(name, weights=None, **args)
        if input_shape is not None and len(input_shape) == 3:
            args.setdefault("in_chans", input_shape[0])
        return module.create_model(name, pretrained=False, **args)
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        raise AdvlabError(f"`model={package}:{name}`: {e}") from e


def _advlab_model(name: str, model_args, input_shape, num_classes) -> nn.Module:
    from .registry import MODELS, build_model
    if name not in MODELS:
        raise AdvlabError(f"`model={name!r}` is neither an advlab model ({', '.join(MODELS)}) nor a spec: use "
                          "path/to/file.py:function, package.module:function, torchvision:NAME or timm:NAME")
    if input_shape is None or num_classes is None:
        raise AdvlabError(f"`model={name}` needs the data (`dataset` or `data`) to know the input shape")
    return build_model(name, input_shape, num_classes, **model_args)


# -- weights --------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .safetensors file or a torch.save'd state dict, without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise AdvlabError(f"`weights={path}`: no such file")
    if path.suffix == ".safetensors":
        from ..io import load_tensors
        return load_tensors(path)
    return _unwrap(read_checkpoint(path), path)


def read_checkpoint(path: str | Path, param: str | None = "weights") -> Any:
    """What torch.save wrote to `path`, read with torch.load(weights_only=True): tensors in plain containers
    (dicts, lists, numbers, strings); anything else is refused, never unpickled. `param`: the parameter that
    named the file, for errors (None: the path alone)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols: the error below says what matters
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise AdvlabError(f"{_label(param, path)} is not a plain state dict (tensors by name): refusing to unpickle "
                          f"anything else ({unpickling_reason(e)}). Save model.state_dict() with torch.save, or use "
                          "safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CorruptFileError(f"{_label(param, path)} cannot be read as a PyTorch checkpoint ({str(e).splitlines()[0]}); "
                               "is it truncated, or another format?") from e
    return obj


def _label(param: str | None, path: Path) -> str:
    return f"`{param}={path}`" if param else str(path)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def unpickling_reason(error: BaseException) -> str:
    """What torch's weights-only unpickler refused, in one line without terminal colour codes: the line
    naming the refused global when there is one (torch's first lines are advice to unpickle anyway)."""
    lines = [ANSI_ESCAPE.sub("", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    named = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("WeightsUnpickler error:")), None)
    reason = named or (lines[0] if lines else "unsupported content")
    if named:  # "Unsupported global: GLOBAL x.Y was not an allowed global by default. Please use ...": the first sentence
        reason = reason.split(". ")[0].rstrip(".")
    return reason[:200]


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, dict):
            inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
    raise AdvlabError(f"`weights={path}`: no state dict found (top level: {keys}); expected tensors by name, "
                      f"or a dict holding them under {' / '.join(CONTAINER_KEYS)}")


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load state into net, stripping a wrapper's key prefix when that makes the names match exactly."""
    expected = net.state_dict()
    state = _match_prefixes(state, set(expected))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise AdvlabError(f"`weights={where}` does not fit the model: {_few(missing)} missing, "
                          f"{_few(unexpected)} unexpected; check `model` and `model_args` (same architecture and "
                          "options as at training)")
    wrong = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise AdvlabError(f"`weights={where}`: {len(wrong)} tensor(s) have the wrong shape, e.g. {wrong[0]}; "
                          "check `model_args` (widths, number of classes, input channels)")
    for k, v in state.items():
        if v.is_floating_point() and not expected[k].is_floating_point():
            raise AdvlabError(f"`weights={where}`: {k} is {v.dtype} in the file but {expected[k].dtype} in the model")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise AdvlabError(f"`weights={where}`: {k} contains NaN or inf; the weights are broken (a diverged "
                              "training?), and no robustness number computed from them would mean anything")
    net.load_state_dict(state, strict=True)


def _match_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """The candidate key set (prefixes stripped one after the other) that matches the model best."""
    candidates = [state]
    current = state
    while True:
        prefix = next((p for p in PREFIXES if current and all(k.startswith(p) for k in current)), None)
        if prefix is None:
            break
        current = {k[len(prefix):]: v for k, v in current.items()}
        candidates.append(current)
    return max(candidates, key=lambda c: (len(set(c) & expected), -len(set(c) ^ expected)))


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    return f"{len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"


def _show(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"


def _signature(fn: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(unknown)"


# -- checks ---------------------------------------------------------------------------------------
def check_classifier(model: nn.Module, x: torch.Tensor, num_classes: int, what: str) -> None:
    """The model takes a few of the data's inputs and returns logits for its classes; else a clear error."""
    from ..predict import looks_like_probabilities, model_output
    out = model_output(model, x, what, rows=4)
    if out.shape[1] != num_classes:
        raise AdvlabError(f"{what} returns {out.shape[1]} logits per input but the data has {num_classes} classes; "
                          "check `model_args` (num_classes=...) or `classes`")
    if not torch.isfinite(out).all():
        raise AdvlabError(f"{what} returns NaN or inf on clean inputs; check the weights and `mean`/`std`")
    if looks_like_probabilities(out):
        raise AdvlabError(f"{what} returns probabilities (non-negative, rows sum to 1), not logits: remove the final "
                          "softmax, since attacks and losses on probabilities give wrong (too robust) numbers")
