"""Properties every evaluation attack (APGD, APGD-T, Square, C&W, DeepFool) must have: outputs in
the ball and the bounds and never NaN, for any input shape, budget and box; robust accuracy that
never rises with epsilon; 0% under an unbounded budget; bitwise reproducibility; and the model
left as it was found, even when the attack raises."""

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from advlab import rng
from advlab.attacks import AdvlabWarning, build_attack

from attack_models import tiny_model

FAST = {  # (name, options) small enough for many hypothesis examples
    "apgd-ce-linf": ("apgd-ce", {"norm": "linf", "steps": 5}),
    "apgd-ce-l2": ("apgd-ce", {"norm": "l2", "steps": 5}),
    "apgd-dlr-linf": ("apgd-ce", {"norm": "linf", "steps": 5, "loss": "dlr"}),
    "apgd-t-linf": ("apgd-t", {"norm": "linf", "steps": 4, "n_target_classes": 2}),
    "apgd-t-l2": ("apgd-t", {"norm": "l2", "steps": 4, "n_target_classes": 2}),
    "square-linf": ("square", {"norm": "linf", "n_queries": 15}),
    "square-l2": ("square", {"norm": "l2", "n_queries": 15}),
    "cw": ("cw", {"steps": 5, "binary_search_steps": 2}),
    "deepfool-l2": ("deepfool", {"norm": "l2", "steps": 5}),
    "deepfool-linf": ("deepfool", {"norm": "linf", "steps": 5}),
}


def make(key, **extra):
    name, options = FAST[key]
    return build_attack(name, **{**options, **extra})


@st.composite
def problems(draw):
    """(x, y, eps list, bounds, model): any shape, a box or none, scalar or per-example budgets."""
    if draw(st.booleans()):
        shape = (draw(st.integers(2, 12)),)
    else:
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    n = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    if draw(st.booleans()):
        lo = draw(st.floats(-2, 0))
        bounds = (lo, lo + draw(st.floats(0.1, 3)))
        x = bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, *shape, generator=g)
        # Some pixels sit exactly on the bounds, as in real images.
        x = torch.where(torch.rand(x.shape, generator=g) < 0.2, torch.tensor(bounds[0]), x)
    else:
        bounds = None
        x = 2 * torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    budget = st.floats(0, 2, allow_subnormal=False)
    eps = [draw(budget) for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):  # a per-example budget
        eps[0] = torch.tensor([draw(budget) for _ in range(n)])
    return x, y, eps, bounds, tiny_model(shape, k=5, seed=seed % 7)


def _inside(x, x_adv, norm, eps, bounds):
    """Inside the ball (float tolerance) and the box, and finite."""
    assert torch.isfinite(x_adv).all()
    e = torch.as_tensor(eps, dtype=x.dtype).expand(len(x))
    assert torch.all(norm.distance(x_adv - x) <= e * (1 + 1e-5) + 1e-6)
    if bounds is not None:
        assert x_adv.min() >= bounds[0] - 1e-6 and x_adv.max() <= bounds[1] + 1e-6


@pytest.mark.parametrize("key", sorted(FAST))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_outputs_are_inside_ball_and_bounds_and_finite(key, problem):
    x, y, eps, bounds, model = problem
    attack = make(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvlabWarning)
        result = attack(model, x, y, eps=eps, bounds=bounds)
    assert torch.isfinite(result.logits).all()
    for e, budget in enumerate(eps):
        _inside(x, result.x_adv[e], attack.norm, budget, bounds)
    # The optimiser itself, before the base class projects anything, must respect the budget too.
    g = rng.generator(0)
    budget = torch.as_tensor(eps[0], dtype=x.dtype).expand(len(x)).clone()
    if attack.minimal:
        raw = attack._minimize(model, x, y, None, bounds, g)
        assert torch.isfinite(raw).all()
        if bounds is not None:
            assert raw.min() >= bounds[0] - 1e-6 and raw.max() <= bounds[1] + 1e-6
    else:
        for early_stop in (True, False):
            _inside(x, attack._perturb(model, x, y, budget, None, bounds, g, early_stop), attack.norm, budget, bounds)


LADDER = [0.02, 0.05, 0.1, 0.2, 0.3]


@pytest.mark.parametrize("key", ["apgd-ce-linf", "apgd-t-linf", "square-linf", "cw", "deepfool-l2", "deepfool-linf"])
def test_robust_accuracy_never_rises_with_eps_and_broken_points_stay_broken(key, digits_cnn_short, digits):
    model, d = digits_cnn_short, digits
    x, y = d.x_test[:80], d.y_test[:80]
    eps = [e * 10 for e in LADDER] if key in ("cw", "deepfool-l2") else LADDER
    result = make(key)(model, x, y, eps=eps, bounds=d.bounds)
    acc = result.robust_accuracy()
    assert acc[0] > acc[-1], "the ladder should span robust and broken"
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    correct = result.correct
    assert not (correct[1:] & ~correct[:-1]).any()


@pytest.mark.parametrize("key, eps", [("apgd-ce-linf", 1.0), ("apgd-t-linf", 1.0), ("square-linf", 1.0),
                                      ("cw", math.inf), ("deepfool-l2", math.inf), ("deepfool-linf", math.inf)])
def test_an_unbounded_budget_breaks_every_point_of_a_trained_model(key, eps, digits_cnn_short, digits):
    # Linf eps = 1 on [0, 1] images covers the whole box.
    model, d = digits_cnn_short, digits
    x, y = d.x_test[:80], d.y_test[:80]
    name, options = FAST[key]
    options = {k: v for k, v in options.items() if k in ("norm", "loss")}  # the defaults, but shorter runs:
    options |= {"n_queries": 300} if name == "square" else {"steps": 50} if name in ("cw", "apgd-ce", "apgd-t") else {}
    result = build_attack(name, **options)(model, x, y, eps=[eps], bounds=d.bounds)
    assert result.robust_accuracy() == [0.0]


@pytest.mark.parametrize("key", sorted(FAST))
def test_same_seed_gives_bitwise_identical_examples(key):
    model = tiny_model((2, 5, 5), k=5, seed=1)
    x = torch.rand(12, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 5, (12,), generator=torch.Generator().manual_seed(1))
    eps = [0.5, 1.0] if "l2" in key or key == "cw" else [0.05, 0.2]
    a = make(key, seed=7)(model, x, y, eps=eps, bounds=(0.0, 1.0))
    b = make(key, seed=7)(model, x, y, eps=eps, bounds=(0.0, 1.0))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.logits, b.logits)
    if key.startswith(("apgd", "square")):  # the seed is used: another one starts elsewhere
        c = make(key, seed=8).perturb(model, x, y, eps[0], bounds=(0.0, 1.0))
        assert not torch.equal(c, make(key, seed=7).perturb(model, x, y, eps[0], bounds=(0.0, 1.0)))


class Exploding(nn.Module):
    """Raises on the k-th forward call, after the input checks."""

    def __init__(self, net, k):
        super().__init__()
        self.net, self.k, self.calls = net, k, 0

    def forward(self, v):
        self.calls += 1
        if self.calls == self.k:
            raise RuntimeError("boom")
        return self.net(v)


@pytest.mark.parametrize("key", sorted(FAST))
@pytest.mark.parametrize("k", [3, 5])
def test_model_mode_and_requires_grad_are_restored_when_the_attack_raises(key, k):
    net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 5))
    net[0].weight.requires_grad_(False)
    model = Exploding(net, k).train()
    net[1].eval()  # a mixed state must come back exactly
    before_modes = [m.training for m in model.modules()]
    before_flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net[3](net[2](net[0](x))).argmax(1)  # correct labels and a tiny budget: the attack keeps calling
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvlabWarning)
        with pytest.raises(RuntimeError, match="boom"):
            make(key)(model, x, y, eps=[1e-4])
    assert [m.training for m in model.modules()] == before_modes
    assert [p.requires_grad for p in model.parameters()] == before_flags
