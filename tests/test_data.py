import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from advlab.data import holdout_split, load_dataset
from advlab.data import locate
from advlab.data.cifar import parse_batch
from advlab.data.idx import parse_idx, read_idx, write_idx
from advlab.errors import AdvlabError, CorruptFileError, DataNotFoundError

from conftest import FASHION_DIR, needs_fashion


def test_blobs_matches_the_classic_setting():
    d = load_dataset("blobs")
    assert d.x_train.shape == (16000, 2) and d.x_test.shape == (4000, 2)
    assert d.bounds is None and d.num_classes == 2
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert torch.bincount(y).tolist() == [10000, 10000]
    assert torch.allclose(x[y == 0].mean(0), torch.tensor([0.0, 0.0]), atol=0.02)
    assert torch.allclose(x[y == 1].mean(0), torch.tensor([2.0, 2.0]), atol=0.02)
    assert torch.allclose(x[y == 0].std(0), torch.tensor([0.5, 0.5]), atol=0.02)


def test_blobs_is_seeded_and_configurable():
    a = load_dataset("blobs", n=100, dim=5, separation=3.0, sigma=1.0, seed=1)
    b = load_dataset("blobs", n=100, dim=5, separation=3.0, sigma=1.0, seed=1)
    c = load_dataset("blobs", n=100, dim=5, separation=3.0, sigma=1.0, seed=2)
    assert a.x_train.shape == (160, 5)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)


def test_gaussian_model_means_and_noise():
    d = load_dataset("gaussian", dim=20, mu=0.5, sigma=2.0, n_train=20000, n_test=10, seed=0)
    x, y = d.x_train, d.y_train
    assert torch.allclose(x[y == 1].mean(0), torch.full((20,), 0.5), atol=0.1)
    assert torch.allclose(x[y == 0].mean(0), torch.full((20,), -0.5), atol=0.1)
    assert abs(x[y == 1].std(0).mean().item() - 2.0) < 0.05


def test_digits_is_scaled_and_stratified(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.x_train.dtype == torch.float32
    assert digits.bounds == (0.0, 1.0)
    assert digits.x_train.min() >= 0 and digits.x_train.max() == 1
    assert len(digits.y_train) + len(digits.y_test) == 1797
    share = torch.bincount(digits.y_test, minlength=10) / torch.bincount(digits.y_train, minlength=10)
    assert share.min() > 0.2 and share.max() < 0.3  # every class split ~80/20


def test_unknown_dataset_and_bad_parameter():
    with pytest.raises(AdvlabError, match="choose one of"):
        load_dataset("imagenet-21k")
    with pytest.raises(AdvlabError, match="allowed"):
        load_dataset("blobs", colour="red")
    with pytest.raises(AdvlabError, match="positive"):
        load_dataset("blobs", n=-3)


# -- IDX ------------------------------------------------------------------------------------------

def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)


def test_idx_rejects_wrong_magic_and_truncation(tmp_path):
    a = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path / "a.idx", a)
    raw = (tmp_path / "a.idx").read_bytes()
    with pytest.raises(CorruptFileError, match="magic"):
        parse_idx(b"\x01\x02" + raw[2:])
    with pytest.raises(CorruptFileError, match="truncated"):
        parse_idx(raw[:-1])
    with pytest.raises(CorruptFileError, match="longer"):
        parse_idx(raw + b"\x00")
    (tmp_path / "b.idx.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(CorruptFileError, match="gzip"):
        read_idx(tmp_path / "b.idx.gz")


def _write_mnist(folder, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)  # the decompressed twin is accepted too
        arrays[prefix] = (images, labels)
    return arrays


def test_mnist_loader_reads_idx_files_from_data_dir(tmp_path, isolated_cache):
    arrays = _write_mnist(tmp_path / "data" / "mnist")
    d = load_dataset("mnist", data_dir=tmp_path / "data")
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert d.bounds == (0.0, 1.0)
    np.testing.assert_allclose(d.x_test[:, 0].numpy(), arrays["t10k"][0] / 255, rtol=1e-6)
    assert d.y_train.tolist() == arrays["train"][1].tolist()


def test_search_order_data_dir_then_env_then_cache(tmp_path, isolated_cache, monkeypatch):
    _write_mnist(isolated_cache / "mnist", n_train=3)
    _write_mnist(tmp_path / "env", n_train=4)
    _write_mnist(tmp_path / "explicit", n_train=5)
    assert len(load_dataset("mnist").y_train) == 3
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist").y_train) == 4
    assert len(load_dataset("mnist", data_dir=tmp_path / "explicit").y_train) == 5


def test_missing_dataset_lists_the_places_it_looked(tmp_path, isolated_cache):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and str(isolated_cache / "mnist") in msg and "/usr/share/datasets/mnist" in msg
    assert "ADVLAB_OFFLINE" in msg and "To fix" in msg


def test_truncated_dataset_file_is_an_error_not_a_partial_load(tmp_path, isolated_cache):
    _write_mnist(tmp_path / "mnist")
    f = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:-2])
    with pytest.raises(CorruptFileError, match="truncated"):
        load_dataset("mnist", data_dir=tmp_path)


def test_download_verifies_checksum(tmp_path, monkeypatch):
    payload = b"not the real file"

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(locate.urllib.request, "urlopen", lambda url, timeout: Response(payload))
    with pytest.raises(CorruptFileError, match="checksum"):
        locate.download(locate.RemoteFile("x.gz", "0" * 32), ["http://example/"], tmp_path)
    assert not (tmp_path / "x.gz").exists()
    import hashlib
    path = locate.download(locate.RemoteFile("x.gz", hashlib.md5(payload).hexdigest()), ["http://example/"], tmp_path)
    assert path.read_bytes() == payload


# -- CIFAR-10 -------------------------------------------------------------------------------------

def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(), b"batch_label": b"test"}


def _write_cifar(folder):
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        (folder / name).write_bytes(pickle.dumps(_cifar_batch(4, i), protocol=2))


def test_cifar_folder_and_archive(tmp_path, isolated_cache):
    _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    d = load_dataset("cifar10", data_dir=tmp_path)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    expected = _cifar_batch(4, 5)
    np.testing.assert_allclose(d.x_test.reshape(4, -1).numpy(), expected[b"data"] / 255, rtol=1e-6)
    # Same content read straight from a .tar.gz without extracting it.
    archive = tmp_path / "arch" / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar10" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    d2 = load_dataset("cifar10", data_dir=tmp_path / "arch")
    assert torch.equal(d.x_train, d2.x_train) and torch.equal(d.y_test, d2.y_test)


def test_cifar_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    with pytest.raises(CorruptFileError, match="refusing"):
        parse_batch(pickle.dumps({b"data": Exploit(), b"labels": []}))
    assert not marker.exists()


def test_cifar_truncated_batch(tmp_path):
    raw = pickle.dumps(_cifar_batch(4, 0), protocol=2)
    with pytest.raises(CorruptFileError):
        parse_batch(raw[: len(raw) // 2])


# -- CIFAR-100 ------------------------------------------------------------------------------------

CIFAR100_NAMES = [f"class{i:02d}" for i in range(100)]


def _cifar100_split(n, seed):
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 100, size=n)
    return {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"fine_labels": fine.tolist(),
            b"coarse_labels": (fine // 5).tolist(), b"filenames": [b"x.png"] * n, b"batch_label": b"test"}


def write_cifar100(folder, n_train=6, n_test=5):
    """cifar-100-python/{train,test,meta} as the published archive holds them, with small splits."""
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(pickle.dumps(_cifar100_split(n_train, 1), protocol=2))
    (folder / "test").write_bytes(pickle.dumps(_cifar100_split(n_test, 2), protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
                                                b"coarse_label_names": [b"c"] * 20}, protocol=2))


def test_cifar100_folder_and_archive_keep_the_fine_labels_the_names_and_the_order(tmp_path, isolated_cache):
    write_cifar100(tmp_path / "cifar100" / "cifar-100-python")
    d = load_dataset("cifar100", data_dir=tmp_path)
    expected = _cifar100_split(5, 2)
    assert d.name == "cifar100" and d.num_classes == 100 and d.classes[7] == "class07" and d.bounds == (0.0, 1.0)
    assert d.x_train.shape == (6, 3, 32, 32) and d.x_test.shape == (5, 3, 32, 32)
    assert d.y_test.tolist() == expected[b"fine_labels"]  # the fine labels, not the coarse ones, in file order
    np.testing.assert_allclose(d.x_test.reshape(5, -1).numpy(), expected[b"data"] / 255, rtol=1e-6)
    archive = tmp_path / "arch" / "cifar100" / "cifar-100-python.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar100" / "cifar-100-python", arcname="cifar-100-python")
    d2 = load_dataset("cifar100", data_dir=tmp_path / "arch")
    assert torch.equal(d.x_test, d2.x_test) and torch.equal(d.y_train, d2.y_train) and d.classes == d2.classes
    # in the user cache, found with no data_dir at all
    write_cifar100(isolated_cache / "cifar100" / "cifar-100-python")
    assert torch.equal(load_dataset("cifar100").y_test, d.y_test)


def test_cifar100_offline_names_every_place_and_how_to_get_it(tmp_path, isolated_cache):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar100", data_dir=tmp_path)
    message = str(info.value)
    assert "cifar-100-python.tar.gz" in message and "ADVLAB_OFFLINE" in message
    assert str(tmp_path / "cifar100") in message and str(isolated_cache / "cifar100") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message


def test_cifar100_download_is_checked_against_the_published_md5(tmp_path, isolated_cache, monkeypatch):
    import urllib.request
    write_cifar100(tmp_path / "src" / "cifar-100-python")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return io.BytesIO(buffer.getvalue())

    monkeypatch.delenv("ADVLAB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptFileError, match="checksum mismatch.*expected eb9058c3a382ffc7106e4002c42a8d85"):
        load_dataset("cifar100", data_dir=tmp_path / "empty")
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert not (isolated_cache / "cifar100" / "cifar-100-python.tar.gz").exists()  # nothing unverified is kept


def test_cifar100_bad_files_are_refused(tmp_path):
    from advlab.data.cifar import parse_meta
    raw = _cifar100_split(3, 0)
    raw[b"fine_labels"] = [0, 100, 5]
    with pytest.raises(CorruptFileError, match="labels must be in 0..99"):
        parse_batch(pickle.dumps(raw), "test", "fine_labels", 100)
    with pytest.raises(CorruptFileError, match="needs 'data' and 'fine_labels'"):
        parse_batch(pickle.dumps(_cifar_batch(3, 0)), "test", "fine_labels", 100)  # a CIFAR-10 batch
    with pytest.raises(CorruptFileError, match="fine_label_names"):
        parse_meta(pickle.dumps({b"fine_label_names": [b"a"] * 10}))
    write_cifar100(tmp_path / "c")
    (tmp_path / "c" / "meta").unlink()
    with pytest.raises(CorruptFileError, match="missing meta"):
        from advlab.data.cifar import read_cifar100
        read_cifar100(tmp_path / "c")


# -- splits ---------------------------------------------------------------------------------------

def test_holdout_split_is_disjoint_stratified_and_seeded(digits):
    x = torch.arange(len(digits.y_train)).float()[:, None]
    s = holdout_split(x, digits.y_train, val=0.1, pool=0.5, seed=3)
    ids = torch.cat([s.x_train, s.x_val, s.x_pool]).flatten().long()
    assert sorted(ids.tolist()) == list(range(len(x)))  # a partition
    counts = torch.bincount(digits.y_train, minlength=10).float()
    assert torch.allclose(torch.bincount(s.y_pool, minlength=10) / counts, torch.full((10,), 0.5), atol=0.02)
    assert torch.allclose(torch.bincount(s.y_val, minlength=10) / counts, torch.full((10,), 0.1), atol=0.02)
    assert torch.equal(s.x_val, holdout_split(x, digits.y_train, val=0.1, pool=0.5, seed=3).x_val)
    assert not torch.equal(s.x_val, holdout_split(x, digits.y_train, val=0.1, pool=0.5, seed=4).x_val)
    with pytest.raises(AdvlabError, match="no training data"):
        holdout_split(x, digits.y_train, val=0.6, pool=0.5)


@needs_fashion
def test_fashion_mnist_from_the_system_folder(isolated_cache):
    d = load_dataset("fashion-mnist")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert d.classes[0] == "T-shirt/top" and d.params["source"] == FASHION_DIR
