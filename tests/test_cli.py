import json
import subprocess
import sys

import pytest

from advlab.cli import SUBCOMMANDS, main


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "advlab", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in SUBCOMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "advlab " + name in out and "--json" in out


def test_train_json_contract(tmp_path):
    r = run_cli("train", "--dataset", "digits", "--model", "softmax", "--epochs", "2", "--lr", "0.01",
                "--out", str(tmp_path / "run"), "--json", "--seed", "3")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert set(record) == {"run_dir", "dataset", "model", "defense", "epochs", "test_accuracy", "seconds"}
    assert record["defense"] == "none" and record["epochs"] == 2 and 0 <= record["test_accuracy"] <= 1
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["seed"] == 3


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "digits", "--model", "mlp", "--epochs", "0"], "epochs"),
    (["train", "--dataset", "digits", "--model", "mlp", "--model-arg", "depth=3"], "no option depth"),
    (["train", "--dataset", "digits", "--model", "mlp", "--model-arg", "oops"], "KEY=VALUE"),
    (["train", "--dataset", "blobs", "--model", "cnn-small"], "image input"),
    (["train", "--dataset", "mnist", "--model", "mlp", "--data-dir", "/nonexistent"], "does not exist"),
    (["train", "--dataset", "nope", "--model", "mlp"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line_reason(tmp_path, args, message):
    r = run_cli(*args, "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    args = ["train", "--dataset", "digits", "--model", "softmax", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert run_cli(*args).returncode == 0
    r = run_cli(*args)
    assert r.returncode == 2 and "--resume" in r.stderr
    assert run_cli(*args, "--resume").returncode == 0
    assert run_cli(*args, "--overwrite").returncode == 0
