"""Parser for the IDX format used by MNIST and Fashion-MNIST (optionally gzipped).

Header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
dimension. The payload must have exactly the size the header announces: a short file is an
error, never a half-loaded array.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise CorruptFileError(f"{path}: the gzip stream is truncated or damaged ({e}); "
                                   "delete the file and fetch it again") from e
    return parse_idx(raw, source=str(path))


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise CorruptFileError(f"{source}: not an IDX file (wrong magic number {raw[:4].hex() or 'empty'}); "
                               "expected 0000 followed by a type code such as 08")
    dtype = _TYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CorruptFileError(f"{source}: IDX header is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        kind = "truncated" if got < expected else "longer than its header says"
        raise CorruptFileError(f"{source}: IDX file is {kind} (header says {shape}, {expected} bytes; "
                               f"found {got}); delete the file and fetch it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an uint8 array as IDX (gzipped when the name ends in .gz). Used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    Path(path).write_bytes(data)
