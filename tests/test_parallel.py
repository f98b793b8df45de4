"""Resources under load: several evaluations of several models in parallel processes on one
machine give the same results as one after another (no shared-file races)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "advlab", *args, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait(p):
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-2000:]
    return json.loads(out)


def test_parallel_evaluations_match_sequential(tmp_path):
    runs = []
    trainers = []
    for i, model in enumerate(["softmax", "mlp", "cnn-small"]):
        out = tmp_path / f"run-{model}"
        trainers.append(start("train", "--dataset", "digits", "--model", model, "--epochs", "3", "--seed", str(i),
                              "--out", str(out), "--json"))
        runs.append(out)
    for p in trainers:
        wait(p)

    def evaluate(run, where):
        # Every process writes into the same run directory tree, under its own output folder.
        return start("evaluate", "--run", str(run), "--eps", "0.05,0.1", "--suite", "fast", "--n", "60",
                     "--no-checks", "--json", "--out", str(run / "eval" / where))

    parallel = [evaluate(run, f"parallel-{k}") for run in runs for k in range(2)]
    parallel = [wait(p) for p in parallel]
    sequential = [wait(evaluate(run, "sequential")) for run in runs]
    for i, seq in enumerate(sequential):
        for par in parallel[2 * i: 2 * i + 2]:
            assert [r["robust_accuracy"] for r in par["results"]] == [r["robust_accuracy"] for r in seq["results"]]
            assert par["clean_accuracy"] == seq["clean_accuracy"]
