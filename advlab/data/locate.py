"""Where dataset files come from.

Search order (DESIGN.md): an explicit data_dir, $ADVLAB_DATA, the user cache (~/.cache/advlab),
the system folder Debian's dataset packages install (/usr/share/datasets), then a download from
the official source, verified by checksum, into the user cache. Set ADVLAB_OFFLINE=1 to skip the
download.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptFileError, DataNotFoundError
from ..io import atomic_write

SYSTEM_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name as published, e.g. train-images-idx3-ubyte.gz
    md5: str   # checksum of the published file


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "advlab"


def candidate_dirs(dataset: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders to look in, in order. Each root is tried as `root/<dataset>` and as `root` itself."""
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("ADVLAB_DATA"):
        roots.append(Path(os.environ["ADVLAB_DATA"]).expanduser())
    dirs: list[Path] = []
    for root in roots:
        dirs += [root / dataset, root]
    dirs += [cache_dir() / dataset, SYSTEM_DIR / dataset]
    return dirs


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or, for a .gz name, its decompressed twin."""
    for candidate in (name, name[:-3] if name.endswith(".gz") else None):
        if candidate and (folder / candidate).is_file():
            return folder / candidate
    return None


def locate(dataset: str, files: list[RemoteFile], urls: list[str], data_dir=None, how_to_get: str = "") -> list[Path]:
    """Paths to `files`, all from the same folder; downloads them if no folder has them all."""
    looked = candidate_dirs(dataset, data_dir)
    for folder in looked:
        found = [find_file(folder, f.name) for f in files]
        if all(found):
            return found  # type: ignore[return-value]
    if data_dir and not Path(data_dir).expanduser().exists():
        raise DataNotFoundError(f"`data_dir={data_dir}` does not exist")
    target = cache_dir() / dataset
    errors = []
    if os.environ.get("ADVLAB_OFFLINE"):
        errors.append("download skipped because ADVLAB_OFFLINE is set")
    else:
        try:
            return [download(f, urls, target) for f in files]
        except CorruptFileError:
            raise
        except (OSError, urllib.error.URLError) as e:
            errors.append(f"download failed: {e}")
    places = "\n".join(f"  - {p}" for p in looked)
    names = ", ".join(f.name for f in files)
    raise DataNotFoundError(
        f"{dataset}: could not find {names}. Looked in:\n{places}\n"
        f"and {'; '.join(errors)}.\nTo fix: {how_to_get or 'put the files in one of those folders'} "
        f"(or pass `data_dir=DIR` / set ADVLAB_DATA=DIR).")


def download(f: RemoteFile, urls: list[str], target: Path, timeout: float = 30.0) -> Path:
    last: Exception | None = None
    for base in urls:
        url = base + f.name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except (OSError, urllib.error.URLError) as e:
            last = e
            continue
        digest = hashlib.md5(data).hexdigest()
        if digest != f.md5:
            raise CorruptFileError(f"{url}: checksum mismatch (md5 {digest}, expected {f.md5}); the file was not saved")
        path = target / f.name
        atomic_write(path, data)
        return path
    raise OSError(f"could not download {f.name} from {', '.join(urls)}: {last}")
