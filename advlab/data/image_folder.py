"""Image folders read with Pillow: which files, which label each gets, and their pixels.

Two layouts (`labels`):
- "folder" (the default): root/CLASS/IMAGE. A class is its folder's *name*: with `classes` names the
  folders are matched to them (a folder not among them is an error; a class without a folder is
  fine); folders all named by numbers (0, 1, 7, 012) take the label of their number; otherwise the
  sorted folder names are the classes.
- "filename": a flat folder whose file names end in the label, NAME_LABEL.png (foolbox's samples:
  cifar10_00_3.png); the label is the number after the last underscore, an index into `classes`.

Examples come class folder by class folder in sorted order (flat: sorted file names), files sorted by
name. All gray images give 1 channel, otherwise every image is converted to RGB (alpha is dropped).
All images must have the same size. Pillow's decompression-bomb warning is an error, and only the
formats listed in PILLOW_FORMATS are ever tried, whatever a file's bytes claim to be.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import AdvlabError, CorruptFileError
from ..progress import progress as progress_bar
from ..progress import write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP")  # never EPS & co., whatever the file says
LABEL_SOURCES = ("folder", "filename")
_GRAY_MODES = {"1", "L", "LA", "La"}
_GRAY16_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit PNGs open as I;16 (or I in older Pillow)
_NUMBER = re.compile(r"[0-9]+")
_LABEL_AT_END = re.compile(r"_([0-9]+)$")


@dataclass(frozen=True)
class ImageList:
    """The images of a folder and their labels, before any pixel is read."""
    root: Path
    where: str                 # the path as the user gave it, for messages
    files: list[Path]
    y: np.ndarray              # (N,) int64
    classes: list[str]
    labels: str                # how the labels were read: "name", "number" or "filename"


def list_image_folder(root: Path, where: str, classes: int | Sequence[str] | None = None,
                      labels: str = "folder", model_classes: Sequence[str] | None = None) -> ImageList:
    """The image files of `root` and their labels (see the module docstring); nothing is decoded.

    model_classes: the class names of the model the data is for (a trained run's), used when `classes`
    is None: numbered folders are read by number for that many classes, named ones are matched to them."""
    if labels not in LABEL_SOURCES:
        raise AdvlabError(f"`labels` must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}")
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    if labels == "filename":
        return _list_flat(root, where, entries, classes)
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    skipped = [p for p in entries if p not in class_dirs]
    if not class_dirs:
        loose = [p.name for p in skipped if p.suffix.lower() in IMAGE_SUFFIXES]
        found = (f"found images directly in it ({loose[0]}, ...)" if loose else "it has no sub-folders")
        hint = ("; or, as the file names end in _LABEL (e.g. cifar10_00_3.png), read the labels from them with "
                "`labels=filename`" if loose and all(_LABEL_AT_END.search(Path(n).stem) for n in loose) else "")
        raise AdvlabError(f"`data={where}`: {found}; put each class's images in its own sub-folder "
                          f"({where}/CLASS_NAME/IMAGE.png); the class names are the sub-folder names{hint}")
    folder_label, names, how = _folder_labels([d.name for d in class_dirs], classes, where, model_classes)
    files, y = [], []
    for d in class_dirs:
        inside = sorted(d.iterdir(), key=lambda p: p.name)
        images = [p for p in inside if _is_image(p)]
        skipped += [p for p in inside if p not in images]
        if not images:
            raise AdvlabError(f"`data={where}`: class folder {Path(where) / d.name} has no images "
                              f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
        files += images
        y += [folder_label[d.name]] * len(images)
    _report_skipped(root, where, skipped)
    return ImageList(root, where, files, np.array(y, dtype=np.int64), names, how)


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def _folder_labels(folders: list[str], classes, where: str,
                   model_classes: Sequence[str] | None = None) -> tuple[dict[str, int], list[str], str]:
    """{folder name: label}, the class names, and how the folders were read ("name" or "number")."""
    numbered = all(_NUMBER.fullmatch(f) for f in folders)
    if classes is None and model_classes is not None:
        unknown = [f for f in folders if f not in model_classes]
        if numbered and unknown:
            classes = len(model_classes)
        elif unknown:
            raise AdvlabError(f"`data={where}`: folder {unknown[0]!r}{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''} "
                              f"is not one of the model's classes ({', '.join(model_classes[:5])}"
                              f"{', ...' if len(model_classes) > 5 else ''}); a class is its folder's name: rename the "
                              f"folders, or say what they are with `classes` (names in the model's order, or a "
                              f"number when the folders are numbered)")
        else:
            return {f: list(model_classes).index(f) for f in folders}, list(model_classes), "name"
    if isinstance(classes, (list, tuple)):
        unknown = [f for f in folders if f not in classes]
        if unknown:
            hint = ("; the folders are numbered, so to take each folder's number as its label pass "
                    "`classes=K` (K the number of classes)" if numbered else
                    "; add the missing names to `classes` (in the model's class order) or rename the folders")
            raise AdvlabError(f"`data={where}`: folder{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(repr(f) for f in unknown[:5])}{', ...' if len(unknown) > 5 else ''} "
                              f"{'are' if len(unknown) > 1 else 'is'} not among the class names given by `classes` "
                              f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); a class is its "
                              f"folder's name{hint}")
        return {f: list(classes).index(f) for f in folders}, list(classes), "name"
    if not numbered:
        if classes is not None:
            bad = next(f for f in folders if not _NUMBER.fullmatch(f))
            raise AdvlabError(f"`data={where}`: `classes={classes}` maps folders named by number (0..{classes - 1}) "
                              f"to those labels, but folder {bad!r} is not a number; give the class names instead "
                              f"(`classes=name0,name1,...` in the model's class order), which are matched to the "
                              f"folder names")
        return {f: i for i, f in enumerate(folders)}, folders, "name"
    numbers = {f: int(f) for f in folders}
    twins = [f for f in folders if sum(n == numbers[f] for n in numbers.values()) > 1]
    if twins:
        raise AdvlabError(f"`data={where}`: folders {', '.join(repr(f) for f in twins)} name the same class number; "
                          f"merge or rename them")
    top = max(numbers.values())
    if classes is not None and top >= classes:
        raise AdvlabError(f"`data={where}`: folder {max(numbers, key=numbers.get)!r} is class {top}, out of range for "
                          f"`classes={classes}` (labels 0..{classes - 1}); pass `classes={top + 1}` or more")
    count = classes if classes is not None else top + 1
    return numbers, [str(i) for i in range(count)], "number"


def _list_flat(root: Path, where: str, entries: list[Path], classes) -> ImageList:
    files = [p for p in entries if _is_image(p)]
    if not files:
        raise AdvlabError(f"`data={where}`: `labels=filename` reads a flat folder of images named NAME_LABEL.png, "
                          f"but {where} has no images directly in it")
    unlabelled = [p.name for p in files if not _LABEL_AT_END.search(p.stem)]
    if unlabelled:
        raise AdvlabError(f"`data={where}`: with `labels=filename` every file name must end in _LABEL (a class "
                          f"number, e.g. cifar10_00_3.png), but {unlabelled[0]} does not"
                          f"{f' ({len(unlabelled)} files)' if len(unlabelled) > 1 else ''}")
    _report_skipped(root, where, [p for p in entries if p not in files])
    y = np.array([int(_LABEL_AT_END.search(p.stem).group(1)) for p in files], dtype=np.int64)
    top, row = int(y.max()), int(y.argmax())
    if isinstance(classes, int):
        names = [str(i) for i in range(classes)]
    elif classes is not None:
        names = list(classes)
    else:
        names = [str(i) for i in range(top + 1)]
    if top >= len(names):
        raise AdvlabError(f"`data={where}`: {files[row].name} has label {top}, out of range for the {len(names)} "
                          f"classes given by `classes` (labels 0..{len(names) - 1}); pass `classes={top + 1}` or "
                          f"list {top + 1} or more names")
    return ImageList(root, where, files, y, names, "filename")


def _report_skipped(root: Path, where: str, skipped: list[Path]) -> None:
    if skipped:
        examples = ", ".join(str(p.relative_to(root)) for p in skipped[:3])
        write(f"{where}: skipped {len(skipped)} {'entry' if len(skipped) == 1 else 'entries'} that are hidden or not "
              f"{'/'.join(IMAGE_SUFFIXES)} files ({examples}{', ...' if len(skipped) > 3 else ''})")


def read_image_folder(images: ImageList) -> tuple[np.ndarray, str]:
    """The pixels of every listed image -> (x (N, C, H, W) uint8 or float32 in [0, 1], sha256 of the files)."""
    root, where = images.root, images.where
    formats = pillow_formats()
    arrays, gray, hashes = [], [], []
    first: tuple[Path, tuple[int, int]] | None = None
    for p in progress_bar(images.files, desc="reading images"):
        shown = Path(where) / p.relative_to(root)
        data = p.read_bytes()
        hashes.append((p.relative_to(root).as_posix(), hashlib.sha256(data).hexdigest()))
        a, is_gray, size = decode_image(data, shown, formats)
        if first is None:
            first = (shown, size)
        elif size != first[1]:
            raise AdvlabError(same_size_message(where, shown, size, *first))
        arrays.append(a)
        gray.append(is_gray)
    if any(a.dtype != np.uint8 for a in arrays):  # some 16-bit images: everything as floats in [0, 1]
        arrays = [a.astype(np.float32) / np.float32(255) if a.dtype == np.uint8 else a for a in arrays]
    if all(gray):
        x = np.stack(arrays)[:, None]  # (N, 1, H, W)
    else:
        x = np.stack([np.repeat(a[..., None], 3, axis=2) if g else a for a, g in zip(arrays, gray)])
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    return x, files_digest(hashes)


def same_size_message(where: str, shown: Path, size: tuple[int, int], first: Path, first_size: tuple[int, int]) -> str:
    return (f"`data={where}`: images must all have the same size, but {shown} is {size[0]}x{size[1]} (width x "
            f"height) and {first} is {first_size[0]}x{first_size[1]}; resize them to one size first, or read them "
            f"with a preprocessing that gives one size (`preprocess=res256crop224`, docs/data.md)")


def files_digest(hashes: list[tuple[str, str]]) -> str:
    """sha256 of the lines `relative/path<TAB>file-sha256`, sorted by path."""
    return hashlib.sha256("".join(f"{rel}\t{h}\n" for rel, h in sorted(hashes)).encode()).hexdigest()


def pillow_formats() -> list[str]:
    from PIL import Image

    Image.init()
    return [f for f in PILLOW_FORMATS if f in Image.OPEN]


def decode_image(data: bytes, shown: Path, formats: list[str]) -> tuple[np.ndarray, bool, tuple[int, int]]:
    """One image -> (H, W) gray or (H, W, 3) RGB; uint8, or float32 in [0, 1] for 16-bit gray."""
    img = open_image(data, shown, formats)
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


def open_image(data: bytes, shown: Path, formats: list[str]):
    """The file's bytes -> a loaded PIL image (first frame), or a clear error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=formats)
            img.load()
            return img
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise AdvlabError(f"{shown} is refused as a possible decompression bomb ({e}); resize the image, or raise "
                          f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
    except UnidentifiedImageError:
        raise CorruptFileError(f"{shown} cannot be read as an image (it is not a {'/'.join(formats)} file that "
                               f"Pillow recognises); re-save it as PNG or JPEG, or remove it") from None
    except Exception as e:  # noqa: BLE001 - a decoder on untrusted bytes fails in many ways
        raise CorruptFileError(f"{shown} cannot be read as an image ({type(e).__name__}: {e}); re-save it as "
                               f"PNG or JPEG, or remove it") from e
