"""Same seed, same machine: bitwise-identical weights, adversarial examples and metrics, end to end
through the command line (separate processes)."""

import json
import subprocess
import sys

import pytest

from advlab.io import load_tensors

pytestmark = pytest.mark.slow


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "advlab", *args, "--no-progress"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def pipeline(root, seed):
    train = json.loads(cli("train", "--dataset", "digits", "--model", "mlp", "--model-arg", "dropout=0.3",
                           "--defense", "fgsm-rs", "--eps", "0.1", "--epochs", "3", "--seed", str(seed),
                           "--out", str(root / "run"), "--json"))
    attack = json.loads(cli("attack", "--run", str(root / "run"), "--attack", "pgd", "--eps", "0.05,0.1",
                            "--steps", "5", "--n", "80", "--seed", str(seed), "--save", "--out", str(root / "adv"),
                            "--json"))
    evaluate = json.loads(cli("evaluate", "--run", str(root / "run"), "--eps", "0.1", "--suite", "fast", "--n", "80",
                              "--no-checks", "--seed", str(seed), "--out", str(root / "eval"), "--json"))
    return train, attack, evaluate


def test_same_seed_same_bits(tmp_path):
    a = pipeline(tmp_path / "a", 7)
    b = pipeline(tmp_path / "b", 7)
    for name in ("run/model.safetensors", "adv/adversarial.safetensors", "eval/state.safetensors"):
        ta, tb = load_tensors(tmp_path / "a" / name), load_tensors(tmp_path / "b" / name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert ta[k].equal(tb[k]), (name, k)
    times = {"seconds", "suite_seconds", "checks_seconds"}
    drop = times | {"run_dir", "saved", "attack_seconds", "model", "summary"}  # "model" holds the run's path
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in drop} == {k: v for k, v in rb.items() if k not in drop}
    # What was dropped, less the run's path and times: train names the model, attack and evaluate describe it,
    # and evaluate's summary holds its seconds and command (the run's path), the numbers identical.
    assert a[0]["model"] == b[0]["model"] == "mlp"
    for ra, rb in zip(a[1:], b[1:]):
        assert {k: v for k, v in ra["model"].items() if k != "run"} == \
            {k: v for k, v in rb["model"].items() if k != "run"}
    summary_a, summary_b = ({k: v for k, v in r[2]["summary"].items() if k not in times | {"command"}}
                            for r in (a, b))
    assert summary_a == summary_b and summary_a
    pipeline(tmp_path / "c", 8)
    assert not load_tensors(tmp_path / "a/run/model.safetensors")["net.net.1.weight"].equal(
        load_tensors(tmp_path / "c/run/model.safetensors")["net.net.1.weight"])
