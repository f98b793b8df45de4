"""Datasets: train/test tensors, class names and input bounds.

Images are float32 in [0, 1] with shape (N, C, H, W); feature datasets are (N, D). Labels are
int64. `bounds` is the valid input range (None for unbounded features such as blobs): attacks
clip to it, never to a literal [0, 1].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import AdvlabError, CorruptFileError, DataNotFoundError
from .cifar import read_cifar10, read_cifar100
from .idx import read_idx
from .locate import RemoteFile, candidate_dirs, locate


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor  # or, for image folders read on demand, a LazyImages (advlab.data.lazy): x_test[:n].load()
    y_test: torch.Tensor
    classes: tuple[str, ...]
    bounds: tuple[float, float] | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def test_subset(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n test points in the dataset's own order (`--n K`)."""
        if n is None:
            return self.x_test, self.y_test
        if n <= 0:
            raise AdvlabError(f"`n` must be a positive number of test points, got {n}")
        return self.x_test[:n], self.y_test[:n]

    @property
    def lazy(self) -> bool:
        """Whether the test inputs are read on demand (x_test is a LazyImages, not a tensor)."""
        return not isinstance(self.x_test, torch.Tensor)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training inputs (per-feature for (N, D) data).

        A dataset with no training rows (a user's `--data` file is all test split) uses its test inputs.
        """
        if self.lazy and not len(self.x_train):
            raise AdvlabError(f"{self.name} is read image by image and has no training split to compute channel "
                              "statistics from; give the model's normalisation (`mean` and `std`)")
        x = self.x_train if len(self.x_train) else self.x_test
        if len(x) == 0:
            raise AdvlabError(f"dataset {self.name!r} has no inputs to compute channel statistics from")
        dims = [0, 2, 3] if x.ndim == 4 else [0]
        mean = x.mean(dim=dims)
        values_per_channel = x.numel() // max(mean.numel(), 1)
        std = x.std(dim=dims, correction=1 if values_per_channel > 1 else 0).clamp_min(1e-6)
        return mean.tolist(), std.tolist()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "classes": list(self.classes),
                "bounds": list(self.bounds) if self.bounds else None,
                "n_train": len(self.y_train), "n_test": len(self.y_test)}


def _as_dataset(name, x_train, y_train, x_test, y_test, classes, bounds, params) -> Dataset:
    return Dataset(name=name,
                   x_train=torch.as_tensor(x_train, dtype=torch.float32),
                   y_train=torch.as_tensor(y_train, dtype=torch.int64),
                   x_test=torch.as_tensor(x_test, dtype=torch.float32),
                   y_test=torch.as_tensor(y_test, dtype=torch.int64),
                   classes=tuple(classes), bounds=bounds, params=params)


def _stratified_split(y: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return rng.permutation(np.concatenate(train_idx)), rng.permutation(np.concatenate(test_idx))


def blobs(n: int = 10_000, dim: int = 2, separation: float = 2.0, sigma: float = 0.5,
          test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Two Gaussian clusters: class 0 at the origin, class 1 at (separation, ..., separation).

    `n` points per class; the default gives 16,000 training and 4,000 test points.
    """
    _check_positive(n=n, dim=dim, sigma=sigma)
    if not 0 < test_fraction < 1:
        raise AdvlabError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, sigma, size=(2 * n, dim))
    y = np.repeat([0, 1], n)
    x[y == 1] += separation
    tr, te = _stratified_split(y, test_fraction, rng)
    return _as_dataset("blobs", x[tr], y[tr], x[te], y[te], ["0", "1"], None,
                       dict(n=n, dim=dim, separation=separation, sigma=sigma, test_fraction=test_fraction, seed=seed))


def gaussian(dim: int = 10, mu: float = 1.0, sigma: float = 1.0, n_train: int = 1000, n_test: int = 1000,
             seed: int = 0) -> Dataset:
    """The two-class Gaussian model of robustness theory (Schmidt et al. 2018).

    y is uniform on {0, 1}; x ~ N(s * mu * 1, sigma^2 I) with s = -1 for class 0, +1 for class 1.
    """
    _check_positive(dim=dim, sigma=sigma, n_train=n_train, n_test=n_test)
    rng = np.random.default_rng(seed)

    def sample(n):
        y = rng.integers(0, 2, size=n)
        x = rng.normal(0.0, sigma, size=(n, dim)) + (2 * y[:, None] - 1) * mu
        return x, y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return _as_dataset("gaussian", x_train, y_train, x_test, y_test, ["-", "+"], None,
                       dict(dim=dim, mu=mu, sigma=sigma, n_train=n_train, n_test=n_test, seed=seed))


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], with a fixed stratified split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = d.target.astype(np.int64)
    tr, te = _stratified_split(y, test_fraction, np.random.default_rng(seed))
    return _as_dataset("digits", x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], (0.0, 1.0),
                       dict(test_fraction=test_fraction, seed=seed))


_MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
_MD5 = {
    "mnist": ["f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
              "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"],
    "fashion-mnist": ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"],
}
_URLS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
_HOW_TO_GET = {
    "mnist": "download the four MNIST .gz files (e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/) on a "
             "connected machine into ~/.cache/advlab/mnist",
    "fashion-mnist": "on Debian/Ubuntu run `apt-get install dataset-fashion-mnist`, or download the four files from "
                     "https://github.com/zalandoresearch/fashion-mnist into ~/.cache/advlab/fashion-mnist",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx_dataset(name: str, classes: list[str], data_dir=None) -> Dataset:
    files = [RemoteFile(f, m) for f, m in zip(_MNIST_FILES, _MD5[name])]
    paths = locate(name, files, _URLS[name], data_dir, _HOW_TO_GET[name])
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    for images, labels, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
            raise CorruptFileError(f"{name} {split}: expected images (N, 28, 28) and N labels, "
                                   f"found {images.shape} and {labels.shape} in {paths[0].parent}")
        if labels.size and labels.max() >= len(classes):
            raise CorruptFileError(f"{name} {split}: labels must be in 0..{len(classes) - 1}")
    scale = np.float32(1 / 255)
    return _as_dataset(name, xtr[:, None] * scale, ytr.astype(np.int64), xte[:, None] * scale,
                       yte.astype(np.int64), classes, (0.0, 1.0), {"source": str(paths[0].parent)})


def mnist(data_dir=None) -> Dataset:
    return _idx_dataset("mnist", [str(i) for i in range(10)], data_dir)


def fashion_mnist(data_dir=None) -> Dataset:
    return _idx_dataset("fashion-mnist", FASHION_CLASSES, data_dir)


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar10(data_dir=None) -> Dataset:
    archive = RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    # An extracted folder is used as is; otherwise the archive is read without extracting it.
    for folder in candidate_dirs("cifar10", data_dir):
        if (folder / "cifar-10-batches-py" / "test_batch").is_file():
            location = folder / "cifar-10-batches-py"
            break
        if (folder / "test_batch").is_file() and (folder / "data_batch_1").is_file():
            location = folder
            break
    else:
        location = locate("cifar10", [archive], ["https://www.cs.toronto.edu/~kriz/"], data_dir,
                           "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                           "on a connected machine into ~/.cache/advlab/cifar10")[0]
    xtr, ytr, xte, yte = read_cifar10(Path(location))
    scale = np.float32(1 / 255)
    return _as_dataset("cifar10", xtr * scale, ytr, xte * scale, yte, CIFAR_CLASSES, (0.0, 1.0),
                       {"source": str(location)})


def cifar100(data_dir=None) -> Dataset:
    """CIFAR-100 with its 100 fine classes (names from the archive's meta file), test split in its own order."""
    archive = RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
    # As for CIFAR-10: an extracted folder is used as is, else the archive is read without extracting it.
    for folder in candidate_dirs("cifar100", data_dir):
        if (folder / "cifar-100-python" / "test").is_file():
            location = folder / "cifar-100-python"
            break
        if (folder / "test").is_file() and (folder / "meta").is_file():
            location = folder
            break
    else:
        location = locate("cifar100", [archive], ["https://www.cs.toronto.edu/~kriz/"], data_dir,
                           "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                           "on a connected machine into ~/.cache/advlab/cifar100")[0]
    xtr, ytr, xte, yte, classes = read_cifar100(Path(location))
    scale = np.float32(1 / 255)
    return _as_dataset("cifar100", xtr * scale, ytr, xte * scale, yte, classes, (0.0, 1.0),
                       {"source": str(location)})


IMAGENET_WNIDS_FILE = Path(__file__).with_name("imagenet_wnids.txt")
IMAGENET_SUBSETS = ("all", "robustbench")


def imagenet_classes() -> list[str]:
    """ImageNet-1k's 1,000 class ids (WNIDs) in the standard order: label i is the i-th sorted WNID."""
    return [line for line in IMAGENET_WNIDS_FILE.read_text().splitlines() if line and not line.startswith("#")]


def imagenet(data_dir=None, preprocess: str = "res256crop224", subset: str = "all", workers: int | None = None
             ) -> Dataset:
    """ImageNet's validation images, read lazily through a RobustBench preprocessing (test split only).

    The folder is DIR/val/WNID/*.JPEG (or DIR/WNID/*.JPEG), the layout of the ILSVRC2012 validation set
    sorted into class folders; a folder is labelled by its WNID among the standard 1,000 classes, so a
    subset of classes keeps the right labels. subset='robustbench': RobustBench's 5,000 evaluation
    images, in its order (the list comes with the robustbench package); 'all': every image, class by class.
    """
    from .image_folder import list_image_folder

    if subset not in IMAGENET_SUBSETS:
        raise AdvlabError(f"imagenet `subset` must be one of {', '.join(IMAGENET_SUBSETS)}, got {subset!r}")
    folder = _find_imagenet(data_dir)
    listing = list_image_folder(folder, str(folder), classes=imagenet_classes())
    if subset == "robustbench":
        listing = _robustbench_subset(listing)
    return lazy_dataset("imagenet", listing, (0.0, 1.0), preprocess, workers, source=str(folder), subset=subset)


def lazy_dataset(name: str, listing, bounds, preprocess: str, workers: int | None = None, **params: Any) -> Dataset:
    """The images of `listing` (an ImageList) as a test-only Dataset whose x_test is a LazyImages: nothing is
    decoded until x_test[a:b].load()."""
    from .lazy import LazyImages

    images = LazyImages.open(listing, preprocess, workers)
    return Dataset(name=name, x_train=torch.zeros((0, *images.row_shape)), y_train=torch.zeros(0, dtype=torch.int64),
                   x_test=images, y_test=torch.from_numpy(listing.y), classes=tuple(listing.classes), bounds=bounds,
                   params={"path": str(listing.root), "format": "folder", "sha256": images.digest(),
                           "labels": listing.labels, "preprocess": images.preprocess, **params})


def _find_imagenet(data_dir) -> Path:
    looked = candidate_dirs("imagenet", data_dir)
    for folder in looked:
        for val in (folder / "val", folder):
            if val.is_dir() and any(p.is_dir() and re.fullmatch(r"n[0-9]{8}", p.name) for p in val.iterdir()):
                return val
    raise DataNotFoundError(
        "ImageNet's validation set was not found (it cannot be downloaded without an image-net.org account): put "
        "it as DIR/val/WNID/*.JPEG (the ILSVRC2012 validation images sorted into their 1,000 class folders) and "
        f"pass --data-dir DIR; looked in {', '.join(str(d) for d in looked)}")


def _robustbench_subset(listing):
    """RobustBench's 5,000 ImageNet evaluation images, in its order, from the list its package ships."""
    import importlib.util

    from .image_folder import ImageList

    spec = importlib.util.find_spec("robustbench")  # found without importing it (and torchvision)
    ids = Path(spec.origin).parent / "helper_files" / "imagenet_test_image_ids.txt" if spec and spec.origin else None
    if ids is None or not ids.is_file():
        raise AdvlabError("imagenet `subset=robustbench` reads the list of RobustBench's 5,000 evaluation images from "
                          "the robustbench package: pip install 'advlab[robustbench]'")
    wanted = [line.strip() for line in ids.read_text().splitlines() if line.strip()]
    label = {p.relative_to(listing.root).as_posix(): int(y) for p, y in zip(listing.files, listing.y)}
    missing = [w for w in wanted if w not in label]
    if missing:
        raise DataNotFoundError(f"{listing.where}: {len(missing)} of RobustBench's {len(wanted)} ImageNet evaluation "
                                f"images are missing (first: {missing[0]}); the folder must hold the whole validation "
                                f"set, or use `subset=all`")
    return ImageList(listing.root, listing.where, [listing.root / w for w in wanted],
                     np.array([label[w] for w in wanted], dtype=np.int64), listing.classes, listing.labels)


def _check_positive(**values) -> None:
    for key, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise AdvlabError(f"{key} must be a positive number, got {value!r}")


LOADERS: dict[str, Callable[..., Dataset]] = {
    "blobs": blobs,
    "gaussian": gaussian,
    "digits": digits,
    "fashion-mnist": fashion_mnist,
    "mnist": mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
}
FILE_BASED = {"fashion-mnist", "mnist", "cifar10", "cifar100"}
# Test-only datasets read from files: for attack, evaluate and certify, not for training or the analyses.
TEST_ONLY: dict[str, Callable[..., Dataset]] = {"imagenet": imagenet}


def load_dataset(name: str, data_dir: str | Path | None = None, **params: Any) -> Dataset:
    """Load a dataset by its CLI name. `params` go to generated datasets (blobs, gaussian, digits) and to the
    test-only ones (imagenet: preprocess, subset, workers)."""
    if name in TEST_ONLY:
        try:
            return TEST_ONLY[name](data_dir=data_dir, **params)
        except TypeError as e:
            import inspect
            allowed = ", ".join(k for k in inspect.signature(TEST_ONLY[name]).parameters if k != "data_dir")
            raise AdvlabError(f"bad parameters for dataset {name!r}: {e}; allowed: {allowed}") from e
    if name not in LOADERS:
        raise AdvlabError(f"unknown dataset {name!r}; choose one of {', '.join([*LOADERS, *TEST_ONLY])}")
    loader = LOADERS[name]
    if name in FILE_BASED:
        if params:
            raise AdvlabError(f"dataset {name!r} takes no parameters, got {sorted(params)}")
        return loader(data_dir=data_dir)
    try:
        return loader(**params)
    except TypeError as e:
        import inspect
        allowed = ", ".join(inspect.signature(loader).parameters)
        raise AdvlabError(f"bad parameters for dataset {name!r}: {e}; allowed: {allowed}") from e
