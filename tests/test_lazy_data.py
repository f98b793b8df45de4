"""Images read on demand (issue 25): RobustBench's preprocessings, image folders of mixed sizes, ImageNet's
layout, and evaluations in chunks that give what an evaluation in memory gives."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from advlab.cli import main
from advlab.data import LazyImages, load_data_path, load_dataset, rows
from advlab.data.datasets import imagenet_classes
from advlab.data.preprocessing import center_crop, get_preprocess, output_size
from advlab.errors import AdvlabError, DataNotFoundError
from advlab.evaluate import evaluate_robustness
from advlab.evaluate.chunked import evaluate_in_chunks
from advlab.evaluate.suites import SuiteEntry


def write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def noise(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- the preprocessings' arithmetic

def test_center_crop_takes_the_rounded_middle_and_pads_small_images_with_zeros():
    a = np.arange(5 * 7 * 1).reshape(5, 7, 1)
    # round((5 - 3) / 2) = 1 and round((7 - 3) / 2) = 2
    assert np.array_equal(center_crop(a, 3), a[1:4, 2:5])
    # round(0.5) = 0 and round(1.5) = 2 (Python rounds halves to even, as torchvision does)
    assert np.array_equal(center_crop(a[:4, :6], 3), a[0:3, 2:5])
    small = np.ones((2, 3, 1))
    padded = center_crop(small, 4)  # 1 row above, 1 below; 0 columns left, 1 right
    assert padded.shape == (4, 4, 1) and padded[1:3, 0:3].sum() == 6 and padded.sum() == 6


@pytest.mark.parametrize("name, size, expected", [
    ("res256crop224", (300, 200), (224, 224)), ("res256crop224", (200, 500), (224, 224)),
    ("bicubicres256crop224", (256, 256), (224, 224)), ("crop288", (100, 400), (288, 288)),
    ("res224", (31, 17), (224, 224)), ("none", (31, 17), (17, 31))])
def test_every_preprocessing_gives_its_size_in_rgb(name, size, expected):
    gray = Image.fromarray(np.full(size[::-1], 128, dtype=np.uint8))  # (H, W) from (W, H)
    out = get_preprocess(name)(gray)
    assert out.shape == (*expected, 3) and out.dtype == np.uint8
    assert output_size(name) in (None, expected[0])
    # A constant image stays constant wherever it is not zero padding.
    assert set(np.unique(out)) <= {0, 128} and (out == 128).any()


def test_resizing_keeps_the_aspect_and_matches_pillow_on_the_shorter_side():
    img = Image.fromarray(noise(200, 300, 0))  # W 300, H 200: shorter side 200 -> 256, longer int(256 * 1.5) = 384
    expected = np.asarray(img.resize((384, 256), Image.BILINEAR))
    top, left = round((256 - 224) / 2), round((384 - 224) / 2)
    assert np.array_equal(get_preprocess("res256crop224")(img), expected[top:top + 224, left:left + 224])
    bicubic = np.asarray(img.resize((384, 256), Image.BICUBIC))
    assert np.array_equal(get_preprocess("bicubicres256crop224")(img), bicubic[top:top + 224, left:left + 224])


def working_torchvision():
    try:
        import torchvision.transforms as T  # noqa: N812
        return T
    except Exception:  # noqa: BLE001 - the registry's torchvision beside the CPU build of torch fails to import
        pytest.skip("torchvision does not import here (it runs in the zoo extra's environment, .venv-zoo)")


@pytest.mark.zoo
def test_the_preprocessings_are_torchvisions_pixel_for_pixel():
    T = working_torchvision()
    tv = {"res256crop224": T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()]),
          "bicubicres256crop224": T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
                                             T.CenterCrop(224), T.PILToTensor()]),
          "crop288": T.Compose([T.CenterCrop(288), T.PILToTensor()]),
          "res224": T.Compose([T.Resize([224, 224]), T.PILToTensor()])}
    for seed, (h, w) in enumerate([(375, 500), (500, 333), (256, 256), (200, 180), (300, 1000), (257, 255)]):
        img = Image.fromarray(noise(h, w, seed))
        for name, transform in tv.items():
            ours = torch.from_numpy(get_preprocess(name)(img).copy()).permute(2, 0, 1)
            assert torch.equal(ours, transform(img)), (name, h, w)


# ---------------------------------------------------------------- reading folders lazily

def test_lazy_reading_without_resizing_gives_the_eager_readers_pixels_and_labels(tmp_path):
    for i in range(7):
        write_image(tmp_path / "d" / ("cat" if i % 2 else "dog") / f"{i}.png", noise(6, 5, i))
    eager = load_data_path(tmp_path / "d")
    lazy = load_data_path(tmp_path / "d", preprocess="none", workers=0)
    assert isinstance(lazy.x_test, LazyImages) and lazy.lazy and not eager.lazy
    assert lazy.input_shape == eager.input_shape == (3, 6, 5) and lazy.x_test.shape == eager.x_test.shape
    assert torch.equal(lazy.x_test.load(), eager.x_test) and torch.equal(lazy.y_test, eager.y_test)
    assert torch.equal(lazy.x_test[2:5].load(), eager.x_test[2:5]) and torch.equal(rows(eager.x_test), eager.x_test)
    assert lazy.params["preprocess"] == "none" and lazy.params["labels"] == "name"
    with pytest.raises(AdvlabError, match="no training split .*`mean` and `std`"):
        lazy.channel_stats()


def test_mixed_sizes_are_read_through_a_preprocessing_in_worker_processes(tmp_path):
    sizes = [(40, 30), (64, 64), (20, 90), (33, 47), (100, 12)]
    for i, (h, w) in enumerate(sizes * 2):
        write_image(tmp_path / "mixed" / str(i % 3) / f"{i:02d}.png", noise(h, w, i))
    with pytest.raises(AdvlabError, match="must all have the same size.*preprocess=res256crop224"):
        load_data_path(tmp_path / "mixed")
    ds = load_data_path(tmp_path / "mixed", preprocess="res224")
    serial = load_data_path(tmp_path / "mixed", preprocess="res224", workers=0).x_test.load()
    x = LazyImages(ds.x_test.root, ds.x_test.where, ds.x_test.files, "res224", (3, 224, 224), workers=2).load()
    assert x.shape == (10, 3, 224, 224) and torch.equal(x, serial)
    first = ds.x_test.files[0]
    expected = np.asarray(Image.open(first).convert("RGB").resize((224, 224), Image.BILINEAR))
    assert torch.equal(x[0], torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255)


def test_a_bad_image_read_by_a_worker_is_one_clear_line(tmp_path):
    for i in range(40):
        write_image(tmp_path / "f" / "a" / f"{i:02d}.png", noise(8, 8, i))
    (tmp_path / "f" / "a" / "17.png").write_bytes(b"not a png")
    images = load_data_path(tmp_path / "f", preprocess="none").x_test
    images.workers = 2
    with pytest.raises(AdvlabError) as info:
        images.load()
    assert "17.png cannot be read as an image" in str(info.value) and "Traceback" not in str(info.value)
    write_image(tmp_path / "f" / "a" / "17.png", noise(9, 8, 0))
    with pytest.raises(AdvlabError, match=r"17\.png is 8x9 .* and .*00\.png is 8x8"):
        load_data_path(tmp_path / "f", preprocess="none").x_test.load()


def test_the_folder_digest_changes_when_a_file_does(tmp_path):
    for i in range(3):
        write_image(tmp_path / "f" / "a" / f"{i}.png", noise(8, 8, i))
    before = load_data_path(tmp_path / "f", preprocess="none").params["sha256"]
    assert load_data_path(tmp_path / "f", preprocess="none").params["sha256"] == before
    write_image(tmp_path / "f" / "a" / "1.png", noise(8, 8, 9))
    assert load_data_path(tmp_path / "f", preprocess="none").params["sha256"] != before


# ---------------------------------------------------------------- ImageNet's layout

def test_imagenet_folders_are_labelled_by_wnid_among_the_1000_classes(tmp_path):
    wnids = imagenet_classes()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    for wnid, h in (("n01443537", 300), ("n15075141", 200), ("n01440764", 250)):
        write_image(tmp_path / "imagenet" / "val" / wnid / "ILSVRC2012_val_00000001.JPEG", noise(h, 260, h))
    ds = load_dataset("imagenet", data_dir=tmp_path)  # finds DIR/imagenet/val
    assert ds.num_classes == 1000 and ds.y_test.tolist() == [0, 1, 999] and ds.input_shape == (3, 224, 224)
    assert ds.params["preprocess"] == "res256crop224" and ds.params["subset"] == "all"
    assert load_dataset("imagenet", data_dir=tmp_path / "imagenet" / "val", preprocess="crop288").input_shape == (3, 288, 288)
    (tmp_path / "imagenet" / "val" / "cats").mkdir()
    write_image(tmp_path / "imagenet" / "val" / "cats" / "1.JPEG", noise(10, 10, 0))
    with pytest.raises(AdvlabError, match="'cats' is not among the class names"):
        load_dataset("imagenet", data_dir=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"put it as DIR/val/WNID/\*\.JPEG .*--data-dir DIR"):
        load_dataset("imagenet", data_dir=tmp_path / "nothing")
    with pytest.raises(AdvlabError, match="`subset` must be one of all, robustbench"):
        load_dataset("imagenet", data_dir=tmp_path, subset="half")


# ---------------------------------------------------------------- evaluating in chunks

DETERMINISTIC = [SuiteEntry("fgsm", "fgsm", {}), SuiteEntry("bim-5", "bim", {"steps": 5})]


def _linear_model(shape, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), classes)).eval()


def _folder(tmp_path, n=11):
    for i in range(n):
        write_image(tmp_path / "imgs" / str(i % 3) / f"{i:02d}.png", noise(20 + i, 30 - i, i))
    return load_data_path(tmp_path / "imgs", preprocess="res224", workers=0)


def test_chunks_give_the_numbers_of_one_evaluation_in_memory(tmp_path):
    ds = _folder(tmp_path)
    model = _linear_model(ds.input_shape)
    x, y = ds.test_subset(None)
    whole = evaluate_robustness(model, x.load(), y, [1e-5, 1e-4], DETERMINISTIC, bounds=ds.bounds, progress=False)
    chunked = evaluate_in_chunks(model, x, y, [1e-5, 1e-4], DETERMINISTIC, bounds=ds.bounds, chunk_size=4,
                                 state_dir=tmp_path / "eval", progress=False)
    assert whole.robust[0].any() and not whole.robust[1].all()
    assert whole.broken_by_attack()[1]["fgsm"] + whole.broken_by_attack()[1]["bim-5"] > 0  # the attacks break some
    assert torch.equal(chunked.broken_by, whole.broken_by) and torch.equal(chunked.y, whole.y)
    assert torch.allclose(chunked.logits, whole.logits, atol=1e-5) and chunked.x_adv is None
    assert json.dumps(chunked.results()) == json.dumps(whole.results()) and chunked.eps == whole.eps
    # Passes depend on how points are batched (padding), so they are the chunks' passes added up.
    parts = [evaluate_robustness(model, x[a:b].load(), y[a:b], [1e-5, 1e-4], DETERMINISTIC, bounds=ds.bounds,
                                 progress=False) for a, b in ((0, 4), (4, 8), (8, 11))]
    assert chunked.passes == {k: sum(p.passes[k] for p in parts) for k in ("forward", "backward")}
    assert chunked.attack_passes["bim-5"]["backward"] == sum(p.attack_passes.get("bim-5", {}).get("backward", 0)
                                                              for p in parts) > 0
    files = sorted((tmp_path / "eval" / "chunks").glob("*/adversarial.safetensors"))
    assert len(files) == 3  # 4 + 4 + 3 points


def test_an_interrupted_chunked_evaluation_redoes_only_the_unfinished_chunk(tmp_path, monkeypatch):
    ds = _folder(tmp_path)
    model = _linear_model(ds.input_shape)
    x, y = ds.test_subset(None)
    args = dict(bounds=ds.bounds, chunk_size=4, state_dir=tmp_path / "eval", progress=False)
    first = evaluate_in_chunks(model, x, y, [0.01], DETERMINISTIC, **args)
    (tmp_path / "eval" / "chunks" / "00001" / "done.json").unlink()  # chunk 1 never finished
    loaded, real_load = [], LazyImages.load
    monkeypatch.setattr(LazyImages, "load", lambda self, progress=False: loaded.append(len(self)) or real_load(self))
    again = evaluate_in_chunks(model, x, y, [0.01], DETERMINISTIC, **args)
    assert loaded == [4] and torch.equal(again.broken_by, first.broken_by)
    # Another budget is another evaluation: every chunk runs again.
    loaded.clear()
    evaluate_in_chunks(model, x, y, [0.02], DETERMINISTIC, **args)
    assert loaded == [4, 4, 3]


# ---------------------------------------------------------------- from the command line

ORACLE = '''
import torch
from torch import nn


class Oracle(nn.Module):
    """The label is in the image: every image is one colour, 10 * label."""
    def forward(self, x):
        value = x.flatten(1).mean(1, keepdim=True) * 255 / 10
        return -(value - torch.arange(10, dtype=x.dtype)) ** 2 * 100


def build():
    return Oracle()
'''


def test_evaluate_a_folder_of_mixed_size_jpegs_in_chunks_from_the_command_line(tmp_path, capsys):
    (tmp_path / "oracle.py").write_text(ORACLE)
    truth = [0, 3, 7, 3, 9, 1, 0, 7, 7, 3, 1, 9]
    for i, k in enumerate(truth):
        h, w = 180 + 13 * i, 300 - 11 * i
        write_image(tmp_path / "photos" / str(k) / f"{i:03d}.jpg", np.full((h, w, 3), 10 * k, dtype=np.uint8))
    argv = ["evaluate", "--model", f"{tmp_path}/oracle.py:build", "--data", str(tmp_path / "photos"), "--classes", "10",
            "--preprocess", "res256crop224", "--chunk-size", "5", "--eps", "0.001", "--suite", "fast", "--no-checks",
            "--out", str(tmp_path / "run"), "--json", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    rec = json.loads(capsys.readouterr().out)
    assert rec["clean_accuracy"] == 1.0 and rec["n"] == 12 and rec["data"]["preprocess"] == "res256crop224"
    assert "--preprocess res256crop224" in rec["summary"]["command"] and "--chunk-size 5" in rec["summary"]["command"]
    chunks = tmp_path / "run" / "eval" / "fast-linf" / "chunks"
    assert sorted(p.name for p in chunks.iterdir()) == ["00000", "00001", "00002"]
    assert main(["report", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    # The same command again: every chunk is finished, nothing is attacked again; --fresh starts over.
    done = chunks / "00001" / "done.json"
    stamp = done.stat().st_mtime_ns
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["results"] == rec["results"] and again["passes"] == rec["passes"] and done.stat().st_mtime_ns == stamp
    assert main([*argv, "--fresh"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["results"] == rec["results"] and done.stat().st_mtime_ns != stamp
