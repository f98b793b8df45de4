"""`advlab attack` with the special attacks: highconf, spatial (no Lp norm) and fooling (no inputs)."""

import json

import pytest

from advlab.cli import main
from advlab.io import load_tensors


@pytest.fixture(scope="module")
def run_dir(trained_digits_run):
    return trained_digits_run("cnn-small", epochs=6, lr=3e-3)


def attack_json(capsys, run_dir, *args):
    code = main(["attack", "--run", str(run_dir), "--n", "30", "--json", "--no-progress", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_cli_highconf(capsys, run_dir):
    rec = attack_json(capsys, run_dir, "--attack", "highconf", "--eps", "0.1,0.3", "--steps", "30",
                      "--attack-arg", "kappa=0.95")
    assert rec["attack"] == "highconf" and rec["norm"] == "linf"
    assert rec["results"][1]["success_rate"] > 0.5 and rec["results"][1]["mean_wrong_confidence"] > 0.9


def test_cli_spatial_has_no_norm(capsys, run_dir, tmp_path):
    rec = attack_json(capsys, run_dir, "--attack", "spatial", "--eps", "0,1", "--attack-arg", "rotations=5",
                      "--attack-arg", "shifts=3", "--save", "--out", str(tmp_path / "s"))
    assert rec["attack"] == "spatial" and rec["norm"] == "spatial"
    assert rec["results"][0]["robust_accuracy"] == rec["clean_accuracy"] > rec["results"][1]["robust_accuracy"]
    assert (tmp_path / "s" / "grid-eps1.png").is_file()
    code = main(["attack", "--run", str(run_dir), "--attack", "spatial", "--norm", "l2", "--eps", "1", "--n", "5"])
    assert code == 2 and "no option norm" in capsys.readouterr().err


def test_cli_fooling_makes_one_image_per_class(capsys, run_dir, tmp_path):
    # eps 1 >= the diameter of the [0, 1] box in Linf: the images may go anywhere in the bounds.
    rec = attack_json(capsys, run_dir, "--attack", "fooling", "--eps", "1", "--steps", "200", "--save",
                      "--out", str(tmp_path / "f"))
    assert rec["attack"] == "fooling" and rec["results"][0]["success_rate"] == 1.0
    saved = load_tensors(tmp_path / "f" / "adversarial.safetensors")
    assert saved["x_adv"].shape == (1, 10, 1, 8, 8)
    assert (tmp_path / "f" / "grid-eps1.png").is_file()
