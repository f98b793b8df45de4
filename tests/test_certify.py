"""Certified robustness (issue 21): tests that fail when a certificate is wrong.

- randomized smoothing against the closed form of a linear classifier: the smoothed prediction is the
  base one, the exact radius is the distance to the hyperplane, every certified radius is at most that
  distance, and the gap closes as n grows;
- interval bounds contain the outputs of thousands of random points of the ball (hypothesis), and
  every IBP-certified point survives PGD-100 with restarts and APGD (one break fails);
- certified accuracy is never above the attacked robust accuracy on the same points and eps.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import norm as normal
from torch import nn

from advlab.certify import (certify_ibp, certify_smoothing, check_ibp_supported, input_box, interval_bounds,
                            margin_lower_bounds, predict_smoothing)
from advlab.errors import AdvlabError
from advlab.models import build_model
from advlab.models.linear import LogisticRegression
from advlab.models.wrappers import Normalized


# -- randomized smoothing: a linear classifier has a closed form ------------------------------------
D, SIGMA = 10, 0.5


def linear_model(seed: int = 0) -> tuple[LogisticRegression, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    model = LogisticRegression((D,), 2)
    w = torch.randn(D, generator=g)
    b = 0.3
    with torch.no_grad():
        model.linear.weight.copy_(w.view(1, -1))
        model.linear.bias.fill_(b)
    return model.eval(), w, b


def points_at_distances(w: torch.Tensor, b: float, distances: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Points whose signed distance to the hyperplane w.x + b = 0 is `distances` (random along the plane)."""
    g = torch.Generator().manual_seed(seed)
    u = w / w.norm()
    base = torch.randn(len(distances), D, generator=g)
    base = base - (base @ u).unsqueeze(1) * u - (b / w.norm()) * u  # on the hyperplane
    return base + distances.unsqueeze(1) * u


def distance(w, b, x) -> torch.Tensor:
    return ((x @ w + b) / w.norm()).abs()


def test_smoothing_radius_never_exceeds_the_distance_to_the_hyperplane_and_approaches_it():
    model, w, b = linear_model()
    signed = torch.linspace(-2 * SIGMA, 2 * SIGMA, 24)
    signed = signed[signed.abs() > 0.15 * SIGMA]
    x = points_at_distances(w, b, signed)
    base = model(x).argmax(1)
    dist = distance(w, b, x).double()
    assert torch.allclose(dist.float(), signed.abs(), atol=1e-5)
    alpha = 1e-4  # per point; the union over all points and n is < 1% a priori, and the seed is fixed
    shortfall = []
    for n in (1_000, 10_000, 100_000):
        cert = certify_smoothing(model, x, base, SIGMA, n0=100, n=n, alpha=alpha, batch_size=20_000, seed=3,
                                 progress=False)
        kept = cert.prediction >= 0
        # the smoothed prediction is the base one wherever it does not abstain
        assert (cert.prediction[kept] == base[kept]).all()
        # never more than the exact radius
        assert (cert.radius <= dist + 1e-12).all(), (cert.radius - dist).max()
        # the exact p_A is Phi(d / sigma); its lower bound must lie below it (the same statement)
        assert (cert.extra["p_lower"] <= torch.from_numpy(normal.cdf((dist / SIGMA).numpy())) + 1e-12).all()
        shortfall.append(((dist - cert.radius) / SIGMA).mean().item())
    assert shortfall[0] > shortfall[1] > shortfall[2]
    # n = 1e5: the bound sits about 3.7 standard errors below p_A; for d <= 2 sigma that is < 0.06 sigma of radius
    assert shortfall[2] < 0.06, shortfall


def test_smoothing_radius_is_sigma_times_the_inverse_normal_of_the_clopper_pearson_bound():
    model, w, b = linear_model()
    x = points_at_distances(w, b, torch.tensor([50.0, -50.0]))  # far away: every noisy copy agrees
    base = model(x).argmax(1)
    n, alpha = 500, 0.01
    cert = certify_smoothing(model, x, base, SIGMA, n0=10, n=n, alpha=alpha, progress=False)
    assert (cert.extra["count_top"] == n).all() and (cert.prediction == base).all()
    # all n successes: the one-sided Clopper-Pearson lower bound is alpha ** (1 / n)
    expected = SIGMA * normal.ppf(alpha ** (1 / n))
    assert cert.radius.tolist() == pytest.approx([expected, expected], rel=1e-9)


def test_smoothing_abstains_on_the_boundary_and_agrees_with_the_base_model_far_from_it():
    model, w, b = linear_model()
    x = points_at_distances(w, b, torch.tensor([0.0, 0.0, 0.0, 3.0, -3.0]))
    base = model(x).argmax(1)
    cert = certify_smoothing(model, x, base, SIGMA, n0=50, n=2000, alpha=0.001, progress=False)
    assert (cert.prediction[:3] == -1).all() and (cert.radius[:3] == 0).all()
    assert (cert.prediction[3:] == base[3:]).all() and (cert.radius[3:] > SIGMA).all()
    pred = predict_smoothing(model, x, SIGMA, n=2000, alpha=0.001)
    assert (pred[3:] == base[3:]).all() and (pred[:3] == -1).all()


def test_smoothing_is_seeded_per_point_and_resumes_to_the_same_numbers(tmp_path):
    model, w, b = linear_model()
    x = points_at_distances(w, b, torch.linspace(-1, 1, 9))
    y = model(x).argmax(1)
    kw = dict(n0=20, n=300, alpha=0.01, batch_size=40, seed=5, progress=False)
    full = certify_smoothing(model, x, y, SIGMA, **kw)
    again = certify_smoothing(model, x, y, SIGMA, **kw)
    assert torch.equal(full.radius, again.radius) and torch.equal(full.prediction, again.prediction)
    # a point's result does not depend on the other points: the first 4, then all 9 from the saved state
    part = certify_smoothing(model, x[:4], y[:4], SIGMA, state_dir=tmp_path, **kw)
    assert torch.equal(part.radius, full.radius[:4])
    resumed = certify_smoothing(model, x, y, SIGMA, state_dir=tmp_path, **kw)
    assert torch.equal(resumed.radius, full.radius) and torch.equal(resumed.prediction, full.prediction)
    other_seed = certify_smoothing(model, x, y, SIGMA, **{**kw, "seed": 6})
    assert not torch.equal(other_seed.extra["count_top"], full.extra["count_top"])


def test_smoothing_leaves_the_model_mode_and_the_global_rng_alone():
    model, w, b = linear_model()
    model.train()
    x = points_at_distances(w, b, torch.tensor([0.5, -0.5]))
    state = torch.random.get_rng_state()
    certify_smoothing(model, x, torch.tensor([1, 0]), SIGMA, n0=10, n=50, progress=False)
    assert model.training and torch.equal(state, torch.random.get_rng_state())


# -- IBP: bounds contain every point of the ball ------------------------------------------------------
def small_net(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 4))
    elif kind == "cnn":
        net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(3, 4, 2, stride=1), nn.LeakyReLU(0.1), nn.AvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 4))
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.3, 2.0)
        bn.weight.data.uniform_(-2, 2)  # a negative scale flips the box: |scale| must be used
    else:  # advlab's zoo through Normalized
        net = build_model(kind, (1, 4, 4), 4, {"mean": [0.4], "std": [0.3]},
                          **({"width": 1} if kind == "cnn-small" else {}))
    return net.double().eval()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["mlp", "cnn", "cnn-small", "softmax", "maxout"]), seed=st.integers(0, 10_000),
       eps=st.floats(0.0, 0.3), clip=st.booleans())
def test_interval_bounds_contain_the_outputs_of_thousands_of_points_of_the_ball(kind, seed, eps, clip):
    net = small_net(kind, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (3,), generator=g)
    bounds = (0.0, 1.0) if clip else None
    box = input_box(x, eps, bounds)
    lower, upper = interval_bounds(net, box.lower, box.upper)
    margins = margin_lower_bounds(net, box, y)
    k = 700  # per point: uniform draws plus corners of the box
    u = torch.rand(k, *x.shape, generator=g, dtype=torch.float64)
    u[: k // 2] = u[: k // 2].round()   # vertices, where ReLU networks take their extremes
    pts = box.lower + u * (box.upper - box.lower)   # (k, 3, 1, 4, 4)
    with torch.no_grad():
        z = net(pts.flatten(0, 1)).view(k, 3, -1)
    tol = 1e-9 * (1 + z.abs().max())
    assert (z >= lower - tol).all() and (z <= upper + tol).all()
    true_margin = z.gather(2, y.view(1, 3, 1).expand(k, 3, 1)) - z          # (k, 3, K)
    assert (margins.gather(1, y.view(-1, 1)) == math.inf).all()  # no bound needed against the label itself
    finite = margins.masked_fill(margins == math.inf, -math.inf)
    assert (true_margin >= finite.unsqueeze(0) - tol).all()


def test_ibp_is_exact_for_a_linear_model_without_bounds():
    torch.manual_seed(0)
    model = build_model("softmax", (6,), 3).eval()
    x, eps = torch.rand(50, 6), 0.05
    y = model(x).argmax(1)
    cert = certify_ibp(model, x, y, eps, progress=False)
    w, b = model.linear.weight.double(), model.linear.bias.double()
    z = x.double() @ w.T + b
    # the optimal Linf attack lowers the margin z_y - z_j by exactly eps * ||w_y - w_j||_1
    worst = torch.stack([(z[i, y[i]] - z[i] - eps * (w[y[i]] - w).abs().sum(1)) for i in range(50)])
    worst[torch.arange(50), y] = math.inf
    exact = worst.amin(1)
    assert torch.allclose(cert.extra["margin_lower_bound"].double(), exact, atol=1e-5)
    tol = 1e-4 * z.abs().amax(1).clamp_min(1)
    assert torch.equal(cert.radius > 0, exact > tol)


def test_unsupported_layers_are_named():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.GELU()), nn.Linear(4, 2))
    with pytest.raises(AdvlabError, match=r"layer 2\.1 \(torch\.nn\.modules\.activation\.GELU\).*`method='smoothing'`"):
        check_ibp_supported(net)
    with pytest.raises(AdvlabError, match=r"RBFNet"):
        check_ibp_supported(build_model("rbf", (4,), 2))

    class MyLinear(nn.Linear):  # a subclass may compute anything: refused, not treated as Linear
        def forward(self, x):
            return super().forward(x) ** 2

    with pytest.raises(AdvlabError, match=r"layer 0 .*MyLinear"):
        check_ibp_supported(nn.Sequential(MyLinear(4, 2)))
    hooked = nn.Sequential(nn.Linear(4, 2))
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(AdvlabError, match="forward hooks"):
        check_ibp_supported(hooked)
    check_ibp_supported(Normalized(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), [0.5], [0.2]))


# -- every certified point survives strong attacks ------------------------------------------------------
@pytest.fixture(scope="module")
def ibp_digits(tmp_path_factory):
    """An MLP IBP-trained on digits (a few seconds) and the data."""
    from advlab.defenses import TrainConfig, train_run
    from advlab.runs import load_run
    from advlab.data import load_dataset

    out = tmp_path_factory.mktemp("ibp") / "run"
    train_run("digits", "mlp", out, defense="ibp", defense_kwargs={"eps": 0.1},
              model_kwargs={"hidden": [64]}, config=TrainConfig(epochs=12, lr=3e-3), overwrite=True,
              progress=False)
    model, _ = load_run(out)
    return out, model, load_dataset("digits")


def test_every_ibp_certified_point_survives_pgd100_with_restarts_and_apgd(ibp_digits):
    from advlab.attacks import APGD, PGD

    _, model, data = ibp_digits
    x, y = data.test_subset(None)
    eps = 0.1
    cert = certify_ibp(model, x, y, eps, bounds=data.bounds, progress=False)
    ok = cert.certified(eps)
    assert ok.sum() >= 60, "IBP training should certify a good share of digits at eps 0.1"
    xs, ys = x[ok], y[ok]
    for attack in (PGD("linf", steps=100, restarts=3, rel_step_size=0.1, seed=1),
                   PGD("linf", steps=100, loss="margin", restarts=2, seed=2),
                   APGD("linf", steps=100, restarts=2, loss="ce", seed=3),
                   APGD("linf", steps=100, loss="dlr", seed=4)):
        result = attack(model, xs, ys, eps=[eps], bounds=data.bounds)
        broken = int((~result.correct[0]).sum())
        assert broken == 0, f"{type(attack).__name__} broke {broken} certified point(s)"
    # the sanity check of the test itself: the same attacks do break points that are not certified
    weak = PGD("linf", steps=100, restarts=2, seed=1)(model, x[~ok], y[~ok], eps=[eps], bounds=data.bounds)
    assert (~weak.correct[0]).sum() > 0


def test_certified_accuracy_is_never_above_attacked_robust_accuracy(ibp_digits, tmp_path, capsys):
    import json

    from advlab.cli import main

    run, model, data = ibp_digits
    out = tmp_path / "eval"
    assert main(["evaluate", "--run", str(run), "--eps", "0.02,0.05,0.1,0.15", "--suite", "fast", "--n", "200",
                 "--no-checks", "--certify", "--out", str(out), "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["certify"]["method"] == "ibp" and record["certify"]["contradictions"] == 0
    certified = [r["certified_accuracy"] for r in record["results"]]
    for r in record["results"]:
        assert r["certified_accuracy"] <= r["robust_accuracy"] and r["certified_but_broken"] == 0
        lo, hi = r["certified_ci95"]
        assert lo <= r["certified_accuracy"] <= hi
        assert r["gap"] == pytest.approx(r["robust_accuracy"] - r["certified_accuracy"])
    assert certified == sorted(certified, reverse=True) and certified[0] > 0
    # the numbers are those of certify_ibp on the same points
    x, y = data.test_subset(200)
    direct = certify_ibp(model, x, y, 0.1, bounds=data.bounds, progress=False).accuracy_at(0.1)
    assert record["results"][2]["certified_accuracy"] == pytest.approx(direct)
    saved = json.loads((out / "result.json").read_text())
    assert saved["results"][0]["certified_accuracy"] == record["results"][0]["certified_accuracy"]
