"""Image folders read on demand: ImageNet-size data in memory that does not grow with the number of images.

    images = LazyImages.open(listing, preprocess="res256crop224")   # lists files, decodes the first one
    first = images[:500]                                           # still nothing decoded
    x = first.load()                                               # (500, 3, 224, 224) float32 in [0, 1]

`load()` decodes the rows in parallel with a torch DataLoader (worker processes), each image through
one of RobustBench's preprocessings (advlab.data.preprocessing), so images may differ in size. An
evaluation (advlab.evaluate.chunked) loads a chunk of rows at a time and keeps only the per-point
results, so its peak memory is one chunk's, whatever the number of images.

The folder's digest covers each file's relative path, size and modification time (reading every byte
of 50,000 JPEGs to hash them would cost more than the evaluation of a few); a rewritten file changes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import AdvlabError
from ..progress import progress as progress_bar
from .image_folder import ImageList, open_image, pillow_formats, same_size_message
from .preprocessing import check_preprocess, get_preprocess, output_size

ROWS_PER_WORKER_BATCH = 32


class LazyImages:
    """Rows of an image folder, decoded when `load()` is called. Slicing (`x[a:b]`) gives a view."""

    ndim = 4

    def __init__(self, root: Path, where: str, files: list[Path], preprocess: str, shape: tuple[int, int, int],
                 workers: int | None = None):
        self.root, self.where, self.files = root, where, list(files)
        self.preprocess, self.row_shape, self.workers = preprocess, tuple(shape), workers

    @classmethod
    def open(cls, listing: ImageList, preprocess: str, workers: int | None = None) -> "LazyImages":
        """The listed images through `preprocess`; the first image is decoded to learn the shape of a row."""
        preprocess = check_preprocess(preprocess)
        size = output_size(preprocess)
        if size is None:  # "none": every image must have the first one's size, checked as each is read
            first = _decode(listing.files[0], listing.root, listing.where, preprocess)
            shape = (3, *first.shape[:2])
        else:
            shape = (3, size, size)
        return cls(listing.root, listing.where, listing.files, preprocess, shape, workers)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), *self.row_shape))

    def __getitem__(self, key: slice) -> "LazyImages":
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"LazyImages takes a plain slice such as x[:500] (got {key!r}); load() the rows first")
        return LazyImages(self.root, self.where, self.files[key], self.preprocess, self.row_shape, self.workers)

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} images from {self.where}, preprocess={self.preprocess})"

    def digest(self) -> str:
        """sha256 of the lines `relative/path<TAB>size<TAB>mtime_ns` (see the module docstring)."""
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def load(self, progress: bool = False) -> torch.Tensor:
        """(N, 3, H, W) float32 in [0, 1]: every row decoded and preprocessed, in parallel."""
        from torch.utils.data import DataLoader

        out = torch.empty(self.shape, dtype=torch.float32)
        if len(self) == 0:
            return out
        workers = self.workers if self.workers is not None else default_workers(len(self))
        loader = DataLoader(_Decoder(self), batch_size=ROWS_PER_WORKER_BATCH, num_workers=workers,
                            collate_fn=list, persistent_workers=False)
        row = 0
        batches = progress_bar(loader, "reading images", progress, total=len(loader))
        for batch in batches:
            for pixels, error in batch:
                if error:
                    raise AdvlabError(error)
                out[row] = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)  # (H, W, 3) uint8 -> (3, H, W)
                row += 1
        return out.div_(255)


def rows(x, progress: bool = False) -> torch.Tensor:
    """x as a tensor: a LazyImages is decoded (all of it: slice it first), a tensor is returned as it is."""
    return x.load(progress) if isinstance(x, LazyImages) else x


def default_workers(n: int) -> int:
    """Decoding processes: none for a handful of rows (starting workers costs more), else up to 8 of the CPUs."""
    if n <= ROWS_PER_WORKER_BATCH:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus))


class _Decoder(torch.utils.data.Dataset):
    """Row i -> ((H, W, 3) uint8 pixels, "") or (None, the error message): errors travel as values, so the main
    process raises one clear line instead of a worker's wrapped traceback."""

    def __init__(self, images: LazyImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        images = self.images
        try:
            pixels = _decode(images.files[i], images.root, images.where, images.preprocess)
            if pixels.shape != (*images.row_shape[1:], 3):
                first = images.files[0]
                shown = Path(images.where) / images.files[i].relative_to(images.root)
                raise AdvlabError(same_size_message(images.where, shown, pixels.shape[1::-1],
                                                    Path(images.where) / first.relative_to(images.root),
                                                    images.row_shape[:0:-1]))
            return pixels, ""
        except AdvlabError as e:
            return None, str(e)


def _decode(path: Path, root: Path, where: str, preprocess: str) -> np.ndarray:
    shown = Path(where) / path.relative_to(root)
    img = open_image(path.read_bytes(), shown, pillow_formats())
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        raise AdvlabError(f"{shown}: a {img.mode} image (16-bit or floating point) is read only without "
                          f"`preprocess`; save it as an 8-bit image")
    return get_preprocess(preprocess)(img)
