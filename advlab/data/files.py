"""Bring your own data: a .npz file, a .safetensors file or an image folder becomes a Dataset.

    ds = load_data_path("mydata.npz")                      # arrays x and y (and optionally classes)
    ds = load_data_path("photos/", classes=None)           # photos/cat/*.png, photos/dog/*.jpg
    ds = load_data_path("feats.safetensors", bounds=None)  # unbounded feature vectors

The user's examples become the *test* split, in the file's own order (`n=K` takes the first K);
the train split is empty with the same trailing shape. Inputs end as float32 (N, C, H, W) or
(N, D), labels as int64. Nothing is unpickled: .npz members are read with allow_pickle=False and
images are decoded by Pillow with its decompression-bomb limit turned into an error.
docs/data.md describes the formats and the inference rules.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..parsing import parse_number
from ..errors import AdvlabError, ConfigError, CorruptFileError, DataNotFoundError
from ..io import load_tensors, read_metadata
from .datasets import Dataset, lazy_dataset
from .image_folder import LABEL_SOURCES, list_image_folder, read_image_folder

FORMATS_HELP = ("a .npz file with arrays x and y, a .safetensors file with tensors x and y, or a folder "
                "with one sub-folder of images per class (folder/cat/1.png, folder/dog/2.jpg)")
BOUNDS_HELP = "pass `bounds=LO,HI` (e.g. `bounds=0,255`), or `bounds=none` for unbounded features"


# ---------------------------------------------------------------- command-line strings

def parse_bounds(text: str, name: str = "bounds") -> tuple[float, float] | None | str:
    """'0,1' -> (0.0, 1.0); '0,255' -> (0.0, 255.0); 'none' -> None; 'auto' -> 'auto'. `name`: the parameter
    (errors name it)."""
    s = str(text).strip()
    if s.lower() == "none":
        return None
    if s.lower() == "auto":
        return "auto"
    parts = s.split(",")
    if len(parts) != 2:
        raise ConfigError(f"`{name}` needs LO,HI (e.g. `{name}=0,1` or `{name}=0,255`), 'none' for unbounded "
                          f"features, or 'auto'; got {text!r}")
    return _ordered_bounds(parse_number(parts[0], f"`{name}`"), parse_number(parts[1], f"`{name}`"), f"`{name}`")


def parse_classes(text: str, name: str = "classes") -> int | list[str]:
    """'10' -> 10 classes named '0'..'9'; 'cat,dog,bird' -> those names, label 0 = cat. `name`: the parameter
    (errors name it)."""
    s = str(text).strip()
    if not s:
        raise ConfigError(f"`{name}` needs a number of classes (e.g. `{name}=10`) or comma-separated names "
                          f"(e.g. `{name}=cat,dog`)")
    if "," not in s:
        try:
            value = parse_number(s, f"`{name}`")
        except ConfigError:
            value = None  # a single class name
        if value is not None:
            if value != int(value) or value < 1:
                raise ConfigError(f"`{name}` must be a whole number of classes >= 1 or comma-separated names, "
                                  f"got {text!r}")
            return int(value)
    return _check_names([t.strip() for t in s.split(",")], f"`{name}`")


def _ordered_bounds(lo: float, hi: float, name: str) -> tuple[float, float]:
    if not lo < hi:
        raise ConfigError(f"{name}: LO must be below HI, got {lo:g},{hi:g}")
    return (lo, hi)


def _check_names(names: Sequence[Any], what: str) -> list[str]:
    names = list(names)
    if not names:
        raise ConfigError(f"{what} needs at least one class name")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ConfigError(f"{what}: class names must be non-empty strings, got {bad[0]!r} in {names}")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{what}: class name {n!r} appears twice; class names must be distinct")
        seen.add(n)
    return names


def _check_bounds_arg(bounds: Any) -> tuple[float, float] | None | str:
    if bounds is None or bounds == "auto":
        return bounds
    if isinstance(bounds, str):
        return parse_bounds(bounds, "bounds")
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return _ordered_bounds(parse_number(bounds[0], "`bounds`"), parse_number(bounds[1], "`bounds`"), "`bounds`")
    raise ConfigError(f"`bounds` must be 'auto', None or (lo, hi), got {bounds!r}")


def _check_classes_arg(classes: Any) -> int | list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        return parse_classes(classes, "classes")
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if classes < 1:
            raise ConfigError(f"`classes` must be a number of classes >= 1, got {classes}")
        return int(classes)
    if isinstance(classes, (list, tuple)):
        return _check_names(classes, "`classes`")
    raise ConfigError(f"`classes` must be None, a number of classes or a list of names, got {classes!r}")


# ---------------------------------------------------------------- the entry point

def load_data_path(path: str | Path, *, classes: int | Sequence[str] | str | None = None,
                   bounds: tuple[float, float] | None | str = "auto", labels: str = "folder",
                   model_classes: Sequence[str] | None = None, preprocess: str | None = None,
                   workers: int | None = None) -> Dataset:
    """A user's .npz / .safetensors file or image folder as a test-only Dataset.

    classes: None (from the file's `classes`, the folder names, or '0'..str(max(y))), a number K
    (names '0'..'K-1') or a list of names. bounds: 'auto' ((0, 1) for uint8 pixels and for floats
    already in [0, 1], an error otherwise), (lo, hi) that must contain the data, or None (unbounded).
    labels (image folders): 'folder' (a class is its sub-folder's name, or its number: docs/data.md) or
    'filename' (a flat folder of NAME_LABEL.png files). model_classes: the class names of the model the data
    is for (a trained run's); without `classes`, an image folder's sub-folders are matched to them.
    preprocess (image folders): read the images lazily, each through one of RobustBench's preprocessings
    ('res256crop224', ..., or 'none' to keep the size), so they may differ in size and memory does not grow
    with their number (the Dataset's x_test is then a LazyImages: advlab.data.lazy); `workers`: decoding
    processes (default: up to 8 of the CPUs).
    """
    bounds = _check_bounds_arg(bounds)
    classes = _check_classes_arg(classes)
    if labels not in LABEL_SOURCES:
        raise ConfigError(f"`labels` must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}")
    where = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataNotFoundError(f"`data={where}`: no such file or folder ({p.resolve()}); give {FORMATS_HELP}")
    p = p.resolve()
    extra: dict[str, Any] = {}
    if preprocess is not None and not p.is_dir():
        raise AdvlabError(f"`data={where}`: `preprocess` resizes the images of an image folder; a file's arrays are "
                          f"used as they are")
    if p.is_dir() and preprocess is not None:
        return lazy_dataset(p.name, list_image_folder(p, where, classes, labels, model_classes),
                            _pixel_bounds(bounds, where), preprocess, workers)
    if p.is_dir():
        listing = list_image_folder(p, where, classes, labels, model_classes)
        x, digest = read_image_folder(listing)
        x, bounds = _scale_pixels(x, bounds, where) if x.dtype == np.uint8 else (x, _pixel_bounds(bounds, where))
        y, names, fmt = listing.y, listing.classes, "folder"
        extra["labels"] = listing.labels
    else:
        if labels != "folder":
            raise AdvlabError(f"`data={where}`: `labels={labels}` is for image folders; a file holds its labels in y")
        suffix = p.suffix.lower()
        if suffix == ".npz":
            arrays, file_classes, fmt = _read_npz(p, where), None, "npz"
        elif suffix == ".safetensors":
            arrays, file_classes, fmt = _read_safetensors(p, where), None, "safetensors"
        else:
            raise AdvlabError(f"`data={where}`: unsupported file type {p.suffix or '(no suffix)'!r}; give {FORMATS_HELP}")
        if "classes" in arrays:
            file_classes = arrays.pop("classes")
        x = _layout(arrays["x"], where)
        _check_rows(x, arrays["y"], where)
        x, bounds = _inputs(x, bounds, where)
        y = _labels(arrays["y"], where)
        names = _class_names(classes, file_classes, y, where)
        digest = _sha256_file(p)
    x_test = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return Dataset(name=p.name, x_train=x_test.new_zeros((0, *x_test.shape[1:])),
                   y_train=torch.zeros(0, dtype=torch.int64), x_test=x_test,
                   y_test=torch.from_numpy(y), classes=tuple(names), bounds=bounds,
                   params={"path": str(p), "format": fmt, "sha256": digest, **extra})


# ---------------------------------------------------------------- arrays: layout, values, labels

def _layout(x: np.ndarray, where: str) -> np.ndarray:
    """(N, C, H, W) stays; (N, H, W, C) with C in {1, 3, 4} is transposed; (N, H, W) gets C = 1."""
    if x.ndim >= 2 and 0 in x.shape[1:]:
        raise AdvlabError(f"{where}: x has shape {x.shape}, with no values per example")
    if x.ndim == 2:
        return x  # (N, D) features
    if x.ndim == 3:
        return x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim == 4:
        if x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return x.transpose(0, 3, 1, 2)  # channels last -> (N, C, H, W)
        return x
    raise AdvlabError(f"{where}: x has shape {x.shape}; advlab needs (N, C, H, W), (N, H, W, C), (N, H, W) images "
                      f"or (N, D) feature vectors" + ("; for one feature per example use x[:, None]" if x.ndim == 1 else ""))


def _check_rows(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if y.ndim != 1:
        hint = "; if y is one-hot, store y.argmax(1)" if y.ndim == 2 and y.shape[1] > 1 else "; store y.ravel()"
        raise AdvlabError(f"{where}: y must be a 1-D array of class indices, got shape {y.shape}{hint}")
    if len(x) != len(y):
        raise AdvlabError(f"{where}: x has {len(x)} examples but y has {len(y)} labels; they must match one to one")
    if len(x) == 0:
        raise AdvlabError(f"{where}: x and y are empty; advlab needs at least one example")


def _inputs(x: np.ndarray, bounds, where: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Numbers -> float32; uint8 pixels are scaled to [0, 1]; bounds are checked or inferred."""
    if x.dtype == np.uint8:
        return _scale_pixels(x, bounds, where)
    if x.dtype.kind not in "biuf":
        raise AdvlabError(f"{where}: x has dtype {x.dtype}; advlab needs numbers (uint8 pixels 0..255 or floats)")
    xf = x.astype(np.float32)
    finite = np.isfinite(xf).reshape(len(xf), -1).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        which = (f"1 example, row {rows[0]}" if len(rows) == 1 else f"{len(rows)} examples, rows "
                 f"{', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''}")
        raise AdvlabError(f"{where}: x has NaN or infinite values in {which}; fix or remove them "
                          f"(float64 values beyond float32's range count as infinite)")
    lo, hi = float(xf.min()), float(xf.max())
    if bounds == "auto":
        if lo >= 0 and hi <= 1:
            return xf, (0.0, 1.0)
        hint = (" (or store x as uint8 to have pixels scaled to [0, 1])"
                if x.dtype.kind in "iu" and lo >= 0 and hi <= 255 else "")
        raise AdvlabError(f"{where}: x has values in [{lo:g}, {hi:g}], not in [0, 1], so the valid input range "
                          f"cannot be guessed; {BOUNDS_HELP}{hint}")
    if bounds is not None and (lo < bounds[0] or hi > bounds[1]):
        raise AdvlabError(f"{where}: x has values in [{lo:g}, {hi:g}], outside `bounds={bounds[0]:g},{bounds[1]:g}`; "
                          f"widen the bounds so they contain the data, or `bounds=none` for unbounded features")
    return xf, bounds


def _scale_pixels(x: np.ndarray, bounds, where: str) -> tuple[np.ndarray, tuple[float, float]]:
    return x.astype(np.float32) / np.float32(255), _pixel_bounds(bounds, where)


def _pixel_bounds(bounds, where: str) -> tuple[float, float]:
    if bounds not in ("auto", (0.0, 1.0)):
        shown = "none" if bounds is None else f"{bounds[0]:g},{bounds[1]:g}"
        raise AdvlabError(f"{where}: 8-bit pixels are scaled to [0, 1] with bounds (0, 1), so `bounds={shown}` "
                          f"does not apply; leave `bounds` out, or store x as floats in the units you want")
    return (0.0, 1.0)


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    """Whole, non-negative class indices -> int64."""
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            raise AdvlabError(f"{where}: y must hold whole class numbers; row {bad[0]} is {y[bad[0]].item()!r}")
    elif y.dtype.kind not in "biu":
        raise AdvlabError(f"{where}: y has dtype {y.dtype}; labels must be integer class indices 0..K-1")
    negative = np.flatnonzero(y < 0)
    if len(negative):
        r = negative[0]
        raise AdvlabError(f"{where}: y has negative labels (first: {y[r]:g} in row {r}); labels are class "
                          f"indices 0..K-1")
    if y.size and float(y.max()) >= 2 ** 62:
        r = int(y.argmax())
        raise AdvlabError(f"{where}: label {y[r]:g} in row {r} is not a usable class index")
    return y.astype(np.int64)


def _class_names(classes, file_classes, y: np.ndarray, where: str) -> list[str]:
    top = int(y.max())
    row = int(y.argmax())
    if isinstance(classes, int):
        names, source = [str(i) for i in range(classes)], "given by `classes`"
    elif classes is not None:
        names, source = classes, "named by `classes`"
    elif file_classes is not None:
        names, source = file_classes, "named in the file's 'classes'"
    else:
        return [str(i) for i in range(top + 1)]
    if top >= len(names):
        fix = (f"pass `classes={top + 1}` (or more), or list {top + 1} or more names with `classes=a,b,...`"
               if classes is not None else
               f"add the missing names to the file's 'classes', or override them with `classes={top + 1}`")
        raise AdvlabError(f"{where}: label {top} (row {row}) is out of range for the {len(names)} classes {source} "
                          f"(labels must be 0..{len(names) - 1}); {fix}")
    return names


def _file_class_names(value: Any, where: str) -> list[str]:
    """The `classes` array of an .npz: 1-D strings."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.dtype.kind not in "US":
        raise AdvlabError(f"{where}: 'classes' must be a 1-D array of strings, e.g. np.array(['cat', 'dog']), "
                          f"got dtype {arr.dtype} with shape {arr.shape}")
    names = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in arr.tolist()]
    try:
        return _check_names(names, f"{where}: 'classes'")
    except ConfigError as e:
        raise AdvlabError(str(e)) from None


# ---------------------------------------------------------------- .npz and .safetensors

def _read_npz(path: Path, where: str) -> dict[str, Any]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptFileError(f"{where} is not a valid .npz file ({e}); write it with "
                               f"numpy.savez(path, x=inputs, y=labels)") from e
    with zf:
        members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        missing = [k for k in ("x", "y") if k not in members]
        if missing:
            raise AdvlabError(f"{where} has no array named {' or '.join(missing)} (it has: "
                              f"{', '.join(sorted(members)) or 'none'}); write it with "
                              f"numpy.savez(path, x=inputs, y=labels)")
        arrays = {k: _read_member(zf, members[k], k, where) for k in ("x", "y", "classes") if k in members}
    if "classes" in arrays:
        arrays["classes"] = _file_class_names(arrays["classes"], where)
    return arrays


def _read_member(zf: zipfile.ZipFile, member: str, key: str, where: str) -> np.ndarray:
    """One .npy inside the zip: the header is checked before any data is read; never unpickles."""
    fmt = np.lib.format
    try:
        with zf.open(member) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                shape, dtype = None, None  # (3, 0): read_array below still refuses objects
        if dtype is not None and dtype.hasobject:
            raise AdvlabError(_object_message(where, key))
        if shape is not None and int(np.prod(shape)) * dtype.itemsize > zf.getinfo(member).file_size:
            raise CorruptFileError(f"{where}: array {key!r} claims shape {shape} of {dtype} but the file holds "
                                   f"less data; the file is truncated or damaged, write it again")
        with zf.open(member) as f:
            return fmt.read_array(f, allow_pickle=False)
    except AdvlabError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise AdvlabError(_object_message(where, key)) from None
        raise CorruptFileError(f"{where}: array {key!r} cannot be read ({e}); write the file again") from e
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CorruptFileError(f"{where}: array {key!r} cannot be read ({e}); write the file again") from e


def _object_message(where: str, key: str) -> str:
    fix = "np.array(names, dtype=str)" if key == "classes" else f"np.asarray({key}, dtype=np.float32)" \
        if key == "x" else f"np.asarray({key}, dtype=np.int64)"
    return (f"{where}: array {key!r} holds Python objects (dtype=object), which advlab never unpickles; "
            f"save it as a plain array, e.g. {fix}")


def _read_safetensors(path: Path, where: str) -> dict[str, Any]:
    tensors = load_tensors(path)  # CorruptFileError for a damaged file
    missing = [k for k in ("x", "y") if k not in tensors]
    if missing:
        raise AdvlabError(f"{where} has no tensor named {' or '.join(missing)} (it has: "
                          f"{', '.join(sorted(tensors)) or 'none'}); write it with "
                          f"safetensors.torch.save_file({{'x': inputs, 'y': labels}}, path)")
    arrays: dict[str, Any] = {k: _to_numpy(tensors[k]) for k in ("x", "y")}
    names = _safetensors_classes(path, where)
    if names is not None:
        arrays["classes"] = names
    return arrays


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()  # bfloat16, float8: numpy has no such dtype
    return t.numpy()


def _safetensors_classes(path: Path, where: str) -> list[str] | None:
    """Class names from the header's metadata: {"classes": '["cat", "dog"]'} (a JSON list)."""
    meta = read_metadata(path)
    if "classes" not in meta:
        return None
    try:
        names = json.loads(meta["classes"])
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list):
        raise AdvlabError(f"{where}: metadata 'classes' must be a JSON list of names such as "
                          f"'[\"cat\", \"dog\"]', got {meta['classes']!r}")
    try:
        return _check_names(names, f"{where}: metadata 'classes'")
    except ConfigError as e:
        raise AdvlabError(str(e)) from None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
