"""CROWN and alpha-CROWN (issue 26): tests that fail when a bound is wrong.

- the bounds contain the outputs of thousands of random points of the ball (uniform, vertices, the
  sphere) and of PGD's adversarial points, on MLPs, a CNN with BatchNorm, max and average pooling, the
  zoo's cnn-small behind Normalized, and residual blocks, for Linf and L2 balls with and without the
  data's bounds (hypothesis); CROWN is never looser than IBP on any of them;
- the same check fails when a ReLU relaxation is made wrong on purpose (the tester is tested);
- CROWN is exact for a linear model (eps ||w_y - w_j||_1 for Linf, ||.||_2 for L2), and the L2-box dual
  agrees with a grid search;
- on a normally trained digits MLP CROWN certifies strictly more than IBP, alpha-CROWN at least as
  much as CROWN, and every certified point survives PGD with restarts and APGD.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import advlab.certify.crown as crown_module
from advlab.certify import (certify_crown, certify_ibp, check_crown_supported, crown_bounds, crown_margin_bounds,
                            input_box, interval_bounds, margin_lower_bounds)
from advlab.errors import AdvlabError
from advlab.models import build_model
from advlab.models.resnet import BasicBlock, PreActBlock

K = 4


def small_net(kind: str, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    if kind == "mlp":
        net, shape = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(),
                                   nn.Linear(10, K)), (1, 4, 4)
    elif kind == "cnn":
        net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(3, 4, 2, stride=1), nn.ReLU(), nn.AvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, K))
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.3, 2.0)
        bn.weight.data.uniform_(-2, 2)  # a negative scale flips the box
        shape = (1, 4, 4)
    elif kind == "cnn-small":  # the zoo's, behind Normalized: max-pooling over real windows
        net, shape = build_model("cnn-small", (1, 4, 4), K, {"mean": [0.4], "std": [0.3]}, width=1, hidden=8), (1, 4, 4)
    elif kind in ("basic-block", "preact-block"):
        block = BasicBlock(2, 3, 2) if kind == "basic-block" else PreActBlock(2, 3, 2)
        net, shape = nn.Sequential(block, nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3, K)), (2, 4, 4)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(-1.5, 1.5)
                m.bias.data.uniform_(-0.3, 0.3)
    else:
        raise ValueError(kind)
    return net.double().eval(), shape


def ball_points(x: torch.Tensor, eps: float, norm: str, bounds, k: int, g: torch.Generator) -> torch.Tensor:
    """(k, N, ...) points of the ball intersected with the bounds: Linf uniform and vertices; L2 on the sphere
    and inside (clipping to the bounds moves a point towards x, so it stays in the ball)."""
    shape = (k, *x.shape)
    if norm == "linf":
        u = torch.rand(shape, generator=g, dtype=x.dtype)
        u[: k // 2] = u[: k // 2].round()                       # vertices, where ReLU networks take their extremes
        pts = x + eps * (2 * u - 1)
    else:
        d = torch.randn(shape, generator=g, dtype=x.dtype)
        d = d / d.flatten(2).norm(dim=-1).view(k, len(x), *[1] * (x.ndim - 1))
        r = torch.ones(k, dtype=x.dtype)
        r[k // 2:] = torch.rand(k - k // 2, generator=g, dtype=x.dtype)
        pts = x + eps * r.view(-1, *[1] * x.ndim) * d
    return pts if bounds is None else pts.clamp(*bounds)


def pgd_points(net, x, y, eps, norm, bounds, seed) -> torch.Tensor:
    """(2, N, ...): PGD's examples (on a float32 copy) against the label's margin and the cross-entropy,
    brought back inside the float64 ball."""
    import copy

    from advlab.attacks import PGD
    from advlab.threat import enforce, get_norm
    net32 = copy.deepcopy(net).float()
    out = []
    for loss in ("margin", "ce"):
        r = PGD(norm, steps=20, loss=loss, restarts=1, seed=seed)(net32, x.float(), y, eps=[eps], bounds=bounds)
        out.append(enforce(x, r.x_adv[0].to(x.dtype), get_norm(norm), eps * (1 - 1e-9), bounds))
    return torch.stack(out)


def violations(net, x, y, eps, norm, bounds, method, seed, k=600, steps=8) -> dict[str, int]:
    """How many sampled or adversarial points of the ball fall outside CROWN's bounds (logits and margins),
    and on how many (point, class) pairs CROWN is looser than IBP."""
    g = torch.Generator().manual_seed(seed)
    lower, upper = crown_bounds(net, x, eps, norm=norm, bounds=bounds, method=method, steps=steps)
    margins = crown_margin_bounds(net, x, y, eps, norm=norm, bounds=bounds, method=method, steps=steps)
    pts = torch.cat([ball_points(x, eps, norm, bounds, k, g), pgd_points(net, x, y, eps, norm, bounds, seed)])
    with torch.no_grad():
        z = net(pts.flatten(0, 1)).view(len(pts), len(x), -1)            # (k, N, K)
    tol = 1e-9 * (1 + z.abs().max())
    true_margin = z.gather(2, y.view(1, -1, 1).expand(len(pts), -1, 1)) - z
    finite = margins.masked_fill(margins == math.inf, -math.inf)
    box = input_box(x, eps, bounds)          # IBP's box (for L2: the box around the ball)
    ilo, ihi = interval_bounds(net, box.lower, box.upper)
    imargin = margin_lower_bounds(net, box, y)
    return {"logits": int((z < lower - tol).sum() + (z > upper + tol).sum()),
            "margins": int((true_margin < finite.unsqueeze(0) - tol).sum()),
            "looser_than_ibp": int((lower < ilo - tol).sum() + (upper > ihi + tol).sum() +
                                   (finite < imargin.masked_fill(imargin == math.inf, -math.inf) - tol).sum())}


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["mlp", "cnn", "cnn-small", "basic-block", "preact-block"]), seed=st.integers(0, 10_000),
       norm=st.sampled_from(["linf", "l2"]), eps=st.floats(0.0, 0.4), clip=st.booleans(),
       method=st.sampled_from(["crown", "alpha-crown"]))
def test_crown_bounds_contain_random_and_adversarial_points_and_are_never_looser_than_ibp(kind, seed, norm, eps,
                                                                                         clip, method):
    net, shape = small_net(kind, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *shape, generator=g).double()
    y = torch.randint(0, K, (3,), generator=g)
    eps = eps if norm == "linf" else 4 * eps
    found = violations(net, x, y, eps, norm, (0.0, 1.0) if clip else None, method, seed,
                       steps=3 if kind == "cnn-small" else 8)  # its 32 and 64 channels make a step slow
    assert found == {"logits": 0, "margins": 0, "looser_than_ibp": 0}, (kind, norm, method, found)


@pytest.mark.parametrize("broken", ["upper_slope", "lower_slope"])
def test_a_wrong_relu_relaxation_makes_the_soundness_check_fail(broken, monkeypatch):
    """The tester tested: halve the chord's slope (it no longer lies above the ReLU), or give the lower line
    a slope outside [0, 1] (-1: it lies above the ReLU left of 0); the same check as above must then find
    points outside the bounds."""
    if broken == "upper_slope":
        right = crown_module._relu_relaxation

        def wrong(lower, upper):
            unstable, active, slope, icpt = right(lower, upper)
            return unstable, active, torch.where(unstable, slope / 2, slope), torch.where(unstable, icpt / 2, icpt)
        monkeypatch.setattr(crown_module, "_relu_relaxation", wrong)
    else:
        monkeypatch.setattr(crown_module, "default_alpha", lambda lower, upper: torch.full_like(upper, -1.0))
    found = {"logits": 0, "margins": 0}
    for seed in range(4):
        net, shape = small_net("mlp", seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(3, *shape, generator=g).double()
        y = torch.randint(0, K, (3,), generator=g)
        for eps in (0.1, 0.3):
            v = violations(net, x, y, eps, "linf", (0.0, 1.0), "crown", seed)
            found["logits"] += v["logits"]
            found["margins"] += v["margins"]
    assert found["logits"] > 0 and found["margins"] > 0, found


def test_max_pool_relaxation_holds_for_every_point_of_random_windows():
    g = torch.Generator().manual_seed(0)
    pool = nn.MaxPool2d(2)
    for trial in range(50):
        lower = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
        width = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * (3 if trial % 2 else 0.2)
        upper = lower + width
        low_coef, up_coef, up_bias, k, s = crown_module._maxpool_relaxation(pool, lower, upper)
        pts = lower + torch.rand(400, *lower.shape, generator=g, dtype=torch.float64) * width
        pts[:200] = lower + pts[:200].sub(lower).div(width).round() * width     # corners
        out = pool(pts.flatten(0, 1)).view(400, 2, 3, -1)                       # (P, N, C, L)
        win = torch.nn.functional.unfold(pts.flatten(0, 1), k, stride=s).view(400, 2, 3, 4, -1)
        below = (low_coef * win).sum(3)
        above = (up_coef * win).sum(3) + up_bias
        assert (below <= out + 1e-12).all() and (out <= above + 1e-12).all(), trial


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_crown_is_exact_for_a_linear_model_without_bounds(norm):
    torch.manual_seed(0)
    model = build_model("softmax", (6,), 3).eval()
    x, eps = torch.rand(40, 6), 0.07
    y = model(x).argmax(1)
    w, b = model.linear.weight.double(), model.linear.bias.double()
    z = x.double() @ w.T + b
    diff = w[y].unsqueeze(1) - w.unsqueeze(0)                                  # (N, K, D)
    dual = diff.abs().sum(-1) if norm == "linf" else diff.norm(dim=-1)        # ||w_y - w_j||_1 or _2
    exact = z.gather(1, y.view(-1, 1)) - z - eps * dual
    exact[torch.arange(40), y] = math.inf
    for method in ("crown", "alpha-crown"):
        bound = crown_margin_bounds(model, x, y, eps, norm=norm, method=method)
        assert torch.allclose(bound[exact.isfinite()], exact[exact.isfinite()], rtol=0, atol=1e-10)
        cert = certify_crown(model, x, y, eps, norm=norm, method=method, progress=False)
        assert torch.allclose(cert.extra["margin_lower_bound"].double(), exact.amin(1), atol=1e-5)
    lower, upper = crown_bounds(model, x, eps, norm=norm)
    spread = eps * (w.abs().sum(1) if norm == "linf" else w.norm(dim=1))
    assert torch.allclose(lower, z - spread, atol=1e-10) and torch.allclose(upper, z + spread, atol=1e-10)


def test_the_l2_box_dual_is_a_lower_bound_and_nearly_the_minimum():
    """min a.t over {|t - x0|_2 <= eps} intersected with [0, 1]^2, against a fine grid of that set."""
    g = torch.Generator().manual_seed(1)
    side = torch.linspace(0, 1, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)                                    # (P, 2)
    for _ in range(40):
        x0 = torch.rand(1, 1, 2, generator=g, dtype=torch.float64)
        a = torch.randn(1, 1, 2, generator=g, dtype=torch.float64)
        eps = float(torch.rand((), generator=g)) * 0.8
        inside = (grid - x0[0, 0]).norm(dim=1) <= eps
        if not inside.any():
            continue
        brute = (grid[inside] @ a[0, 0]).min()
        bound = crown_module._l2_box_dual(a, x0, torch.tensor([[eps]], dtype=torch.float64),
                                          torch.zeros(1, 1, 2, dtype=torch.float64),
                                          torch.ones(1, 1, 2, dtype=torch.float64))
        assert float(bound) <= float(brute) + 1e-12
        assert float(bound) >= float(brute) - 2e-3 * (1 + float(a.norm()))   # the grid's spacing


def test_unsupported_layers_are_named():
    with pytest.raises(AdvlabError, match=r"CROWN cannot go through layer 2 \(torch\.nn\.modules\.activation\.Tanh\)"):
        check_crown_supported(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)))
    with pytest.raises(AdvlabError, match=r"alpha-CROWN cannot go through layer 0 .*padding"):
        check_crown_supported(nn.Sequential(nn.MaxPool2d(2, padding=1), nn.Flatten(), nn.Linear(9, 2)), "alpha-crown")
    with pytest.raises(AdvlabError, match=r"exact verification cannot go through .*RBFNet"):
        check_crown_supported(build_model("rbf", (4,), 2), "exact")
    with pytest.raises(AdvlabError, match=r"Maxout"):
        check_crown_supported(build_model("maxout", (4,), 2, units=3, pieces=2))
    with pytest.raises(AdvlabError, match=r"`norm` must be one of linf, l2"):
        crown_bounds(nn.Sequential(nn.Linear(2, 2)), torch.zeros(1, 2), 0.1, norm="l1")
    check_crown_supported(build_model("resnet18", (1, 8, 8), 3, width=2))
    check_crown_supported(build_model("wrn", (1, 8, 8), 3, depth=10, width=1))


# -- a trained model: tighter than IBP, and every certificate survives strong attacks --------------------
@pytest.fixture(scope="module")
def digits_mlp(trained_digits, digits):
    model = trained_digits("mlp", epochs=10, hidden=(64,))
    x, y = digits.test_subset(150)
    return model, x, y, digits.bounds


def test_crown_certifies_strictly_more_than_ibp_and_alpha_crown_at_least_as_much(digits_mlp):
    model, x, y, bounds = digits_mlp
    eps = 0.03
    ibp = certify_ibp(model, x, y, eps, bounds=bounds, progress=False)
    crown = certify_crown(model, x, y, eps, bounds=bounds, progress=False)
    alpha = certify_crown(model, x, y, eps, bounds=bounds, method="alpha-crown", progress=False)
    assert crown.accuracy_at(eps) > ibp.accuracy_at(eps) + 0.2, (crown.accuracy_at(eps), ibp.accuracy_at(eps))
    assert (crown.extra["margin_lower_bound"] >= ibp.extra["margin_lower_bound"] - 1e-5).all()
    assert (alpha.extra["margin_lower_bound"] >= crown.extra["margin_lower_bound"] - 1e-5).all()
    assert (alpha.extra["margin_lower_bound"] > crown.extra["margin_lower_bound"] + 1e-6).float().mean() > 0.1
    assert (alpha.certified(eps) >= crown.certified(eps)).all()
    assert crown.record()["method"] == "crown" and crown.params["norm"] == "linf"


@pytest.mark.parametrize("norm, eps, method", [("linf", 0.05, "alpha-crown"), ("l2", 0.3, "crown")])
def test_every_crown_certified_point_survives_pgd_with_restarts_and_apgd(digits_mlp, norm, eps, method):
    from advlab.attacks import APGD, PGD

    model, x, y, bounds = digits_mlp
    x, y = x[:80], y[:80]
    cert = certify_crown(model, x, y, eps, norm=norm, bounds=bounds, method=method, progress=False)
    ok = cert.certified(eps)
    assert ok.sum() >= 15, int(ok.sum())
    for attack in (PGD(norm, steps=100, restarts=3, rel_step_size=0.1, seed=1),
                   PGD(norm, steps=100, loss="margin", restarts=2, seed=2),
                   APGD(norm, steps=100, restarts=2, loss="ce", seed=3),
                   APGD(norm, steps=100, loss="dlr", seed=4)):
        result = attack(model, x[ok], y[ok], eps=[eps], bounds=bounds)
        assert int((~result.correct[0]).sum()) == 0, f"{type(attack).__name__} broke a certified point"
    # the attacks do break some of the points that are not certified (they are not idle)
    weak = PGD(norm, steps=100, restarts=2, seed=1)(model, x[~ok], y[~ok], eps=[eps], bounds=bounds)
    assert (~weak.correct[0]).sum() > 0
