"""`advlab analyze`: the JSON contract of `analyze distances`, help, bad input, and perceptibility."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from advlab.analysis.epsilon import sample_per_class
from advlab.analysis.perceptibility import blend, perceptibility
from advlab.cli import main
from advlab.data import load_dataset
from advlab.errors import AdvlabError

ANALYSES = ["distances", "perceptibility", "linearity", "theory", "blobs", "embedding"]


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "advlab", *args], capture_output=True, text=True, timeout=timeout)


def test_analyze_distances_json_contract(tmp_path):
    r = run_cli("analyze", "distances", "--dataset", "digits", "--per-class", "20", "--norms", "l2,linf",
                "--n", "100", "--out", str(tmp_path), "--json", "--seed", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["dataset"] == "digits" and record["per_class"] == 20
    assert set(record["norms"]) == {"l2", "linf"}
    ds = load_dataset("digits")
    sample = sample_per_class(ds.y_train, 20, 10, seed=1)
    for norm, p in (("l2", 2.0), ("linf", float("inf"))):
        e = record["norms"][norm]
        assert np.shape(e["class_distance"]) == (10, 10)
        assert isinstance(e["suggested_eps"], float) and e["suggested_eps"] > 0
        # Independent reference: torch.cdist over the same points.
        xs, ys = ds.x_train[sample].flatten(1).double(), ds.y_train[sample]
        xt, yt = ds.x_test[:100].flatten(1).double(), ds.y_test[:100]
        xtr, ytr = ds.x_train.flatten(1).double(), ds.y_train
        ds_ = torch.cdist(xs, xtr, p=p)
        ds_[ys[:, None] == ytr[None]] = float("inf")
        dt = torch.cdist(xt, xtr, p=p)
        dt[yt[:, None] == ytr[None]] = float("inf")
        separation = min(ds_.min().item(), dt.min().item())
        assert e["suggested_eps"] == pytest.approx(separation / 2, abs=1e-6)
        same = torch.cdist(xs, xs, p=p)
        mask = (ys[:, None] == 3) & (ys[None] == 8)
        assert e["class_distance"][3][8] == pytest.approx(same[mask].mean().item(), rel=1e-9)
    on_disk = json.loads((tmp_path / "distances.json").read_text())
    assert on_disk["norms"]["l2"]["suggested_eps"] == record["norms"]["l2"]["suggested_eps"]
    for name in ("class_distance_l2.png", "nn_distances_linf.png", "eps_per_class_linf.json"):
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("name", ANALYSES)
def test_every_analysis_has_help_with_an_example(name, capsys):
    assert main(["analyze", name, "--help"]) == 0  # main returns the exit code, for --help too
    out = capsys.readouterr().out
    assert "Example:" in out and f"advlab analyze {name}" in out and "--json" in out and "--seed" in out


@pytest.mark.parametrize("args, message", [
    (["distances", "--norms", "l3"], "unknown norm"),
    (["distances", "--per-class", "0"], "--per-class"),
    (["distances", "--percentile", "101"], "--percentile"),
    (["perceptibility", "--pairs", "0-5"], "SOURCE:TARGET"),
    (["perceptibility", "--pairs", "0:12"], "0..9"),
    (["perceptibility", "--dataset", "blobs"], "needs images"),
    (["perceptibility", "--eps", "0.1,-1"], ">= 0"),
    (["linearity", "--dims", "10,x"], "--dims: must be a whole number"),
    (["linearity", "--eps", "0"], "> 0"),
    (["theory", "--experiments", "other"], "dimension and/or samples"),
    (["blobs", "--eps", "abc"], "number"),
    (["blobs", "--dataset-arg", "colour=red"], "colour"),
])
def test_bad_input_exits_2_with_a_reason(tmp_path, capsys, args, message):
    code = main(["analyze", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_perceptibility_grid_stays_in_ball_and_bounds(digits, tmp_path, capsys):
    assert main(["analyze", "perceptibility", "--dataset", "digits", "--eps", "0,0.1,0.3", "--pairs", "3:8,1:7",
                 "--out", str(tmp_path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [(p["source_class"], p["target_class"]) for p in record["pairs"]] == [(3, 8), (1, 7)]
    for p in record["pairs"]:
        assert p["linf"][0] == 0 and 0 < p["linf"][1] <= 0.1 + 1e-7 and p["linf"][2] <= 0.3 + 1e-7
        assert p["l2"][0] <= p["l2"][1] <= p["l2"][2]
        assert digits.y_test[p["source_index"]] == p["source_class"]
    assert (tmp_path / "perceptibility.png").stat().st_size > 5000
    x0, x1 = digits.x_test[0], digits.x_test[1]
    out = blend(x0, x1, 0.3, digits.bounds)
    assert out.min() >= 0 and out.max() <= 1
    expected = torch.where(x1 > 0, (x0 + 0.3).clamp(max=1), x0)  # sign(x1) is 1 on strokes, 0 elsewhere
    assert torch.equal(out, expected)


def test_perceptibility_rejects_feature_data():
    with pytest.raises(AdvlabError, match="needs images"):
        perceptibility(load_dataset("blobs", n=50))


def test_other_analyses_run_from_the_cli(tmp_path, capsys):
    """Small settings of each analysis end to end: JSON on stdout, the same JSON and PNGs on disk."""
    cases = {
        "linearity": ["--dataset", "gaussian", "--dims", "10,100", "--n-train", "300", "--n-test", "300"],
        "theory": ["--dims", "2,50", "--n-train", "200", "--samples", "2,20", "--sample-dim", "200", "--reps", "1",
                   "--n-test", "300"],
        "blobs": ["--dataset-arg", "n=500"],
    }
    for name, extra in cases.items():
        out = tmp_path / name
        assert main(["analyze", name, *extra, "--out", str(out), "--json", "--no-progress"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["analysis"] == name
        assert json.loads((out / f"{name}.json").read_text())["analysis"] == name
        assert all((out / p.split("/")[-1]).is_file() for p in record["figures"].values())
