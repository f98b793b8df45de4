"""The trained digits models the tests share, as fixtures (tests/conftest.py imports them).

Each model is trained once and kept under pytest's cache (`.pytest_cache/d/trained-digits/`), named
by its settings and a hash of the code that trains it (this module's `build`/`train`/`train_run_dir`
and the library's model, data and training modules), so a change to any of them retrains; the older
file is deleted then. A file lock per model makes one pytest-xdist worker train while the other
waits. `pytest --cache-clear` retrains everything. Every request gets a fresh copy of the model
(eval mode), so no test sees what another did to it.

    digits_cnn         cnn-small, 15 epochs (~96% test accuracy)
    digits_cnn_short   cnn-small, 6 epochs (~92%): the numbers of the attack and engine tests
    trained_digits     any other: trained_digits("mlp", epochs=10, hidden=(64,)),
                       trained_digits(resize_pad=0.75) (trained under a random resize-and-pad)
    trained_digits_run a fresh copy of an `advlab train` run directory: trained_digits_run("cnn-small", epochs=6)
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock  # a dependency of torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

import advlab
from advlab.data import load_dataset
from advlab.defenses import TrainConfig, Trainer
from advlab.models import RandomResizePad, build_model
from advlab.rng import seeded

# The library code a model's weights depend on (relative to advlab/): a change retrains.
LIBRARY = ("models", "data", "defenses/training.py", "rng.py")
RUN_LIBRARY = LIBRARY + ("defenses", "runs.py", "runs", "artifacts", "io.py")


@dataclasses.dataclass(frozen=True)
class Spec:
    model: str = "cnn-small"
    epochs: int = 15
    lr: float = 3e-3
    batch_size: int = 128
    hidden: tuple[int, ...] | None = None
    normalize: bool = False  # the training set's mean and std inside the model
    resize_pad: float | None = None  # train on RandomResizePad(min_scale=resize_pad)(x)

    def slug(self) -> str:
        """A file name: cnn-small-e15, mlp-e10-hidden64-batch_size64-normalizeTrue, ..."""
        parts = [self.model, f"e{self.epochs}"]
        for k, v in dataclasses.asdict(self).items():
            if k not in ("model", "epochs") and v != getattr(Spec, k):
                parts.append(k + ("x".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)))
        return "-".join(parts)


def build(spec: Spec, data) -> nn.Module:
    norm = None
    if spec.normalize:
        mean, std = data.channel_stats()
        norm = {"mean": mean, "std": std}
    kwargs = {"hidden": list(spec.hidden)} if spec.hidden is not None else {}
    with seeded(0):
        return build_model(spec.model, data.input_shape, data.num_classes, norm, **kwargs)


def train(spec: Spec, data) -> nn.Module:
    model = build(spec, data)
    augment = RandomResizePad(min_scale=spec.resize_pad) if spec.resize_pad is not None else None

    def objective(m, x, y, g):
        logits = m(augment(x, g) if augment is not None else x)
        return F.cross_entropy(logits, y), logits

    config = TrainConfig(epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size)
    Trainer(model, data.x_train, data.y_train, config=config, objective=objective, progress=False,
            log=lambda msg: None).fit()
    return model.eval()


def train_run_dir(out: Path, model: str, epochs: int, lr: float) -> None:
    from advlab.defenses.run import train_run
    train_run("digits", model, out, config=TrainConfig(epochs=epochs, lr=lr), progress=False, log=lambda m: None)


def code_hash(library: tuple[str, ...], *functions, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(torch.__version__.encode())
    for f in functions:
        h.update(inspect.getsource(f).encode())
    root = Path(advlab.__file__).parent
    for rel in library:
        path = root / rel
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if file.is_file():
                h.update(str(file.relative_to(root)).encode() + file.read_bytes())
    return h.hexdigest()[:16]


class Cache:
    def __init__(self, folder: Path):
        self.folder = folder
        self.data = load_dataset("digits")
        self.weights: dict[Spec, dict[str, torch.Tensor]] = {}

    def _once(self, slug: str, key: str, suffix: str, make, use):
        """use(path) of the cached file or folder slug-key+suffix, made by make(tmp) when missing; both under
        the model's lock (so another process cannot delete it in between); older keys of the slug deleted."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{slug}-{key}{suffix}"
        with FileLock(str(self.folder / f"{slug}.lock")):
            if not path.exists():
                tmp = self.folder / f".{path.name}.{os.getpid()}.tmp"
                try:
                    make(tmp)
                    os.replace(tmp, path)
                finally:  # a half-made file or folder (rmtree leaves a file where it is)
                    if tmp.is_dir():
                        shutil.rmtree(tmp, ignore_errors=True)
                    else:
                        tmp.unlink(missing_ok=True)
                for old in self.folder.glob(f"{slug}-*{suffix}"):  # the same model, older code
                    if old != path and re.fullmatch(re.escape(slug) + r"-[0-9a-f]{16}" + re.escape(suffix), old.name):
                        shutil.rmtree(old) if old.is_dir() else old.unlink()
            return use(path)

    def model(self, spec: Spec) -> nn.Module:
        if spec not in self.weights:
            key = code_hash(LIBRARY, build, train, settings=dataclasses.asdict(spec))

            def make(tmp):
                net = train(spec, self.data)
                save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, str(tmp))

            self.weights[spec] = self._once(spec.slug(), key, ".safetensors", make, lambda p: load_file(str(p)))
        net = build(spec, self.data)
        net.load_state_dict(self.weights[spec])
        return net.eval()

    def run(self, model: str, epochs: int, lr: float, out: Path) -> Path:
        """A copy at `out` of the run directory that train_run_dir makes."""
        settings = {"model": model, "epochs": epochs, "lr": lr}
        key = code_hash(RUN_LIBRARY, train_run_dir, settings=settings)
        return self._once(f"run-{model}-e{epochs}-lr{lr:g}", key, ".run",
                          lambda tmp: train_run_dir(tmp, model, epochs, lr),
                          lambda path: Path(shutil.copytree(path, out)))


@pytest.fixture(scope="session")
def _trained_digits_cache(request, tmp_path_factory) -> Cache:
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider: this run only
    folder = cache.mkdir("trained-digits") if cache is not None else \
        tmp_path_factory.getbasetemp().parent / "trained-digits"
    return Cache(Path(folder))


@pytest.fixture(scope="session")
def trained_digits(_trained_digits_cache):
    """trained_digits(model="cnn-small", epochs=15, lr=3e-3, batch_size=128, hidden=None,
    normalize=False, resize_pad=None) -> a fresh copy of that model trained on digits, in eval mode."""
    def get(model: str = "cnn-small", **settings) -> nn.Module:
        if "hidden" in settings and settings["hidden"] is not None:
            settings["hidden"] = tuple(settings["hidden"])
        return _trained_digits_cache.model(Spec(model, **settings))
    return get


@pytest.fixture(scope="session")
def trained_digits_run(_trained_digits_cache, tmp_path_factory):
    """trained_digits_run(model, epochs, lr=3e-3) -> a fresh copy of the run directory that
    `advlab train --dataset digits --model MODEL --epochs EPOCHS --lr LR` makes."""
    def get(model: str, epochs: int, lr: float = 3e-3) -> Path:
        return _trained_digits_cache.run(model, epochs, lr, tmp_path_factory.mktemp("runs") / f"digits-{model}")
    return get


@pytest.fixture
def digits_cnn(trained_digits):
    """cnn-small trained 15 epochs on digits (~96% test accuracy)."""
    return trained_digits("cnn-small", epochs=15)


@pytest.fixture
def digits_cnn_short(trained_digits):
    """cnn-small trained 6 epochs on digits (~92% test accuracy)."""
    return trained_digits("cnn-small", epochs=6)
