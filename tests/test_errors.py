"""Every row of docs/errors.md: the input is rejected (or warned about) with its message."""

import json
import math
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch

from advlab.attacks import PGD, AdvlabWarning, Square
from advlab.cli import main
from advlab.errors import AdvlabError
from advlab.io import inside

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def table_rows():
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", cells[0]) and cells[0] != "id":
            rows[cells[0]] = cells
    return rows


class Net(torch.nn.Module):
    def __init__(self, kind="logits"):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.drop = torch.nn.Dropout(0.5)
        self.kind = kind

    def forward(self, x):
        if self.kind == "probabilities":
            return self.lin(x).softmax(1)
        if self.kind == "no_grad":
            with torch.no_grad():
                return self.lin(x)
        if self.kind == "vector":
            return self.lin(x)[:, 0]
        return self.drop(self.lin(x))


X, Y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])


def fixed_net():
    """A fixed net: an unseeded one can misclassify every point, leaving nothing to attack or reject."""
    torch.manual_seed(0)
    return Net().eval()


def _wrong_labels():
    """Labels the fixed net gets wrong on every point of X."""
    with torch.no_grad():
        return (fixed_net()(X).argmax(1) + 1) % fixed_net()(X[:1]).shape[1]


def attack(model=None, x=None, y=None, eps=(0.1,), **kw):
    model = model or fixed_net()
    return PGD(steps=2, **kw.pop("attack_kw", {}))(model, X if x is None else x, Y if y is None else y, list(eps),
                                                     **kw)


def cli(*args):
    return main(list(args))


def _check_crown(model):
    from advlab.certify import check_crown_supported
    check_crown_supported(model)


def expect_error(fn, message):
    with pytest.raises(AdvlabError, match=message):
        fn()


def expect_exit_2(capsys, message, *args):
    try:
        code = cli(*args)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("errors") / "run"
    assert cli("train", "--dataset", "digits", "--model", "softmax", "--epochs", "1", "--out", str(out),
               "--no-progress") == 0
    return out


def case(row_id, tmp_path, capsys, run_dir):
    nan = X.clone()
    nan[1, 2] = math.nan
    inf = X.clone()
    inf[0, 0] = math.inf
    cases = {
        "nan-inputs": lambda: expect_error(lambda: attack(x=nan), "NaN or inf"),
        "inf-inputs": lambda: expect_error(lambda: attack(x=inf), "NaN or inf"),
        "integer-inputs": lambda: expect_error(lambda: attack(x=torch.ones(6, 4, dtype=torch.long)), "floating-point"),
        "no-batch-axis": lambda: expect_error(lambda: attack(x=torch.rand(4), y=torch.tensor([0])), "batch axis"),
        "label-shape": lambda: expect_error(lambda: attack(y=Y[:5]), "labels must have shape"),
        "float-labels": lambda: expect_error(lambda: attack(y=Y.float()), "integer tensor"),
        "labels-out-of-range": lambda: expect_error(lambda: attack(y=torch.tensor([0, 1, 2, 3, 0, 1])),
                                                    r"labels must be in 0\.\.2"),
        "empty-batch": lambda: expect_error(lambda: attack(x=X[:0], y=Y[:0]), "empty batch"),
        "negative-eps": lambda: (expect_error(lambda: attack(eps=(0.1, -0.2)), "epsilon must be >= 0"),
                                 expect_exit_2(capsys, "epsilon must be >= 0", "attack", "--run", str(run_dir),
                                               "--attack", "pgd", "--eps=-0.1")),
        "non-numeric-eps": lambda: (expect_error(lambda: attack(eps=("abc",)), "must be a number"),
                                    expect_exit_2(capsys, "must be a number such as", "attack", "--run", str(run_dir),
                                                  "--attack", "pgd", "--eps", "abc")),
        "infinite-eps-unbounded": lambda: (expect_error(lambda: attack(eps=(math.inf,)), "finite epsilon"),
                                           expect_error(lambda: Square(n_queries=5)(fixed_net(), X, Y, [math.inf]),
                                                        "finite epsilon"),
                                           # even when no point needs attacking (every label is wrong)
                                           expect_error(lambda: attack(eps=(math.inf,), y=_wrong_labels()),
                                                        "finite epsilon")),
        "bounds-violated": lambda: expect_error(lambda: attack(bounds=(0.0, 0.5)), "outside the bounds"),
        "probabilities": lambda: _warns(lambda: attack(model=Net("probabilities").eval()), "probabilities"),
        "train-mode": lambda: _warns(lambda: attack(model=Net().train()), "train mode"),
        "no-gradients": lambda: expect_error(lambda: attack(model=Net("no_grad").eval()),
                                             "differentiably.*square.*BPDA"),
        "shape-mismatch": lambda: expect_error(lambda: attack(x=torch.rand(6, 5)), "cannot take inputs of shape"),
        "not-logits": lambda: expect_error(lambda: attack(model=Net("vector").eval()), r"shape \(N, K\)"),
        "target-is-label": lambda: expect_error(lambda: attack(targets=Y.clone(), attack_kw={"targeted": True}),
                                                "different class"),
        "unknown-attack-option": lambda: expect_exit_2(capsys, "no option stepz", "attack", "--run", str(run_dir),
                                                       "--attack", "pgd", "--eps", "0.1", "--attack-arg", "stepz=3"),
        "wrong-option-type": lambda: _suite(tmp_path, '[[attack]]\nname = "pgd"\nsteps = "many"\n', "wrong type"),
        "unknown-config-key": lambda: _suite(tmp_path, 'colour = 1\n', "unknown key 'colour'"),
        "invalid-toml": lambda: _suite(tmp_path, '[[attack]\n', "not valid TOML"),
        "suite-file-ignored": lambda: expect_exit_2(capsys, "--suite-file.*--suite custom", "evaluate", "--run",
                                                    str(run_dir), "--eps", "0.1", "--suite", "fast", "--suite-file",
                                                    str(_write(tmp_path / "s.toml", '[[attack]]\nname = "fgsm"\n'))),
        "unknown-model-option": lambda: expect_exit_2(capsys, "no option depth", "train", "--dataset", "digits",
                                                      "--model", "mlp", "--model-arg", "depth=3",
                                                      "--out", str(tmp_path / "r")),
        "unknown-dataset": lambda: expect_error(lambda: __import__("advlab").load_dataset("imagenet-21k"),
                                                "unknown dataset"),
        "dataset-missing": lambda: expect_exit_2(capsys, "could not find.*", "train", "--dataset", "mnist", "--model",
                                                 "mlp", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")),
        "corrupt-dataset": lambda: _corrupt_dataset(tmp_path),
        "malicious-pickle": lambda: _malicious_pickle(tmp_path),
        "config-path-escapes": lambda: [expect_error(lambda p=p: inside(tmp_path, p, "out"), "absolute path|leaves the run directory")
                                        for p in ("../x", "a/../../x", "/etc/passwd")],
        "config-path-symlink": lambda: _symlink_escape(tmp_path),
        "bad-training-option": lambda: (
            expect_exit_2(capsys, "argument --epochs: must be a positive whole number", "train", "--dataset", "digits",
                          "--model", "mlp", "--epochs", "0", "--out", str(tmp_path / "r")),
            expect_error(lambda: __import__("advlab.defenses", fromlist=["TrainConfig"]).TrainConfig(epochs=0),
                         "epochs=0 is invalid")),
        "diverging-training": lambda: expect_exit_2(capsys, "lower the learning rate", "train", "--dataset", "digits",
                                                    "--model", "mlp", "--lr", "1e30", "--epochs", "1",
                                                    "--out", str(tmp_path / "r"), "--no-progress"),
        "resume-different-settings": lambda: _resume_different(tmp_path, capsys),
        "run-exists": lambda: expect_exit_2(capsys, "already holds a run", "train", "--dataset", "digits", "--model",
                                            "softmax", "--epochs", "1", "--out", str(run_dir)),
        "not-a-run": lambda: expect_exit_2(capsys, "not a run directory", "attack", "--run", str(tmp_path), "--attack",
                                           "pgd", "--eps", "0.1"),
        "bad-n": lambda: (expect_exit_2(capsys, "argument --n: must be a positive whole number", "attack", "--run",
                                        str(run_dir), "--attack", "pgd", "--eps", "0.1", "--n", "0"),
                          expect_error(lambda: __import__("advlab").load_dataset("digits").test_subset(0),
                                       "`n` must be a positive")),
        "bad-eps-per-class": lambda: _bad_budget(tmp_path, capsys, run_dir),
        "corrupt-weights": lambda: _corrupt_weights(tmp_path, run_dir),
        "bad-option-value": lambda: (
            expect_exit_2(capsys, "argument --batch-size: must be a positive whole number", "evaluate", "--run",
                          str(run_dir), "--eps", "0.1", "--batch-size", "0"),
            expect_exit_2(capsys, "argument --lr: must be finite", "train", "--dataset", "digits", "--model", "mlp",
                          "--lr", "nan"),
            expect_exit_2(capsys, "argument --weights: no such file", "evaluate", "--model", "x.py:f", "--weights",
                          str(tmp_path / "none.pt"), "--eps", "0.1")),
        "disk-full": lambda: _disk_full(tmp_path, capsys, run_dir),
        "zoo-package-broken": lambda: _zoo_package_broken(tmp_path, capsys),
        "export-no-leaderboard": lambda: _export_no_leaderboard(tmp_path, capsys, run_dir),
        "certificate-unsupported-layer": lambda: (
            expect_error(lambda: _check_crown(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(),
                                                                 torch.nn.Linear(4, 3))),
                         r"CROWN cannot go through layer 1 \(torch\.nn\.modules\.activation\.Tanh\).*`method='ibp'`"),
            expect_error(lambda: _check_crown(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())),
                         r"CROWN cannot go through layer 1 .*GELU.*`method='smoothing'`")),
        "exact-norm": lambda: expect_exit_2(capsys, "--method exact certifies --norm linf, not --norm l2", "certify",
                                            "--run", str(run_dir), "--method", "exact", "--eps", "0.1", "--norm", "l2"),
        **_byo_cases(tmp_path, capsys),
    }
    return cases


# -- your own model and data (--model, --weights, --data, --device) ------------------------------------------
NETS = """
from torch import nn


def build(outputs=3, softmax=False):
    layers = [nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, outputs)]
    return nn.Sequential(*layers, nn.Softmax(dim=1)) if softmax else nn.Sequential(*layers)
"""


def _byo_cases(tmp_path, capsys):
    import numpy as np
    nets = tmp_path / "nets.py"
    data = tmp_path / "data.npz"
    weights = tmp_path / "w.pt"

    def write():
        nets.write_text(NETS)
        np.savez(data, x=X.numpy(), y=Y.numpy())
        torch.manual_seed(0)
        torch.save(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).state_dict(),
                   weights)

    def evaluate(*args, data_file=None):
        return ["evaluate", "--model", f"{nets}:build", "--data", str(data_file or data), "--eps", "0.1",
                "--suite", "fast", "--no-checks", "--out", str(tmp_path / "out"), *map(str, args)]

    def run(fn):
        write()
        fn()

    def save(name, obj):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    def npz(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    def exploit():
        marker = tmp_path / "ran"

        class Exploit:
            def __reduce__(self):
                import os
                return (os.system, (f"touch {marker}",))
        with open(tmp_path / "evil.pt", "wb") as f:
            pickle.dump({"w": Exploit()}, f)
        expect_exit_2(capsys, "not a plain state dict.*refusing to unpickle", *evaluate("--weights", tmp_path / "evil.pt"))
        assert not marker.exists()
        obj = np.empty(2, dtype=object)
        obj[:] = [Exploit(), Exploit()]
        np.savez(tmp_path / "evil.npz", x=obj, y=np.zeros(2, np.int64), allow_pickle=True)
        expect_exit_2(capsys, "holds Python objects", *evaluate(data_file=tmp_path / "evil.npz"))
        assert not marker.exists()

    def images(name, sizes, corrupt=False, pixels=None):
        from PIL import Image
        folder = tmp_path / name
        for i, size in enumerate(sizes):
            (folder / f"c{i}").mkdir(parents=True, exist_ok=True)
            Image.new("L", size).save(folder / f"c{i}" / "a.png")
        if corrupt:
            (folder / "c0" / "b.png").write_bytes(b"not a png")
        return folder

    def bomb(monkeypatch_limit=10):
        from PIL import Image
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = monkeypatch_limit
        try:
            expect_error(lambda: __import__("advlab.data", fromlist=["load_data_path"]).load_data_path(
                images("bomb", [(8, 8)])), "decompression bomb")
        finally:
            Image.MAX_IMAGE_PIXELS = old

    from advlab.data import load_data_path
    nan = X.numpy().copy()
    nan[2, 1] = np.nan
    return {
        "device-unavailable": lambda: run(lambda: (
            _no_cuda(lambda: expect_exit_2(capsys, "--device cuda: CUDA is not available.*--device cpu",
                                           *evaluate("--device", "cuda"))))),
        "model-spec-missing": lambda: run(lambda: (
            expect_exit_2(capsys, "has no 'buld'; it defines build", "evaluate", "--model", f"{nets}:buld", "--data",
                          str(data), "--eps", "0.1"),
            expect_exit_2(capsys, "no such file", "evaluate", "--model", f"{tmp_path}/none.py:build", "--data",
                          str(data), "--eps", "0.1"),
            expect_exit_2(capsys, "cannot import", "evaluate", "--model", "no_such_module_q:build", "--data",
                          str(data), "--eps", "0.1"))),
        "model-probabilities": lambda: run(lambda: expect_exit_2(
            capsys, "returns probabilities.*remove the final softmax", *evaluate("--model-arg", "softmax=true"))),
        "model-wrong-classes": lambda: run(lambda: expect_exit_2(
            capsys, "returns 5 logits per input but the data has 3 classes", *evaluate("--model-arg", "outputs=5"))),
        "weights-mismatch": lambda: run(lambda: expect_exit_2(
            capsys, r"does not fit the model: 4 \(.*\) missing, 2 \(.*\) unexpected",
            *evaluate("--weights", save("other.pt", torch.nn.Linear(4, 3).state_dict())))),
        "weights-wrong-shape": lambda: run(lambda: expect_exit_2(
            capsys, "wrong shape, e.g. 2.weight \\(3, 8\\) in the file, \\(5, 8\\) in the model.*--model-arg",
            *evaluate("--weights", weights, "--model-arg", "outputs=5"))),
        "weights-not-state-dict": lambda: run(exploit),
        "weights-nan": lambda: run(lambda: expect_exit_2(
            capsys, "0.weight contains NaN or inf; the weights are broken",
            *evaluate("--weights", save("nan.pt", {k: v * float("nan") if k == "0.weight" else v
                                                   for k, v in torch.load(weights).items()})))),
        "weights-changed": lambda: run(lambda: _weights_changed(capsys, evaluate, weights, tmp_path)),
        "data-missing": lambda: run(lambda: expect_exit_2(capsys, "no such file or folder",
                                                          *evaluate(data_file=tmp_path / "nothing.npz"))),
        "data-object-array": lambda: run(exploit),
        "data-nan": lambda: expect_error(lambda: load_data_path(npz("nan.npz", x=nan, y=Y.numpy())),
                                         "NaN or infinite values in 1 example, row 2"),
        "data-bounds-unknown": lambda: run(lambda: expect_exit_2(
            capsys, "pass --bounds LO,HI.*--bounds none",
            *evaluate(data_file=npz("big.npz", x=X.numpy() * 255, y=Y.numpy())))),
        "data-label-range": lambda: expect_error(lambda: load_data_path(npz("l.npz", x=X.numpy(), y=Y.numpy()),
                                                                        classes=2), "out of range.*`classes=3`"),
        "data-folder-labels": lambda: (
            expect_error(lambda: load_data_path(images("named", [(8, 8), (8, 8)]), classes=["c1", "cat"]),
                         r"folder 'c0' is not among the class names given by `classes`"),
            expect_error(lambda: load_data_path(images("named2", [(8, 8), (8, 8)]), classes=2),
                         r"`classes=2` maps folders named by number .* folder 'c0' is not a number")),
        "data-mixed-sizes": lambda: expect_error(lambda: load_data_path(images("mixed", [(8, 8), (8, 9)])),
                                                 "must all have the same size"),
        "data-not-an-image": lambda: expect_error(lambda: load_data_path(images("bad", [(8, 8), (8, 8)], True)),
                                                  "cannot be read as an image"),
        "data-decompression-bomb": bomb,
    }


def _disk_full(tmp_path, capsys, run_dir):
    """The disk fills while an evaluation saves its state: a one-line error, exit 2, the state saved
    before it intact, and the same command, run again, resumes to the numbers of a run never stopped."""
    import errno
    import json
    import shutil
    import advlab.io as io
    from advlab.io import load_tensors
    args = ["evaluate", "--eps", "0.05,0.1", "--suite", "fast", "--no-checks", "--n", "60", "--batch-size", "20",
            "--no-progress", "--json"]
    for name in ("clean", "full"):
        shutil.copytree(run_dir, tmp_path / name)
    assert cli(*args, "--run", str(tmp_path / "clean")) == 0
    reference = json.loads(capsys.readouterr().out)["results"]
    real, writes = io.atomic_file, []

    def full_disk(path, fill, by_name=False):
        if str(path).endswith("state.safetensors"):
            writes.append(path)
            if len(writes) == 3:  # two saves went through; the third finds the disk full
                def fill(target):  # noqa: F811 - half a file written, then the disk is full
                    Path(target).write_bytes(b"\0" * 100)
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, fill, by_name)

    io.atomic_file = full_disk
    try:
        expect_exit_2(capsys, "cannot write .*: No space left on device; the last saved state is intact",
                      *args, "--run", str(tmp_path / "full"))
    finally:
        io.atomic_file = real
    state = tmp_path / "full" / "eval" / "fast-linf" / "state.safetensors"
    assert load_tensors(state)  # the second save, whole
    assert cli(*args, "--run", str(tmp_path / "full")) == 0
    out = capsys.readouterr()
    assert "resuming" in out.err
    assert [r["robust_accuracy"] for r in json.loads(out.out)["results"]] == [r["robust_accuracy"] for r in reference]


def _no_cuda(fn):
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        fn()
    finally:
        torch.cuda.is_available = real


def _weights_changed(capsys, evaluate, weights, tmp_path):
    from advlab import load_run
    assert cli(*evaluate("--weights", weights), "--no-progress") == 0
    capsys.readouterr()
    torch.save({k: v + 1 for k, v in torch.load(weights).items()}, weights)
    expect_error(lambda: load_run(tmp_path / "out"), "has changed since this run was recorded")


def _warns(fn, message):
    with pytest.warns(AdvlabWarning, match=message):
        fn()


def _write(path, text):
    path.write_text(text)
    return path


def _suite(tmp_path, text, message):
    from advlab.evaluate import load_suite_file
    f = tmp_path / "suite.toml"
    f.write_text(text)
    expect_error(lambda: load_suite_file(f), message)


def _corrupt_dataset(tmp_path):
    import numpy as np
    from advlab.data import load_dataset
    from advlab.data.idx import write_idx
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 4), ("t10k", 3)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.zeros(n, np.uint8))
    f = folder / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-5])
    expect_error(lambda: load_dataset("mnist", data_dir=tmp_path), "truncated")


def _malicious_pickle(tmp_path):
    from advlab.data.cifar import parse_batch
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    expect_error(lambda: parse_batch(pickle.dumps({b"data": Exploit(), b"labels": []})), "refusing to load")
    assert not marker.exists()


def _symlink_escape(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "link").symlink_to(tmp_path.parent)
    expect_error(lambda: inside(tmp_path / "run", "link/x", "out"), "outside")
    assert inside(tmp_path / "run", "figures/a.png") == (tmp_path / "run" / "figures" / "a.png").resolve()


def _resume_different(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--model", "softmax", "--out", str(tmp_path / "r"), "--no-progress"]
    assert cli(*args, "--epochs", "2") == 0
    # Remove the finished card so the run looks interrupted after its last checkpoint.
    (tmp_path / "r" / "card.json").unlink()
    expect_exit_2(capsys, "different settings.*config.epochs was 2, now 3", *args, "--epochs", "3", "--resume")


def _bad_budget(tmp_path, capsys, run_dir):
    f = tmp_path / "eps.json"
    f.write_text(json.dumps({"eps": {"0": 0.1}}))
    expect_exit_2(capsys, "missing|class", "attack", "--run", str(run_dir), "--attack", "pgd", "--eps-per-class", str(f))


def _corrupt_weights(tmp_path, run_dir):
    import shutil
    from advlab import load_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    w = copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    expect_error(lambda: load_run(copy), "not a valid safetensors file")


def _zoo_package_broken(tmp_path, capsys):
    import importlib
    import importlib.util
    real, real_find = importlib.import_module, importlib.util.find_spec

    def broken(name, package=None):
        if name.split(".")[0] == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, package)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib, "import_module", broken)
        mp.setattr(importlib.util, "find_spec",  # installed, whatever this machine has
                   lambda name, package=None: object() if name == "torchvision" else real_find(name, package))
        expect_exit_2(capsys, "torchvision is installed but cannot be imported \\(RuntimeError: operator "
                              "torchvision::nms does not exist\\); its build does not fit torch", "evaluate", "--model",
                      "torchvision:resnet18", "--dataset", "digits", "--eps", "0.1", "--out", str(tmp_path / "o"))


def _export_no_leaderboard(tmp_path, capsys, run_dir):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert cli("evaluate", "--run", str(run), "--eps", "0.1", "--suite", "fast", "--n", "10", "--no-checks",
               "--no-progress") == 0
    capsys.readouterr()
    expect_exit_2(capsys, "evaluates digits at linf: RobustBench has no such leaderboard", "export", "robustbench",
                  str(run), "--allow-partial", "--out", str(tmp_path / "o"))


ROWS = table_rows()


def test_every_row_has_a_test_and_every_test_a_row(tmp_path, capsys, run_dir):
    assert set(ROWS) == set(case("", tmp_path, capsys, run_dir)), set(ROWS) ^ set(case("", tmp_path, capsys, run_dir))


@pytest.mark.parametrize("row_id", sorted(ROWS))
def test_row(row_id, tmp_path, capsys, run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvlabWarning)  # only the rows about warnings look for them
        if row_id in ("probabilities", "train-mode"):
            warnings.simplefilter("default", AdvlabWarning)
        case(row_id, tmp_path, capsys, run_dir)[row_id]()
