"""The zoo extras end to end: --model robustbench:NAME (offline, a checkpoint the test places under
--model-dir), torchvision:NAME and timm:NAME. They need torchvision, timm and robustbench built for the
installed torch: `make test` runs them in .venv-zoo (`make zoo`); elsewhere they skip with the reason."""

import hashlib
import json
import pickle
import re

import numpy as np
import pytest
import torch

from advlab.cli import main


def _zoo_problem():
    from advlab.errors import AdvlabError
    from advlab.models.external import import_optional
    from advlab.models.robustbench_zoo import import_robustbench
    try:
        import_optional("torchvision", "torchvision:resnet18")
        import_optional("timm", "timm:resnet18")
        import_robustbench("robustbench:Wong2020Fast")
    except AdvlabError as e:
        return f"{e} (`make test` runs these tests in .venv-zoo, which `make zoo` builds)"
    return None


PROBLEM = _zoo_problem()
pytestmark = [pytest.mark.zoo, pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))]

CIFAR_N = 6


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
    return err


def _images(n, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8))


def write_cifar(root, pixels, labels, dataset="cifar10"):
    """CIFAR's python files with `pixels` (N, 3, 32, 32) uint8 as the test split (a few train images too)."""
    test = {b"data": pixels.reshape(len(pixels), -1).numpy(), b"batch_label": b"test"}
    train = {b"data": _images(2, 9).reshape(2, -1).numpy(), b"batch_label": b"train"}
    if dataset == "cifar10":
        folder = root / "cifar10" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        test[b"labels"], train[b"labels"] = [int(v) for v in labels], [0, 1]
        for k in range(1, 6):
            (folder / f"data_batch_{k}").write_bytes(pickle.dumps(train, protocol=2))
        (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    else:
        folder = root / "cifar100" / "cifar-100-python"
        folder.mkdir(parents=True)
        test[b"fine_labels"], train[b"fine_labels"] = [int(v) for v in labels], [0, 1]
        (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
        (folder / "test").write_bytes(pickle.dumps(test, protocol=2))
        (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    return root


def _reference(name, dataset, norm):
    """RobustBench's own architecture for NAME, built by its registry with a fixed seed (untrained)."""
    from advlab.models.robustbench_zoo import zoo_entry
    torch.manual_seed(0)
    return zoo_entry(name, dataset, norm)["model"]().eval()


def _labels_the_model_gets_right_but(model, pixels, wrong):
    """Labels: the model's own predictions, except at `wrong` (so clean accuracy is known exactly)."""
    with torch.no_grad():
        pred = model(pixels.float() / 255).argmax(1)
    labels = pred.clone()
    labels[wrong] = (pred[wrong] + 1) % model(pixels[:1].float() / 255).shape[1]
    return labels


def test_robustbench_model_evaluates_offline_end_to_end_from_its_checkpoint_in_model_dir(tmp_path, capsys,
                                                                                          monkeypatch):
    from advlab import load_run
    from advlab.attacks import FGSM
    net = _reference("Wong2020Fast", "cifar10", "linf")  # PreAct-ResNet-18 with its own normalisation
    # The checkpoint as RobustBench publishes this model's: under state_dict, DataParallel's prefix, no mu/sigma
    # buffers (the architecture sets them; RobustBench loads it non-strictly for exactly that).
    state = {f"module.{k}": v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}
    checkpoint = tmp_path / "models" / "cifar10" / "Linf" / "Wong2020Fast.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 15}, checkpoint)
    pixels = _images(CIFAR_N)
    labels = _labels_the_model_gets_right_but(net, pixels, wrong=[2])
    write_cifar(tmp_path / "data", pixels, labels)
    out = tmp_path / "run"
    rec = _json(capsys, "attack", "--model", "robustbench:Wong2020Fast", "--dataset", "cifar10", "--norm", "linf",
                "--model-dir", tmp_path / "models", "--data-dir", tmp_path / "data", "--attack", "fgsm",
                "--eps", "8/255", "--device", "cpu", "--out", out)
    x, y = pixels.float() / 255, labels
    expected = FGSM(norm="linf")(net, x, y, [8 / 255], bounds=(0.0, 1.0))
    assert rec["clean_accuracy"] == pytest.approx(5 / 6) == expected.clean_accuracy()
    assert rec["results"][0]["robust_accuracy"] == expected.robust_accuracy()[0]
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert rec["model"]["spec"] == "robustbench:Wong2020Fast" and rec["model"]["weights_sha256"] == sha
    assert rec["model"]["zoo"] == {"source": "robustbench", "name": "Wong2020Fast", "dataset": "cifar10",
                                   "threat": "Linf", "preprocessing": None}
    card = json.loads((out / "card.json").read_text())
    zoo = card["model"]["zoo"]
    assert zoo["checkpoints"] == [str(checkpoint.resolve())] and zoo["checkpoint_sha256"] == [sha]
    assert zoo["model_dir"] == str((tmp_path / "models").resolve()) and zoo["robustbench_version"]
    assert card["model"]["normalize"] is None  # RobustBench's model normalises itself: eps in pixel units
    # evaluate, then the run reloads (from its card: zoo name, leaderboard, checkpoint folder) to the same model
    ev = _json(capsys, "evaluate", "--run", out, "--data-dir", tmp_path / "data", "--eps", "8/255", "--suite", "fast",
               "--n", 4, "--no-checks")
    assert ev["clean_accuracy"] == 0.75 and ev["model"]["zoo"]["name"] == "Wong2020Fast"
    model, _ = load_run(out)
    assert torch.equal(model(x), net(x))
    _robustbench_reads_the_export(out, tmp_path, capsys, monkeypatch)
    # the checkpoint changed after the run was recorded: loading it says so
    torch.save({"state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}}, checkpoint)
    _exit_2(capsys, "has changed since this run was recorded", "evaluate", "--run", out, "--data-dir", tmp_path / "data",
            "--eps", "8/255", "--n", 2)


def _robustbench_reads_the_export(run, tmp_path, capsys, monkeypatch):
    """`advlab export robustbench` of the run, read back by RobustBench's own code: its ModelInfo takes the
    entry's fields, and its leaderboard listings (which read model_info/DATASET/THREAT/NAME.json) show our numbers."""
    import dataclasses
    from robustbench.utils import ModelInfo, get_leaderboard_latex, list_available_models
    folder = tmp_path / "rb" / "model_info" / "cifar10" / "Linf"
    rec = _json(capsys, "export", "robustbench", run, "--allow-partial", "--out", folder)
    assert rec["name"] == "Wong2020Fast" and rec["partial"]
    entry = json.loads((folder / "Wong2020Fast.json").read_text())
    info = ModelInfo(**{k: v for k, v in entry.items() if k != "external"})
    assert set(entry) - {"external"} <= {f.name for f in dataclasses.fields(ModelInfo)}
    assert info.eps == "8/255" and info.clean_acc == "75.00"
    monkeypatch.chdir(tmp_path / "rb")
    list_available_models("cifar10", "Linf")
    listed = [line for line in capsys.readouterr().out.splitlines() if "Wong2020Fast" in line]
    robust = float(entry["external"]) / 100
    assert len(listed) == 1 and "75.00%" in listed[0] and f"{robust:.2%}" in listed[0], listed
    latex = get_leaderboard_latex("cifar10", "Linf")
    capsys.readouterr()
    assert f"& 75.00 & {entry['external']} & " in latex, latex
    x_adv = torch.load(folder / "Wong2020Fast.pt", weights_only=True)
    assert x_adv.shape == (4, 3, 32, 32)


def test_robustbench_without_its_checkpoint_offline_names_the_exact_path(tmp_path, capsys):
    base = ["evaluate", "--dataset", "cifar10", "--eps", "0.5", "--n", "2", "--model-dir", str(tmp_path / "m"),
            "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    path = tmp_path / "m" / "cifar10" / "L2" / "Rice2020Overfitting.pt"
    err = _exit_2(capsys, "ADVLAB_OFFLINE", *base, "--model", "robustbench:Rice2020Overfitting", "--norm", "l2")
    assert f"no checkpoint at {path}" in err and f"at {path} (Google Drive id " in err
    _exit_2(capsys, "has no 'Rice2020Overfiting'.*did you mean Rice2020Overfitting", *base, "--model",
            "robustbench:Rice2020Overfiting", "--norm", "l2")
    _exit_2(capsys, "needs --norm linf or l2", "attack", "--attack", "fgsm", *base[1:], "--model",
            "robustbench:Rice2020Overfitting")
    _exit_2(capsys, "needs --dataset cifar10, cifar100 or imagenet", "evaluate", "--eps", "0.5",
            "--model", "robustbench:Rice2020Overfitting", "--data", str(tmp_path))
    (tmp_path / "w.pt").write_bytes(b"")
    _exit_2(capsys, "--weights is not for --model robustbench", *base, "--model", "robustbench:Rice2020Overfitting",
            "--norm", "l2", "--weights", str(tmp_path / "w.pt"))
    _exit_2(capsys, "--mean is not for --model robustbench", *base, "--model", "robustbench:Rice2020Overfitting",
            "--norm", "l2", "--mean", "0.5", "--std", "0.5")
    assert not (tmp_path / "o").exists() and not path.parent.exists()
    from advlab.errors import AdvlabError
    from advlab.models.robustbench_zoo import load_robustbench_model
    with pytest.raises(AdvlabError, match="RobustBench has no imagenet L2 leaderboard"):
        load_robustbench_model("Salman2020Do_R50", dataset="imagenet", norm="l2", model_dir=tmp_path)
    with pytest.raises(AdvlabError, match="weights that torchvision or timm download when it is built"):
        load_robustbench_model("Standard_R50", dataset="imagenet", norm="linf", model_dir=tmp_path)


def test_robustbench_downloads_through_robustbench_into_its_layout(tmp_path, monkeypatch):
    import robustbench.utils
    from advlab.errors import AdvlabError
    from advlab.models.robustbench_zoo import load_robustbench_model, zoo_entry
    net = _reference("Rice2020Overfitting", "cifar10", "l2")
    calls = []

    def fake_download(gdrive_id, path):
        calls.append((gdrive_id, str(path)))
        torch.save(net.state_dict(), path)

    monkeypatch.delenv("ADVLAB_OFFLINE", raising=False)
    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", fake_download)
    model, info = load_robustbench_model("Rice2020Overfitting", dataset="cifar10", norm="l2", model_dir=tmp_path)
    path = tmp_path / "cifar10" / "L2" / "Rice2020Overfitting.pt"
    assert calls == [(zoo_entry("Rice2020Overfitting", "cifar10", "l2")["gdrive_id"], f"{path}.part")]
    assert path.is_file() and not path.with_name(path.name + ".part").exists()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), net(x)) and info["zoo"]["threat"] == "L2"

    def no_network(gdrive_id, path):
        path = str(path)
        open(path, "wb").write(b"half a file")
        raise ConnectionError("Max retries exceeded with url: /uc?id=...")

    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", no_network)
    with pytest.raises(AdvlabError, match=r"downloading it through RobustBench failed \(ConnectionError") as e:
        load_robustbench_model("Wong2020Fast", dataset="cifar10", norm="linf", model_dir=tmp_path)
    assert str(tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt") in str(e.value)
    assert list((tmp_path / "cifar10" / "Linf").iterdir()) == []  # the half-downloaded file is gone


def test_robustbench_refuses_a_pickled_checkpoint_and_one_of_another_model(tmp_path):
    from advlab.errors import AdvlabError
    from advlab.models.robustbench_zoo import load_robustbench_model
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    with open(folder / "Wong2020Fast.pt", "wb") as f:
        pickle.dump({"state_dict": Exploit()}, f)
    with pytest.raises(AdvlabError, match="refusing to unpickle"):
        load_robustbench_model("Wong2020Fast", dataset="cifar10", norm="linf", model_dir=tmp_path)
    assert not marker.exists()
    torch.save(_reference("Rice2020Overfitting", "cifar100", "linf").state_dict(), folder / "Wong2020Fast.pt")
    with pytest.raises(AdvlabError, match=r"does not fit RobustBench's Wong2020Fast: 2 tensor\(s\) have the wrong "
                                          r"shape, e\.g\. linear\.weight \(100, 512\) in the file, \(10, 512\)"):
        load_robustbench_model("Wong2020Fast", dataset="cifar10", norm="linf", model_dir=tmp_path)


def test_robustbench_cifar100_model_runs_on_cifar100(tmp_path, capsys):
    net = _reference("Rice2020Overfitting", "cifar100", "linf")
    checkpoint = tmp_path / "models" / "cifar100" / "Linf" / "Rice2020Overfitting.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({k: v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}, checkpoint)
    pixels = _images(4, 1)
    write_cifar(tmp_path / "data", pixels, _labels_the_model_gets_right_but(net, pixels, wrong=[0, 3]), "cifar100")
    rec = _json(capsys, "attack", "--model", "robustbench:Rice2020Overfitting", "--dataset", "cifar100", "--norm",
                "linf", "--model-dir", tmp_path / "models", "--data-dir", tmp_path / "data", "--attack", "fgsm",
                "--eps", "8/255", "--out", tmp_path / "run")
    assert rec["clean_accuracy"] == 0.5 and rec["model"]["zoo"]["dataset"] == "cifar100"
    assert rec["data"]["name"] == "cifar100"


def test_robustbench_imagenet_model_reads_the_images_through_its_own_preprocessing(tmp_path, capsys):
    from PIL import Image
    from advlab.attacks import FGSM
    from advlab.data.datasets import imagenet_classes
    from advlab.data.preprocessing import get_preprocess
    net = _reference("Wong2020Fast", "imagenet", "linf")  # a ResNet-50 behind RobustBench's normaliser; Crop288
    checkpoint = tmp_path / "models" / "imagenet" / "Linf" / "Wong2020Fast.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(net.model.state_dict(), checkpoint)  # as published: the bare network (RobustBench adds "model.")
    sources = []
    for i, (h, w) in enumerate([(300, 340), (330, 300)]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
        sources.append(path)
    x = torch.stack([torch.from_numpy(np.array(get_preprocess("crop288")(Image.open(p)))).permute(2, 0, 1)
                     for p in sources])
    x = x.float() / 255
    with torch.no_grad():
        pred = net(x).argmax(1)
    wnids = imagenet_classes()
    y = torch.tensor([int(pred[0]), (int(pred[1]) + 1) % 1000])  # the first as the model sees it, the second not
    for i, (path, label) in enumerate(zip(sources, y)):
        folder = tmp_path / "imagenet" / "val" / wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        path.rename(folder / f"ILSVRC2012_val_{i:08d}.JPEG")
    args = ["attack", "--model", "robustbench:Wong2020Fast", "--dataset", "imagenet", "--data-dir", tmp_path / "imagenet",
            "--norm", "linf", "--model-dir", tmp_path / "models", "--attack", "fgsm", "--eps", "4/255", "--workers", 1]
    rec = _json(capsys, *args, "--out", tmp_path / "run")
    expected = FGSM(norm="linf")(net, x, y, [4 / 255], bounds=(0.0, 1.0))
    assert rec["data"]["preprocess"] == "crop288" and rec["model"]["zoo"]["preprocessing"] == "Crop288"
    assert rec["data"]["input_shape"] == [3, 288, 288]
    assert rec["clean_accuracy"] == 0.5 == expected.clean_accuracy()
    assert rec["results"][0]["robust_accuracy"] == expected.robust_accuracy()[0]
    # another preprocessing, asked for, is used (and recorded)
    rec = _json(capsys, *args, "--preprocess", "res224", "--n", 1, "--out", tmp_path / "run224")
    assert rec["data"]["preprocess"] == "res224" and rec["data"]["input_shape"] == [3, 224, 224]


def test_imagenet_preprocessing_is_robustbenchs_for_every_model():
    from robustbench.data import PREPROCESSINGS, get_preprocessing
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from advlab.models.robustbench_zoo import PREPROCESS, preprocess_for
    names = {v: k for k, v in PREPROCESS.items()}
    checked = 0
    for name, entry in model_dicts[BenchmarkDataset.imagenet][ThreatModel.Linf].items():
        if not entry.get("gdrive_id"):
            continue  # weights from torchvision/timm at build time: advlab refuses those
        ours = preprocess_for(name, "imagenet", "linf")
        theirs = get_preprocessing(BenchmarkDataset.imagenet, ThreatModel.Linf, name, None)
        assert theirs is PREPROCESSINGS[names[ours]], name
        checked += 1
    assert checked > 20
    assert preprocess_for("Salman2020Do_R50", "imagenet", "linf") == "res256crop224"
    assert preprocess_for("Wong2020Fast", "cifar10", "linf") is None  # CIFAR: the images as they are


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:resnet18"])
def test_torchvision_and_timm_models_attack_end_to_end(spec, tmp_path, capsys):
    import timm
    import torchvision
    from advlab.attacks import FGSM
    torch.manual_seed(0)
    net = (torchvision.models.resnet18(num_classes=10) if spec.startswith("torchvision")
           else timm.create_model("resnet18", num_classes=10, pretrained=False)).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    pixels = _images(4, 2)
    labels = _labels_the_model_gets_right_but(net, pixels, wrong=[1])
    write_cifar(tmp_path / "data", pixels, labels)
    rec = _json(capsys, "attack", "--model", spec, "--weights", tmp_path / "w.pt", "--dataset", "cifar10",
                "--data-dir", tmp_path / "data", "--attack", "fgsm", "--eps", "8/255", "--out", tmp_path / "run")
    expected = FGSM(norm="linf")(net, pixels.float() / 255, labels, [8 / 255], bounds=(0.0, 1.0))
    assert rec["clean_accuracy"] == 0.75 == expected.clean_accuracy()
    assert rec["results"][0]["robust_accuracy"] == expected.robust_accuracy()[0]
    assert rec["model"]["weights_sha256"] == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
