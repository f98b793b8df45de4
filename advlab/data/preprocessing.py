"""RobustBench's image preprocessings, done with Pillow: an image file of any size -> a fixed-size array.

    prepare = get_preprocess("res256crop224")
    pixels = prepare(pil_image)            # (224, 224, 3) uint8

The names and what they do are RobustBench's (its `PREPROCESSINGS`, built from torchvision transforms
on PIL images): `res256crop224` resizes the shorter side to 256 (bilinear, aspect kept) and takes the
central 224x224; `bicubicres256crop224` the same with bicubic resizing; `crop288` takes the central
288x288 without resizing; `res224` resizes to 224x224 (aspect not kept); `none` keeps the image as it
is (all images must then have the same size). The arithmetic is torchvision's (the long side's size
`int(256 * long / short)`, the crop's corner `round((size - crop) / 2)`, zero padding where an image is
smaller than the crop), so the pixels are the ones RobustBench evaluates on; tests/test_zoo_extra.py
checks that against torchvision where it is installed. Every image becomes RGB (gray and palette
images are converted, alpha is dropped), as torchvision's and RobustBench's loaders do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import AdvlabError

if TYPE_CHECKING:  # PIL is imported lazily, where an image is read
    from PIL import Image

PREPROCESSINGS = ("none", "res256crop224", "bicubicres256crop224", "crop288", "res224")
# The one RobustBench evaluates ImageNet models with unless a model says otherwise.
IMAGENET_DEFAULT = "res256crop224"
_OUTPUT_SIZE = {"res256crop224": 224, "bicubicres256crop224": 224, "crop288": 288, "res224": 224, "none": None}


def check_preprocess(name: str) -> str:
    """The canonical name (case and '-'/'_' ignored, so RobustBench's 'Res256Crop224' works too)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in PREPROCESSINGS:
        raise AdvlabError(f"`preprocess={name}` is not one of {', '.join(PREPROCESSINGS)} (RobustBench's "
                          f"preprocessings; res256crop224 is its ImageNet default)")
    return key


def output_size(name: str) -> int | None:
    """Height and width of what `name` produces (None: the image's own size)."""
    return _OUTPUT_SIZE[check_preprocess(name)]


def get_preprocess(name: str) -> Callable[["Image.Image"], np.ndarray]:
    """PIL image -> (H, W, 3) uint8 array, as RobustBench's preprocessing `name` makes it."""
    name = check_preprocess(name)

    def prepare(img) -> np.ndarray:
        from PIL import Image

        img = img.convert("RGB")
        if name in ("res256crop224", "bicubicres256crop224"):
            img = _resize_shorter_side(img, 256, Image.BICUBIC if name.startswith("bicubic") else Image.BILINEAR)
        elif name == "res224":
            if img.size != (224, 224):
                img = img.resize((224, 224), Image.BILINEAR)
        pixels = np.asarray(img)
        size = _OUTPUT_SIZE[name]
        return pixels if size is None else center_crop(pixels, size)

    return prepare


def _resize_shorter_side(img, size: int, resample: int):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample)


def center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """The central size x size of an (H, W, C) array, zero-padded first where it is smaller (torchvision's rule)."""
    h, w = pixels.shape[:2]
    if size > w or size > h:
        left, top = max(size - w, 0) // 2, max(size - h, 0) // 2
        right, bottom = (max(size - w, 0) + 1) // 2, (max(size - h, 0) + 1) // 2
        pixels = np.pad(pixels, ((top, bottom), (left, right), (0, 0)))
        h, w = pixels.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return pixels[top:top + size, left:left + size]
