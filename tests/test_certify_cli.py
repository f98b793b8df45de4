"""advlab certify and evaluate --certify: the JSON contract, resuming, the report, the defenses, and every
bad option rejected while parsing with one line on stderr (exit 2)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from advlab.cli import main

CONTRACT = {"method", "n", "seconds", "certified_accuracy", "points"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("certify") / "run"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--model-arg", "hidden=[32]", "--epochs", "4",
                 "--defense", "gaussian", "--defense-arg", "sigma=0.25", "--out", str(out), "--no-progress"]) == 0
    return out


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_smoothing_json_contract_and_saved_result(run_dir, capsys):
    record = run_json(capsys, "certify", "--run", str(run_dir), "--method", "smoothing", "--sigma", "0.25",
                      "--samples", "300", "--samples0", "30", "--alpha", "0.01", "--n", "20", "--radii", "0,0.25,0.5")
    assert CONTRACT | {"sigma"} <= set(record) and "eps" not in record
    assert record["method"] == "smoothing" and record["sigma"] == 0.25 and record["n"] == 20
    assert record["samples"] == 300 and record["samples0"] == 30 and record["alpha"] == 0.01
    assert [r["radius"] for r in record["certified_accuracy"]] == [0.0, 0.25, 0.5]
    assert len(record["points"]) == 20 and [p["index"] for p in record["points"]] == list(range(20))
    for p in record["points"]:
        assert set(p) >= {"index", "label", "prediction", "radius"}
        assert p["prediction"] >= -1 and p["radius"] >= 0
        if p["prediction"] == -1:
            assert p["radius"] == 0
    for r in record["certified_accuracy"]:  # the curve is the points' own
        k = sum(p["prediction"] == p["label"] and p["radius"] >= r["radius"] for p in record["points"])
        assert r["accuracy"] == pytest.approx(k / 20)
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    acc = [r["accuracy"] for r in record["certified_accuracy"]]
    assert acc == sorted(acc, reverse=True)
    assert record["device"] == "cpu" and record["model"]["spec"] == "mlp"
    saved = run_dir / "certify" / "smoothing-l2-sigma0.25"
    assert json.loads((saved / "result.json").read_text())["points"] == record["points"]
    assert (saved / "curve.csv").read_text().startswith("radius,certified_accuracy")
    # run again: resumed from the saved state, the same numbers
    assert main(["certify", "--run", str(run_dir), "--method", "smoothing", "--sigma", "0.25", "--samples", "300",
                 "--samples0", "30", "--alpha", "0.01", "--n", "20", "--radii", "0,0.25,0.5", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["points"] == record["points"] and "resuming" in err and "20 points done" in err


def test_ibp_json_contract(run_dir, capsys):
    record = run_json(capsys, "certify", "--run", str(run_dir), "--method", "ibp", "--eps", "1/255", "--n", "30")
    assert CONTRACT | {"eps"} <= set(record) and "sigma" not in record
    assert record["eps"] == pytest.approx(1 / 255)
    assert [r["radius"] for r in record["certified_accuracy"]] == [0.0, pytest.approx(1 / 255)]
    for p in record["points"]:
        assert p["radius"] in (0.0, pytest.approx(1 / 255)) and p["prediction"] >= 0
        if p["radius"] > 0:
            assert p["prediction"] == p["label"]
    certified = sum(p["radius"] > 0 for p in record["points"])
    assert certified >= 15, certified  # 1/255 is tiny: most correct points are certified (22 of 30)
    assert record["certified_accuracy"][1]["accuracy"] == pytest.approx(certified / 30)
    assert record["certified_accuracy"][1]["accuracy"] <= record["certified_accuracy"][0]["accuracy"]
    assert record["certified_accuracy"][0]["accuracy"] == pytest.approx(record["clean_accuracy"], abs=1 / 30)


def test_evaluate_certify_l2_uses_smoothing_and_says_what_it_certifies(run_dir, tmp_path, capsys):
    record = run_json(capsys, "evaluate", "--run", str(run_dir), "--eps", "0.25,0.5", "--norm", "l2", "--suite",
                      "fast", "--n", "15", "--no-checks", "--certify", "--sigma", "0.25", "--samples", "200",
                      "--out", str(tmp_path / "ev"))
    c = record["certify"]
    assert c["method"] == "smoothing" and c["sigma"] == 0.25 and "smoothed classifier" in c["certifies"]
    for r in record["results"]:
        assert 0 <= r["certified_accuracy"] <= 1 and len(r["certified_ci95"]) == 2
    assert record["results"][0]["certified_accuracy"] >= record["results"][1]["certified_accuracy"]


def test_report_shows_the_bracket_and_the_certified_curves(run_dir, tmp_path, capsys):
    from advlab.report.html import collect, sections

    run_json(capsys, "evaluate", "--run", str(run_dir), "--eps", "0.01,0.03", "--suite", "fast", "--n", "40",
             "--no-checks", "--certify")
    run_json(capsys, "certify", "--run", str(run_dir), "--method", "ibp", "--eps", "0.01", "--n", "40")
    ctx = collect(run_dir)
    assert "certified" in sections(ctx)
    c = ctx["certified"]
    (b,) = [b for b in c["brackets"] if b["norm"] == "linf"]
    saved = json.loads((run_dir / "eval" / "fast-linf" / "result.json").read_text())
    assert [r["certified"] for r in b["rows"]] == [r["certified_accuracy"] for r in saved["results"]]
    assert b["series"]["eps"][0] == 0.0 and b["same_model"]
    assert c["bracket_figures"] and c["curve_figures"] and len(c["certifications"]) >= 1
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report.html").read_text()
    assert 'id="certified"' in html and "certified (lower)" in html and 'href="#certified"' in html


def test_noise_hint_says_why_smoothing_abstains_and_what_trains_a_model_for_it():
    from advlab.certify.smoothing import noise_hint
    run = {"model": {"name": "mlp"}, "dataset": {"name": "digits"}}
    assert noise_hint(0.25, 20, 5, 0.8, 0.9, {**run, "defense": {"name": "none"}}) is None  # it works: no hint
    few = noise_hint(0.5, 20, 5, 0.3, 0.9, {**run, "defense": {"name": "none"}})  # few abstain, but far below
    assert few.startswith("the smoothed classifier is right on 30.0% of the points, the model on 90.0%")
    hint = noise_hint(0.5, 20, 15, 0.1, 0.9, {**run, "defense": {"name": "pgd", "eps": 0.1}})
    assert hint.startswith("15 of 20 points abstained: the model was trained with the defense 'pgd', not with "
                           "Gaussian noise of sigma 0.5")
    assert "advlab train --dataset digits --model mlp --defense gaussian --defense-arg sigma=0.5" in hint
    other = noise_hint(0.5, 20, 15, 0.1, 0.9, {**run, "defense": {"name": "gaussian", "resolved": {"sigma": 0.25}}})
    assert "trained with Gaussian noise of sigma 0.25, not 0.5" in other and "--sigma 0.25" in other
    same = noise_hint(0.25, 20, 15, 0.1, 0.9, {**run, "defense": {"name": "gaussian", "resolved": {"sigma": 0.25}}})
    assert "although the model was trained with Gaussian noise of this sigma" in same
    external = noise_hint(0.5, 20, 15, 0.1, 0.9, {"kind": "external", "model": {"name": "nets.py:build"},
                                                   "defense": {"name": "unknown"}})
    assert "likely not trained with Gaussian noise of sigma 0.5" in external
    assert "--dataset D --model M --defense gaussian --defense-arg sigma=0.5" in external


def test_smoothing_on_a_model_never_trained_with_noise_says_why(tmp_path, capsys):
    """Issue 25: randomized smoothing of a model never trained with noise abstained everywhere without a word."""
    plain = tmp_path / "plain"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--model-arg", "hidden=[32]", "--epochs", "4",
                 "--out", str(plain), "--no-progress"]) == 0
    capsys.readouterr()
    argv = ["certify", "--run", str(plain), "--method", "smoothing", "--sigma", "1", "--samples", "100",
            "--samples0", "20", "--n", "20", "--no-progress"]
    record = run_json(capsys, *argv)
    assert record["abstained"] > 10 or record["certified_accuracy"][0]["accuracy"] < 0.5 * record["clean_accuracy"]
    assert "the model was trained with the defense 'none', not with Gaussian noise of sigma 1" in record["hint"]
    assert "advlab train --dataset digits --model mlp --defense gaussian --defense-arg sigma=1" in record["hint"]
    assert main([*argv]) == 0
    assert f"hint: {record['hint']}" in capsys.readouterr().out
    ev = run_json(capsys, "evaluate", "--run", str(plain), "--eps", "0.5", "--norm", "l2", "--suite", "fast",
                  "--n", "20", "--no-checks", "--certify", "--sigma", "1", "--samples", "100")
    assert "not with Gaussian noise of sigma 1" in ev["certify"]["hint"]


def test_smoothing_at_the_sigma_a_model_was_trained_for_gives_no_hint(run_dir, capsys):
    record = run_json(capsys, "certify", "--run", str(run_dir), "--method", "smoothing", "--sigma", "0.25",
                      "--samples", "300", "--samples0", "30", "--alpha", "0.01", "--n", "20", "--out",
                      str(run_dir / "certify" / "hint-check"))
    assert record["abstained"] <= 10 and "hint" not in record


def test_certify_your_own_model(tmp_path, capsys):
    net = tmp_path / "nets.py"
    net.write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                   "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n")
    record = run_json(capsys, "certify", "--model", f"{net}:build", "--dataset", "digits", "--method", "ibp",
                      "--eps", "0.01", "--n", "10", "--out", str(tmp_path / "mine"))
    assert record["model"]["spec"].endswith(":build") and record["n"] == 10
    assert (tmp_path / "mine" / "certify" / "ibp-linf-eps0.01" / "result.json").is_file()


# -- bad input: one line, exit 2, before any work ---------------------------------------------------------
def exit_2(capsys, *argv, match: str):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and re.search(match, err), (argv, err)


# The messages' wording after "must be" is argparse types' (advlab/cli/types.py); what matters here is one line,
# exit 2, the option named, nothing written.
@pytest.mark.parametrize("argv, match", [
    (["--method", "smoothing", "--sigma", "-1"], "--sigma: must be"),
    (["--method", "smoothing", "--sigma", "nan"], "--sigma: must be"),
    (["--method", "smoothing", "--sigma", "abc"], "--sigma: must be"),
    (["--method", "smoothing", "--sigma", "0.25", "--samples", "0"], "--samples: must be"),
    (["--method", "smoothing", "--sigma", "0.25", "--samples", "1.5"], "--samples: must be"),
    (["--method", "smoothing", "--sigma", "0.25", "--samples0", "-3"], "--samples0: must be"),
    (["--method", "smoothing", "--sigma", "0.25", "--alpha", "1"], "--alpha: must be a probability"),
    (["--method", "smoothing", "--sigma", "0.25", "--alpha", "0"], "--alpha: must be a probability"),
    (["--method", "ibp", "--eps", "0"], "--eps: must be"),
    (["--method", "ibp", "--eps", "inf"], "--eps: must be"),
    (["--method", "ibp", "--eps", "0.1", "--n", "0"], "--n: must be"),
    (["--method", "ibp", "--eps", "0.1", "--batch-size", "-1"], "--batch-size: must be"),
    (["--method", "smoothing", "--sigma", "0.25", "--radii", "0,-1"], "--radii: must be"),
    (["--method", "beta-crown", "--eps", "0.1"], "invalid choice: 'beta-crown'"),
    (["--method", "exact", "--eps", "0.1", "--timeout", "0"], "--timeout: must be"),
    (["--method", "exact", "--eps", "0.1", "--timeout", "nan"], "--timeout: must be"),
    (["--method", "crown", "--eps", "0.1", "--norm", "l1"], "invalid choice: 'l1'"),
])
def test_bad_options_exit_2_while_parsing(argv, match, run_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in run_dir.rglob("*"))
    exit_2(capsys, "certify", "--run", str(run_dir), *argv, match=match)
    assert list(tmp_path.iterdir()) == [] and sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.parametrize("argv, match", [
    (["--method", "smoothing"], "--method smoothing needs --sigma"),
    (["--method", "ibp"], "--method ibp needs --eps"),
    (["--method", "ibp", "--eps", "0.1", "--sigma", "0.2"], "--sigma belongs to --method smoothing"),
    (["--method", "smoothing", "--sigma", "0.2", "--eps", "0.1"], "--eps belongs to --method ibp"),
    (["--method", "crown"], "--method crown needs --eps"),
    (["--method", "exact", "--eps", "0.1", "--norm", "l2"], "--method exact certifies --norm linf, not --norm l2"),
    (["--method", "ibp", "--eps", "0.1", "--norm", "l2"], "--method ibp certifies --norm linf.*crown"),
    (["--method", "smoothing", "--sigma", "0.2", "--norm", "linf"], "--method smoothing certifies --norm l2"),
    (["--method", "crown", "--eps", "0.1", "--timeout", "5"], "--timeout belongs to --method exact"),
])
def test_missing_or_mixed_options_exit_2_before_loading(argv, match, run_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exit_2(capsys, "certify", "--run", str(run_dir), *argv, match=match)


def test_ibp_on_an_unsupported_model_names_the_layer(tmp_path, capsys):
    run = tmp_path / "rbf"
    assert main(["train", "--dataset", "digits", "--model", "rbf", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    exit_2(capsys, "certify", "--run", str(run), "--method", "ibp", "--eps", "0.1", match=r"RBFNet.*--method smoothing")
    exit_2(capsys, "evaluate", "--run", str(run), "--eps", "0.1", "--certify", "--n", "5",
           match=r"interval bound propagation cannot go through.*RBFNet")
    assert not (run / "eval").exists()  # refused before the evaluation ran


@pytest.mark.parametrize("argv, match", [
    (["--norm", "l1", "--certify"], "no certificate for --norm l1"),
    (["--norm", "l2", "--certify"], "--norm l2 needs --sigma"),
    (["--sigma", "0.25"], "--sigma is an option of --certify"),
    (["--certify", "--sigma", "0.25"], "--norm linf uses interval bound propagation"),
    (["--certify", "--norm", "l2", "--sigma", "0.25", "--samples", "0"], "--samples: must be"),
])
def test_evaluate_certify_option_errors(argv, match, run_dir, capsys):
    exit_2(capsys, "evaluate", "--run", str(run_dir), "--eps", "0.1", "--n", "5", *argv, match=match)


def test_defense_options_are_checked(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "r")]
    exit_2(capsys, *base, "--defense", "gaussian", "--eps", "0.1", match="'gaussian' takes no --eps")
    exit_2(capsys, *base, "--defense", "gaussian", "--defense-arg", "sigma=-1", match="sigma must be a positive")
    exit_2(capsys, *base, "--defense", "ibp", match="'ibp' needs a budget")
    exit_2(capsys, *base, "--defense", "ibp", "--eps", "0.1", "--defense-arg", "kappa=2", match="kappa")
    exit_2(capsys, *base, "--defense", "ibp", "--eps", "0.1", "--defense-arg", "warmup=0.6",
           "--defense-arg", "ramp=0.6", match="warmup \\+ ramp must be at most 1")
    exit_2(capsys, "train", "--dataset", "digits", "--model", "rbf", "--epochs", "1", "--out", str(tmp_path / "q"),
           "--defense", "ibp", "--eps", "0.1", match="RBFNet")


def test_ibp_schedule_ramps_eps_and_kappa():
    from advlab.defenses.certified import IBPTraining

    d = IBPTraining(0.1, kappa=0.5, warmup=0.2, ramp=0.4)
    assert d.schedule(0.0) == (0.0, 1.0) and d.schedule(0.19) == (0.0, 1.0)
    eps, kappa = d.schedule(0.4)
    assert eps == pytest.approx(0.05) and kappa == pytest.approx(0.75)
    assert d.schedule(0.6) == pytest.approx((0.1, 0.5)) and d.schedule(1.0) == pytest.approx((0.1, 0.5))
    assert d.progress() == 1.0  # outside a Trainer: the final values


@pytest.mark.parametrize("name, options", [("ibp", {"eps": 0.1, "warmup": 0.2, "ramp": 0.5}),
                                           ("gaussian", {"sigma": 0.3})])
def test_interrupted_certified_training_resumes_to_identical_weights(digits, tmp_path, name, options):
    from advlab.defenses import Trainer, TrainConfig, build_defense
    from advlab.models import build_model

    def make(run_dir, interrupt_at=None):
        objective = build_defense(name, bounds=digits.bounds, **options)
        calls = {"n": 0}

        def wrapped(model, x, y, g):
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                raise KeyboardInterrupt
            return objective(model, x, y, g)
        torch.manual_seed(0)
        model = build_model("mlp", digits.input_shape, 10, hidden=[16], dropout=0.2)
        return Trainer(model, digits.x_train[:400], digits.y_train[:400], digits.x_test[:64], digits.y_test[:64],
                       config=TrainConfig(epochs=3, batch_size=64), objective=wrapped,
                       val_metric=getattr(objective, "val_metric", None), run_dir=run_dir, progress=False,
                       log=lambda m: None, hooks=objective.hooks(digits.x_test[:64], digits.y_test[:64]))

    full = make(tmp_path / "full")
    full.fit()
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "cut", interrupt_at=7 + 4).fit()  # 7 batches an epoch: inside epoch 2
    resumed = make(tmp_path / "cut")
    resumed.fit(resume=True)
    assert [m.get("ibp_eps") for m in resumed.history] == [m.get("ibp_eps") for m in full.history]
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
