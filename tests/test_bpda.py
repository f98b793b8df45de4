"""Preprocessing defenses (quantisation, JPEG-like rounding, median filter) and their BPDA twins."""

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from advlab.attacks import PGD
from advlab.errors import AdvlabError
from advlab.models import BPDA, JPEGLike, MedianFilter, Preprocessed, Quantize, build_model, build_preprocessor
from advlab.models.preprocess import cubic_round, dct_matrix, jpeg_table
from advlab.rng import generator, seeded

BOUNDS = (0.0, 1.0)


def small_cnn():
    with seeded(0):
        return build_model("cnn-small", (1, 8, 8), 10).eval()


def input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


# -- the preprocessors against exact answers ------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(levels=st.integers(2, 20), lo=st.floats(-3, 1), width=st.floats(0.5, 4), seed=st.integers(0, 999))
def test_quantize_rounds_to_the_nearest_level(levels, lo, width, seed):
    hi = lo + width
    x = lo + width * torch.rand(50, generator=generator(seed), dtype=torch.float64)
    q = Quantize(levels, bounds=(lo, hi))(x)
    grid = torch.linspace(lo, hi, levels, dtype=torch.float64)
    nearest = grid[(x[:, None] - grid[None]).abs().argmin(1)]
    assert torch.allclose(q, nearest, atol=1e-9)
    assert torch.allclose(Quantize(levels, bounds=(lo, hi))(q), q, atol=1e-9)  # idempotent


def test_dct_matrix_is_scipys_orthonormal_dct():
    b = torch.rand(8, 8, generator=generator(0), dtype=torch.float64)
    d = dct_matrix(8).double()
    ref = torch.from_numpy(scipy.fft.dctn(b.numpy(), norm="ortho"))
    assert torch.allclose(d @ b @ d.T, ref, atol=1e-6)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-6)


def test_jpeg_table_scaling():
    assert jpeg_table(50)[0, 0] == 16 and (jpeg_table(100) == 1).all()
    assert jpeg_table(10)[0, 0] == 80  # IJG: scale 5000 / 10 = 500%


def test_jpeg_like_keeps_shape_bounds_and_is_nearly_lossless_at_quality_100():
    x = torch.rand(2, 3, 13, 10, generator=generator(1))
    out = JPEGLike(100, bounds=BOUNDS)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # Table of ones: only coefficient rounding (<= 0.5 per coefficient) and the 8-bit output remain.
    assert (out - x).abs().max() < 5 / 255
    coarse = JPEGLike(10, bounds=BOUNDS)(x)
    assert (coarse - x).abs().mean() > (out - x).abs().mean()
    # A constant block is a pure DC term: quality 50 keeps it within one grey level.
    flat = torch.full((1, 1, 8, 8), 100 / 255)
    assert (JPEGLike(50, bounds=BOUNDS)(flat) - flat).abs().max() <= 1 / 255 + 1e-6


def test_median_filter_matches_scipy():
    x = torch.rand(3, 2, 9, 7, generator=generator(2))
    ref = scipy.ndimage.median_filter(x.numpy(), size=(1, 1, 3, 3), mode="mirror")
    assert torch.equal(MedianFilter(3)(x), torch.from_numpy(np.ascontiguousarray(ref)))
    assert torch.equal(MedianFilter(1)(x), x)


def test_cubic_round_agrees_with_round_at_integers_and_has_a_slope_between():
    z = torch.tensor([-2.0, 0.0, 3.0, 0.3], requires_grad=True)
    out = cubic_round(z)
    assert torch.equal(out[:3], torch.round(z[:3]))
    g, = torch.autograd.grad(out.sum(), z)
    assert g[3] == pytest.approx(3 * 0.3 ** 2)


# -- gradients: the defense hides them, BPDA recovers them -----------------------------------------
@pytest.mark.parametrize("pre", [Quantize(4, bounds=BOUNDS), JPEGLike(50, bounds=BOUNDS)])
def test_rounding_defenses_have_zero_input_gradient_and_bpda_has_the_straight_through_one(pre):
    model = small_cnn()
    x = torch.rand(6, 1, 8, 8, generator=generator(3))
    y = torch.arange(6)
    defended = Preprocessed(model, pre)
    assert (input_grad(defended, x, y) == 0).all()
    bpda = defended.bpda()
    assert torch.equal(bpda(x), defended(x))  # the forward pass is the defense, bit for bit
    # Identity backward: the plain model's gradient, taken at the preprocessed input.
    g = input_grad(bpda, x, y)
    assert g.abs().max() > 0
    assert torch.allclose(g, input_grad(model, pre(x), y), atol=1e-7)


@pytest.mark.parametrize("pre", [Quantize(4, bounds=BOUNDS), JPEGLike(50, bounds=BOUNDS)])
def test_bpda_with_an_approximation_chains_its_jacobian(pre):
    model = small_cnn()
    x = torch.rand(4, 1, 8, 8, generator=generator(4))
    y = torch.tensor([1, 2, 3, 4])
    bpda = BPDA(model, pre, approximation=pre.smooth)
    assert torch.equal(bpda(x), model(pre(x)))
    outer = input_grad(model, pre(x), y)  # dL/dz at z = pre(x)
    xs = x.clone().requires_grad_(True)
    expected, = torch.autograd.grad(pre.smooth(xs), xs, outer)
    assert torch.allclose(input_grad(bpda, x, y), expected, atol=1e-7)


def test_median_filter_defense_gradient_is_the_true_sparse_gradient():
    model = small_cnn()
    x = torch.rand(3, 1, 8, 8, generator=generator(5))
    y = torch.tensor([0, 1, 2])
    g = input_grad(Preprocessed(model, MedianFilter(3)), x, y)
    assert g.abs().max() > 0
    # Finite differences along the gradient direction agree (the median is locally linear).
    d = g / g.norm()
    h = 1e-3
    loss = lambda z: F.cross_entropy(model(MedianFilter(3)(z)), y, reduction="sum").double()  # noqa: E731
    with torch.no_grad():
        fd = (loss(x + h * d) - loss(x - h * d)) / (2 * h)
    assert fd.item() == pytest.approx(g.norm().item(), rel=0.05)


def test_wrappers_keep_the_model_mode_and_the_registry_builds_preprocessors():
    model = small_cnn()
    assert not Preprocessed(model, MedianFilter()).training and not BPDA(model, MedianFilter()).training
    assert isinstance(build_preprocessor("quantize", bounds=BOUNDS, levels=3), Quantize)
    assert isinstance(build_preprocessor("median", size=5), MedianFilter)
    with pytest.raises(AdvlabError, match="bounds"):
        Quantize(4, bounds=None)
    with pytest.raises(AdvlabError, match="levels"):
        Quantize(1, bounds=BOUNDS)
    with pytest.raises(AdvlabError, match="quality"):
        JPEGLike(0, bounds=BOUNDS)
    with pytest.raises(AdvlabError, match="odd"):
        MedianFilter(2)
    with pytest.raises(AdvlabError, match="unknown preprocessing"):
        build_preprocessor("blur")
    with pytest.raises(AdvlabError, match="bad options"):
        build_preprocessor("quantize", bounds=BOUNDS, level=3)


# -- the attack gap that issue 4's gradient-masking checks rely on ---------------------------------
def test_bpda_pgd_breaks_the_quantisation_defense_that_naive_pgd_cannot(digits, digits_cnn):
    torch.set_num_threads(1)
    model = digits_cnn
    x, y = digits.x_test[:200], digits.y_test[:200]
    defended = Preprocessed(model, Quantize(4, bounds=digits.bounds))
    naive = PGD(steps=10)(defended, x, y, [0.2], bounds=digits.bounds).robust_accuracy()[0]
    bpda = PGD(steps=10)(defended.bpda(), x, y, [0.2], bounds=digits.bounds)
    # The BPDA model's forward pass is the defense: its scores are the defense's scores.
    with torch.no_grad():
        assert torch.equal(defended(bpda.x_adv[0]).argmax(1), bpda.predictions[0])
    assert naive > 0.8
    assert bpda.robust_accuracy()[0] < 0.2
    assert naive - bpda.robust_accuracy()[0] > 0.6


@settings(max_examples=15, deadline=None)
@given(norm=st.sampled_from(["linf", "l2"]), eps=st.floats(0.0, 2.0), levels=st.integers(2, 8), seed=st.integers(0, 99))
def test_pgd_through_bpda_stays_in_the_ball_and_the_bounds(norm, eps, levels, seed):
    from advlab.threat import get_norm
    with seeded(seed):
        model = build_model("mlp", (1, 4, 4), 3, hidden=[8]).eval()
    x = torch.rand(6, 1, 4, 4, generator=generator(seed))
    y = torch.arange(6) % 3
    bpda = Preprocessed(model, Quantize(levels, bounds=BOUNDS)).bpda()
    r = PGD(norm, steps=3)(bpda, x, y, [eps], bounds=BOUNDS)
    assert torch.isfinite(r.x_adv).all() and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert (get_norm(norm).distance(r.x_adv[0] - x) <= eps * (1 + 1e-5) + 1e-6).all()
