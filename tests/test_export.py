"""advlab export robustbench: an evaluation as RobustBench's submissions ask for it (advlab.artifacts.export).
RobustBench's own code reads the entry in tests/test_zoo.py (where robustbench is installed)."""

import json
import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn

from advlab.cli import main

# robustbench.utils.ModelInfo's fields (robustbench 1.1.1) that an adversarial leaderboard entry uses, plus
# `external`, which its leaderboard reads before `autoattack_acc` (robustbench.utils.ACC_FIELDS).
MODEL_INFO_FIELDS = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                     "architecture", "eps", "clean_acc", "reported", "corruptions_acc", "corruptions_acc_3d",
                     "corruptions_mce", "corruptions_mce_3d", "autoattack_acc", "footnote"}
N = 12

NETS = '''
from torch import nn


def linear():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
'''


def _cli(*args):
    return main([str(a) for a in args])


def _json(capsys, *args):
    assert _cli(*args, "--json", "--no-progress") == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _exit_2(capsys, message, *args):
    code = _cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A linear model on N CIFAR-10-format test images (labels mostly its own predictions), evaluated at
    Linf 8/255 and L2 0.5 with the fast suite."""
    root = tmp_path_factory.mktemp("export")
    (root / "nets.py").write_text(NETS)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    torch.save(net.state_dict(), root / "w.pt")
    pixels = np.random.default_rng(0).integers(0, 256, size=(N, 3, 32, 32), dtype=np.uint8)
    with torch.no_grad():
        labels = net(torch.from_numpy(pixels).float() / 255).argmax(1).numpy()
    labels[[1, 5]] = (labels[[1, 5]] + 1) % 10  # two clean mistakes
    folder = root / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {b"data": pixels.reshape(N, -1), b"labels": labels.tolist()}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    run = root / "run"
    common = ["--model", f"{root}/nets.py:linear", "--weights", root / "w.pt", "--dataset", "cifar10", "--data-dir",
              root / "data", "--suite", "fast", "--no-checks", "--out", run, "--json", "--no-progress"]
    for norm, eps in (("linf", "8/255"), ("l2", "0.5")):
        assert main([str(a) for a in ["evaluate", *common, "--norm", norm, "--eps", eps]]) == 0
    return root, run, net, torch.from_numpy(pixels).float() / 255, torch.from_numpy(labels)


def test_export_refuses_an_evaluation_off_the_leaderboards_protocol_in_one_line(evaluated, tmp_path, capsys):
    root, run, *_ = evaluated
    _exit_2(capsys, r"does not follow RobustBench's cifar10 Linf protocol: 12 test points, not the first 10,000; "
                    r"evaluate again with it, or pass --allow-partial", "export", "robustbench", run, "--evaluation",
            run / "eval" / "fast-linf", "--out", tmp_path / "sub")
    _exit_2(capsys, r"holds 2 evaluations that could be exported \(fast-l2, fast-linf\); choose one with --evaluation",
            "export", "robustbench", run, "--allow-partial", "--out", tmp_path / "sub")
    assert not (tmp_path / "sub").exists()


def test_partial_export_writes_the_entry_the_examples_in_test_order_and_the_log(evaluated, tmp_path, capsys):
    root, run, net, x, y = evaluated
    out = tmp_path / "sub"
    rec = _json(capsys, "export", "robustbench", run, "--evaluation", run / "eval" / "fast-linf", "--allow-partial",
                "--out", out)
    result = json.loads((run / "eval" / "fast-linf" / "result.json").read_text())
    name = run.name
    entry = json.loads((out / f"{name}.json").read_text())
    assert set(entry) - {"external"} <= MODEL_INFO_FIELDS and "external" in entry
    assert entry["dataset"] == "cifar10" and entry["eps"] == "8/255" and entry["number_forward_passes"] == 1
    assert entry["clean_acc"] == f"{100 * result['clean_accuracy']:.2f}" == "83.33"  # 10 of 12
    robust = result["results"][0]["robust_accuracy"]
    assert entry["external"] == f"{100 * robust:.2f}" and robust < result["clean_accuracy"]
    assert entry["footnote"].startswith("PARTIAL evaluation, not the leaderboard's protocol: 12 test points")
    assert "advlab 0.1.0" in entry["footnote"] and "suite fast" in entry["footnote"]
    assert rec["partial"] and rec["leaderboard"] == {"dataset": "cifar10", "threat": "Linf", "eps": "8/255",
                                                     "n": 10_000}
    assert {"link", "name", "authors", "venue", "additional_data"} <= set(rec["to_fill"])
    # the examples: one tensor the size of the (evaluated) test set, in its order, inside the ball and the bounds;
    # the model misclassifies exactly the points the evaluation counts as broken
    x_adv = torch.load(out / f"{name}.pt", weights_only=True)
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        correct = net(x_adv).argmax(1) == y
    assert correct.float().mean().item() == pytest.approx(robust)
    unchanged = (x_adv == x).flatten(1).all(1)
    assert torch.equal(unchanged & correct, correct)  # a robust point is exported as its clean image
    log = (out / f"{name}_log.txt").read_text().splitlines()
    assert log[1] == "clean: 10/12 correct, accuracy 83.33%"
    broke = [int(re.search(r"broke (\d+)", line).group(1)) for line in log if " broke " in line]
    assert 10 - sum(broke) == round(robust * N) and log[-1].startswith(f"robust accuracy: {100 * robust:.2f}%")


def test_an_evaluation_that_follows_the_protocol_exports_without_a_partial_mark(evaluated, tmp_path, capsys,
                                                                              monkeypatch):
    import advlab.artifacts.export as export
    root, run, *_ = evaluated
    # the leaderboards' sizes shrunk to this test's 12 points: the protocol's other rules stay as they are
    monkeypatch.setattr(export, "LEADERBOARDS", {k: (eps, N) for k, (eps, _) in export.LEADERBOARDS.items()})
    _exit_2(capsys, "holds 2 evaluations that could be exported", "export", "robustbench", run, "--out", tmp_path / "a")
    rec = _json(capsys, "export", "robustbench", run, "--evaluation", run / "eval" / "fast-l2", "--out", tmp_path / "b")
    entry = json.loads((tmp_path / "b" / f"{run.name}.json").read_text())
    assert not rec["partial"] and entry["eps"] == "0.5" and not entry["footnote"].startswith("PARTIAL")
    assert rec["leaderboard"]["threat"] == "L2"
    # the default --out is the run's own export folder
    _json(capsys, "export", "robustbench", run, "--evaluation", run / "eval" / "fast-linf")
    assert (run / "export" / "robustbench" / f"{run.name}.pt").is_file()


def test_export_refuses_what_no_leaderboard_takes(tmp_path, capsys, trained_digits_run):
    run = trained_digits_run("mlp", 2)
    _exit_2(capsys, "holds no evaluation", "export", "robustbench", run, "--out", tmp_path / "o")
    assert _cli("evaluate", "--run", run, "--eps", "0.1", "--suite", "fast", "--n", 20, "--no-checks",
                "--no-progress") == 0
    capsys.readouterr()
    _exit_2(capsys, "evaluates digits at linf: RobustBench has no such leaderboard", "export", "robustbench", run,
            "--allow-partial", "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()
