"""Adversarial training objectives: exact formulas, robustness gains on digits, collapse guard, resume."""

import math

import pytest
import torch
from torch.nn import functional as F

from advlab import load_run, rng
from advlab.attacks import FGSM, PGD
from advlab.defenses.adversarial import (TRADES, CollapseCheck, FastAT, Goodfellow, L1Penalty, Noise,
                                         first_weight, kl_divergence)
from advlab.defenses.layers import hidden_layers, split_at_layer
from advlab.defenses.registry import DEFENSES, build_defense
from advlab.defenses.run import train_run
from advlab.defenses.training import TrainConfig, Trainer, TrainerHook
from advlab.errors import AdvlabError
from advlab.models import build_model
from advlab.models.linear import LogisticRegression

EPS = 0.1  # digits pixels are in [0, 1]; at 0.1 PGD-20 takes a standard MLP from 0.97 to ~0.6


def quiet(msg):
    pass


def _mlp(digits, seed=0, **kw):
    mean, std = digits.channel_stats()
    with rng.seeded(seed):
        return build_model("mlp", digits.input_shape, 10, {"mean": mean, "std": std}, **kw)


def _fit(digits, objective, epochs=10, hooks=None, **kw):
    net = _mlp(digits)
    Trainer(net, digits.x_train, digits.y_train, config=TrainConfig(epochs=epochs, lr=3e-3, batch_size=64),
            objective=objective, progress=False, log=quiet, hooks=hooks, **kw).fit()
    return net


def _pgd20(net, digits):
    r = PGD(steps=20)(net, digits.x_test, digits.y_test, eps=[EPS], bounds=digits.bounds)
    return r.clean_accuracy(), r.robust_accuracy()[0]


@pytest.fixture(scope="module")
def standard(digits, trained_digits):
    # What _fit makes with build_defense("none") (clean training): the shared cached model.
    return _pgd20(trained_digits("mlp", epochs=10, batch_size=64, normalize=True), digits)


# -- robustness on digits ----------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("goodfellow", {}), ("pgd", {"steps": 5}), ("trades", {"steps": 5}),
                                           ("fgsm-rs", {"check": False})])
def test_adversarial_training_beats_the_standard_model_under_pgd20(digits, standard, name, options):
    clean0, robust0 = standard
    net = _fit(digits, build_defense(name, eps=EPS, bounds=digits.bounds, **options))
    clean, robust = _pgd20(net, digits)
    assert clean >= 0.9, clean
    assert robust >= robust0 + 0.12, (robust, robust0)


@pytest.mark.parametrize("name", ["noise-sign", "noise-uniform"])
def test_noise_controls_do_not_buy_robustness(digits, standard, name):
    # Goodfellow et al.'s control: noise of the same size is nearly useless against adversarial examples.
    clean0, robust0 = standard
    clean, robust = _pgd20(_fit(digits, build_defense(name, eps=EPS, bounds=digits.bounds)), digits)
    assert clean >= 0.9
    assert robust < robust0 + 0.08, (robust, robust0)


# -- exact formulas ----------------------------------------------------------------------------
def _logistic_problem(seed=0, n=16, d=5):
    g = torch.Generator().manual_seed(seed)
    with rng.seeded(seed):
        model = LogisticRegression((d,))
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return model, x, y


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_goodfellow_objective_is_the_closed_form_on_logistic_regression(alpha):
    # z = w.x + b, s = +-1 for y = 1/0: J(x) = softplus(-s z); FGSM moves x by -eps s sign(w), so
    # J(x_adv) = softplus(-s z + eps ||w||_1), with x_adv a constant for the weight gradient.
    eps = 0.25
    model, x, y = _logistic_problem()
    objective = Goodfellow(eps, alpha=alpha, bounds=None)
    loss, logits = objective(model, x, y, rng.generator(0))
    w, b = model.weight.detach(), model.bias.detach()
    s = (2 * y - 1).float()
    z = x @ w + b
    z_adv = z - eps * s * w.abs().sum() * 1.0
    expected = alpha * F.softplus(-s * z).mean() + (1 - alpha) * F.softplus(-s * z + eps * w.abs().sum()).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(logits[:, 1], z, atol=1e-6)
    # Gradient by hand: dJ/dw = -s sigmoid(-s z) x (clean) and -s sigmoid(-s z_adv) x_adv (adversarial).
    x_adv = x - eps * s[:, None] * w.sign()
    assert torch.allclose(x_adv @ w + b, z_adv, atol=1e-5)
    n = len(y)
    grad_w = (alpha * (-s * torch.sigmoid(-s * z))[:, None] * x
              + (1 - alpha) * (-s * torch.sigmoid(-s * z_adv))[:, None] * x_adv).sum(0) / n
    grad_b = (alpha * (-s * torch.sigmoid(-s * z)) + (1 - alpha) * (-s * torch.sigmoid(-s * z_adv))).sum() / n
    model.zero_grad()
    loss.backward()
    assert torch.allclose(model.linear.weight.grad[0], grad_w, atol=1e-6)
    assert torch.allclose(model.linear.bias.grad[0], grad_b, atol=1e-6)


def test_goodfellow_respects_the_dataset_bounds():
    model, x, y = _logistic_problem()
    x = torch.rand_like(x)
    captured = {}
    # The two forwards are batched: the adversarial half is the second half of the input.
    handle = model.register_forward_pre_hook(lambda m, inp: captured.update(x=inp[0].detach().clone()))
    Goodfellow(0.3, bounds=(0.0, 1.0))(model, x, y, rng.generator(0))
    handle.remove()
    x_adv = captured["x"][len(x):]
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and (x_adv - x).abs().max() > 0.29


def test_trades_kl_term_vanishes_when_the_adversarial_input_is_the_clean_one():
    logits = torch.randn(8, 10)
    assert torch.equal(kl_divergence(F.softmax(logits, 1), logits), torch.zeros(8)) or \
        kl_divergence(F.softmax(logits, 1), logits).abs().max() < 1e-6
    assert (kl_divergence(F.softmax(logits, 1), logits + torch.randn(8, 10)) > 0).all()
    # With eps = 0 the inner maximisation cannot move: the loss is the clean cross-entropy exactly.
    model, x, y = _logistic_problem()
    loss, logits = TRADES(0.0, beta=6.0)(model, x, y, rng.generator(0))
    assert torch.allclose(loss, F.cross_entropy(model(x), y), atol=1e-7)
    # and with eps > 0 it adds beta * KL >= 0, growing with beta.
    l1, _ = TRADES(0.5, beta=1.0)(model, x, y, rng.generator(0))
    l6, _ = TRADES(0.5, beta=6.0)(model, x, y, rng.generator(0))
    ce = F.cross_entropy(model(x), y)
    assert ce < l1 < l6
    assert torch.allclose(l6 - ce, 6 * (l1 - ce), rtol=1e-4)


def test_l1_penalty_value_is_exact():
    model, x, y = _logistic_problem()
    objective = L1Penalty(coef=0.0025)
    loss, logits = objective(model, x, y, rng.generator(0))
    w = model.linear.weight.detach()
    assert first_weight(model) is model.linear.weight
    assert torch.allclose(objective.penalty(model), 0.0025 * w.abs().sum(), rtol=0, atol=1e-9)
    assert torch.allclose(loss, F.cross_entropy(model(x), y) + 0.0025 * w.abs().sum(), atol=1e-7)
    assert build_defense("l1", eps=0.01).coef == 0.01  # --eps sets the coefficient eps*||w||_1
    with pytest.raises(AdvlabError, match="coef"):
        build_defense("l1")


def test_l1_decay_shrinks_the_first_layer_weights(digits):
    plain = _fit(digits, build_defense("none"), epochs=3)
    decayed = _fit(digits, build_defense("l1", coef=5e-3), epochs=3)
    assert first_weight(decayed).abs().sum() < 0.5 * first_weight(plain).abs().sum()


def test_noise_perturbations_have_the_promised_shape():
    model, x, y = _logistic_problem(n=256, d=20)
    x = torch.rand_like(x) * 0.5 + 0.25  # away from the bounds, so no clipping
    seen = {}
    model.register_forward_pre_hook(lambda m, inp: seen.update(x=inp[0].detach().clone()))
    Noise(0.1, kind="sign", bounds=(0.0, 1.0))(model, x, y, rng.generator(0))
    delta = seen["x"][len(x):] - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.1), atol=1e-6)
    assert 0.4 < (delta > 0).float().mean() < 0.6
    Noise(0.1, kind="uniform", bounds=(0.0, 1.0))(model, x, y, rng.generator(0))
    delta = seen["x"][len(x):] - x
    assert delta.abs().max() <= 0.1 + 1e-6 and delta.abs().mean() == pytest.approx(0.05, abs=0.005)


# -- where to perturb ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, kw", [("mlp", {"hidden": [32, 16]}), ("maxout", {"units": 8, "pieces": 3}),
                                      ("cnn-small", {})])
def test_split_at_every_layer_composes_back_to_the_model(digits, name, kw):
    mean, std = digits.channel_stats()
    with rng.seeded(0):
        net = build_model(name, digits.input_shape, 10, {"mean": mean, "std": std}, **kw)
    x = digits.x_test[:5]
    k = hidden_layers(net)
    assert k == {"mlp": 2, "maxout": 2, "cnn-small": 3}[name]
    for layer in range(k + 1):
        head, tail = split_at_layer(net, layer)
        assert torch.allclose(tail(head(x)), net(x), atol=1e-6)
    with pytest.raises(AdvlabError, match="hidden layers"):
        split_at_layer(net, k + 1)


def test_hidden_layer_goodfellow_perturbs_activations(digits):
    net = _mlp(digits, hidden=[32])
    x, y = digits.x_train[:20], digits.y_train[:20]
    eps = 0.5
    loss, _ = Goodfellow(eps, layer=1, bounds=digits.bounds)(net, x, y, rng.generator(0))
    head, tail = split_at_layer(net, 1)
    h = head(x).detach().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(tail(h), y, reduction="sum"), h)
    expected = 0.5 * F.cross_entropy(tail(h), y) + 0.5 * F.cross_entropy(tail(h + eps * g.sign()), y)
    assert torch.allclose(loss, expected, atol=1e-5)
    trained = _fit(digits, Goodfellow(eps, layer=1, bounds=digits.bounds), epochs=3)
    assert _pgd20(trained, digits)[0] > 0.85


def test_goodfellow_validates_on_fgsm_accuracy(digits):
    net = _mlp(digits)
    objective = Goodfellow(EPS, bounds=digits.bounds)
    x, y = digits.x_test[:100], digits.y_test[:100]
    net.train()
    value = objective.val_metric(net, x, y)
    assert net.training, "the metric restores the model's mode"
    assert value == FGSM()(net.eval(), x, y, eps=[EPS], bounds=digits.bounds).robust_accuracy()[0]


# -- catastrophic overfitting ------------------------------------------------------------------
class Recorder(TrainerHook):
    def __init__(self):
        self.states = {}

    def epoch_end(self, trainer, metrics):
        self.states[trainer.epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_collapse_check_rolls_back_to_the_last_good_epoch_and_stops(digits, tmp_path):
    scores = iter([0.40, 0.55, 0.60, 0.02, 0.7])
    recorder = Recorder()
    check = CollapseCheck(lambda model: next(scores), drop=0.2)
    net = _mlp(digits)
    trainer = Trainer(net, digits.x_train[:300], digits.y_train[:300], digits.x_test[:50], digits.y_test[:50],
                      config=TrainConfig(epochs=5, batch_size=64), objective=FastAT(EPS, bounds=digits.bounds),
                      progress=False, log=quiet, hooks=[recorder, check], run_dir=tmp_path / "r")
    result = trainer.fit()
    assert result.epochs_run == 4 and "catastrophic overfitting in epoch 4" in result.stop_reason
    assert "0.600 to 0.020" in result.stop_reason and "rolled back to epoch 3" in result.stop_reason
    assert [m.get("rolled_back_to_epoch") for m in result.history] == [None, None, None, 3]
    assert [m["check_robust_accuracy"] for m in result.history] == [0.40, 0.55, 0.60, 0.02]
    for k, v in net.state_dict().items():
        assert torch.equal(v, recorder.states[3][k]), k
        assert not torch.equal(v, recorder.states[4][k]) or "mean" in k or "std" in k
    # Resuming a stopped run does not train on past the collapse.
    again = Trainer(_mlp(digits), digits.x_train[:300], digits.y_train[:300], digits.x_test[:50], digits.y_test[:50],
                    config=TrainConfig(epochs=5, batch_size=64), objective=FastAT(EPS, bounds=digits.bounds),
                    progress=False, log=quiet, hooks=[CollapseCheck(lambda m: 1 / 0)], run_dir=tmp_path / "r")
    assert again.fit(resume=True).epochs_run == 4
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, recorder.states[3][k])


def test_train_run_reports_a_rollback_in_the_card(tmp_path, monkeypatch):
    from advlab.defenses import adversarial
    scores = iter([0.5, 0.6, 0.0])
    monkeypatch.setattr(adversarial, "robust_accuracy", lambda *a, **k: next(scores))
    train_run("digits", "mlp", tmp_path / "r", config=TrainConfig(epochs=4, batch_size=64), defense="fgsm-rs",
              defense_kwargs={"eps": EPS}, progress=False, log=quiet, model_kwargs={"hidden": [16]})
    _, card = load_run(tmp_path / "r")
    assert card["epochs"] == 3 and card["metrics"]["rolled_back_to_epoch"] == 2
    assert "catastrophic overfitting" in card["metrics"]["stop_reason"]
    assert card["defense"]["resolved"]["step"] == 1.25


def test_real_collapse_check_passes_on_healthy_training(digits):
    objective = FastAT(EPS, bounds=digits.bounds)
    hooks = objective.hooks(digits.x_test, digits.y_test)
    net = _mlp(digits)
    trainer = Trainer(net, digits.x_train, digits.y_train, config=TrainConfig(epochs=3, batch_size=64),
                      objective=objective, progress=False, log=quiet, hooks=hooks)
    result = trainer.fit()
    assert result.stop_reason is None
    values = [m["check_robust_accuracy"] for m in result.history]
    assert values[-1] > 0.5 and all(0 <= v <= 1 for v in values)
    with pytest.raises(AdvlabError, match="validation"):
        objective.hooks(None, None)


# -- resume --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("pgd", {"steps": 3}), ("fgsm-rs", {}), ("trades", {"steps": 2})])
def test_interrupted_adversarial_training_resumes_to_identical_weights(digits, tmp_path, name, options):
    def make(run_dir, interrupt_at=None):
        objective = build_defense(name, eps=EPS, bounds=digits.bounds, **options)
        calls = {"n": 0}

        def wrapped(model, x, y, g):
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                raise KeyboardInterrupt
            return objective(model, x, y, g)
        hooks = objective.hooks(digits.x_test[:64], digits.y_test[:64])
        return Trainer(_mlp(digits, dropout=0.2), digits.x_train[:400], digits.y_train[:400], digits.x_test[:64],
                       digits.y_test[:64], config=TrainConfig(epochs=3, batch_size=64), objective=wrapped,
                       run_dir=run_dir, progress=False, log=quiet, hooks=hooks)

    full = make(tmp_path / "full")
    full.fit()
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "cut", interrupt_at=7 + 4).fit()  # 7 batches an epoch: inside epoch 2
    resumed = make(tmp_path / "cut")
    resumed.fit(resume=True)
    assert resumed.history == [{**m, "epoch_seconds": r["epoch_seconds"]} for m, r in zip(full.history,
                                                                                         resumed.history)]
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


# -- options ---------------------------------------------------------------------------------------
def test_registry_names_match_the_design():
    assert set(DEFENSES) == {"none", "goodfellow", "pgd", "trades", "fgsm-rs", "noise-sign", "noise-uniform",
                             "l1", "rst", "gaussian", "ibp"}


@pytest.mark.parametrize("name, options, message", [
    ("pgd", {}, "needs a budget"),
    ("pgd", {"eps": 0.1, "stepz": 3}, "no option stepz"),
    ("pgd", {"eps": 0.1, "steps": 0}, "steps must be"),
    ("pgd", {"eps": -1}, "eps must be"),
    ("none", {"eps": 0.1}, "takes no `eps`"),
    ("goodfellow", {"eps": 0.1, "alpha": 2}, "alpha"),
    ("trades", {"eps": 0.1, "beta": -1}, "beta"),
    ("fgsm-rs", {"eps": 0.1, "check_drop": 3}, "check_drop"),
    ("noise-sign", {"eps": 0.1, "norm": "l2"}, "Linf"),
    ("pgd", {"eps": 0.1, "val": "cw"}, "val="),
    ("pgd", {"eps": 0.1, "layer": -1}, "layer"),
    ("rst", {"eps": 0.1}, "labels"),
    ("rst", {"eps": 0.1, "labels": 10, "base": "l1"}, "adversarial defense"),
    ("rst", {"eps": 0.1, "labels": 10, "beta": 1, "base": "pgd"}, "no option beta"),
])
def test_bad_defense_options_are_clear_errors(name, options, message):
    with pytest.raises(AdvlabError, match=message):
        build_defense(name, bounds=(0, 1), **options)


def test_rst_accepts_its_base_defense_options():
    s = build_defense("rst", eps=0.1, labels=10, base="pgd", steps=3, bounds=(0, 1))
    assert s.objective.steps == 3 and s.describe()["base_defense"]["steps"] == 3
    assert math.isclose(build_defense("rst", eps=0.1, labels=10, beta=1).objective.beta, 1.0)


# -- budgets -------------------------------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["goodfellow", "pgd", "trades", "fgsm-rs", "noise-sign", "noise-uniform"]),
       eps=st.floats(0.0, 0.6), seed=st.integers(0, 2**16))
def test_training_inputs_stay_in_the_ball_and_the_bounds(name, eps, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(12, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    with rng.seeded(seed):
        model = build_model("mlp", (1, 4, 4), 3, hidden=[8])
    fed = []
    model.register_forward_pre_hook(lambda m, inp: fed.append(inp[0].detach().clone()))
    loss, logits = build_defense(name, eps=eps, bounds=(0.0, 1.0))(model, x, y, rng.generator(seed))
    assert torch.isfinite(loss) and logits.shape == (12, 3)
    trained_on = fed[-1]  # the objective's own forward: x_adv, or [x; x_adv]
    x_adv = trained_on[-len(x):]
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6
