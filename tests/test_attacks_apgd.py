"""APGD and APGD-T: exact answers on linear models, the step-size schedule, and a comparison
with PGD on a trained CNN."""

import math

import pytest
import torch
from torch import nn

from advlab.attacks import APGD, APGDT, PGD, build_attack
from advlab.attacks.apgd import checkpoints
from advlab.errors import AdvlabError
from advlab.passes import PassCounter
from advlab.rng import seeded

from attack_models import hyperplane_distance, logistic, margin_of, tiny_model


def test_checkpoints_follow_the_paper_schedule():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    assert checkpoints(100) == [round(100 * pj) for pj in p[1:]] == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [] and checkpoints(10)[0] == 2


@pytest.mark.parametrize("norm, q", [("linf", 1), ("l2", 2)])
def test_margin_drops_by_the_exact_optimum_on_logistic_regression(norm, q):
    model, x, y, z = logistic()
    eps = 0.1
    # Without early stopping the cross-entropy keeps rising past the boundary, so every point
    # should end at the optimum x - eps * s * sign(w) (Linf) or x - eps * s * w / ||w|| (L2).
    x_adv = APGD(norm, steps=100).perturb(model, x, y, eps)
    drop = margin_of(model, x, y) - margin_of(model, x_adv, y)
    optimum = eps * model.weight.detach().norm(p=q)
    assert torch.all(drop <= optimum + 1e-5)
    # Linf: the first step lands on the optimal vertex; L2: halving the step converges onto eps w/||w||.
    assert torch.allclose(drop, optimum.expand_as(drop), rtol=1e-5 if norm == "linf" else 1e-4, atol=1e-5)


@pytest.mark.parametrize("name, norm, q", [("apgd-ce", "linf", 1), ("apgd-ce", "l2", 2), ("apgd-t", "linf", 1)])
def test_breaks_exactly_the_points_the_closed_form_says_are_breakable(name, norm, q):
    model, x, y, z = logistic(n=200)
    dist = hyperplane_distance(model, z, q)
    eps = dist.median().item()
    attack = build_attack(name, norm=norm, steps=20, **({"loss": "ce"} if name == "apgd-t" else {}))
    result = attack(model, x, y, eps=[eps])
    clear = (dist - eps).abs() > 1e-4 * eps  # leave out ties with the budget
    broken = ~result.correct[0]
    assert torch.equal(broken[clear], (dist < eps)[clear])


def test_step_halving_converges_on_a_concave_loss_where_a_fixed_step_cannot():
    # Loss -||x - c||^2 with its maximum c inside the ball: steps of 2 eps overshoot forever unless halved.
    c = torch.tensor([[0.3, -0.2, 0.1, 0.25]])
    x = torch.zeros(1, 4)

    def loss(logits, y, targets=None):
        return -(logits - c).pow(2).sum(1)

    identity = nn.Sequential(nn.Identity())
    for norm in ("l2", "linf"):
        x_adv = APGD(norm, steps=100, loss=loss).perturb(identity, x, torch.tensor([3]), 1.0)
        assert (x_adv - c).abs().max() < 5e-3, norm  # about the last step size, 2 / 2^8
        fixed = PGD(norm, steps=100, step_size=2.0, loss=loss).perturb(identity, x, torch.tensor([3]), 1.0)
        assert (fixed - c).abs().max() > 0.1, "the control: a fixed large step does not converge"


def test_apgd_t_attacks_the_second_most_likely_class_first():
    torch.manual_seed(0)
    model = tiny_model((3, 4, 4), k=6)
    x = torch.rand(8, 3, 4, 4)
    y = model(x).argmax(1)
    ranked = model(x).detach().scatter(1, y[:, None], -math.inf).argmax(1)
    a = APGDT(n_target_classes=1, steps=10).perturb(model, x, y, 0.05)
    b = APGD(loss="dlr", targeted=True, steps=10).perturb(model, x, y, 0.05, targets=ranked)
    assert torch.equal(a, b)


def test_only_the_unbroken_points_are_attacked(digits_cnn_short, digits):
    model, d = digits_cnn_short, digits
    x, y = d.x_test[:100], d.y_test[:100]
    counted = PassCounter(model)
    APGD(steps=50).perturb(counted, x, y, 1.0, bounds=d.bounds, early_stop=True)
    # Every point falls within a few steps at this budget; without the active set it would be 100 * 51.
    assert counted.forward_rows < 0.1 * 100 * 51
    counted = PassCounter(model)
    APGD(steps=50).perturb(counted, x, y, 1.0, bounds=d.bounds, early_stop=False)
    assert counted.forward_rows >= 100 * 51


def test_apgd_is_at_least_as_strong_as_pgd_on_a_trained_cnn(digits_cnn_short, digits):
    model, d = digits_cnn_short, digits
    x, y = d.x_test[:200], d.y_test[:200]
    eps = [0.1, 0.15]
    pgd = PGD("linf", steps=20)(model, x, y, eps=eps, bounds=d.bounds)
    apgd = APGD("linf")(model, x, y, eps=eps, bounds=d.bounds)
    apgd_t = APGDT("linf", n_target_classes=3, steps=50)(model, x, y, eps=eps, bounds=d.bounds)
    for e in range(len(eps)):
        assert 0.05 < pgd.robust_accuracy()[e] < 0.9, "the budget should make the comparison meaningful"
        assert apgd.robust_accuracy()[e] <= pgd.robust_accuracy()[e] + 0.01
        assert apgd_t.robust_accuracy()[e] <= pgd.robust_accuracy()[e] + 0.01


def test_bad_options_are_clear_errors():
    with pytest.raises(AdvlabError, match="linf and l2"):
        APGD("l1")
    with pytest.raises(AdvlabError, match="steps"):
        APGD(steps=0)
    with pytest.raises(AdvlabError, match="n_target_classes"):
        APGDT(n_target_classes=0)
    model, x, y, _ = logistic()
    with pytest.raises(AdvlabError, match="finite epsilon"):
        APGD().perturb(model, x, y, math.inf)
    with pytest.raises(AdvlabError, match="at least 3 classes"):
        APGD(loss="dlr").perturb(model, x, y, 0.1)
    with pytest.raises(AdvlabError, match="chooses its own target"):
        APGDT(loss="ce").perturb(model, x, y, 0.1, targets=1 - y)
    with seeded(0):
        assert APGD(loss="dlr").name == "apgd-dlr" and build_attack("apgd-t").name == "apgd-t"


@pytest.mark.parametrize("norm, q", [("linf", 1), ("l2", 2)])
@pytest.mark.parametrize("make", [lambda norm, **kw: APGD(norm, steps=100, **kw),
                                  lambda norm, **kw: APGDT(norm, steps=100, n_target_classes=1, loss="ce", **kw)],
                         ids=["apgd-ce", "apgd-t"])
def test_give_up_drops_the_points_beyond_reach_and_breaks_the_same_points(make, norm, q):
    model, x, y, z = logistic(n=200)
    dist = hyperplane_distance(model, z, q)
    eps = dist.median().item()
    full, quick = PassCounter(model), PassCounter(model)
    x_full = make(norm).perturb(full, x, y, eps, early_stop=True)
    x_quick = make(norm, give_up=3).perturb(quick, x, y, eps, early_stop=True)
    broken_full, broken_quick = margin_of(model, x_full, y) < 0, margin_of(model, x_quick, y) < 0
    clear = (dist - eps).abs() > 1e-3 * eps
    assert torch.equal(broken_quick[clear], (dist < eps)[clear])
    assert torch.equal(broken_quick, broken_full)
    # A linear model's margin stops falling once the point sits on the ball's best face: the points
    # beyond reach leave at the first checkpoint that sees no progress, not after 100 steps.
    assert quick.forward_rows < 0.6 * full.forward_rows, (quick.forward_rows, full.forward_rows)
    # and the points it gave up on come back at their best, not at the random start
    stuck = ~broken_quick & clear
    assert torch.allclose(margin_of(model, x_quick, y)[stuck], margin_of(model, x_full, y)[stuck], atol=1e-3)


def test_give_up_is_off_by_default_and_must_be_a_positive_factor():
    assert APGD().give_up is None and APGDT().give_up is None
    for bad in (0, -1.0):
        with pytest.raises(AdvlabError, match="give_up"):
            APGD(give_up=bad)
        with pytest.raises(AdvlabError, match="give_up"):
            APGDT(give_up=bad)


def test_a_point_that_meets_the_goal_at_a_checkpoint_is_returned_broken():
    # 1-D: logits (0, v), label 0, so v > 0 breaks the point; the loss -(v - c)^2 peaks at c = -0.3,
    # where the point is still correct. From x = -0.5 with eps = 1 ([-1.5, 0.5]) a random start
    # below c steps to 0.5: broken, with a lower loss than the start. With 9 steps every step is a
    # step-size checkpoint, and a loss that did not rise sends the iterate back to the best point:
    # that must not undo the break that early stopping is about to return.
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0], [1.0]]))
        model.bias.zero_()

    def loss(logits, y, targets=None):
        return -(logits[:, 1] + 0.3).pow(2)

    x = torch.full((400, 1), -0.5)
    y = torch.zeros(400, dtype=torch.long)
    x_adv = APGD("linf", steps=9, loss=loss).perturb(model, x, y, 1.0, early_stop=True)
    broken = model(x_adv).argmax(1) != y
    # Starts above 0 (1/4) or below c (3/5) are broken by the start or the first step.
    assert broken.float().mean() > 0.8, broken.float().mean()


@pytest.mark.parametrize("make", [lambda: APGD(steps=100), lambda: APGDT(steps=100, n_target_classes=2)],
                         ids=["apgd-ce", "apgd-t"])
def test_a_point_with_a_zero_gradient_leaves_at_once_and_nothing_else_changes(make):
    # Rounding in front of a linear model: the gradient is exactly zero everywhere, so no step can move a
    # point from its random start. The frozen rows leave after one step instead of 100, with the same result.
    from advlab.models import Preprocessed, Quantize
    model, x, y, _ = logistic(n=100)
    lo, hi = float(x.min()), float(x.max())
    defended = Preprocessed(model, Quantize(3, bounds=(lo, hi))).eval()
    counted = PassCounter(defended)
    x_adv = make().perturb(counted, x, y, 0.1, bounds=(lo, hi), early_stop=True)
    x_full = make().perturb(defended, x, y, 0.1, bounds=(lo, hi), early_stop=False)  # no early exit at all
    assert torch.equal(x_adv, x_full)
    assert counted.forward_rows <= 3 * len(x) * 3, counted.forward_rows  # a start and a step per run, not 100
    # a model with gradients is not affected: the same examples with and without the rule's chance to act
    plain = PassCounter(model)
    make().perturb(plain, x, y, 0.1, bounds=(lo, hi), early_stop=True)
    assert plain.forward_rows > 10 * len(x)
