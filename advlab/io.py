"""Atomic file writes, safetensors state dicts, and JSON helpers.

Every file advlab writes goes through `atomic_write`: a temporary file in the same directory,
fsync, then rename, so a crash never leaves a half-written file under the final name. The file gets
the permissions any new file gets (0666 less the umask: 0644 with the usual umask 022), not the
0600 of `tempfile.mkstemp`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save_file as st_save_file

from .errors import ConfigError, CorruptFileError


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    def fill(f) -> None:
        f.write(data)

    atomic_file(path, fill)


def atomic_file(path: str | os.PathLike, fill: Callable[[Any], None], by_name: bool = False) -> None:
    """Write `path` all or nothing: `fill` writes a new temporary file beside it (given the open binary file,
    or its path when `by_name`), which then replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
    try:
        if by_name:
            mode = os.fstat(fd).st_mode & 0o777  # the umask's mode: the writer may replace the file with its own
            os.close(fd)
            fill(tmp)
            os.chmod(tmp, mode)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path` (.NAME.RANDOM.tmp), open for writing. Created with mode 0666, so the
    kernel applies the umask as for any new file (tempfile.mkstemp would make it 0600, private to the user)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def relative_path(value: str, key: str) -> str:
    """A path from a config must stay inside the run directory: relative, without '..'."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty relative path, got {value!r}")
    if (os.path.isabs(value) or PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()
            or PureWindowsPath(value).drive or value.startswith("~")):
        raise ConfigError(f"{key} = {value!r} is an absolute path; paths in experiment configs are relative to the "
                          "run directory (e.g. out = \"goodfellow2015\"); choose the run directory with `run_dir`")
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if ".." in parts:
        raise ConfigError(f"{key} = {value!r} leaves the run directory ('..'); use a folder name inside it")
    return value


def inside(root: str | os.PathLike, relative: str | os.PathLike, what: str = "path") -> Path:
    """root/relative, refusing anything that would land outside root.

    Paths that come from config files (output names, figure files) go through here, so a config
    cannot write to or read from `../../somewhere` or an absolute path. Symlinks are resolved.
    """
    rel = Path(relative_path(str(relative), what))
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(f"{what} {str(relative)!r} resolves to {target}, outside {base} (a symlink?)")
    return target


def jsonable(obj: Any) -> Any:
    """A copy of obj that strict JSON accepts: NaN and inf become null, tensors become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return jsonable(_json_default(obj))


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, (dumps(obj, indent=2) + "\n").encode())


def write_csv(path: str | os.PathLike, header: list, rows: list[list]) -> None:
    """A CSV file with one header row, written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write(path, buf.getvalue().encode())


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); delete it or restore it from a backup") from e


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing, unreadable or not an object (a reader that
    skips what it cannot use, like the report)."""
    try:
        data = read_json(path)
    except (OSError, CorruptFileError):
        return None
    return data if isinstance(data, dict) else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file, written atomically and straight from the tensors' memory (no copy of the whole file in
    memory: the evaluation of ImageNet-size images writes hundreds of MB at a time)."""
    flat: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for k, v in tensors.items():
        t = v.detach().cpu().contiguous()
        base = t.untyped_storage().data_ptr()
        if base in storages:  # safetensors refuses tensors that share memory: copy the second one
            t = t.clone()
            base = t.untyped_storage().data_ptr()
        storages.add(base)
        flat[k] = t
    atomic_file(path, lambda tmp: st_save_file(flat, str(tmp), metadata=metadata), by_name=True)


def load_tensors(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, or only `keys` (read without loading the rest)."""
    path = Path(path)
    try:
        if keys is None:
            return st_load(path.read_bytes())
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            missing = [k for k in keys if k not in f.keys()]
            if missing:
                raise CorruptFileError(f"{path} lacks the tensors {', '.join(missing)}")
            return {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, ValueError, OSError) as e:
        raise CorruptFileError(f"{path} is not a valid safetensors file ({e})") from e


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata in a safetensors file's header ({} when it has none), read without the tensors."""
    path = Path(path)
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, ValueError, OSError) as e:
        raise CorruptFileError(f"{path} is not a valid safetensors file ({e})") from e


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (optimizer state dicts, say) into tensors and a JSON-able skeleton.

    Tensors are replaced by {"__tensor__": key}; the skeleton goes to JSON, the tensors to
    safetensors, so resuming needs no pickle.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj
            return {"__tensor__": key}
        if isinstance(obj, dict):
            # JSON keys are strings: remember which ones were ints (optimizer param indices).
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {key!r}")

    return tensors, walk(state, prefix or "state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton
