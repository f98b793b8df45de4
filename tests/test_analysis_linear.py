"""Closed forms for linear models against exact answers and against measurements.

Measured error rates are binomial: k errors out of n test points, standard deviation
sqrt(p (1 - p) / n) around the predicted p. The tolerance is 4 standard deviations plus one point.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm as normal

from advlab.analysis.blobs import blobs_picture
from advlab.analysis.linear import class_errors, dual_norm, fit_linear, linear_error, linear_model, weights, wilson
from advlab.analysis.linearity import activation_change, linearity_images, run_linearity
from advlab.analysis.theory import best_linear, dimension_experiment, folded_mean, mean_estimator_curves, population
from advlab.attacks import FGSM
from advlab.errors import AdvlabError


def within_sampling_error(measured, predicted, n, sds=4.0):
    sd = math.sqrt(max(predicted * (1 - predicted), 1e-12) / n)
    return abs(measured - predicted) <= sds * sd + 1.0 / n


@pytest.mark.parametrize("norm, p", [("linf", 1), ("l2", 2)])
def test_fgsm_moves_a_linear_score_by_exactly_eps_times_the_dual_norm(norm, p):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, generator=g)
    model = linear_model(w.numpy(), 0.3)
    x = torch.randn(50, 300, generator=g)
    y = torch.randint(0, 2, (50,), generator=g)
    x_adv = FGSM(norm, loss="margin").perturb(model, x, y, 0.05, bounds=None)
    change = activation_change(model, x, y, x_adv)
    expected = 0.05 * torch.linalg.vector_norm(w.double(), p).item()
    assert expected == pytest.approx(0.05 * dual_norm(w, norm))
    np.testing.assert_allclose(change.numpy(), expected, rtol=2e-5)


def test_class_errors_match_an_exact_gaussian_tail():
    w, b, sigma, eps = np.array([3.0, -4.0]), 0.5, 2.0, 0.1
    m0, m1 = np.array([-1.0, 1.0]), np.array([1.0, -1.0])
    e0, e1 = class_errors(w, b, m0, m1, sigma, eps, "linf")
    # class 0: z = w.x + b ~ N(w.m0 + b, (sigma ||w||)^2) = N(-6.5, 10^2), wrong when z + 0.7 > 0
    assert e0 == pytest.approx(normal.sf((0 - (-6.5 + 0.7)) / 10.0))
    assert e1 == pytest.approx(normal.cdf((0 - (7.5 - 0.7)) / 10.0))
    assert linear_error(w, b, m0, m1, sigma, eps, "linf", prior1=0.25) == pytest.approx(0.75 * e0 + 0.25 * e1)
    assert class_errors(w, b, m0, m1, sigma, eps, "l2")[0] == pytest.approx(normal.sf((6.5 - 0.5) / 10.0))


def test_fit_linear_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.8 * torch.randn(400, generator=g) > 0).long()
    wd = 1e-2
    w, b = weights(fit_linear(x, y, weight_decay=wd))
    # scikit-learn minimises C * sum(loss) + ||w||^2 / 2, i.e. mean(loss) + ||w||^2 / (2 C N).
    ref = LogisticRegression(C=1 / (wd * 400), tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(w, ref.coef_[0], rtol=2e-3, atol=2e-4)
    assert b == pytest.approx(ref.intercept_[0], rel=2e-3, abs=2e-4)


def test_robust_training_lowers_the_exact_robust_loss():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 20, generator=g) + 0.3 * (2 * (torch.arange(300) % 2) - 1)[:, None]
    y = (torch.arange(300) % 2).long()
    eps = 0.2

    def robust_loss(model):
        # The loss on FGSM examples is the exact worst-case loss for a linear model.
        x_adv = FGSM("linf", loss="margin").perturb(model, x, y, eps, bounds=None)
        z = model(x_adv)[:, 1].double()
        return torch.nn.functional.softplus(-(2 * y.double() - 1) * z).mean().item()

    standard, robust = fit_linear(x, y), fit_linear(x, y, eps=eps)
    assert robust_loss(robust) < robust_loss(standard) - 1e-3
    assert dual_norm(robust.weight, "linf") < dual_norm(standard.weight, "linf")


def test_blobs_measured_error_matches_the_closed_form(tmp_path):
    rec = blobs_picture([0.0, 0.2, 0.5], dataset_kwargs={"n": 10_000, "test_fraction": 0.5}, out=tmp_path)
    for row in rec["results"]:
        assert within_sampling_error(row["measured_error"], row["predicted_error"], row["n"]), row
        lo, hi = row["ci95"]
        assert lo <= row["measured_error"] <= hi
    errors = [r["measured_error"] for r in rec["results"]]
    assert errors[0] < errors[1] < errors[2]
    assert (tmp_path / "blobs.png").stat().st_size > 10_000 and (tmp_path / "blobs.json").exists()


def test_linearity_gaussian_measured_beside_predicted():
    rec = run_linearity("gaussian", eps=0.1, dims=(10, 300, 3000), n_train=1000, n_test=3000)
    changes = []
    for row in rec["rows"]:
        a = row["activation_change"]
        assert a["max_relative_error"] < 1e-5  # eps * ||w||_1, exactly (float32 rounding only)
        for key in ("clean_error", "fgsm_error"):
            assert within_sampling_error(row[key]["measured"], row[key]["predicted"], 3000), (row["n"], key, row[key])
        changes.append(a["predicted"])
    assert changes[0] < changes[1] < changes[2]
    errors = [r["fgsm_error"]["measured"] for r in rec["rows"]]
    assert errors[0] < 0.05 and errors[2] > 0.9
    assert all(r["clean_error"]["measured"] < 0.02 for r in rec["rows"])


def test_linearity_on_padded_images(digits):
    rec = linearity_images(digits, (3, 7), (0, 2), eps=0.1)
    for row in rec["rows"]:
        assert row["activation_change"]["max_relative_error"] < 1e-5
        f = row["fgsm_error"]
        assert abs(f["measured"] - f["predicted_from_margins"]) <= 1 / rec["settings"]["n_test"]
        assert f["clipped"] <= f["measured"]  # clipping only removes part of each coordinate's move
        assert row["activation_change"]["clipped_mean"] <= row["activation_change"]["mean"] + 1e-6
    assert [r["n"] for r in rec["rows"]] == [64, 192]
    with pytest.raises(AdvlabError, match="two different class"):
        linearity_images(digits, (3, 3), (0,))


def test_best_linear_beats_every_linear_classifier():
    rng = np.random.default_rng(0)
    d, sigma, eps = 50, 1.0, 0.2
    for mu in (0.1, 0.5):  # below and above eps
        _, best = best_linear(d, mu, sigma, eps)
        for _ in range(300):
            w = rng.normal(size=d) * (rng.random(d) < rng.random())
            b = rng.normal() * 3
            robust = 1 - linear_error(w, b, -mu, mu, sigma, eps)
            assert robust <= best + 1e-12
        # and it is attained: w = 1, b = 0 above eps; the constant classifier's 1/2 below
        attained = 1 - linear_error(np.ones(d), 0.0, -mu, mu, sigma, eps) if mu > eps else 0.5
        assert attained == pytest.approx(best)


def test_theory_dimension_measured_beside_closed_form():
    rec = dimension_experiment(dims=(4, 900), eps=0.1, signal=2.0, n_train=500, n_test=4000)
    for row in rec["rows"]:
        for model in ("standard", "adversarial"):
            for key in ("clean_accuracy", "robust_accuracy"):
                v = row[model][key]
                assert within_sampling_error(v["measured"], v["predicted"], 4000), (row["dim"], model, key, v)
    low, high = rec["rows"]
    assert low["best_linear"]["robust_accuracy"] > 0.95 and high["best_linear"]["robust_accuracy"] == 0.5
    assert high["standard"]["robust_accuracy"]["measured"] < 0.5 < low["standard"]["robust_accuracy"]["measured"]


def test_mean_estimator_closed_form_matches_simulation():
    rng = np.random.default_rng(0)
    d, mu, sigma, eps = 2000, 1.0, 2000 ** 0.25 / 2, 0.7
    for n in (2, 5, 20):
        ws = rng.normal(mu, sigma / math.sqrt(n), size=(40, d))  # the class-mean estimator's law
        sims = np.array([population(w, 0.0, mu, sigma, eps) for w in ws]).mean(0)
        clean, robust = mean_estimator_curves(np.array([n]), d, mu, sigma, eps)
        assert sims[0] == pytest.approx(clean[0], abs=0.01)
        assert sims[1] == pytest.approx(robust[0], abs=0.03)


def test_folded_normal_mean():
    rng = np.random.default_rng(0)
    sample = np.abs(rng.normal(0.7, 1.3, size=400_000)).mean()
    assert folded_mean(0.7, 1.3) == pytest.approx(sample, rel=5e-3)


def test_wilson_interval():
    lo, hi = wilson(10, 100)
    assert lo < 0.1 < hi and lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)
