"""Bring-your-own data (issue 17): .npz, .safetensors and image folders become a test-only Dataset."""

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from advlab.data import load_data_path
from advlab.data.files import parse_bounds, parse_classes
from advlab.errors import AdvlabError, ConfigError, CorruptFileError, DataNotFoundError


def npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def rng_images(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ---------------------------------------------------------------- arrays: layouts and dtypes

def test_nchw_floats_round_trip_exactly_as_the_test_split(tmp_path):
    x = rng_images((5, 3, 4, 6))
    y = np.array([2, 0, 1, 1, 0])
    path = npz(tmp_path, "mydata.npz", x=x, y=y)
    ds = load_data_path(path)
    assert torch.equal(ds.x_test, torch.from_numpy(x)) and ds.x_test.dtype == torch.float32
    assert torch.equal(ds.y_test, torch.tensor([2, 0, 1, 1, 0])) and ds.y_test.dtype == torch.int64
    assert ds.x_train.shape == (0, 3, 4, 6) and ds.y_train.shape == (0,) and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (3, 4, 6)
    assert ds.bounds == (0.0, 1.0) and ds.classes == ("0", "1", "2")
    assert ds.name == "mydata.npz"
    assert ds.params == {"path": str(path.resolve()), "format": "npz",
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_channels_last_is_transposed(tmp_path):
    x = rng_images((4, 5, 6, 3))  # (N, H, W, C)
    ds = load_data_path(npz(tmp_path, x=x, y=np.zeros(4, dtype=np.int64)))
    assert ds.x_test.shape == (4, 3, 5, 6)
    assert torch.equal(ds.x_test, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_axis_one_with_channel_size_means_channels_first(tmp_path):
    x = rng_images((2, 3, 5, 3))  # ambiguous: axis 1 could be channels, so it is
    ds = load_data_path(npz(tmp_path, x=x, y=np.zeros(2, dtype=np.int64)))
    assert torch.equal(ds.x_test, torch.from_numpy(x))


def test_single_channel_last_and_gray_without_channel_axis(tmp_path):
    x = rng_images((3, 7, 5))  # (N, H, W)
    ds = load_data_path(npz(tmp_path, "a.npz", x=x, y=np.zeros(3, dtype=np.int64)))
    assert torch.equal(ds.x_test, torch.from_numpy(x)[:, None])
    ds = load_data_path(npz(tmp_path, "b.npz", x=x[..., None], y=np.zeros(3, dtype=np.int64)))  # (N, H, W, 1)
    assert torch.equal(ds.x_test, torch.from_numpy(x)[:, None])


def test_feature_vectors_with_explicit_and_no_bounds(tmp_path):
    x = np.array([[-3.5, 2.0, 0.25], [1.0, -1.0, 4.0]], dtype=np.float64)
    path = npz(tmp_path, x=x, y=np.array([1, 0]))
    ds = load_data_path(path, bounds=None)
    assert ds.x_test.dtype == torch.float32 and ds.bounds is None
    assert torch.equal(ds.x_test, torch.tensor(x, dtype=torch.float32))
    assert load_data_path(path, bounds=(-5, 5)).bounds == (-5.0, 5.0)
    assert load_data_path(path, bounds="-4,4").bounds == (-4.0, 4.0)  # a CLI string is parsed too


def test_uint8_pixels_are_scaled_to_unit_range(tmp_path):
    x = np.array([[[0, 1], [128, 255]]], dtype=np.uint8)  # (1, 2, 2)
    path = npz(tmp_path, x=x, y=np.array([0]))
    ds = load_data_path(path)
    assert ds.bounds == (0.0, 1.0)
    assert torch.equal(ds.x_test, torch.tensor([[[[0.0, 1 / 255], [128 / 255, 1.0]]]], dtype=torch.float32))
    assert ds.x_test.max().item() == 1.0
    assert load_data_path(path, bounds=(0, 1)).bounds == (0.0, 1.0)
    with pytest.raises(AdvlabError, match=r"8-bit pixels are scaled to \[0, 1\].*`bounds=0,255` does not apply"):
        load_data_path(path, bounds=(0, 255))


def test_float_pixels_in_0_255_need_explicit_bounds(tmp_path):
    x = np.array([[0.0, 12.5, 255.0]], dtype=np.float32)
    path = npz(tmp_path, x=x, y=np.array([0]))
    with pytest.raises(AdvlabError) as e:
        load_data_path(path)
    assert "values in [0, 255], not in [0, 1]" in str(e.value)
    assert "`bounds=LO,HI`" in str(e.value) and "`bounds=none`" in str(e.value)
    ds = load_data_path(path, bounds=(0, 255))
    assert ds.bounds == (0.0, 255.0) and torch.equal(ds.x_test, torch.from_numpy(x))  # not rescaled


def test_integer_pixels_in_0_255_hint_at_uint8(tmp_path):
    path = npz(tmp_path, x=np.array([[0, 200]], dtype=np.int64), y=np.array([0]))
    with pytest.raises(AdvlabError, match="store x as uint8"):
        load_data_path(path)


def test_explicit_bounds_must_contain_the_data(tmp_path):
    path = npz(tmp_path, x=np.array([[-0.5, 0.5], [0.0, 2.0]]), y=np.array([0, 1]))
    with pytest.raises(AdvlabError, match=r"values in \[-0\.5, 2\], outside `bounds=0,1`"):
        load_data_path(path, bounds=(0, 1))


def test_whole_float_labels_are_accepted_fractional_ones_are_not(tmp_path):
    ds = load_data_path(npz(tmp_path, "a.npz", x=rng_images((3, 2)), y=np.array([1.0, 0.0, 2.0])))
    assert torch.equal(ds.y_test, torch.tensor([1, 0, 2])) and ds.y_test.dtype == torch.int64
    with pytest.raises(AdvlabError, match="whole class numbers; row 1 is 0.5"):
        load_data_path(npz(tmp_path, "b.npz", x=rng_images((3, 2)), y=np.array([1.0, 0.5, 2.0])))


def test_safetensors_round_trip_with_class_names_in_metadata(tmp_path):
    x = torch.rand(4, 6, 6, 1)  # channels last
    y = torch.tensor([0, 2, 1, 2], dtype=torch.int32)
    path = tmp_path / "mine.safetensors"
    save_file({"x": x, "y": y}, str(path), metadata={"classes": '["cat", "dog", "eel"]'})
    ds = load_data_path(path)
    assert torch.equal(ds.x_test, x.permute(0, 3, 1, 2))
    assert torch.equal(ds.y_test, torch.tensor([0, 2, 1, 2])) and ds.y_test.dtype == torch.int64
    assert ds.classes == ("cat", "dog", "eel") and ds.name == "mine.safetensors"
    assert ds.params["format"] == "safetensors"
    assert ds.params["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_safetensors_uint8_and_bfloat16(tmp_path):
    save_file({"x": torch.tensor([[0, 51, 255]], dtype=torch.uint8), "y": torch.tensor([0])}, str(tmp_path / "a.safetensors"))
    assert torch.equal(load_data_path(tmp_path / "a.safetensors").x_test, torch.tensor([[0.0, 0.2, 1.0]]))
    save_file({"x": torch.tensor([[0.5, 0.25]], dtype=torch.bfloat16), "y": torch.tensor([0])}, str(tmp_path / "b.safetensors"))
    assert torch.equal(load_data_path(tmp_path / "b.safetensors").x_test, torch.tensor([[0.5, 0.25]]))


# ---------------------------------------------------------------- classes

def test_class_names_from_file_from_count_and_from_list(tmp_path):
    path = npz(tmp_path, x=rng_images((3, 2)), y=np.array([0, 1, 1]), classes=np.array(["ant", "bee"]))
    assert load_data_path(path).classes == ("ant", "bee")
    assert load_data_path(path, classes=4).classes == ("0", "1", "2", "3")
    assert load_data_path(path, classes=["x", "y", "z"]).classes == ("x", "y", "z")
    assert load_data_path(path, classes="cat,dog").classes == ("cat", "dog")
    bare = npz(tmp_path, "bare.npz", x=rng_images((3, 2)), y=np.array([0, 4, 1]))
    assert load_data_path(bare).classes == ("0", "1", "2", "3", "4")


def test_labels_beyond_the_classes_say_how_to_fix_it(tmp_path):
    path = npz(tmp_path, x=rng_images((3, 2)), y=np.array([0, 3, 1]), classes=np.array(["ant", "bee"]))
    with pytest.raises(AdvlabError) as e:
        load_data_path(path)
    assert "label 3 (row 1) is out of range for the 2 classes named in the file's 'classes'" in str(e.value)
    assert "`classes=4`" in str(e.value)
    with pytest.raises(AdvlabError, match=r"out of range for the 3 classes given by `classes` .*`classes=4`"):
        load_data_path(path, classes=3)
    with pytest.raises(AdvlabError, match=r"out of range for the 2 classes named by `classes`"):
        load_data_path(path, classes=["a", "b"])


def test_negative_labels_mismatched_lengths_and_bad_label_shapes(tmp_path):
    with pytest.raises(AdvlabError, match=r"negative labels \(first: -1 in row 2\)"):
        load_data_path(npz(tmp_path, "a.npz", x=rng_images((3, 2)), y=np.array([0, 1, -1])))
    with pytest.raises(AdvlabError, match="x has 3 examples but y has 2 labels"):
        load_data_path(npz(tmp_path, "b.npz", x=rng_images((3, 2)), y=np.array([0, 1])))
    with pytest.raises(AdvlabError, match=r"1-D array of class indices, got shape \(3, 4\); if y is one-hot"):
        load_data_path(npz(tmp_path, "c.npz", x=rng_images((3, 2)), y=np.eye(4)[:3]))
    with pytest.raises(AdvlabError, match="y has dtype <U1"):
        load_data_path(npz(tmp_path, "d.npz", x=rng_images((3, 2)), y=np.array(["a", "b", "c"])))


def test_nan_and_inf_inputs_name_the_rows(tmp_path):
    x = rng_images((8, 2, 2))
    x[3, 0, 1] = np.nan
    x[6, 1, 1] = np.inf
    with pytest.raises(AdvlabError, match=r"NaN or infinite values in 2 examples, rows 3, 6;"):
        load_data_path(npz(tmp_path, x=x, y=np.zeros(8, dtype=np.int64)))


def test_bad_shapes_and_empty_data(tmp_path):
    with pytest.raises(AdvlabError, match=r"x has shape \(3,\).*x\[:, None\]"):
        load_data_path(npz(tmp_path, "a.npz", x=rng_images((3,)), y=np.zeros(3, dtype=np.int64)))
    with pytest.raises(AdvlabError, match=r"x has shape \(3, 0\), with no values per example"):
        load_data_path(npz(tmp_path, "c.npz", x=np.zeros((3, 0), np.float32), y=np.zeros(3, np.int64)))
    with pytest.raises(AdvlabError, match="x and y are empty"):
        load_data_path(npz(tmp_path, "b.npz", x=np.zeros((0, 2), np.float32), y=np.zeros(0, np.int64)))


# ---------------------------------------------------------------- .npz safety and damage

class _Armed:
    """Unpickling this object creates MARKER: proof that a loader unpickled the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(marker):
    Path(marker).write_text("unpickled")
    return 0


@pytest.mark.parametrize("key", ["x", "y", "classes"])
def test_object_arrays_are_refused_and_never_unpickled(tmp_path, key):
    marker = tmp_path / "unpickled.txt"
    arrays = {"x": rng_images((2, 2)), "y": np.array([0, 1]), "classes": np.array(["a", "b"])}
    armed = np.empty(2, dtype=object)
    armed[0], armed[1] = _Armed(marker), _Armed(marker)
    arrays[key] = armed
    path = npz(tmp_path, **arrays)
    with pytest.raises(AdvlabError) as e:
        load_data_path(path)
    assert type(e.value) is AdvlabError  # refused for what it is, not reported as damage
    assert str(e.value).startswith(f"{path}: array '{key}' holds Python objects (dtype=object), which advlab "
                                   f"never unpickles; save it as a plain array")
    assert not marker.exists()
    # The control: a loader that does unpickle sets the trap off, so the test above can fail.
    np.load(path, allow_pickle=True)[key]
    assert marker.read_text() == "unpickled"


def test_truncated_array_and_not_a_zip(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3), np.float32))
    raw = buf.getvalue().replace(b"(2, 3)", b"(9, 9)")  # the header now claims more data than there is
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", raw)
        buf = io.BytesIO()
        np.save(buf, np.zeros(9, np.int64))
        zf.writestr("y.npy", buf.getvalue())
    with pytest.raises(CorruptFileError, match=r"short\.npz: array 'x' claims shape \(9, 9\) of float32 but the file "
                                               r"holds less data; the file is truncated or damaged, write it again$"):
        load_data_path(path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(CorruptFileError, match=r"bad\.npz is not a valid \.npz file.*numpy\.savez"):
        load_data_path(bad)


def test_npz_without_x_and_y_lists_what_it_has(tmp_path):
    path = npz(tmp_path, x_test=rng_images((2, 2)), y_test=np.array([0, 1]))
    with pytest.raises(AdvlabError, match=r"has no array named x or y \(it has: x_test, y_test\)"):
        load_data_path(path)


def test_safetensors_missing_tensor_and_damaged_file(tmp_path):
    save_file({"inputs": torch.rand(2, 2), "y": torch.tensor([0, 1])}, str(tmp_path / "a.safetensors"))
    with pytest.raises(AdvlabError, match=r"has no tensor named x \(it has: inputs, y\)"):
        load_data_path(tmp_path / "a.safetensors")
    (tmp_path / "b.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CorruptFileError, match="not a valid safetensors file"):
        load_data_path(tmp_path / "b.safetensors")


def test_missing_path_and_unsupported_suffix(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"`data=.*nope\.npz`: no such file or folder"):
        load_data_path(tmp_path / "nope.npz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(AdvlabError, match=r"unsupported file type '\.csv'; give a \.npz file with arrays x and y"):
        load_data_path(tmp_path / "data.csv")


# ---------------------------------------------------------------- image folders

def save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def gray(seed, shape=(5, 4)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_gray_folder_is_exact_and_in_sorted_order(tmp_path, capsys):
    root = tmp_path / "digits"
    # Written out of order: the order must come from the names, not from the disk.
    images = {("zebra", "b.png"): gray(1), ("ant", "2.png"): gray(2), ("zebra", "a.png"): gray(3),
              ("ant", "10.png"): gray(4), ("ant", "1.png"): gray(5)}
    for (cls, name), a in images.items():
        save(root / cls / name, a)
    ds = load_data_path(root)
    order = [("ant", "1.png"), ("ant", "10.png"), ("ant", "2.png"), ("zebra", "a.png"), ("zebra", "b.png")]
    expected = torch.stack([torch.from_numpy(images[k]) for k in order]).float()[:, None] / 255
    assert ds.x_test.shape == (5, 1, 5, 4) and ds.x_train.shape == (0, 1, 5, 4)
    assert torch.equal(ds.x_test, expected)
    assert ds.y_test.tolist() == [0, 0, 0, 1, 1] and ds.classes == ("ant", "zebra")
    assert ds.bounds == (0.0, 1.0) and ds.name == "digits" and ds.params["format"] == "folder"
    assert "skipped" not in capsys.readouterr().err


def test_rgb_png_exact_and_jpeg_close(tmp_path):
    root = tmp_path / "pics"
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = np.broadcast_to(np.linspace(40, 200, 8, dtype=np.uint8)[None, :, None], (6, 8, 3)).copy()
    save(root / "a" / "x.png", rgb)
    save(root / "b" / "y.jpg", smooth, quality=95)
    ds = load_data_path(root)
    assert ds.x_test.shape == (2, 3, 6, 8)
    assert torch.equal(ds.x_test[0], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    jpeg_error = (ds.x_test[1] - torch.from_numpy(smooth).permute(2, 0, 1).float() / 255).abs()
    assert jpeg_error.max() < 0.04 and jpeg_error.mean() < 0.01


def test_mixed_gray_and_colour_become_rgb_and_alpha_is_dropped(tmp_path):
    root = tmp_path / "mixed"
    g = gray(0, (4, 4))
    rgba = np.random.default_rng(1).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    save(root / "a" / "gray.png", g)
    save(root / "b" / "rgba.png", rgba)
    ds = load_data_path(root)
    assert ds.x_test.shape == (2, 3, 4, 4)
    assert torch.equal(ds.x_test[0], torch.from_numpy(g).float().expand(3, 4, 4) / 255)
    assert torch.equal(ds.x_test[1], torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float() / 255)


def test_sixteen_bit_gray_png_keeps_its_precision(tmp_path):
    a = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    save(tmp_path / "deep" / "c" / "x.png", a)
    ds = load_data_path(tmp_path / "deep")
    assert torch.allclose(ds.x_test[0, 0], torch.from_numpy(a.astype(np.float32) / 65535), atol=1e-7, rtol=0)


def test_non_images_are_skipped_and_reported_once(tmp_path, capsys):
    root = tmp_path / "set"
    save(root / "cat" / "1.png", gray(0))
    save(root / "dog" / "1.png", gray(1))
    (root / "README.txt").write_text("about")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (root / "dog" / "._1.png").write_bytes(b"AppleDouble junk")  # hidden, even with an image suffix
    (root / "dog" / "notes.md").write_text("x")
    ds = load_data_path(root)
    assert len(ds.y_test) == 2 and ds.classes == ("cat", "dog")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{root}: skipped 4 entries that are hidden or not .png/" in lines[0]
    assert "README.txt, cat/.DS_Store, dog/._1.png, ..." in lines[0]


def test_folder_hash_covers_the_images_only(tmp_path):
    root = tmp_path / "set"
    save(root / "cat" / "1.png", gray(0))
    first = load_data_path(root).params["sha256"]
    (root / "notes.txt").write_text("not data")
    assert load_data_path(root).params["sha256"] == first
    save(root / "cat" / "1.png", gray(1))
    assert load_data_path(root).params["sha256"] != first


def test_mixed_sizes_name_the_file_and_both_sizes(tmp_path):
    root = tmp_path / "sizes"
    save(root / "a" / "1.png", gray(0, (5, 4)))
    save(root / "b" / "2.png", gray(1, (6, 4)))
    with pytest.raises(AdvlabError) as e:
        load_data_path(root)
    msg = str(e.value)
    assert f"{root / 'b' / '2.png'} is 4x6 (width x height)" in msg and f"{root / 'a' / '1.png'} is 4x5" in msg


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    root = tmp_path / "broken"
    save(root / "a" / "good.png", gray(0))
    (root / "b").mkdir()
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    with pytest.raises(CorruptFileError, match=r"b/bad\.png cannot be read as an image \(it is not a PNG/JPEG"):
        load_data_path(root)
    buf = io.BytesIO()
    Image.fromarray(gray(0, (64, 64))).save(buf, format="PNG")
    (root / "b" / "bad.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CorruptFileError, match=r"b/bad\.png cannot be read as an image"):
        load_data_path(root)


@pytest.mark.parametrize("side", [8, 16])  # 64 pixels: Pillow warns; 256 (over twice the limit): Pillow raises
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, side):
    root = tmp_path / "bomb"
    save(root / "a" / "ok.png", gray(0, (4, 4)))
    save(root / "b" / "big.png", gray(1, (side, side)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)
    with pytest.raises(AdvlabError, match=r"b/big\.png is refused as a possible decompression bomb"):
        load_data_path(root)


def test_folder_structure_errors(tmp_path):
    save(tmp_path / "flat" / "1.png", gray(0))
    with pytest.raises(AdvlabError, match=r"found images directly in it \(1\.png, \.\.\.\); put each class"):
        load_data_path(tmp_path / "flat")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvlabError, match="it has no sub-folders"):
        load_data_path(tmp_path / "empty")
    save(tmp_path / "holes" / "cat" / "1.png", gray(0))
    (tmp_path / "holes" / "dog").mkdir()
    (tmp_path / "holes" / "dog" / "readme.txt").write_text("x")
    with pytest.raises(AdvlabError, match=r"class folder .*holes/dog has no images"):
        load_data_path(tmp_path / "holes")


def test_folder_takes_only_pixel_bounds(tmp_path):
    save(tmp_path / "f" / "cat" / "1.png", gray(0))
    save(tmp_path / "f" / "dog" / "1.png", gray(1))
    with pytest.raises(AdvlabError, match="`bounds=none` does not apply"):
        load_data_path(tmp_path / "f", bounds=None)


# ---------------------------------------------------------------- image folders: which label each image gets
# Every image is filled with its true label (pixel value 10 * label), so a test reads the truth back from the pixels.

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def labelled_folder(root, folders_and_labels, per_class=2):
    """root/FOLDER/i.png for each (folder, true label), each image filled with 10 * label."""
    for folder, label in folders_and_labels:
        for i in range(per_class):
            save(root / folder / f"{i}.png", np.full((3, 3), 10 * label, dtype=np.uint8))
    return root


def true_labels(ds):
    return (ds.x_test[:, 0, 0, 0] * 255 / 10).round().long()


def test_class_names_are_matched_to_folder_names_when_classes_are_missing(tmp_path):
    # The 20 foolbox CIFAR-10 samples have no bird and no deer: names must not shift by position.
    present = [(c, i) for i, c in enumerate(CIFAR) if c not in ("bird", "deer")]
    ds = load_data_path(labelled_folder(tmp_path / "cifar", present), classes=CIFAR)
    assert ds.classes == tuple(CIFAR) and ds.params["labels"] == "name"
    assert torch.equal(ds.y_test, true_labels(ds)) and set(ds.y_test.tolist()) == {0, 1, 3, 5, 6, 7, 8, 9}
    # The same names in another order: each folder keeps its own name's index.
    shuffled = CIFAR[::-1]
    ds = load_data_path(tmp_path / "cifar", classes=shuffled)
    assert torch.equal(ds.y_test, 9 - true_labels(ds))


def test_numbered_folders_map_by_number_with_and_without_classes(tmp_path):
    ds = load_data_path(labelled_folder(tmp_path / "num", [("0", 0), ("1", 1), ("3", 3), ("7", 7)]), classes=10)
    assert torch.equal(ds.y_test, true_labels(ds)) and ds.classes == tuple(str(i) for i in range(10))
    assert ds.params["labels"] == "number"
    # Without classes: as many classes as the largest number needs; string order ("10" < "2") plays no part.
    twelve = load_data_path(labelled_folder(tmp_path / "twelve", [(str(i), i) for i in range(12)], per_class=1))
    assert torch.equal(twelve.y_test, true_labels(twelve)) and twelve.num_classes == 12
    padded = load_data_path(labelled_folder(tmp_path / "padded", [("00002", 2), ("00011", 11)]))
    assert torch.equal(padded.y_test, true_labels(padded)) and padded.num_classes == 12


def test_folder_labels_that_could_be_read_two_ways_are_refused(tmp_path):
    named = labelled_folder(tmp_path / "named", [("cat", 0), ("dog", 1)])
    with pytest.raises(AdvlabError, match=r"folder 'dog' is not among the class names given by `classes` \(cat, c\)"):
        load_data_path(named, classes=["cat", "c"])
    with pytest.raises(AdvlabError, match=r"folders 'cat', 'dog' are not among the class names"):
        load_data_path(named, classes=["c", "d", "e"])
    with pytest.raises(AdvlabError, match=r"`classes=10` maps folders named by number .*folder 'cat' is not a number"):
        load_data_path(named, classes=10)
    numbered = labelled_folder(tmp_path / "numbered", [("0", 0), ("4", 4)])
    with pytest.raises(AdvlabError, match=r"folders '0', '4' are not among .*the folders are numbered, .*`classes=K`"):
        load_data_path(numbered, classes=CIFAR[:3])
    with pytest.raises(AdvlabError, match=r"folder '4' is class 4, out of range for `classes=3`.*`classes=5`"):
        load_data_path(numbered, classes=3)
    with pytest.raises(AdvlabError, match=r"folders '01', '1' name the same class number"):
        load_data_path(labelled_folder(tmp_path / "twins", [("1", 1), ("01", 1)]))


def test_a_runs_class_names_label_a_folder_given_without_classes(tmp_path):
    named = labelled_folder(tmp_path / "named", [("cat", 3), ("truck", 9)])
    ds = load_data_path(named, model_classes=CIFAR)  # what `--run RUN --data DIR` passes
    assert torch.equal(ds.y_test, true_labels(ds)) and ds.classes == tuple(CIFAR)
    numbered = labelled_folder(tmp_path / "numbered", [("2", 2), ("5", 5)])
    ds = load_data_path(numbered, model_classes=["T-shirt/top", *"abcdefghi"])  # names no folder can have
    assert torch.equal(ds.y_test, true_labels(ds)) and ds.num_classes == 10
    with pytest.raises(AdvlabError, match=r"folder 'cat' \(and 1 more\) is not one of the model's classes \(0, 1, 2, 3, 4, \.\.\.\)"):
        load_data_path(named, model_classes=[str(i) for i in range(10)])
    # Explicit classes win over the model's.
    assert load_data_path(named, classes=["truck", "cat"], model_classes=CIFAR).y_test.tolist() == [1, 1, 0, 0]


def test_labels_from_file_names_in_a_flat_folder(tmp_path, capsys):
    flat = tmp_path / "samples"
    truth = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9]  # unordered, some classes missing
    for i, label in enumerate(truth):
        save(flat / f"cifar10_{i:02d}_{label}.png", np.full((3, 3), 10 * label, dtype=np.uint8))
    (flat / "README.txt").write_text("not an image")
    with pytest.raises(AdvlabError, match=r"found images directly in it .*read the labels from them with `labels=filename`"):
        load_data_path(flat)
    ds = load_data_path(flat, labels="filename", classes=CIFAR)
    assert ds.y_test.tolist() == truth and torch.equal(ds.y_test, true_labels(ds)) and ds.classes == tuple(CIFAR)
    assert ds.params["labels"] == "filename" and "skipped 1 entry" in capsys.readouterr().err
    assert load_data_path(flat, labels="filename").num_classes == 10  # '0'..'9' from the largest label
    with pytest.raises(AdvlabError, match=r"cifar10_11_9\.png has label 9, out of range for the 5 classes"):
        load_data_path(flat, labels="filename", classes=5)
    save(flat / "photo.png", np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(AdvlabError, match=r"every file name must end in _LABEL .*but photo\.png does not"):
        load_data_path(flat, labels="filename")
    with pytest.raises(AdvlabError, match=r"`labels=filename` is for image folders"):
        load_data_path(npz(tmp_path, x=rng_images((2, 3)), y=np.array([0, 1])), labels="filename")


# ---------------------------------------------------------------- a dataset with no training rows

def test_a_test_only_dataset_describes_itself_and_has_channel_stats(tmp_path):
    x = rng_images((6, 3, 4, 4))
    ds = load_data_path(npz(tmp_path, x=x, y=np.array([0, 1, 0, 1, 0, 1])))
    d = ds.describe()
    assert d["n_train"] == 0 and d["n_test"] == 6 and d["input_shape"] == [3, 4, 4] and d["num_classes"] == 2
    mean, std = ds.channel_stats()
    t = torch.from_numpy(x)
    assert torch.allclose(torch.tensor(mean), t.mean(dim=(0, 2, 3)))
    assert torch.allclose(torch.tensor(std), t.std(dim=(0, 2, 3)))
    xs, ys = ds.test_subset(2)
    assert torch.equal(xs, t[:2]) and ys.tolist() == [0, 1]
    one = load_data_path(npz(tmp_path, "one.npz", x=np.array([[0.5, 0.25]]), y=np.array([0])))
    mean, std = one.channel_stats()  # a single feature row: no NaN std
    assert mean == [0.5, 0.25] and all(s == pytest.approx(1e-6) for s in std)


# ---------------------------------------------------------------- command-line strings

def test_parse_bounds():
    assert parse_bounds("0,1") == (0.0, 1.0)
    assert parse_bounds(" 0 , 255 ") == (0.0, 255.0)
    assert parse_bounds("-1/2,1/2") == (-0.5, 0.5)
    assert parse_bounds("none") is None and parse_bounds("None") is None
    assert parse_bounds("auto") == "auto"
    with pytest.raises(ConfigError, match=r"`bounds` needs LO,HI .*got '0'"):
        parse_bounds("0")
    with pytest.raises(ConfigError, match="`bounds`: LO must be below HI, got 1,0"):
        parse_bounds("1,0")
    with pytest.raises(ConfigError, match="`bounds` must be a number"):
        parse_bounds("zero,1")


def test_parse_classes():
    assert parse_classes("10") == 10
    assert parse_classes("cat, dog,bird") == ["cat", "dog", "bird"]
    assert parse_classes("0,1") == ["0", "1"]
    assert parse_classes("cat") == ["cat"]
    with pytest.raises(ConfigError, match="`classes` must be a whole number of classes"):
        parse_classes("2.5")
    with pytest.raises(ConfigError, match="`classes` must be a whole number of classes"):
        parse_classes("0")
    with pytest.raises(ConfigError, match=r"`classes`: class names must be non-empty"):
        parse_classes("cat,,dog")
    with pytest.raises(ConfigError, match="`classes`: class name 'cat' appears twice"):
        parse_classes("cat,dog,cat")
    with pytest.raises(ConfigError, match="`classes` needs a number of classes"):
        parse_classes("  ")
