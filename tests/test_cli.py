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
    assert main([name, "--help"]) == 0  # main returns the exit code, for --help too
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
    (["train", "--dataset", "mnist", "--model", "mlp", "--data-dir", "/nonexistent"], "no such folder"),
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


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits-mlp"
    r = run_cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_attack_json_contract(trained_run, tmp_path):
    r = run_cli("attack", "--run", str(trained_run), "--attack", "pgd", "--norm", "linf", "--eps", "0,0.05,2/255",
                "--steps", "10", "--n", "100", "--json", "--save", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert {"attack", "norm", "n", "clean_accuracy", "seconds", "results"} <= set(rec)
    assert rec["attack"] == "pgd" and rec["norm"] == "linf" and rec["n"] == 100
    assert [row["eps"] for row in rec["results"]] == [0.0, 0.05, 2 / 255]
    for row in rec["results"]:
        assert set(row) == {"eps", "robust_accuracy", "success_rate", "mean_wrong_confidence", "median_norm"}
    assert rec["results"][0]["robust_accuracy"] == rec["clean_accuracy"]
    assert rec["results"][1]["robust_accuracy"] < rec["clean_accuracy"]
    assert (tmp_path / "a" / "adversarial.safetensors").is_file() and (tmp_path / "a" / "grid-eps0.05.png").is_file()
    from advlab.io import load_tensors
    saved = load_tensors(tmp_path / "a" / "adversarial.safetensors")
    assert saved["x_adv"].shape == (3, 100, 1, 8, 8)


@pytest.mark.parametrize("args, message", [
    (["--attack", "pgd", "--eps", "-0.1"], "epsilon must be >= 0"),
    (["--attack", "pgd", "--eps", "abc"], "must be a number"),
    (["--attack", "fgsm", "--eps", "0.1", "--steps", "5"], "no option steps"),
    (["--attack", "pgd", "--eps", "0.1", "--n", "0"], "argument --n: must be a positive whole number"),
])
def test_attack_bad_input(trained_run, args, message):
    r = run_cli("attack", "--run", str(trained_run), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_attack_on_a_missing_run(tmp_path):
    r = run_cli("attack", "--run", str(tmp_path), "--attack", "pgd", "--eps", "0.1")
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_eps_per_class_file(trained_run, tmp_path):
    budget = tmp_path / "eps.json"
    budget.write_text(json.dumps({"norm": "linf", "eps": {str(c): (0.0 if c < 5 else 0.3) for c in range(10)}}))
    r = run_cli("attack", "--run", str(trained_run), "--attack", "pgd", "--eps-per-class", str(budget), "--n", "120",
                "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["eps_per_class"] == pytest.approx([0.0] * 5 + [0.3] * 5)
    # Classes 0-4 have no budget, so only classes 5-9 can be broken: robust accuracy is at least
    # the clean accuracy on classes 0-4 times their share.
    r2 = run_cli("evaluate", "--run", str(trained_run), "--eps-per-class", str(budget), "--suite", "fast",
                 "--n", "120", "--no-checks", "--json")
    assert r2.returncode == 0, r2.stderr
    per_class = json.loads(r2.stdout)["results"][0]["per_class"]
    assert min(per_class[:5]) > 0.5 and max(per_class[5:]) < 0.2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"eps": {"0": 0.1}}))
    r3 = run_cli("attack", "--run", str(trained_run), "--attack", "pgd", "--eps-per-class", str(bad))
    assert r3.returncode == 2 and "Traceback" not in r3.stderr
    r4 = run_cli("attack", "--run", str(trained_run), "--attack", "pgd", "--eps", "0.1", "--eps-per-class", str(bad))
    assert r4.returncode == 2 and "not allowed with" in r4.stderr


def test_steps_are_queries_for_square():
    import argparse

    from advlab.attacks import build_attack
    from advlab.cli.attack import attack_options

    def options(attack):
        return attack_options(argparse.Namespace(attack=attack, attack_arg=[], seed=0, batch_size=10, norm=None,
                                                 steps=7, restarts=None, loss=None, step_size=None))
    assert build_attack("square", **options("square")).n_queries == 7
    assert build_attack("pgd", **options("pgd")).steps == 7
