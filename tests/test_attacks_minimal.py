"""Minimal-perturbation attacks (C&W L2, DeepFool L2/Linf) against exact distances."""

import itertools
import math

import numpy as np
import pytest
import torch

from advlab.attacks import CW, DeepFool, build_attack
from advlab.errors import AdvlabError
from advlab.models import build_model
from advlab.rng import seeded

from attack_models import hyperplane_distance, logistic


def softmax_regression(d=10, k=5, n=40, seed=0):
    with seeded(seed):
        model = build_model("softmax", (d,), k).eval()
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def polytope_distance(model, x, y, q):
    """Distance from x to the nearest point another class wins: y's region is the intersection of
    the half-spaces z_y >= z_j, so it is the distance to the nearest of their hyperplanes."""
    w, b = model.linear.weight.detach(), model.linear.bias.detach()
    gaps = (x @ w.T + b).gather(1, y[:, None]) - (x @ w.T + b)  # (N, K): z_y - z_j >= 0
    dual = torch.linalg.vector_norm(w[y][:, None, :] - w[None], ord=q, dim=2)  # (N, K)
    dist = gaps / dual
    return dist.scatter(1, y[:, None], math.inf).amin(1)


CASES = [("cw", "l2", 2), ("deepfool", "l2", 2), ("deepfool", "linf", 1)]


@pytest.mark.parametrize("name, norm, q", CASES)
def test_finds_the_distance_to_the_hyperplane_of_logistic_regression(name, norm, q):
    model, x, y, z = logistic(n=64)
    exact = hyperplane_distance(model, z, q)
    result = build_attack(name, norm=norm)(model, x, y, eps=[math.inf])
    found = result.min_distance
    assert torch.all(found >= exact * (1 - 1e-5)), "nothing closer than the hyperplane can be adversarial"
    assert torch.all(found <= exact * 1.01)
    assert result.robust_accuracy() == [0.0]


@pytest.mark.parametrize("name, norm, q", CASES[1:])
def test_deepfool_finds_the_nearest_facet_of_a_multiclass_linear_model(name, norm, q):
    model, x, y = softmax_regression()
    exact = polytope_distance(model, x, y, q)
    found = build_attack(name, norm=norm)(model, x, y, eps=[1.0]).min_distance
    assert torch.all(found >= exact * (1 - 1e-5))
    assert torch.all(found <= exact * 1.01)


def test_cw_finds_the_nearest_point_where_the_runner_up_wins():
    # C&W's hinge follows the currently largest other logit, so it is a local method: on a
    # multiclass linear model it reaches the runner-up's facet, which need not be the nearest one.
    model, x, y = softmax_regression()
    w = model.linear.weight.detach()
    z = model(x).detach()
    runner_up = z.scatter(1, y[:, None], -math.inf).argmax(1)
    facet = (z.gather(1, y[:, None])[:, 0] - z.gather(1, runner_up[:, None])[:, 0]) / (w[y] - w[runner_up]).norm(dim=1)
    found = CW()(model, x, y, eps=[1.0]).min_distance
    assert torch.all(found >= polytope_distance(model, x, y, 2) * (1 - 1e-5))
    assert torch.all(found <= facet * 1.01)


@pytest.mark.parametrize("norm, q", [("l2", 2), ("linf", 1)])
def test_original_deepfool_overshoots_by_exactly_the_published_factor(norm, q):
    # One step lands (|f| + 1e-4) / ||w||_q past nothing: on the hyperplane plus 1e-4; the
    # overshoot then scales the whole perturbation by 1 + overshoot.
    model, x, y, z = logistic(n=64)
    result = DeepFool(norm, overshoot=0.02, refine_steps=0)(model, x, y, eps=[math.inf])
    expected = 1.02 * (z.abs() + 1e-4) / model.weight.detach().norm(p=q)
    assert torch.allclose(result.min_distance, expected, rtol=1e-4)


def least_norm_into_polyhedron(a, c):
    """min ||d||_2 subject to a @ d >= c, by brute force over the active sets (a has few rows):
    the optimum is the least-norm solution of its own active set, and every feasible candidate
    is at least as long."""
    best = math.inf
    for size in range(1, len(a) + 1):
        for rows in itertools.combinations(range(len(a)), size):
            a_s = a[list(rows)]
            d = a_s.T @ np.linalg.solve(a_s @ a_s.T, c[list(rows)])
            if np.all(a @ d >= c - 1e-9):
                best = min(best, float(np.linalg.norm(d)))
    return best


def test_targeted_cw_matches_the_least_norm_point_of_the_target_region():
    model, x, y = softmax_regression(d=6, k=4, n=12, seed=3)
    targets = (y + 1) % 4
    found = CW(targeted=True)(model, x, y, eps=[math.inf], targets=targets).min_distance
    w, b = model.linear.weight.detach().double().numpy(), model.linear.bias.detach().double().numpy()
    for i in range(len(x)):
        t, x0 = targets[i].item(), x[i].double().numpy()
        others = [j for j in range(4) if j != t]
        a = np.stack([w[t] - w[j] for j in others])  # target beats j: a @ (x0 + d) + b_t - b_j >= 0
        c = -(a @ x0 + np.array([b[t] - b[j] for j in others]))
        exact = least_norm_into_polyhedron(a, c)
        assert exact * (1 - 1e-4) <= found[i].item() <= exact * 1.01, i


def test_points_already_misclassified_cost_nothing():
    model, x, y, z = logistic(n=20)
    wrong = y.clone()
    wrong[:5] = 1 - wrong[:5]
    for attack in (CW(), DeepFool("l2"), DeepFool("linf")):
        result = attack(model, x, wrong, eps=[0.0, 1.0])
        assert torch.all(result.min_distance[:5] == 0)
        assert torch.all(result.min_distance[5:] > 0)


def test_bounded_cw_stays_in_the_box_and_beats_deepfool_on_a_cnn(digits_cnn_short, digits):
    model, d = digits_cnn_short, digits
    x, y = d.x_test[:60], d.y_test[:60]
    cw = CW(steps=50, binary_search_steps=5)(model, x, y, eps=[math.inf], bounds=d.bounds)
    df = DeepFool("l2")(model, x, y, eps=[math.inf], bounds=d.bounds)
    assert cw.x_adv.min() >= d.bounds[0] and cw.x_adv.max() <= d.bounds[1]
    both = cw.clean_correct & torch.isfinite(cw.min_distance) & torch.isfinite(df.min_distance)
    assert both.sum() > 40
    # Optimisation, not one linearisation per step: C&W is at least as close on the median.
    assert cw.min_distance[both].median() <= df.min_distance[both].median() * 1.02


def test_bad_options_are_clear_errors():
    with pytest.raises(AdvlabError, match="L2 attack"):
        CW("linf")
    with pytest.raises(AdvlabError, match="deepfool"):
        DeepFool("l1")
    with pytest.raises(AdvlabError, match="candidates"):
        DeepFool(candidates=1)
