"""Square attack: exact answers on linear models, query accounting, and no use of gradients."""

import math

import pytest
import torch
from torch import nn

from advlab.attacks import Square, build_attack
from advlab.errors import AdvlabError
from advlab.models import build_model
from advlab.rng import seeded

from attack_models import hyperplane_distance, logistic, margin_of


@pytest.mark.parametrize("shape", [(20,), (1, 6, 6)])
def test_linf_reaches_the_optimal_vertex_on_a_linear_model(shape):
    with seeded(0):
        model = build_model("logistic", shape, 2).eval()
    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(1))
    y = (model(x)[:, 1] > 0).long()
    eps = 0.1
    # Without early stopping Square keeps lowering the margin past the boundary; once the windows
    # are single pixels it sets every coordinate to the optimal sign: x - eps * s * sign(w).
    x_adv = Square("linf", n_queries=1000).perturb(model, x, y, eps)
    drop = margin_of(model, x, y) - margin_of(model, x_adv, y)
    optimum = eps * model.weight.detach().norm(p=1)
    assert torch.allclose(drop, optimum.expand_as(drop), rtol=1e-5, atol=1e-5)


def test_l2_gets_most_of_the_optimal_margin_drop_on_a_linear_model():
    model, x, y, _ = logistic()
    eps = 0.1
    x_adv = Square("l2", n_queries=1000).perturb(model, x, y, eps)
    ratio = (margin_of(model, x, y) - margin_of(model, x_adv, y)) / (eps * model.weight.detach().norm())
    # The L2 proposals are fixed +-bump patterns, so a random dense w is approached, not reached.
    assert ratio.max() <= 1 + 1e-5
    assert ratio.min() > 0.6 and ratio.median() > 0.85


@pytest.mark.parametrize("norm, q, reach", [("linf", 1, 1.0), ("l2", 2, 0.6)])
def test_breaks_the_points_the_closed_form_says_are_breakable(norm, q, reach):
    model, x, y, z = logistic(n=200)
    dist = hyperplane_distance(model, z, q)
    eps = dist.median().item()
    broken = ~Square(norm, n_queries=1000)(model, x, y, eps=[eps]).correct[0]
    clear = (dist - eps).abs() > 1e-4 * eps
    assert not broken[dist > eps * (1 + 1e-4)].any()
    assert broken[dist < reach * eps].all()
    if norm == "linf":
        assert torch.equal(broken[clear], (dist < eps)[clear])


def test_only_robust_points_are_queried_and_never_more_than_n_queries():
    rows = []

    class OffGrid(nn.Module):
        """Class 0 on integer points, class 1 as soon as any coordinate moves off the grid."""

        def forward(self, v):
            rows.append(len(v))
            off = (v - v.round()).abs().sum(1)
            return torch.stack([torch.zeros_like(off), 1e3 * off - 1e-3], dim=1)

    x = torch.randint(-3, 4, (50, 8)).float()
    y = torch.zeros(50, dtype=torch.long)
    Square("linf", n_queries=100).perturb(OffGrid(), x, y, 1e-7, early_stop=True)
    assert sum(rows) == 2 + 50 * 100  # the input check's probe, then n_queries per point, none broken
    rows.clear()
    Square("linf", n_queries=100).perturb(OffGrid(), x, y, 0.25, early_stop=True)
    assert rows == [2, 50]  # the first query (the +-eps stripes) breaks every point: no more queries


def test_needs_no_gradients():
    model, x, y, _ = logistic(n=20)

    class GradientFree(nn.Module):
        def forward(self, v):
            assert not torch.is_grad_enabled(), "Square must only read the logits"
            return model(v)

    attack = build_attack("square", n_queries=50)
    assert attack.needs_gradients is False
    result = attack(GradientFree().eval(), x, y, eps=[0.5])
    assert result.robust_accuracy()[0] < 1.0


def test_p_schedule_halves_at_the_published_points():
    attack = Square(n_queries=10000, p_init=0.8)
    assert attack.p_selection(0) == 0.8 and attack.p_selection(10) == 0.8
    assert attack.p_selection(11) == 0.4 and attack.p_selection(51) == 0.2
    assert attack.p_selection(8001) == 0.8 / 512
    # Rescaled to the query budget: the same shares of 1000 queries.
    short = Square(n_queries=1000)
    assert short.p_selection(100) == 0.8 / 16 and short.p_selection(101) == 0.8 / 32


def test_bad_options_are_clear_errors():
    with pytest.raises(AdvlabError, match="linf and l2"):
        Square("l1")
    with pytest.raises(AdvlabError, match="n_queries"):
        Square(n_queries=0)
    with pytest.raises(AdvlabError, match="p_init"):
        Square(p_init=1.5)
    model, x, y, _ = logistic()
    with pytest.raises(AdvlabError, match="finite epsilon"):
        Square().perturb(model, x, y, math.inf)


def test_give_up_stops_querying_unreachable_points_and_still_breaks_the_reachable_ones():
    model, x, y, z = logistic(n=200)
    dist = hyperplane_distance(model, z, 1)
    eps = dist.median().item()
    rows = {}

    class Counted(nn.Module):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def forward(self, v):
            rows[self.key] = rows.get(self.key, 0) + len(v)
            return model(v)

    full = Square("linf", n_queries=1000).perturb(Counted("full"), x, y, eps, early_stop=True)
    quick = Square("linf", n_queries=1000, give_up=3).perturb(Counted("quick"), x, y, eps, early_stop=True)
    broken_full = model(full).argmax(1) != y
    broken_quick = model(quick).argmax(1) != y
    assert not broken_quick[dist > eps * (1 + 1e-4)].any()
    assert broken_quick[dist < 0.8 * eps].all()
    # The points beyond reach plateau at the distance to the boundary minus eps: they are dropped early.
    assert rows["quick"] < 0.5 * rows["full"], rows
    assert broken_quick.sum() >= broken_full.sum() - 3


def test_give_up_must_be_a_positive_factor():
    with pytest.raises(AdvlabError, match="give_up"):
        Square(give_up=0)
    assert Square(n_queries=5000).checkpoints() == {250, 500, 1000, 2000, 3000, 4000}


def test_with_a_screen_a_break_turns_give_up_off_every_point_gets_the_full_budget():
    """Square's screen: a break after the gradient attacks is the sign of misleading gradients, so from then on
    no point is dropped (neither by the screen nor by give_up). Points beyond reach alone are dropped early; the
    same points beside one that breaks at once (misclassified by far) get all the queries."""
    model, x, y, z = logistic(n=200)
    dist = hyperplane_distance(model, z, 1)
    eps = 0.5 * dist.min().item()  # nothing within reach
    far = dist.argsort()[-21:-1]  # the 20 farthest but one: `wrong`, the farthest, breaks
    wrong = dist.argmax()
    rows = {}

    class Counted(nn.Module):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def forward(self, v):
            rows[self.key] = rows.get(self.key, 0) + len(v)
            return model(v)

    attack = Square("linf", n_queries=400, give_up=1.0, screen=200)
    attack.perturb(Counted("unreachable"), x[far], y[far], eps, early_stop=True)
    flipped = y.clone()
    flipped[wrong] = 1 - y[wrong]  # far on the wrong side of the boundary: broken at the first query
    idx = torch.cat([wrong.view(1), far])
    attack.perturb(Counted("beside a break"), x[idx], flipped[idx], eps, early_stop=True)
    assert rows["unreachable"] < 0.5 * 20 * 400, rows
    assert rows["beside a break"] >= 20 * 399, rows


def test_with_a_screen_the_points_it_stopped_come_back_after_a_later_break():
    """A break after the screen (the sign of misleading gradients) brings back the points the screen stopped,
    for the queries left. Here a wrapper makes one point breakable only after 100 calls, long after the screen
    (50 queries) has stopped the far, unbreakable points."""
    model, x, y, z = logistic(n=300)
    dist = hyperplane_distance(model, z, 1)
    eps = dist.median().item() / 2
    far = (dist > 3 * eps).nonzero().flatten()[:20]  # their margin cannot halve: stopped at the screen
    late = ((dist > 1.05 * eps) & (dist < 1.2 * eps)).nonzero().flatten()[:1]  # its margin falls most of the way
    assert len(far) == 20 and len(late) == 1
    idx = torch.cat([late, far])
    rows, calls = {"n": 0}, {"n": 0}

    class LateBreak(nn.Module):  # after 100 calls, anything in the late point's ball is classified wrong
        def forward(self, v):
            calls["n"] += 1
            rows["n"] += len(v)
            out = model(v)
            if calls["n"] > 100:
                near = (v - x[late]).abs().amax(1) <= eps + 1e-6
                out = torch.where(near[:, None], out.flip(1), out)
            return out

    budget, screen = 400, 50
    out = Square("linf", n_queries=budget, screen=screen).perturb(LateBreak(), x[idx], y[idx], eps, early_stop=True)
    with torch.no_grad():
        assert model(out[:1]).argmax(1) == y[late]  # broken only through the wrapper (found after call 100)
    # The far points: `screen` queries, then (after the break near call 100) about budget - 100 more each.
    assert rows["n"] > 20 * (screen + budget - 120), rows
