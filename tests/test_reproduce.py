"""advlab reproduce: verdict logic on known inputs, strict configs, paths that stay inside the run
directory, and the blobs experiment end to end (quick settings)."""

import json
import math
from pathlib import Path

import pytest

from advlab.cli import main
from advlab.errors import ConfigError
from advlab.reproduce import available, compare_rows, load_experiment, overall, safe_relative, verdict
from advlab.reproduce.config import Published, parse_experiment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ours, published, tol, compare, expected", [
    (0.90, 0.894, 0.01, "abs", "match"),
    (0.90, 0.894, 0.005, "abs", "differs"),
    (0.884, 0.894, 0.01, "abs", "match"),      # exactly on the boundary (float noise tolerated)
    (0.883, 0.894, 0.01, "abs", "differs"),
    (0.20, 0.179, 0.0, "at_most", "differs"),
    (0.17, 0.179, 0.0, "at_most", "match"),
    (0.20, 0.179, 0.05, "at_most", "match"),
    (0.60, 0.633, 0.03, "at_least", "differs"),  # 0.60 < 0.633 - 0.03
    (0.61, 0.633, 0.03, "at_least", "match"),
    (0.10, 0.633, 0.03, "at_least", "differs"),
    (0.10, 0.633, 0.03, "info", "info"),
    (0.10, None, 0.03, "abs", "info"),
    (None, 0.5, 0.1, "abs", "not measured"),
    (math.nan, 0.5, 0.1, "at_least", "not measured"),
])
def test_verdict_on_known_inputs(ours, published, tol, compare, expected):
    assert verdict(ours, published, tol, compare) == expected


def test_overall_counts_only_compared_rows():
    assert overall(["match", "match", "info"]) == "reproduced"
    assert overall(["match", "differs", "info", "not measured"]) == "partly reproduced (1 of 2 match)"
    assert overall(["info", "not measured"]) == "nothing compared"
    assert overall([]) == "nothing compared"


def test_compare_rows_dataset_filter_and_reference_key():
    rows = compare_rows([Published("acc", "clean", value=0.985, tolerance=0.01, dataset="mnist"),
                         Published("acc", "clean", value=0.872, tolerance=0.02, dataset="fashion-mnist"),
                         Published("err", "error", reference_key="predicted", tolerance=0.01),
                         Published("gap", "gap", value=0.0, tolerance=0.0, compare="at_most", unit="")],
                        {"acc": 0.88, "err": 0.076, "predicted": 0.08, "gap": 1.0}, dataset="fashion-mnist")
    assert [r["verdict"] for r in rows] == ["info", "match", "match", "differs"]
    assert "reference for mnist; this run: fashion-mnist" in rows[0]["setting"] and rows[0]["tolerance"] is None
    assert rows[2]["published"] == 0.08 and rows[2]["published_text"] == "8.0%"
    assert rows[1]["ours_text"] == "88.0%" and rows[1]["tolerance_text"] == "±2.0 pts"
    assert rows[3]["ours_text"] == "1" and rows[3]["tolerance_text"] == "≤"


@pytest.mark.parametrize("path", ["../elsewhere", "a/../../b", "/tmp/x", "~/x", "C:\\temp", "\\\\server\\share",
                                  "a\\..\\..\\b", ""])
def test_paths_must_stay_inside_the_run_directory(path):
    with pytest.raises(ConfigError, match="relative|leaves the run directory|absolute"):
        safe_relative(path, "out")


@pytest.mark.parametrize("path", ["blobs", "a/b", "./x", "x..y"])
def test_relative_paths_are_accepted(path):
    assert safe_relative(path, "out") == path


def base_doc(**extra):
    return {"experiment": "blobs", "title": "t", "out": "blobs", **extra}


def test_config_rejects_escaping_paths_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match="leaves the run directory"):
        parse_experiment(base_doc(out="../../etc"), "x")
    with pytest.raises(ConfigError, match="absolute path"):
        parse_experiment(base_doc(out="/tmp/x"), "x")
    with pytest.raises(ConfigError, match="unknown key 'outdir'"):
        parse_experiment(base_doc(outdir="x"), "x")
    with pytest.raises(ConfigError, match="unknown setting 'sigmaa'.*allowed: .*sigma"):
        parse_experiment(base_doc(settings={"sigmaa": 1.0}), "x")
    with pytest.raises(ConfigError, match=r"settings\.sigma must be a number"):
        parse_experiment(base_doc(settings={"sigma": "big"}), "x")
    with pytest.raises(ConfigError, match=r"settings\.seed must be an integer"):
        parse_experiment(base_doc(settings={"seed": 1.5}), "x")
    with pytest.raises(ConfigError, match="compare must be one of"):
        parse_experiment(base_doc(published=[{"key": "a", "quantity": "q", "value": 1.0, "compare": "near"}]), "x")
    with pytest.raises(ConfigError, match="needs a published value"):
        parse_experiment(base_doc(published=[{"key": "a", "quantity": "q", "compare": "abs"}]), "x")
    with pytest.raises(ConfigError, match="unknown experiment protocol"):
        parse_experiment({"experiment": "nope", "title": "t"}, "x")
    # a path-like setting of a protocol is checked too
    defaults = {"out_file": "a.json", "seed": 0}
    with pytest.raises(ConfigError, match="leaves the run directory"):
        parse_experiment(base_doc(settings={"out_file": "../a.json"}), "x", defaults_for=lambda name: defaults)


def test_cli_rejects_a_config_that_escapes_the_run_directory(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('experiment = "blobs"\ntitle = "t"\nout = "../../outside"\n')
    assert main(["reproduce", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "leaves the run directory" in err and "outside" in err
    assert not (tmp_path / "outside").exists() and not (tmp_path / "run").exists()
    assert main(["reproduce", "no-such-experiment"]) == 2
    assert "available: " in capsys.readouterr().err
    assert main(["reproduce", "blobs", "--set", "sigmaa=1", "--out", str(tmp_path / "run")]) == 2
    assert "unknown setting 'sigmaa'" in capsys.readouterr().err
    assert main(["reproduce", "blobs", "--set", "out_dir=../x", "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_every_shipped_experiment_parses():
    names = available()
    assert {"blobs", "goodfellow2015", "madry2018", "wong2020", "epsilon-choice"} <= set(names)
    for name in names:
        exp = load_experiment(name)
        assert exp.published and exp.quick, name
        assert not Path(exp.out).is_absolute() and ".." not in Path(exp.out).parts


def test_reproduce_blobs_quick_end_to_end(tmp_path, capsys):
    assert main(["reproduce", "blobs", "--quick", "--set", "sigma=0.55", "--out", str(tmp_path), "--json",
                 "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["settings"]["sigma"] == 0.55 and "overridden: sigma=0.55" in record["scale"]
    saved = json.loads((tmp_path / "blobs" / "reproduce.json").read_text())
    assert saved["rows"] == record["rows"] and saved["quick"] is True and "QUICK" in saved["scale"]
    blobs = json.loads((tmp_path / "blobs" / "blobs.json").read_text())  # what the analysis measured
    by_eps = {f"{r['eps']:g}": r for r in blobs["results"]}
    for row in record["rows"]:
        e = row["key"].removeprefix("error_eps")
        assert row["ours"] == pytest.approx(by_eps[e]["measured_error"])
        if row["compare"] == "info":
            assert row["verdict"] == "info" and row["published"] in (0.029, 0.076, 0.226)
        else:  # against the closed form for our own model, with the config's tolerance
            assert row["published"] == pytest.approx(by_eps[e]["predicted_error"])
            assert row["verdict"] == verdict(row["ours"], row["published"], row["tolerance"], "abs")
    assert record["verdict"] == overall([r["verdict"] for r in record["rows"]])
    html = (tmp_path / "blobs" / "report.html").read_text()
    assert 'id="reproduce"' in html and "closed form" in html and "data:image/png;base64," in html


def test_missing_mnist_falls_back_with_a_label(isolated_cache, monkeypatch):
    from advlab.reproduce.protocols import pick_dataset

    monkeypatch.setenv("ADVLAB_OFFLINE", "0")  # pick_dataset never downloads, whatever this says
    ds, note = pick_dataset("mnist", "digits", data_dir=str(isolated_cache / "nowhere"))
    assert ds.name == "digits"
    assert "mnist files were not found" in note and "published numbers are for mnist" in note
    ds, note = pick_dataset("digits", "blobs", data_dir=None)
    assert ds.name == "digits" and note == ""
