"""CIFAR-10's and CIFAR-100's "python version" batches, parsed without arbitrary unpickling.

The batches are Python pickles. A pickle can run any code when loaded, so we use an unpickler
that only accepts the few numpy constructors a CIFAR batch needs and plain Python types.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
CIFAR100_FILES = ["train", "test", "meta"]  # cifar-100-python/: the 100 "fine" classes, names in meta

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch only holds arrays and lists")


def _load_dict(raw: bytes, source: str) -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise CorruptFileError(f"{source}: {e}") from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise CorruptFileError(f"{source}: not a valid CIFAR batch (truncated or damaged: {e})") from e
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{source}: expected a dict, found {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def parse_batch(raw: bytes, source: str = "<bytes>", label_key: str = "labels",
                num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Returns images (N, 3, 32, 32) uint8 and labels (N,) int64 (`label_key`: CIFAR-100's are `fine_labels`)."""
    obj = _load_dict(raw, source)
    if "data" not in obj or label_key not in obj:
        raise CorruptFileError(f"{source}: a CIFAR batch needs 'data' and '{label_key}' entries, found "
                               f"{sorted(map(str, obj))}")
    data = np.asarray(obj["data"])
    labels = np.asarray(obj[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise CorruptFileError(f"{source}: expected uint8 data of shape (N, 3072) and N labels, "
                               f"found {data.dtype} {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > num_classes - 1):
        raise CorruptFileError(f"{source}: labels must be in 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def parse_meta(raw: bytes, source: str = "<bytes>") -> list[str]:
    """CIFAR-100's class names (`fine_label_names` in its `meta` file), label 0 first."""
    obj = _load_dict(raw, source)
    names = obj.get("fine_label_names")
    if not isinstance(names, list) or len(names) != 100 or not all(isinstance(n, (bytes, str)) for n in names):
        raise CorruptFileError(f"{source}: CIFAR-100's meta file needs 'fine_label_names', a list of 100 names")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def read_cifar10(location: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read from an extracted `cifar-10-batches-py` folder or the `cifar-10-python.tar.gz` archive."""
    blobs = _read_files(location, TRAIN_BATCHES + [TEST_BATCH])
    train = [parse_batch(blobs[n], f"{location}/{n}") for n in TRAIN_BATCHES]
    x_test, y_test = parse_batch(blobs[TEST_BATCH], f"{location}/{TEST_BATCH}")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


def read_cifar100(location: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read from an extracted `cifar-100-python` folder or the `cifar-100-python.tar.gz` archive: the
    100 fine classes (x_train, y_train, x_test, y_test, class names)."""
    blobs = _read_files(location, CIFAR100_FILES)
    x_train, y_train = parse_batch(blobs["train"], f"{location}/train", "fine_labels", 100)
    x_test, y_test = parse_batch(blobs["test"], f"{location}/test", "fine_labels", 100)
    return x_train, y_train, x_test, y_test, parse_meta(blobs["meta"], f"{location}/meta")


def _read_files(location: Path, names: list[str]) -> dict[str, bytes]:
    """The named files' bytes, from a folder or from a .tar.gz archive (read in memory, nothing extracted)."""
    blobs = {}
    if location.is_dir():
        for n in names:
            f = location / n
            if not f.is_file():
                raise CorruptFileError(f"{location}: missing {n}; the folder must hold {', '.join(names)}")
            blobs[n] = f.read_bytes()
        return blobs
    try:
        with tarfile.open(location, "r:gz") as tar:
            # Read members in memory; nothing is extracted, so archive paths cannot escape.
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if base in names and member.isfile():
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptFileError(f"{location}: the archive is truncated or damaged ({e}); delete it and fetch it again") from e
    missing = [n for n in names if n not in blobs]
    if missing:
        raise CorruptFileError(f"{location}: the archive lacks {missing}")
    return blobs
