"""Evaluation: the cascade is the per-example worst case, resumes exactly, and the checks catch masking."""

import json
import re

import pytest
import torch
from scipy.stats import binomtest

from advlab.attacks import BIM, FGSM
from advlab.errors import AdvlabError, ConfigError
from advlab.evaluate import (SuiteEntry, clopper_pearson, evaluate_robustness, get_suite, load_suite_file,
                             run_checks, verdict)
from advlab.evaluate.checks import (check_gradient_consistency, check_gradients, check_probabilities,
                                    check_randomness)


@pytest.fixture(scope="module")
def model_and_data(digits, trained_digits):
    model = trained_digits("mlp", epochs=10, hidden=[64])
    return model, digits.x_test[:150], digits.y_test[:150], digits.bounds


DETERMINISTIC = [SuiteEntry("fgsm", "fgsm"), SuiteEntry("bim", "bim", {"steps": 5})]


def test_cascade_is_the_per_example_worst_case(model_and_data):
    model, x, y, bounds = model_and_data
    eps = [0.02, 0.05, 0.1]
    ev = evaluate_robustness(model, x, y, eps, DETERMINISTIC, bounds=bounds, progress=False)
    for e, robust in zip(eps, ev.robust):
        a = FGSM()(model, x, y, [e], bounds=bounds).correct[0]
        b = BIM(steps=5)(model, x, y, [e], bounds=bounds).correct[0]
        independent = a & b
        # Carrying points broken at a smaller budget can only break more.
        assert (robust <= independent).all()
    small = ev.robust[0]
    a = FGSM()(model, x, y, [0.02], bounds=bounds).correct[0]
    b = BIM(steps=5)(model, x, y, [0.02], bounds=bounds).correct[0]
    assert torch.equal(small, a & b)  # the smallest budget has nothing to inherit: exactly the worst case
    acc = ev.robust_accuracy()
    assert acc[0] >= acc[1] >= acc[2] and acc[0] < ev.clean_accuracy()
    # The stored examples are what was scored, and inside the budget.
    for e, xa, lg in zip(eps, ev.x_adv, ev.logits):
        assert (xa - x).abs().max() <= e + 1e-6
        torch.testing.assert_close(model(xa), lg)


def test_clean_mistakes_and_breakdown_add_up(model_and_data):
    model, x, y, bounds = model_and_data
    ev = evaluate_robustness(model, x, y, [0.0, 0.05], DETERMINISTIC, bounds=bounds, progress=False)
    assert ev.robust_accuracy()[0] == pytest.approx(ev.clean_accuracy())
    for row, acc in zip(ev.broken_by_attack(), ev.robust_accuracy()):
        assert sum(row.values()) == round(len(y) * (1 - acc))
    conf = ev.adversarial_confusion()[1]
    assert sum(map(sum, conf)) == len(y)
    assert sum(conf[c][c] for c in range(10)) == round(ev.robust_accuracy()[1] * len(y))
    for r in ev.results():
        lo, hi = r["ci95"]
        assert lo <= r["robust_accuracy"] <= hi


def test_resume_after_interruption_gives_the_same_numbers(model_and_data, tmp_path, monkeypatch):
    model, x, y, bounds = model_and_data
    suite = [SuiteEntry("pgd", "pgd", {"steps": 5}), SuiteEntry("fgsm", "fgsm")]
    kwargs = dict(bounds=bounds, progress=False, batch_size=40, seed=3)
    full = evaluate_robustness(model, x, y, [0.03, 0.08], suite, **kwargs)

    calls = {"n": 0}
    from advlab.evaluate import robust
    original = robust.run_attack  # the harness, which the evaluation calls once per batch

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(robust, "run_attack", interrupting)
    with pytest.raises(KeyboardInterrupt):
        evaluate_robustness(model, x, y, [0.03, 0.08], suite, state_dir=tmp_path, **kwargs)
    monkeypatch.setattr(robust, "run_attack", original)
    resumed = evaluate_robustness(model, x, y, [0.03, 0.08], suite, state_dir=tmp_path, **kwargs)
    assert torch.equal(full.broken_by, resumed.broken_by)
    assert torch.equal(full.x_adv, resumed.x_adv)


def test_state_of_a_different_evaluation_is_not_reused(model_and_data, tmp_path):
    model, x, y, bounds = model_and_data
    evaluate_robustness(model, x, y, [0.05], DETERMINISTIC, bounds=bounds, progress=False, state_dir=tmp_path)
    ev = evaluate_robustness(model, x, y, [0.1], DETERMINISTIC, bounds=bounds, progress=False, state_dir=tmp_path)
    assert ev.eps == [0.1]


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (57, 200), (999, 1000)])
def test_clopper_pearson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = clopper_pearson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_custom_suite_file(tmp_path):
    f = tmp_path / "suite.toml"
    f.write_text('[[attack]]\nname = "pgd"\nlabel = "pgd-7"\nsteps = 7\n\n[[attack]]\nname = "fgsm"\n')
    suite = load_suite_file(f)
    assert [s.label for s in suite] == ["pgd-7", "fgsm"] and suite[0].build("linf").steps == 7
    for text, message in [('[[attack]]\nname = "pgd"\nstepz = 3\n', "no option stepz"),
                          ('[[attack]]\nsteps = 3\n', "needs name"),
                          ('colour = 1\n', "unknown key 'colour'"),
                          ('[[attack]]\nname = "pgd"\nsteps = "many"\n', "wrong type"),
                          ('[[attack]\n', "not valid TOML")]:
        f.write_text(text)
        with pytest.raises(Exception, match=message):
            load_suite_file(f)
    with pytest.raises(ConfigError, match="`suite_file=FILE.toml`"):
        get_suite("custom")
    with pytest.raises(ConfigError, match="read only with `suite='custom'`"):  # not silently ignored
        get_suite("fast", f)


def test_a_suite_file_without_suite_custom_is_refused_in_flags(tmp_path, capsys):
    from advlab.cli import main
    f = tmp_path / "suite.toml"
    f.write_text('[[attack]]\nname = "fgsm"\n')
    assert main(["evaluate", "--run", str(tmp_path), "--eps", "0.1", "--suite", "fast",  # checked before loading
                 "--suite-file", str(f)]) == 2
    err = capsys.readouterr().err
    assert "--suite-file" in err and "--suite custom" in err, err


# -- gradient-masking checks ----------------------------------------------------------------------

class Wrapped(torch.nn.Module):
    def __init__(self, model, kind):
        super().__init__()
        self.model, self.kind = model, kind
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        if self.kind == "softmax":
            return self.model(x).softmax(1)
        if self.kind == "noise":
            return self.model(x + 0.3 * torch.randn(x.shape, generator=self.gen))
        if self.kind == "quantise":
            return self.model(torch.round(x * 4) / 4)
        if self.kind == "straight-through":  # a gradient that is not the function's gradient
            return self.model(x + (torch.round(x * 4) / 4 - x).detach())
        raise ValueError(self.kind)


def test_each_check_flags_its_defect_and_passes_a_clean_model(model_and_data):
    model, x, y, bounds = model_and_data
    x, y = x[:100], y[:100]
    step = 0.005
    assert check_probabilities(model, x).passed
    assert not check_probabilities(Wrapped(model, "softmax"), x).passed
    assert check_randomness(model, x).passed
    assert not check_randomness(Wrapped(model, "noise"), x).passed
    assert check_gradients(model, x, y).passed
    assert not check_gradients(Wrapped(model, "quantise"), x, y).passed
    assert check_gradient_consistency(model, x, y, step=step, bounds=bounds).passed
    assert not check_gradient_consistency(Wrapped(model, "quantise"), x, y, step=step, bounds=bounds).passed
    st = Wrapped(model, "straight-through")
    assert check_gradients(st, x, y).passed  # its gradients look healthy ...
    assert not check_gradient_consistency(st, x, y, step=step, bounds=bounds).passed  # ... but are not the function's


def test_run_checks_gives_a_verdict(model_and_data):
    model, x, y, bounds = model_and_data
    x, y = x[:60], y[:60]
    good = run_checks(model, x, y, [0.05, 0.1], bounds=bounds, thorough=False)
    assert verdict(good) == "ok", [c.detail for c in good if not c.passed]
    bad = run_checks(Wrapped(model, "quantise"), x, y, [0.05, 0.1], bounds=bounds, thorough=False)
    failed = {c.name for c in bad if not c.passed}
    assert {"gradients", "gradient_consistency", "unbounded"} <= failed
    assert verdict(bad).startswith("suspicious")
    assert all(c.doc.startswith("docs/checks/") and c.explanation for c in bad)


def test_the_checks_count_their_passes_and_attack_only_what_can_count(model_and_data):
    """Issue 25: the checks cost 60x the suite and their passes were not counted. The stronger attacks run
    only on points whose result can count: against an evaluation that broke every point they cost nothing."""
    from advlab.passes import PassCounter
    model, x, y, bounds = model_and_data
    x, y = x[:60], y[:60]
    counted = PassCounter(model)
    checks = run_checks(counted, x, y, [0.1], bounds=bounds)
    assert checks.passes == counted.counts() and checks.passes["forward"] > 0 and checks.passes["backward"] > 0
    assert checks.n == 60 and checks.seconds > 0
    cheap = run_checks(model, x, y, [0.1], bounds=bounds, thorough=False)
    nothing_left = run_checks(model, x, y, [0.1], bounds=bounds, reported_robust={0.1: torch.zeros(60, dtype=torch.bool)})
    assert {c.name for c in nothing_left} == {c.name for c in cheap} | {"convergence", "black_box"}
    assert nothing_left.passes == cheap.passes  # convergence and Square had no point to attack
    assert all(c.passed for c in nothing_left if c.name in ("convergence", "black_box"))
    assert checks.passes["forward"] > cheap.passes["forward"]


def test_evaluate_records_the_suite_and_the_checks_apart(tmp_path, capsys):
    """Issue 25: `seconds` mixed the suite with the checks while `passes` counted only the suite."""
    from advlab.cli import main
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", "softmax", "--epochs", "2", "--out", str(run),
                 "--no-progress"]) == 0
    args = ["evaluate", "--run", str(run), "--eps", "0.1", "--suite", "fast", "--n", "50", "--no-progress"]
    capsys.readouterr()
    assert main([*args, "--check-n", "30", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["check_n"] == 30 and rec["checks_seconds"] > 0 and rec["suite_seconds"] > 0
    assert rec["seconds"] >= rec["suite_seconds"] + rec["checks_seconds"]
    assert rec["checks_passes"]["forward"] > 0 and rec["checks_passes"]["backward"] > 0
    for key in ("suite_seconds", "checks_seconds", "checks_passes", "passes", "seconds"):
        assert rec["summary"][key] == rec[key]
    assert main([*args, "--no-checks", "--fresh", "--json"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["passes"] == rec["passes"]  # the suite's count does not depend on the checks
    assert bare["checks_passes"] == {"forward": 0, "backward": 0} and bare["checks_seconds"] == 0
    assert main([*args, "--check-n", "30", "--fresh"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"\d+\.\d s \(attacks \d+\.\d s, gradient-masking checks \d+\.\d s\)", text), text
    assert re.search(r"checks \(on 30 points, [\d.]+ s, [\d,]+ forward \+ [\d,]+ backward passes; the attacks: ", text)


def test_the_text_says_what_dominating_checks_cost_and_how_to_bound_them(tmp_path):
    from advlab.cli.evaluate import _text
    rec = {"suite": "fast", "norm": "linf", "n": 20, "clean_accuracy": 1.0, "seconds": 314.0, "suite_seconds": 5.0,
           "checks_seconds": 309.0, "check_n": 20, "checks_passes": {"forward": 24983, "backward": 4613},
           "passes": {"forward": 1664, "backward": 1680}, "results": [], "verdict": "ok",
           "checks": [{"name": "monotone", "passed": True, "detail": "fine"}]}
    text = _text(rec, tmp_path)
    assert "314.0 s (attacks 5.0 s, gradient-masking checks 309.0 s)" in text
    assert "24,983 forward + 4,613 backward passes; the attacks: 1,664 forward + 1,680 backward passes" in text
    assert "note: the gradient-masking checks took 309.0 s, 62x the attacks' 5.0 s; bound them with --check-n K " \
           "(now 20 points) or skip them with --no-checks" in text
    assert "note:" not in _text({**rec, "checks_seconds": 4.0, "seconds": 9.0}, tmp_path)


NETS = """
from torch import nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
"""


def test_the_recorded_command_reproduces_from_its_flags(tmp_path, monkeypatch, capsys):
    """Issue 25: the summary's command kept a relative --weights and dropped --device and --out."""
    import shlex

    from advlab.artifacts.evaluate import evaluate_run
    from advlab.cli import main
    from advlab.subject import open_subject
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(NETS)
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(), "w.pt")
    weights = shlex.quote(str((tmp_path / "w.pt").resolve()))
    args = ["evaluate", "--model", "nets.py:build", "--weights", "w.pt", "--dataset", "digits", "--eps", "0.1",
            "--suite", "fast", "--n", "40", "--no-checks", "--no-progress", "--json"]
    assert main([*args, "--device", "cpu", "--out", "mine"]) == 0
    rec = json.loads(capsys.readouterr().out)
    command = rec["summary"]["command"]
    mine, nets = (shlex.quote(str((tmp_path / name).resolve())) for name in ("mine", "nets.py"))
    assert f" --weights {weights} " in command and " --device cpu" in command and f" --out {mine}" in command, command
    assert f" --model {nets}:build " in command  # every path absolute: the command runs from any folder
    argv = shlex.split(command)
    assert argv[:2] == ["advlab", "evaluate"]
    monkeypatch.chdir(tmp_path.parent)  # from another folder
    assert main([*argv[1:], "--fresh", "--no-checks", "--no-progress", "--json"]) == 0  # the command runs as recorded
    again = json.loads(capsys.readouterr().out)
    assert again["results"] == rec["results"] and again["summary"]["command"] == command
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--out", "other"]) == 0  # --device auto (the default) is not written out
    assert " --device" not in json.loads(capsys.readouterr().out)["summary"]["command"]
    # from Python: the external model's run directory is its --out
    subject = open_subject(model="nets.py:build", weights="w.pt", dataset="digits", run_dir="py-run", device="cpu")
    command = evaluate_run(subject, eps=[0.1], suite="fast", n=40, checks=False, progress=False)["summary"]["command"]
    py_run = shlex.quote(str((tmp_path / "py-run").resolve()))
    assert f" --weights {weights} " in command and f" --out {py_run}" in command and " --device" not in command


def test_evaluate_cli_contract(tmp_path):
    from test_cli import run_cli
    run = tmp_path / "run"
    assert run_cli("train", "--dataset", "digits", "--model", "softmax", "--epochs", "3", "--out", str(run)).returncode == 0
    r = run_cli("evaluate", "--run", str(run), "--eps", "0.05,0.1", "--suite", "fast", "--n", "60", "--check-n", "40",
                "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert {"suite", "n", "clean_accuracy", "seconds", "verdict", "results", "checks"} <= set(rec)
    assert rec["suite"] == "fast" and rec["n"] == 60 and len(rec["results"]) == 2
    for row in rec["results"]:
        assert {"eps", "robust_accuracy", "ci95", "per_class"} <= set(row) and len(row["per_class"]) == 10
    assert {c["name"] for c in rec["checks"]} >= {"gradients", "monotone", "unbounded", "single_step"}
    out = run / "eval" / "fast-linf"
    assert (out / "result.json").is_file() and (out / "curve.csv").read_text().startswith("eps,robust_accuracy")


def test_verdict_separates_a_weak_attack_from_masked_gradients():
    from advlab.evaluate.checks import CheckResult

    def result(name, passed):
        return CheckResult(name, passed, "", f"docs/checks/{name}.md", "")
    assert verdict([result("monotone", True), result("convergence", True)]) == "ok"
    assert verdict([result("monotone", True), result("convergence", False)]).startswith("not converged")
    assert verdict([result("gradients", False), result("convergence", False)]) == "suspicious: gradients, convergence"


def test_convergence_is_judged_against_what_the_evaluation_reported(model_and_data):
    model, x, y, bounds = model_and_data
    x, y = x[:40], y[:40]
    eps = [0.1]

    def convergence(reported):
        checks = run_checks(model, x, y, eps, bounds=bounds, reported_robust=reported)
        return next(c for c in checks if c.name == "convergence")
    # An "evaluation" that broke nothing is not converged; one that broke everything cannot be beaten.
    weak = convergence({0.1: torch.ones(len(y), dtype=torch.bool)})
    assert not weak.passed and "the evaluation missed" in weak.detail
    assert convergence({0.1: torch.zeros(len(y), dtype=torch.bool)}).passed
    with pytest.raises(AdvlabError, match="eps 0.1"):
        convergence({0.2: torch.ones(len(y), dtype=torch.bool)})
