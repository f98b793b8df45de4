"""Attack core: exact answers on linear models, budgets and bounds, monotonicity, hygiene."""

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advlab.attacks import BIM, FGSM, MIFGSM, PGD, AdvlabWarning, build_attack
from advlab.errors import AdvlabError
from advlab.models import build_model
from advlab.threat import L1, L2, Linf, project_l1

NORMS = {"linf": (Linf(), 1), "l2": (L2(), 2)}  # norm -> dual exponent q of ||w||_q


def linear_problem(d=20, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = build_model("logistic", (d,), 2)
    with torch.no_grad():
        model.linear.weight.copy_(torch.randn(1, d, generator=g))
        model.linear.bias.fill_(0.3)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return model, x, y


def signed_margin(model, x, y):
    z = x @ model.weight.detach() + model.bias.detach()
    return torch.where(y == 1, z, -z)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("make", [
    lambda n: FGSM(n),
    lambda n: PGD(n, steps=10, random_start=False),
    lambda n: PGD(n, steps=50, rel_step_size=0.5, random_start=True),
    lambda n: BIM(n, steps=10),
    lambda n: MIFGSM(n, steps=10),
])
def test_linear_margin_drops_by_exactly_eps_times_dual_norm(norm, make):
    model, x, y = linear_problem()
    eps = 0.3
    x_adv = make(norm).perturb(model, x, y, eps)
    drop = signed_margin(model, x, y) - signed_margin(model, x_adv, y)
    expected = eps * model.weight.detach().norm(p=NORMS[norm][1])
    torch.testing.assert_close(drop, expected.expand_as(drop), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_margin_loss_gives_the_same_optimum(loss):
    model, x, y = linear_problem()
    x_adv = PGD("linf", steps=5, random_start=False, loss=loss).perturb(model, x, y, 0.2)
    drop = signed_margin(model, x, y) - signed_margin(model, x_adv, y)
    torch.testing.assert_close(drop, (0.2 * model.weight.detach().abs().sum()).expand_as(drop), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_breaks_exactly_the_points_within_reach(norm):
    """A point is breakable iff its margin < eps * ||w||_q: the robust accuracy is known exactly."""
    model, x, y = linear_problem(n=400)
    eps_list = [0.0, 0.05, 0.1, 0.2, 0.4]
    result = PGD(norm, steps=20)(model, x, y, eps_list)
    m = signed_margin(model, x, y)
    q = NORMS[norm][1]
    for e, robust in zip(eps_list, result.robust_accuracy()):
        expected = (m > e * model.weight.detach().norm(p=q)).float().mean().item()
        assert abs(robust - expected) <= 1 / 400 + 1e-9  # a point exactly on the boundary may go either way


def test_targeted_attack_reaches_its_target():
    torch.manual_seed(0)
    model = build_model("softmax", (10,), 4)
    x = torch.randn(50, 10)
    y = model(x).argmax(1)
    targets = (y + 1) % 4
    result = PGD("linf", steps=50, targeted=True)(model, x, y, [100.0], targets=targets)
    assert result.success_rate()[0] == 1.0
    assert torch.equal(result.predictions[0], targets)


def test_unbounded_budget_drives_a_trained_model_to_zero(digits, trained_digits):
    model = trained_digits("mlp", epochs=15, hidden=[64])
    x, y = digits.x_test[:200], digits.y_test[:200]
    result = PGD("linf", steps=30)(model, x, y, [0.0, 0.02, 0.05, 0.1, 0.2, 1.0], bounds=digits.bounds)
    acc = result.robust_accuracy()
    assert acc[0] > 0.9
    assert all(b <= a for a, b in zip(acc, acc[1:])), acc
    assert acc[2] < acc[0]  # the attack does something at a small budget
    assert acc[-1] == 0.0


def test_epsilon_order_does_not_matter():
    model, x, y = linear_problem(n=100)
    a = PGD("linf", steps=10)(model, x, y, [0.3, 0.1, 0.2])
    b = PGD("linf", steps=10)(model, x, y, [0.1, 0.2, 0.3])
    assert a.robust_accuracy() == [b.robust_accuracy()[i] for i in (2, 0, 1)]
    assert a.eps == [0.3, 0.1, 0.2]


def test_per_example_epsilon():
    model, x, y = linear_problem(n=100)
    eps = torch.linspace(0.0, 0.5, 100)
    result = PGD("linf", steps=10)(model, x, y, [eps])
    assert (result.distances[0] <= eps + 1e-6).all()
    m = signed_margin(model, x, y)
    expected = (m > eps * model.weight.detach().abs().sum()).float().mean().item()
    assert abs(result.robust_accuracy()[0] - expected) <= 0.011


# -- budgets and bounds, every attack, every norm, both shapes ---------------------------------

SHAPES = st.sampled_from([(6,), (1, 4, 4), (3, 2, 2)])


@st.composite
def problems(draw):
    shape = draw(SHAPES)
    n = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    bounded = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g) if bounded else torch.randn(n, *shape, generator=g) * 3
    lo, hi = (0.0, 1.0) if bounded else (None, None)
    eps = draw(st.lists(st.floats(0.0, 2.0, allow_nan=False, width=32), min_size=1, max_size=3))
    return shape, x, (lo, hi) if bounded else None, eps, seed


ATTACK_FACTORIES = [
    lambda norm: FGSM(norm),
    lambda norm: PGD(norm, steps=3, restarts=2),
    lambda norm: BIM(norm, steps=3),
    lambda norm: MIFGSM(norm, steps=3),
    lambda norm: PGD(norm, steps=3, loss="margin"),
    lambda norm: PGD(norm, steps=3, loss="dlr"),
]


@pytest.mark.parametrize("factory", ATTACK_FACTORIES)
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_outputs_stay_inside_ball_and_bounds(factory, norm, problem):
    shape, x, bounds, eps, seed = problem
    torch.manual_seed(seed)
    model = build_model("mlp", shape, 5, hidden=[8])
    y = torch.randint(0, 5, (len(x),), generator=torch.Generator().manual_seed(seed))
    attack = factory(norm)
    result = attack(model, x, y, eps, bounds=bounds)
    dist = result.distances
    assert result.x_adv.shape == (len(eps), *x.shape)
    assert torch.isfinite(result.x_adv).all() and torch.isfinite(result.logits).all()
    for e, d in zip(eps, dist):
        assert (d <= e * (1 + 1e-5) + 1e-6).all(), (e, d.max().item())
    recomputed = torch.stack([attack.norm.distance(xa - x) for xa in result.x_adv])
    torch.testing.assert_close(dist, recomputed)
    if bounds is not None:
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    acc = result.robust_accuracy()
    order = sorted(range(len(eps)), key=lambda i: eps[i])
    assert all(acc[b] <= acc[a] for a, b in zip(order, order[1:]))
    # What is reported is what the model says about the returned examples.
    with torch.no_grad():
        torch.testing.assert_close(model(result.x_adv.flatten(0, 1)).view_as(result.logits), result.logits)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.floats(0.01, 5.0), st.integers(0, 2**16))
def test_l1_projection_is_the_closest_point_in_the_ball(d, eps, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(4, d, generator=g) * 3
    p = project_l1(v, eps)
    assert (p.abs().sum(1) <= eps * (1 + 1e-5)).all()
    inside = v.abs().sum(1) <= eps
    assert torch.equal(p[inside], v[inside])
    # Optimality (KKT): p = sign(v) * max(|v| - theta, 0) for one theta >= 0 per row.
    for row_v, row_p in zip(v[~inside], p[~inside]):
        theta = (row_v.abs() - row_p.abs())[row_p != 0]
        if len(theta):
            assert torch.allclose(theta, theta[0].expand_as(theta), atol=1e-4)
            assert (row_v.abs()[row_p == 0] <= theta[0] + 1e-4).all()


@pytest.mark.parametrize("norm", [Linf(), L2(), L1()])
def test_random_init_is_inside_the_ball_and_spread_out(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2000, 3, 2, 2)
    d = norm.random_init(x, 0.5, g)
    dist = norm.distance(d)
    assert (dist <= 0.5 + 1e-6).all()
    assert dist.mean() > 0.3  # uniform in a 12-d ball: most mass near the surface


# -- determinism and hygiene ----------------------------------------------------------------------

def test_same_seed_gives_bitwise_identical_examples():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 4, 4), 5, hidden=[16])
    x, y = torch.rand(30, 1, 4, 4), torch.randint(0, 5, (30,))
    a = PGD("l2", steps=5, seed=7)(model, x, y, [0.5, 1.0], bounds=(0, 1))
    b = PGD("l2", steps=5, seed=7)(model, x, y, [0.5, 1.0], bounds=(0, 1))
    c = PGD("l2", steps=5, seed=8)(model, x, y, [0.5, 1.0], bounds=(0, 1))
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    # Batching does not change the answer: randomness is drawn per batch from (seed, batch, eps).
    d = PGD("l2", steps=5, seed=7, batch_size=30)(model, x, y, [0.5, 1.0], bounds=(0, 1))
    assert torch.equal(a.x_adv, d.x_adv)


def test_global_rng_is_untouched():
    model, x, y = linear_problem()
    state = torch.random.get_rng_state()
    PGD("linf", steps=3)(model, x, y, [0.1])
    assert torch.equal(state, torch.random.get_rng_state())


class Exploding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.drop = torch.nn.Dropout(0.1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 3:
            raise RuntimeError("boom")
        return self.drop(self.lin(x))


def test_mode_and_requires_grad_restored_even_when_the_attack_raises():
    model = Exploding()
    model.train()
    model.lin.bias.requires_grad_(False)
    x = torch.rand(5, 4)
    with torch.no_grad():
        y = model.lin(x).argmax(1)  # every point starts correct, so the attack runs the model until it explodes
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvlabWarning)
        PGD("linf", steps=5)(model, x, y, [0.1])
    assert model.training
    assert model.lin.weight.requires_grad and not model.lin.bias.requires_grad


def test_train_mode_warns_and_attacks_in_eval_mode():
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, hidden=[32], dropout=0.9)
    model.train()
    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    with pytest.warns(AdvlabWarning, match="train mode"):
        a = PGD("linf", steps=3)(model, x, y, [0.1])
    assert model.training
    model.eval()
    b = PGD("linf", steps=3)(model, x, y, [0.1])
    assert torch.equal(a.x_adv, b.x_adv)  # dropout was off during the attack


# -- bad input ------------------------------------------------------------------------------------

class Probabilities(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).softmax(1)


@pytest.mark.parametrize("case, message", [
    ("nan", "NaN or inf"),
    ("labels", "labels must be in 0..2"),
    ("negative_eps", "epsilon must be >= 0"),
    ("shape", "labels must have shape"),
    ("dtype", "floating-point"),
    ("empty", "empty batch"),
    ("bounds", "outside the bounds"),
    ("targets_missing", "targeted"),
    ("eps_string", "epsilon must be a number"),
])
def test_bad_input_gets_a_clear_error(case, message):
    model = torch.nn.Linear(4, 3)
    x, y, eps, kwargs = torch.rand(5, 4), torch.zeros(5, dtype=torch.long), [0.1], {}
    attack = PGD("linf", steps=2)
    if case == "nan":
        x[2, 1] = float("nan")
    elif case == "labels":
        y[0] = 3
    elif case == "negative_eps":
        eps = [0.1, -0.1]
    elif case == "shape":
        y = torch.zeros(4, dtype=torch.long)
    elif case == "dtype":
        x = torch.ones(5, 4, dtype=torch.long)
    elif case == "empty":
        x, y = x[:0], y[:0]
    elif case == "bounds":
        kwargs["bounds"] = (0.0, 0.5)
    elif case == "targets_missing":
        attack = PGD("linf", steps=2, targeted=True)
    elif case == "eps_string":
        eps = ["0.1"]
    with pytest.raises(AdvlabError, match=message):
        attack(model, x, y, eps, **kwargs)


def test_probability_outputs_warn():
    with pytest.warns(AdvlabWarning, match="probabilities"):
        PGD("linf", steps=2)(Probabilities(), torch.rand(5, 4), torch.zeros(5, dtype=torch.long), [0.1])


def test_build_attack_rejects_unknown_names_and_options():
    assert build_attack("pgd", norm="l2", steps=7).steps == 7
    with pytest.raises(AdvlabError, match="choose one of"):
        build_attack("bogus")
    with pytest.raises(AdvlabError, match="no option stepz"):
        build_attack("pgd", stepz=3)
    with pytest.raises(AdvlabError, match="unknown norm"):
        build_attack("pgd", norm="l3")


def test_a_budget_that_shrinks_to_zero_returns_the_clean_point_and_its_logits():
    """Per-example budgets need not grow: a point whose budget drops to 0 starts over from the clean
    input, and its reported logits are the clean ones, not those of the larger budget's example."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).eval()
    x = torch.rand(6, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    first = torch.full((6,), 3.0)
    then = torch.tensor([9.0, 0.0, 9.0, 0.0, 9.0, 0.0])  # a larger mean, so attacked second
    r = PGD("linf", steps=10)(model, x, y, [first, then], bounds=None)
    assert (~r.correct[0]).all()  # everything breaks at the first budget
    shrinking = then
    zero = shrinking == 0
    assert torch.equal(r.x_adv[1][zero], x[zero])
    assert torch.equal(r.logits[1][zero], r.clean_logits[zero])
    assert (r.distances[1][zero] == 0).all() and r.correct[1][zero].all()
