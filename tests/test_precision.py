"""Reduced-precision search with fp32 verdicts (advlab.precision) and the CUDA-graph fallback (advlab.graphs)."""

import json

import pytest
import torch
from conftest import needs_fashion
from torch import nn

from advlab import graphs
from advlab.attacks import PGD, build_attack
from advlab.data import load_dataset
from advlab.errors import AdvlabError
from advlab.evaluate import evaluate_robustness, get_suite
from advlab.evaluate.suites import SuiteEntry
from advlab.precision import FP16_LOSS_SCALE, Autocast, with_precision

EPS = [0.1, 0.2]


def assert_every_break_holds_in_fp32(model, x, y, result, eps):
    """Every example the result calls a break is misclassified by the fp32 model, inside the ball and the bounds."""
    for e, budget in enumerate(eps):
        broken = result.success[e] & result.clean_correct
        xa = result.x_adv[e][broken]
        assert xa.dtype == torch.float32
        with torch.no_grad():
            assert (model(xa).argmax(1) != y[broken]).all()
        assert ((xa - x[broken]).flatten(1).abs().amax(1) <= budget + 1e-6).all()
        assert xa.min() >= 0 and xa.max() <= 1


def robust(result):
    return [float(r) for r in result.robust_accuracy()] if callable(getattr(result, "robust_accuracy", None)) \
        else result.robust_accuracy


def test_bf16_search_never_reports_a_break_that_fp32_rejects_and_finds_as_many(digits_cnn_short):
    data = load_dataset("digits")
    x, y = data.test_subset(100)
    attack = PGD(norm="linf", steps=10)
    full = attack(digits_cnn_short, x, y, EPS, bounds=(0, 1))
    low = with_precision(attack, "bf16")(digits_cnn_short, x, y, EPS, bounds=(0, 1))
    assert attack.precision == "fp32" and low.logits.dtype == torch.float32  # the attack passed in is unchanged
    assert_every_break_holds_in_fp32(digits_cnn_short, x, y, low, EPS)
    # the reported logits are the fp32 model's
    assert torch.allclose(low.logits[1], digits_cnn_short(low.x_adv[1]).detach(), atol=1e-5)
    r_full, r_low = robust(full), robust(low)
    assert r_full[1] < r_full[0] < full.clean_accuracy()  # a real attack
    assert all(b <= a + 2 / 100 + 1e-6 for a, b in zip(r_full, r_low)), (r_full, r_low)  # at most 2 points apart
    assert low.passes["backward"] > 0 and low.passes["forward"] > full.passes["forward"] * 0.5


class LowPrecisionLiar(nn.Module):
    """The model, except that under autocast every point looks misclassified (label 0 wins by far)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        if torch.is_autocast_enabled("cpu"):
            out = out + torch.tensor([100.0] + [0.0] * (out.shape[1] - 1), dtype=out.dtype)
            out = torch.where(out.argmax(1, keepdim=True) == 0, out.roll(1, 1), out)  # never the true class... mostly
        return out


def test_a_break_that_only_holds_in_low_precision_is_searched_again_in_fp32(digits_cnn_short):
    """Every point the bf16 search claims, fp32 rejects: each goes on in fp32, so the result is fp32's."""
    data = load_dataset("digits")
    x, y = data.test_subset(60)
    liar = LowPrecisionLiar(digits_cnn_short).eval()
    attack = PGD(norm="linf", steps=5)
    full = attack(liar, x, y, [0.05], bounds=(0, 1))
    low = with_precision(attack, "bf16")(liar, x, y, [0.05], bounds=(0, 1))
    assert_every_break_holds_in_fp32(digits_cnn_short, x, y, low, [0.05])
    assert torch.equal(low.success, full.success)
    assert robust(low) == robust(full) and 0 < robust(full)[0]


def test_fp16_loss_scale_is_divided_out_and_rescues_tiny_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 3))
    x = torch.randn(4, 20, requires_grad=True)

    def grad(model, factor):
        x.grad = None
        (model(x).log_softmax(1)[:, 0] * factor).sum().backward()
        return x.grad.clone()

    g32 = grad(net, 1.0)
    g16 = grad(Autocast(net, "fp16"), 1.0)
    assert torch.allclose(g16, g32, rtol=0.05, atol=1e-3)  # the scale is divided out again
    tiny = 1e-6  # fp16's smallest subnormal is 6e-8: without the scale most of this gradient is flushed
    scaled = grad(Autocast(net, "fp16"), tiny)
    assert torch.allclose(scaled / tiny, g32, rtol=0.1, atol=1e-2) and FP16_LOSS_SCALE > 1


def test_fp16_search_also_verifies_in_fp32(digits_cnn_short):
    data = load_dataset("digits")
    x, y = data.test_subset(40)
    r = with_precision(PGD(norm="linf", steps=5), "fp16")(digits_cnn_short, x, y, [0.2], bounds=(0, 1))
    assert_every_break_holds_in_fp32(digits_cnn_short, x, y, r, [0.2])
    assert robust(r)[0] < r.clean_accuracy()


def test_minimal_attacks_search_every_unconfirmed_point_again_in_fp32(digits_cnn_short):
    """DeepFool should always reach the boundary: a point bf16 did not bring across it in fp32 goes on in fp32."""
    data = load_dataset("digits")
    x, y = data.test_subset(5)
    attack = build_attack("deepfool", norm="l2")
    full = attack(digits_cnn_short, x, y, [0.5, 2.0], bounds=(0, 1))
    low = with_precision(attack, "bf16")(digits_cnn_short, x, y, [0.5, 2.0], bounds=(0, 1))
    for e in range(2):
        broken = low.success[e] & low.clean_correct
        with torch.no_grad():
            assert (digits_cnn_short(low.x_adv[e][broken]).argmax(1) != y[broken]).all()
    assert robust(low)[1] == robust(full)[1] == 0.0  # everything reached, as in fp32


def test_evaluate_in_bf16_records_it_and_is_no_weaker(digits_cnn_short):
    data = load_dataset("digits")
    x, y = data.test_subset(60)
    suite = [SuiteEntry("apgd-ce", "apgd-ce", {"steps": 10}), SuiteEntry("pgd", "pgd", {"steps": 5})]
    full = evaluate_robustness(digits_cnn_short, x, y, [0.1], suite, bounds=(0, 1), progress=False)
    low = evaluate_robustness(digits_cnn_short, x, y, [0.1], suite, bounds=(0, 1), progress=False, precision="bf16")
    assert low.precision == "bf16" and full.precision == "fp32"
    assert 0 < full.robust_accuracy()[0] < full.clean_accuracy()
    # a bf16 search that fails is not repeated in fp32: it may miss a point fp32 finds, as another start would
    assert low.robust_accuracy()[0] <= full.robust_accuracy()[0] + 1 / 60 + 1e-6
    broken = low.broken_by[0] > 0
    with torch.no_grad():
        assert (digits_cnn_short(low.x_adv[0][broken]).argmax(1) != y[broken]).all()
    assert low.logits.dtype == torch.float32


@needs_fashion
def test_bf16_on_a_fashion_mnist_model_is_no_weaker_and_every_break_holds():
    data = load_dataset("fashion-mnist")
    g = torch.Generator().manual_seed(0)
    xt, yt = data.x_train[:3000], data.y_train[:3000]
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(3):
        for i in torch.randperm(len(xt), generator=g).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i]), yt[i]).backward()
            opt.step()
    net.eval()
    x, y = data.test_subset(200)
    attack = PGD(norm="linf", steps=10)
    full = attack(net, x, y, [0.02, 0.05], bounds=(0, 1))
    low = with_precision(attack, "bf16")(net, x, y, [0.02, 0.05], bounds=(0, 1))
    assert_every_break_holds_in_fp32(net, x, y, low, [0.02, 0.05])
    r_full, r_low = robust(full), robust(low)
    assert r_full[0] < full.clean_accuracy()
    assert all(b <= a + 2 / 200 + 1e-6 for a, b in zip(r_full, r_low)), (r_full, r_low)


def test_bad_precision_is_a_clear_error():
    with pytest.raises(AdvlabError, match="precision must be one of fp32, bf16, fp16"):
        with_precision(PGD(), "fp8")
    data = load_dataset("digits")
    x, y = data.test_subset(4)
    with pytest.raises(AdvlabError, match="precision must be one of"):
        evaluate_robustness(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x, y, [0.1], get_suite("fast"),
                            bounds=(0, 1), progress=False, precision="half")


# -- CUDA graphs: off without CUDA, a failed capture falls back to eager ------------------------------------

def test_graphs_without_cuda_run_eagerly_and_say_so(digits_cnn_short, capsys, monkeypatch):
    monkeypatch.setattr(graphs, "_said", set())
    data = load_dataset("digits")
    x, y = data.test_subset(30)
    attack = PGD(norm="linf", steps=3)
    a = attack(digits_cnn_short, x, y, [0.1], bounds=(0, 1))
    b = with_precision(attack, graphs=True)(digits_cnn_short, x, y, [0.1], bounds=(0, 1))
    assert torch.equal(a.x_adv, b.x_adv)
    assert capsys.readouterr().err.count("CUDA graphs need a CUDA device") == 1


def test_a_failed_capture_falls_back_to_eager_once(digits_cnn_short, capsys, monkeypatch):
    monkeypatch.setattr(graphs, "_said", set())
    monkeypatch.setattr(graphs, "cuda_graphs_available", lambda device: True)  # as if on a GPU
    calls = []

    def failing_compile(model, **kwargs):
        calls.append(kwargs)

        def run(x):
            raise RuntimeError("CUDA graph capture failed (simulated)")
        return run
    monkeypatch.setattr(torch, "compile", failing_compile)
    data = load_dataset("digits")
    x, y = data.test_subset(30)
    attack = PGD(norm="linf", steps=3)
    a = attack(digits_cnn_short, x, y, [0.1], bounds=(0, 1))
    b = with_precision(attack, "bf16", graphs=True)(digits_cnn_short, x, y, [0.1], bounds=(0, 1))
    c = with_precision(attack, "bf16")(digits_cnn_short, x, y, [0.1], bounds=(0, 1))
    assert calls and calls[0]["mode"] == "reduce-overhead"
    assert torch.equal(b.x_adv, c.x_adv) and torch.equal(b.success, c.success)
    assert robust(a) and capsys.readouterr().err.count("--graphs: capture failed") == 1


def test_graphed_module_uses_the_compiled_call_when_it_works(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (lambda x: model(x) * 0 + 7))
    g = graphs.Graphed(nn.Linear(3, 2))
    assert torch.equal(g(torch.zeros(1, 3)), torch.full((1, 2), 7.0)) and g.failed is None


def test_cli_records_the_search_precision(trained_digits_run, tmp_path, capsys):
    from advlab.cli import main
    run = trained_digits_run("cnn-small", 6)
    assert main(["attack", "--run", str(run), "--attack", "pgd", "--eps", "0.1", "--steps", "5", "--n", "40",
                 "--precision", "bf16", "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["precision"] == "bf16" and 0 <= record["results"][0]["robust_accuracy"] < record["clean_accuracy"]
    assert main(["evaluate", "--run", str(run), "--eps", "0.1", "--suite", "fast", "--n", "10", "--no-checks",
                 "--precision", "bf16", "--graphs", "--json", "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["precision"] == "bf16" and "--precision bf16 --graphs" in record["summary"]["command"]
