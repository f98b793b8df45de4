"""Nothing lost on a crash: SIGKILL training and evaluation at random points, resume, and get the
same result as a run that was never interrupted."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from advlab.io import load_tensors

pytestmark = pytest.mark.slow

TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--model-arg", "dropout=0.2", "--defense", "pgd",
         "--eps", "0.1", "--defense-arg", "steps=2", "--epochs", "6", "--seed", "5", "--no-progress"]


def advlab(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "advlab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **kw)


def finish(*args):
    p = advlab(*args)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()[-2000:]
    return out


def kill_after(args, seconds):
    p = advlab(*args)
    time.sleep(seconds)
    p.send_signal(signal.SIGKILL)
    p.wait()


def timed(*args):
    t0 = time.perf_counter()
    finish(*args)
    return time.perf_counter() - t0


def test_training_killed_at_random_points_resumes_to_the_same_weights(tmp_path):
    duration = timed(*TRAIN, "--out", str(tmp_path / "reference"))
    reference = load_tensors(tmp_path / "reference" / "model.safetensors")
    rnd = random.Random(os.getpid())
    out = tmp_path / "killed"
    for _ in range(2):
        kill_after([*TRAIN, "--out", str(out), "--resume"], rnd.uniform(0.3, 0.9) * duration)
    finish(*TRAIN, "--out", str(out), "--resume")
    resumed = load_tensors(out / "model.safetensors")
    assert reference.keys() == resumed.keys()
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k
    assert not list(out.rglob("*.tmp")), "no half-written files left under their final names"


def test_evaluation_killed_at_random_points_resumes_to_the_same_numbers(tmp_path):
    finish("train", "--dataset", "digits", "--model", "mlp", "--epochs", "5", "--out", str(tmp_path / "run"),
           "--no-progress")
    cmd = ["evaluate", "--run", str(tmp_path / "run"), "--eps", "0.02,0.05,0.1", "--suite", "fast", "--no-checks",
           "--batch-size", "40", "--json", "--no-progress"]
    t0 = time.perf_counter()
    reference = json.loads(finish(*cmd, "--out", str(tmp_path / "reference")))
    duration = time.perf_counter() - t0
    rnd = random.Random(os.getpid() + 1)
    for _ in range(2):
        kill_after([*cmd, "--out", str(tmp_path / "killed")], rnd.uniform(0.4, 0.9) * duration)
    resumed = json.loads(finish(*cmd, "--out", str(tmp_path / "killed")))
    assert [r["robust_accuracy"] for r in resumed["results"]] == [r["robust_accuracy"] for r in reference["results"]]
    assert [r["per_class"] for r in resumed["results"]] == [r["per_class"] for r in reference["results"]]
    a = load_tensors(tmp_path / "reference" / "state.safetensors")
    b = load_tensors(tmp_path / "killed" / "state.safetensors")
    for key in ("broken_by", "found_at", "logits"):
        assert torch.equal(a[key], b[key]), key
