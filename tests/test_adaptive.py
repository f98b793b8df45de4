"""Adaptive attacks as model transformations (advlab.models.adaptive), the checks that point to them
(check_saturation, evaluate.adaptive.recommend) and `advlab evaluate --adaptive`."""

import json
import shlex

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advlab.cli import main
from advlab.errors import AdvlabError
from advlab.evaluate.adaptive import recommend
from advlab.evaluate.checks import CheckResult, check_saturation, run_checks
from advlab.models import BPDA, EOT, Preprocessed, Quantize, Randomized, RandomResizePad
from advlab.models.adaptive import Rescaled, adapt, has_preprocessing, parse_adaptations


class Scaled(nn.Module):
    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return x.grad


def test_bpda_replaces_every_preprocessing_inside_the_model_and_keeps_its_outputs(digits_cnn_short, digits):
    x, y = digits.test_subset(64)
    inner = Preprocessed(digits_cnn_short, Quantize(4, bounds=digits.bounds))
    model = nn.Sequential(inner).eval()  # nested one level down
    assert _grad(model, x, y).abs().max() == 0  # rounding: what a naive attack sees
    twin = adapt(model, "bpda")
    assert isinstance(twin[0], BPDA) and isinstance(model[0], Preprocessed)  # the model given is not changed
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
    assert _grad(twin, x, y).abs().max() > 0
    with pytest.raises(AdvlabError, match="no preprocessing layer"):
        adapt(digits_cnn_short, "bpda")
    assert has_preprocessing(model) and not has_preprocessing(digits_cnn_short)


def test_rescale_keeps_predictions_and_brings_back_the_cross_entropy_gradient(digits_cnn_short, digits):
    x, y = digits.test_subset(64)
    saturated = Scaled(digits_cnn_short, 1000.0).eval()
    rescaled = adapt(saturated, "rescale")
    assert isinstance(rescaled, Rescaled)
    with torch.no_grad():
        assert torch.equal(rescaled(x).argmax(1), saturated(x).argmax(1))
    correct = saturated(x).argmax(1) == y
    zero_before = (_grad(saturated, x[correct], y[correct]).flatten(1).abs().amax(1) == 0).float().mean()
    zero_after = (_grad(rescaled, x[correct], y[correct]).flatten(1).abs().amax(1) == 0).float().mean()
    assert zero_before > 0.9 and zero_after == 0


def test_eot_averages_the_models_own_randomness(trained_digits, digits):
    x, _ = digits.test_subset(16)
    t = RandomResizePad(0.75)
    defense = Randomized(trained_digits(resize_pad=0.75), t, seed=1).eval()
    eot = adapt(defense, "eot", samples=8, seed=3)
    assert isinstance(eot, EOT) and eot.samples == 8
    with torch.no_grad():
        a = eot(x)
        eot.reset()
        assert torch.equal(eot(x), a)  # its own seeded stream


def test_adaptation_names_are_checked():
    assert parse_adaptations("bpda, eot") == ["bpda", "eot"] and parse_adaptations(None) == []
    with pytest.raises(AdvlabError, match="unknown adaptation 'jpeg'"):
        parse_adaptations("bpda,jpeg")
    with pytest.raises(AdvlabError, match="twice"):
        parse_adaptations("eot,eot")


def test_saturation_check_flags_a_saturated_softmax_not_an_ordinary_network(digits_cnn_short, digits):
    x, y = digits.test_subset(200)
    assert check_saturation(digits_cnn_short, x, y).passed
    flagged = check_saturation(Scaled(digits_cnn_short, 1000.0).eval(), x, y)
    assert not flagged.passed and flagged.doc == "docs/checks/saturation.md"


def _failed(*names):
    return [CheckResult(n, False, "", "", "") for n in names] + [CheckResult("probabilities", True, "", "", "")]


def test_recommend_maps_failed_checks_to_adaptations(digits_cnn_short, digits):
    pre = Preprocessed(digits_cnn_short, Quantize(4, bounds=digits.bounds))
    assert recommend(_failed("gradients", "black_box"), pre) == ["bpda"]
    assert recommend(_failed("gradients"), digits_cnn_short) == []  # nothing BPDA could replace
    assert recommend(_failed("saturation"), digits_cnn_short) == ["rescale"]
    assert recommend(_failed("randomness", "gradient_consistency", "unbounded"), pre) == ["eot"]
    assert recommend(_failed("convergence"), pre) == []
    assert recommend(_failed(), pre) == []


def test_run_checks_flag_quantisation_and_point_to_bpda(digits_cnn_short, digits):
    x, y = digits.test_subset(100)
    defended = Preprocessed(digits_cnn_short, Quantize(4, bounds=digits.bounds)).eval()
    checks = run_checks(defended, x, y, [0.1], bounds=digits.bounds, thorough=False)
    assert "gradients" in {c.name for c in checks if not c.passed}
    assert recommend(checks, defended) == ["bpda"]
    plain = run_checks(digits_cnn_short, x, y, [0.1], bounds=digits.bounds, thorough=False)
    assert recommend(plain, digits_cnn_short) == [], [c for c in plain if not c.passed]


NETS = '''
from advlab.models import Preprocessed, Quantize, build_model

def build():
    return Preprocessed(build_model("cnn-small", (1, 8, 8), 10), Quantize(4, bounds=(0.0, 1.0)))
'''


def test_cli_evaluate_recommends_the_adaptive_attack_and_runs_it(digits_cnn_short, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an external model's run directory: runs/FUNCTION-HASH under the working folder
    (tmp_path / "nets.py").write_text(NETS)
    weights = tmp_path / "w.pt"
    torch.save({f"model.{k}": v for k, v in digits_cnn_short.state_dict().items()}, weights)
    common = ["--model", f"{tmp_path}/nets.py:build", "--weights", str(weights), "--dataset", "digits", "--eps", "0.1",
              "--suite", "fast", "--n", "50", "--check-n", "50", "--device", "cpu", "--json", "--no-progress"]
    assert main(["evaluate", *common]) == 0
    naive = json.loads(capsys.readouterr().out)
    assert naive["verdict"] != "ok" and naive["recommended_adaptation"] == ["bpda"] and naive["adaptive"] == []
    command = shlex.split(naive["adaptive_command"])
    assert command[-2:] == ["--adaptive", "bpda"] and "--out" not in command
    assert main(command[1:] + ["--json", "--no-progress"]) == 0  # the printed command, as printed
    adapted = json.loads(capsys.readouterr().out)
    assert adapted["adaptive"] == ["bpda"] and "adaptive_command" not in adapted
    assert "--adaptive bpda" in adapted["summary"]["command"]
    naive_acc, adapted_acc = naive["results"][0]["robust_accuracy"], adapted["results"][0]["robust_accuracy"]
    assert adapted_acc <= naive_acc - 0.1, (naive_acc, adapted_acc)
    # each in its own folder, so neither resumes the other's state
    assert len(list(tmp_path.glob("runs/*/eval/fast-linf/result.json"))) == 1
    assert len(list(tmp_path.glob("runs/*/eval/fast-bpda-linf/result.json"))) == 1
