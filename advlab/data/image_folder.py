"""Image folders: root/CLASS/IMAGE, read with Pillow, as (N, C, H, W) arrays plus labels.

Classes are the sorted sub-folder names; examples come class by class, files sorted by name. All
gray images give 1 channel, otherwise every image is converted to RGB (alpha is dropped). All
images must have the same size. Pillow's decompression-bomb warning is an error, and only the
formats listed in PILLOW_FORMATS are ever tried, whatever a file's bytes claim to be.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np

from ..errors import AdvlabError, CorruptFileError
from ..progress import progress as progress_bar
from ..progress import write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP")  # never EPS & co., whatever the file says
_GRAY_MODES = {"1", "L", "LA", "La"}
_GRAY16_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit PNGs open as I;16 (or I in older Pillow)


def read_image_folder(root: Path, where: str) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """root/CLASS/IMAGE -> (x (N, C, H, W) uint8 or float32 in [0, 1], y, class names, sha256)."""
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    skipped = [p for p in entries if p not in class_dirs]
    if not class_dirs:
        loose = [p.name for p in skipped if p.suffix.lower() in IMAGE_SUFFIXES]
        found = (f"found images directly in it ({loose[0]}, ...)" if loose else "it has no sub-folders")
        raise AdvlabError(f"`data={where}`: {found}; put each class's images in its own sub-folder "
                          f"({where}/CLASS_NAME/IMAGE.png); the class names are the sub-folder names")
    files: list[tuple[int, Path]] = []
    for label, d in enumerate(class_dirs):
        inside = sorted(d.iterdir(), key=lambda p: p.name)
        images = [p for p in inside if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [p for p in inside if p not in images]
        if not images:
            raise AdvlabError(f"`data={where}`: class folder {Path(where) / d.name} has no images "
                              f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
        files += [(label, p) for p in images]
    if skipped:
        examples = ", ".join(str(p.relative_to(root)) for p in skipped[:3])
        write(f"{where}: skipped {len(skipped)} {'entry' if len(skipped) == 1 else 'entries'} that are hidden or not {'/'.join(IMAGE_SUFFIXES)} files "
              f"({examples}{', ...' if len(skipped) > 3 else ''})")

    from PIL import Image

    Image.init()
    formats = [f for f in PILLOW_FORMATS if f in Image.OPEN]
    arrays, gray, hashes = [], [], []
    first: tuple[Path, tuple[int, int]] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for _, p in progress_bar(files, desc="reading images"):
            shown = Path(where) / p.relative_to(root)
            data = p.read_bytes()
            hashes.append((p.relative_to(root).as_posix(), hashlib.sha256(data).hexdigest()))
            a, is_gray, size = _decode(data, shown, formats)
            if first is None:
                first = (shown, size)
            elif size != first[1]:
                raise AdvlabError(f"`data={where}`: images must all have the same size, but {shown} is "
                                  f"{size[0]}x{size[1]} (width x height) and {first[0]} is {first[1][0]}x{first[1][1]}; "
                                  f"resize them to one size first")
            arrays.append(a)
            gray.append(is_gray)
    if any(a.dtype != np.uint8 for a in arrays):  # some 16-bit images: everything as floats in [0, 1]
        arrays = [a.astype(np.float32) / np.float32(255) if a.dtype == np.uint8 else a for a in arrays]
    if all(gray):
        x = np.stack(arrays)[:, None]  # (N, 1, H, W)
    else:
        x = np.stack([np.repeat(a[..., None], 3, axis=2) if g else a for a, g in zip(arrays, gray)])
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    y = np.array([label for label, _ in files], dtype=np.int64)
    digest = hashlib.sha256("".join(f"{rel}\t{h}\n" for rel, h in sorted(hashes)).encode()).hexdigest()
    return x, y, [d.name for d in class_dirs], digest


def _decode(data: bytes, shown: Path, formats: list[str]) -> tuple[np.ndarray, bool, tuple[int, int]]:
    """One image -> (H, W) gray or (H, W, 3) RGB; uint8, or float32 in [0, 1] for 16-bit gray."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            img.load()
            mode, size = img.mode, img.size
            if mode in _GRAY_MODES:
                return np.asarray(img.convert("L")), True, size
            if mode in _GRAY16_MODES:
                a = np.asarray(img).astype(np.int64)
                if a.size and (a.min() < 0 or a.max() > 65535):
                    raise AdvlabError(f"{shown}: a mode {mode} image with values outside 0..65535; save it as an "
                                      f"8-bit or 16-bit image")
                return (a / 65535).astype(np.float32), True, size
            if mode == "F":
                raise AdvlabError(f"{shown}: floating-point images are not supported; save it as an 8-bit image, "
                                  f"or put the arrays in a .npz file")
            return np.asarray(img.convert("RGB")), False, size  # RGBA, P, CMYK, ...: alpha is dropped
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise AdvlabError(f"{shown} is refused as a possible decompression bomb ({e}); resize the image, or raise "
                          f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
    except AdvlabError:
        raise
    except UnidentifiedImageError:
        raise CorruptFileError(f"{shown} cannot be read as an image (it is not a {'/'.join(formats)} file that "
                               f"Pillow recognises); re-save it as PNG or JPEG, or remove it") from None
    except Exception as e:  # noqa: BLE001 - a decoder on untrusted bytes fails in many ways
        raise CorruptFileError(f"{shown} cannot be read as an image ({type(e).__name__}: {e}); re-save it as "
                               f"PNG or JPEG, or remove it") from e
