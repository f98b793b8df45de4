"""Bring your own model and data: --model FILE.py:FN --weights W, --data FILE_OR_DIR, --device."""

import json
import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn

from advlab import load_run
from advlab.cli import main
from advlab.errors import AdvlabError
from advlab.evaluate import evaluate_robustness, get_suite
from advlab.models.external import load_external_model, read_state_dict

MODEL_FILE = '''
import torch
from torch import nn


def build(hidden=32, softmax=False):
    layers = [nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
    if softmax:
        layers.append(nn.Softmax(dim=1))
    return nn.Sequential(*layers)


class Wrapped(nn.Module):
    """Keys start with 'model.' by design: a prefix that must not be stripped."""
    def __init__(self):
        super().__init__()
        self.model = build()

    def forward(self, x):
        return self.model(x)


NOT_A_FUNCTION = 3
'''


def _build(hidden=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A model file, a trained state dict, and that model in Python."""
    root = tmp_path_factory.mktemp("byo")
    (root / "nets.py").write_text(MODEL_FILE)
    torch.manual_seed(0)
    net = _build()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(digits.x_train), digits.y_train).backward()
        opt.step()
    net.eval()
    return root, net


def _cli(*args):
    return main([str(a) for a in args])


def _json(capsys, *args):
    assert _cli(*args, "--json", "--no-progress") == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _exit_2(capsys, message, *args):
    try:
        code = _cli(*args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("layout", ["bare", "state_dict", "module_prefix", "model_state_dict", "safetensors"])
def test_cli_evaluate_matches_the_python_api_for_every_weights_layout(trained, digits, tmp_path, capsys, layout):
    root, net = trained
    state = net.state_dict()
    if layout == "safetensors":
        from safetensors.torch import save_file
        weights = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    else:
        obj = {"bare": state, "state_dict": {"state_dict": state, "epoch": 3},
               "module_prefix": {f"module.{k}": v for k, v in state.items()},
               "model_state_dict": {"model_state_dict": state, "optimizer": {"lr": 0.1}}}[layout]
        weights = tmp_path / "w.pt"
        torch.save(obj, weights)
    rec = _json(capsys, "evaluate", "--model", f"{root}/nets.py:build", "--weights", weights, "--dataset", "digits",
                "--eps", "0.05,0.1", "--suite", "fast", "--n", 120, "--no-checks", "--device", "cpu",
                "--out", tmp_path / "out")
    x, y = digits.test_subset(120)
    ev = evaluate_robustness(net, x, y, [0.05, 0.1], get_suite("fast"), bounds=digits.bounds, progress=False)
    assert [r["robust_accuracy"] for r in rec["results"]] == ev.robust_accuracy()
    assert rec["clean_accuracy"] == ev.clean_accuracy() > 0.8
    assert rec["results"][1]["robust_accuracy"] < rec["clean_accuracy"] - 0.1  # the attack did something
    assert rec["device"] == "cpu" and rec["model"]["spec"].endswith("nets.py:build")
    assert re.fullmatch(r"[0-9a-f]{64}", rec["model"]["weights_sha256"])
    assert rec["passes"]["forward"] > 120 and rec["passes"]["backward"] > 0


def test_external_run_directory_is_reported_and_reloaded(trained, digits, tmp_path, capsys):
    root, net = trained
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "mine"
    _json(capsys, "evaluate", "--model", f"{root}/nets.py:build", "--weights", tmp_path / "w.pt", "--dataset",
          "digits", "--eps", "0.1", "--suite", "fast", "--n", 50, "--no-checks", "--out", out)
    assert (out / "eval" / "fast-linf" / "result.json").is_file()
    model, card = load_run(out)  # the card records spec and weights: the same model comes back
    x = digits.x_test[:20]
    assert torch.equal(model(x), net(x))
    # --run on the recorded model works like any run
    rec = _json(capsys, "attack", "--run", out, "--attack", "fgsm", "--eps", "0.1", "--n", 50)
    assert rec["model"]["weights_sha256"] == card["model"]["weights_sha256"]
    assert _cli("report", out) == 0
    capsys.readouterr()
    html = (out / "report.html").read_text()
    assert "nets.py:build" in html and card["model"]["weights_sha256"] in html
    # the evaluation section says which model, weights and device produced the numbers, and their cost
    assert re.search(r"model \S*nets.py:build, weights SHA-256\s*<code>" + card["model"]["weights_sha256"], html)
    assert re.search(r"device cpu;\s*\d+ forward and \d+\s*backward passes", html)
    # the weights file changed after the evaluation: loading the run says so
    torch.save({k: v + 1 for k, v in net.state_dict().items()}, tmp_path / "w.pt")
    with pytest.raises(AdvlabError, match="has changed since"):
        load_run(out)


def test_mean_std_wrap_the_model_so_eps_stays_in_raw_units(trained, digits, tmp_path, capsys):
    from advlab.models import Normalized
    root, net = trained
    torch.save(net.state_dict(), tmp_path / "w.pt")
    rec = _json(capsys, "attack", "--model", f"{root}/nets.py:build", "--weights", tmp_path / "w.pt", "--dataset",
                "digits", "--mean", "0.3", "--std", "0.5", "--attack", "pgd", "--steps", 5, "--eps", "0.1",
                "--n", 100, "--out", tmp_path / "o")
    from advlab.attacks import PGD
    x, y = digits.test_subset(100)
    expected = PGD(steps=5)(Normalized(net, [0.3], [0.5]).eval(), x, y, [0.1], bounds=(0.0, 1.0))
    assert rec["results"][0]["robust_accuracy"] == expected.robust_accuracy()[0]
    assert rec["clean_accuracy"] == expected.clean_accuracy()


def test_npz_and_image_folder_data_end_to_end_with_the_report(trained, digits, tmp_path, capsys):
    from PIL import Image
    root, net = trained
    torch.save(net.state_dict(), tmp_path / "w.pt")
    x, y = digits.test_subset(60)
    pixels = (x * 255).round().to(torch.uint8)  # (N, 1, 8, 8): exactly representable in PNG and uint8
    np.savez(tmp_path / "test.npz", x=pixels.permute(0, 2, 3, 1).numpy(), y=y.numpy())  # channels-last
    folder = tmp_path / "images"
    for i, (img, label) in enumerate(zip(pixels, y)):
        (folder / f"{int(label)}").mkdir(parents=True, exist_ok=True)  # numbered folders: labels by number
        Image.fromarray(img[0].numpy(), mode="L").save(folder / f"{int(label)}" / f"{i:03d}.png")
    results = {}
    for name, data in (("npz", tmp_path / "test.npz"), ("folder", folder)):
        out = tmp_path / f"run-{name}"
        results[name] = _json(capsys, "evaluate", "--model", f"{root}/nets.py:build", "--weights", tmp_path / "w.pt",
                              "--data", data, "--classes", 10, "--eps", "0.1", "--suite", "fast", "--no-checks",
                              "--out", out)
        assert _cli("report", out) == 0 and (out / "report.html").stat().st_size > 1000
        capsys.readouterr()
    # The folder is read class by class; the same images give the same clean and robust accuracy.
    for key in ("clean_accuracy",):
        assert results["npz"][key] == results["folder"][key] == (net(pixels.float() / 255).argmax(1) == y).float().mean().item()
    assert results["npz"]["n"] == results["folder"]["n"] == 60
    assert results["npz"]["data"]["format"] == "npz" and results["folder"]["data"]["format"] == "folder"
    assert results["npz"]["results"][0]["robust_accuracy"] < results["npz"]["clean_accuracy"]


def test_bad_models_and_weights_are_clear_errors(trained, tmp_path, capsys):
    root, net = trained
    spec = f"{root}/nets.py:build"
    base = ["evaluate", "--dataset", "digits", "--eps", "0.1", "--suite", "fast", "--n", "20", "--no-checks",
            "--out", str(tmp_path / "o")]
    torch.save(net.state_dict(), tmp_path / "ok.pt")
    # mismatched keys: another architecture's weights
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    _exit_2(capsys, r"does not fit the model: 4 \(1.bias, 1.weight.*missing, 2 \(bias, weight\) unexpected", *base,
            "--model", spec, "--weights", tmp_path / "other.pt")
    # same names, wrong shapes: the hidden width was not passed
    _exit_2(capsys, r"wrong shape, e\.g\. 1\.weight \(32, 64\) in the file, \(16, 64\) in the model.*--model-arg",
            *base, "--model", spec, "--model-arg", "hidden=16", "--weights", tmp_path / "ok.pt")
    # a whole pickled model is not a state dict; a malicious pickle never runs
    torch.save(net, tmp_path / "whole.pt")
    _exit_2(capsys, "not a plain state dict.*refusing to unpickle", *base, "--model", spec, "--weights",
            tmp_path / "whole.pt")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight": Exploit()}, f)
    _exit_2(capsys, "not a plain state dict", *base, "--model", spec, "--weights", tmp_path / "evil.pt")
    assert not marker.exists()
    # NaN weights
    torch.save({k: v * float("nan") for k, v in net.state_dict().items()}, tmp_path / "nan.pt")
    _exit_2(capsys, "NaN or inf.*broken", *base, "--model", spec, "--weights", tmp_path / "nan.pt")
    # a missing function, a missing file, a non-callable, a bad module
    _exit_2(capsys, "has no 'buld'; it defines Wrapped, build", *base, "--model", f"{root}/nets.py:buld")
    _exit_2(capsys, "no such file", *base, "--model", f"{root}/nope.py:build")
    _exit_2(capsys, "not a function or class", *base, "--model", f"{root}/nets.py:NOT_A_FUNCTION")
    _exit_2(capsys, "cannot import 'no_such_pkg_xyz.nets' \\(No module", *base, "--model", "no_such_pkg_xyz.nets:build")
    _exit_2(capsys, "cannot call it with colour=1.*hidden=32", *base, "--model", spec, "--model-arg", "colour=1")
    # a model that returns probabilities
    _exit_2(capsys, "returns probabilities.*remove the final softmax", *base, "--model", spec, "--model-arg",
            "softmax=true")
    # --weights without a file, --mean without --std, neither --run nor --model, model without data
    _exit_2(capsys, "no such file", *base, "--model", spec, "--weights", tmp_path / "missing.pt")
    _exit_2(capsys, "--mean and --std go together", *base, "--model", spec, "--mean", "0.5")
    _exit_2(capsys, "give --run RUN_DIR .* or --model SPEC", "evaluate", "--eps", "0.1")
    _exit_2(capsys, "needs data: --dataset NAME .* or --data", "evaluate", "--eps", "0.1", "--model", spec)
    _exit_2(capsys, "torchvision package: pip install 'advlab\\[zoo\\]'", *base, "--model", "torchvision:resnet18") \
        if _missing("torchvision") else None


def _missing(module):
    import importlib.util
    return importlib.util.find_spec(module) is None


def test_a_prefix_that_belongs_to_the_model_is_kept(trained):
    root, net = trained
    state = {f"model.{k}": v for k, v in net.state_dict().items()}  # Wrapped's own names
    torch.save({"model": state}, root / "wrapped.pt")  # ... under the container key "model"
    model, info = load_external_model(f"{root}/nets.py:Wrapped", weights=root / "wrapped.pt")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model(x), net(x))
    # the same weights with a DataParallel prefix on top
    torch.save({f"module.{k}": v for k, v in state.items()}, root / "wrapped-dp.pt")
    model, _ = load_external_model(f"{root}/nets.py:Wrapped", weights=root / "wrapped-dp.pt")
    assert torch.equal(model(x), net(x))
    # and the bare build() takes "model."-prefixed keys by stripping them
    torch.save(state, root / "prefixed.pt")
    model, _ = load_external_model(f"{root}/nets.py:build", weights=root / "prefixed.pt")
    assert torch.equal(model(x), net(x))


def test_read_state_dict_reports_layouts_it_cannot_use(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(AdvlabError, match="no state dict found.*epoch, lr.*state_dict / model_state_dict / model"):
        read_state_dict(tmp_path / "meta.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(AdvlabError):
        read_state_dict(tmp_path / "junk.pt")


@pytest.mark.parametrize("command", [
    ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1"],
    ["attack", "--attack", "fgsm", "--eps", "0.1"],
    ["evaluate", "--eps", "0.1"],
    ["demo", "--quick"],
])
def test_device_cuda_without_cuda_is_a_one_line_error(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    extra = ["--run", str(tmp_path)] if command[0] in ("attack", "evaluate") else []
    _exit_2(capsys, "--device cuda: CUDA is not available", *command, *extra, "--device", "cuda",
            "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_resolve_device():
    from advlab.device import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu", 0) \
        if torch.cuda.is_available() else resolve_device("auto") == torch.device("cpu")
    with pytest.raises(AdvlabError, match="must be one of auto, cpu, cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(AdvlabError, match="CUDA is not available"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(AdvlabError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_and_cpu_agree(trained, digits, tmp_path, capsys):
    root, net = trained
    torch.save(net.state_dict(), tmp_path / "w.pt")
    recs = [_json(capsys, "evaluate", "--model", f"{root}/nets.py:build", "--weights", tmp_path / "w.pt",
                  "--dataset", "digits", "--eps", "0.1", "--suite", "fast", "--no-checks", "--device", device,
                  "--out", tmp_path / device) for device in ("cpu", "cuda")]
    assert recs[1]["device"].startswith("cuda:")
    n = recs[0]["n"]
    assert abs(recs[0]["results"][0]["robust_accuracy"] - recs[1]["results"][0]["robust_accuracy"]) <= 3 / n


def test_python_entry_points_take_device_strings(tmp_path, monkeypatch, digits):
    from advlab.defenses import TrainConfig, train_run
    record = train_run("digits", "softmax", tmp_path / "r", config=TrainConfig(epochs=1), progress=False,
                       device="auto")
    model, _ = load_run(tmp_path / "r", device="cpu")
    assert next(model.parameters()).device == torch.device("cpu")
    with torch.no_grad():  # the record's accuracy is the saved model's on the test set (~chance after 1 epoch)
        accuracy = (model(digits.x_test).argmax(1) == digits.y_test).float().mean().item()
    assert record["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AdvlabError, match="CUDA is not available"):
        train_run("digits", "softmax", tmp_path / "r2", config=TrainConfig(epochs=1), progress=False, device="cuda")
    assert not (tmp_path / "r2").exists()
    with pytest.raises(AdvlabError, match="CUDA is not available"):
        load_run(tmp_path / "r", device="cuda:0")


def test_the_weights_refusal_has_no_terminal_colour_codes_and_names_what_was_refused(trained, tmp_path, capsys):
    root, net = trained
    torch.save(net, tmp_path / "whole.pt")  # a pickled module: torch's refusal carries ANSI bold codes
    with pytest.raises(AdvlabError) as info:
        read_state_dict(tmp_path / "whole.pt")
    message = str(info.value)
    assert "\x1b" not in message and "[1m" not in message, message
    assert "Unsupported global: GLOBAL torch.nn.modules.container.Sequential" in message, message
    assert len(message.splitlines()) == 1
    _exit_2(capsys, "refusing to unpickle anything else \\(Unsupported global", "evaluate", "--model",
            f"{root}/nets.py:build", "--weights", tmp_path / "whole.pt", "--dataset", "digits", "--eps", "0.1",
            "--n", "10", "--no-checks", "--out", tmp_path / "o")


def _simulate(monkeypatch, broken=(), absent=()):
    """Imports of the packages in `broken` fail as a torchvision built for another torch does; those in
    `absent` are not installed; the rest of the zoo packages import as empty modules (runs without them)."""
    import importlib
    import importlib.util
    import types
    real_import, real_find = importlib.import_module, importlib.util.find_spec
    zoo = ("torchvision", "timm", "robustbench")

    def import_module(name, package=None):
        top = name.split(".")[0]
        if top in broken:
            raise RuntimeError("operator torchvision::nms does not exist")
        if top in absent:
            raise ModuleNotFoundError(f"No module named '{top}'", name=top)
        if top in zoo:
            return types.ModuleType(name)
        return real_import(name, package)

    def find_spec(name, package=None):
        top = name.split(".")[0]
        if top in absent:
            return None
        return object() if top in zoo else real_find(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:resnet18", "robustbench:Wong2020Fast"])
def test_a_torchvision_built_for_another_torch_is_one_line_that_says_how_to_fix_it(spec, tmp_path, capsys,
                                                                                     monkeypatch):
    _simulate(monkeypatch, broken=("torchvision", "timm"))  # timm imports torchvision: it fails the same way
    package = "torchvision" if spec.startswith("robustbench") else spec.split(":")[0]
    data = ["--dataset", "cifar10", "--norm", "linf"] if spec.startswith("robustbench") else ["--dataset", "digits"]
    _exit_2(capsys, f"--model {spec}: {package} is installed but cannot be imported \\(RuntimeError: operator "
                    "torchvision::nms does not exist\\); its build does not fit torch .*pip install torch==2.14.1 "
                    "torchvision==0.29.1.*make zoo", "evaluate", "--model", spec, *data, "--eps", "8/255",
            "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_zoo_packages_that_are_not_installed_say_which_extra_to_install(tmp_path, capsys, monkeypatch):
    _simulate(monkeypatch, absent=("robustbench",))
    _exit_2(capsys, "--model robustbench:Wong2020Fast needs the robustbench package: pip install "
                    "'advlab\\[robustbench\\]'", "evaluate", "--model", "robustbench:Wong2020Fast", "--dataset",
            "cifar10", "--norm", "linf", "--eps", "8/255", "--out", str(tmp_path / "o"))
    _simulate(monkeypatch, absent=("timm",))
    _exit_2(capsys, "--model timm:resnet18 needs the timm package: pip install 'advlab\\[zoo\\]'", "evaluate",
            "--model", "timm:resnet18", "--dataset", "digits", "--eps", "0.1", "--out", str(tmp_path / "o"))


ORACLE_FILE = '''
import torch
from torch import nn


class Oracle(nn.Module):
    """Reads the true label from the pixels (every image is filled with 10 * label / 255)."""
    def forward(self, x):
        value = x.flatten(1).mean(1, keepdim=True) * 255 / 10
        return -(value - torch.arange(10, dtype=x.dtype)) ** 2 * 100


def build():
    return Oracle()
'''


def test_image_folders_with_missing_classes_keep_their_labels_end_to_end(tmp_path, capsys):
    """Issue 25: 20 CIFAR-10 images without bird and deer gave clean accuracy 0.20 instead of 1.00."""
    from PIL import Image
    (tmp_path / "oracle.py").write_text(ORACLE_FILE)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    truth = [0, 1, 3, 5, 6, 7, 8, 9] * 2 + [3, 9, 0, 1]  # 20 images, no bird (2) and no deer (4)
    layouts = {"named": lambda i, k: f"{names[k]}/{i:02d}.png", "numbered": lambda i, k: f"{k}/{i:02d}.png",
               "flat": lambda i, k: f"cifar10_{i:02d}_{k}.png"}
    for layout, path in layouts.items():
        for i, k in enumerate(truth):
            file = tmp_path / layout / path(i, k)
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), 10 * k, dtype=np.uint8)).save(file)
    runs = {"named": ["--classes", ",".join(names)], "numbered": ["--classes", "10"],
            "flat": ["--labels", "filename", "--classes", "10"]}
    for layout, flags in runs.items():
        rec = _json(capsys, "attack", "--model", f"{tmp_path}/oracle.py:build", "--data", tmp_path / layout, *flags,
                    "--attack", "fgsm", "--eps", "0.01", "--out", tmp_path / f"run-{layout}")
        assert rec["clean_accuracy"] == 1.0 and rec["n"] == 20, layout
    # Read by position, the named folders without --classes are 8 classes: refused, never relabelled.
    _exit_2(capsys, "returns 10 logits per input but the data has 8 classes", "attack", "--model",
            f"{tmp_path}/oracle.py:build", "--data", tmp_path / "named", "--attack", "fgsm", "--eps", "0.01")
    _exit_2(capsys, r"--classes 10 maps folders named by number .* folder 'airplane' is not a number", "attack",
            "--model", f"{tmp_path}/oracle.py:build", "--data", tmp_path / "named", "--classes", "10",
            "--attack", "fgsm", "--eps", "0.01")
