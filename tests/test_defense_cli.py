"""`advlab train --defense NAME --eps E --defense-arg k=v` end to end."""

import json
import subprocess
import sys

import pytest

from advlab.cli import main


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "advlab", *args], capture_output=True, text=True, timeout=timeout)


def test_train_with_a_defense_writes_its_settings_to_the_card(tmp_path):
    r = run_cli("train", "--dataset", "digits", "--model", "mlp", "--model-arg", "hidden=[32]", "--epochs", "2",
                "--defense", "trades", "--eps", "8/255", "--defense-arg", "steps=2", "--defense-arg", "beta=3",
                "--out", str(tmp_path / "run"), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["defense"] == "trades" and record["epochs"] == 2 and record["test_accuracy"] > 0.3
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["defense"]["name"] == "trades" and card["defense"]["eps"] == pytest.approx(8 / 255)
    assert card["defense"]["resolved"]["beta"] == 3.0 and card["defense"]["resolved"]["steps"] == 2


@pytest.mark.parametrize("args, message", [
    (["--defense", "pgd"], "needs a budget: pass --eps"),
    (["--defense", "pgd", "--eps", "0.1", "--defense-arg", "stepz=3"], "no option stepz"),
    (["--defense", "none", "--eps", "0.1"], "takes no --eps"),
    (["--defense", "fgsm-rs", "--eps", "0.1", "--val-fraction", "0"], "validation split"),
    (["--defense", "goodfellow", "--eps", "0.1", "--defense-arg", "layer=5"], "hidden layers"),
    (["--defense", "rst", "--eps", "0.1", "--defense-arg", "labels=5000"], "more than the"),
    (["--defense", "rst", "--eps", "0.1"], "--defense-arg labels=5000"),
    (["--defense", "l1"], "needs its coefficient: --defense-arg coef=0.001 (or --eps E,"),
    (["--defense", "fgsm-rs", "--eps", "0.1", "--val-fraction", "0"],
     "(--val-fraction > 0) or pass --defense-arg check=false"),
])
def test_bad_defense_input_exits_2(tmp_path, capsys, args, message):
    code = main(["train", "--dataset", "digits", "--model", "mlp", "--model-arg", "hidden=[8]", "--epochs", "1",
                 *args, "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
