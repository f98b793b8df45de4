"""Random transforms, randomised defenses and Expectation over Transformation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from advlab.attacks import PGD, transfer
from advlab.errors import AdvlabError
from advlab.models import (EOT, Compose, GaussianNoise, RandomAffine, RandomResizePad, Randomized, UniformNoise,
                           affine_transform, build_model, build_transform)
from advlab.models.transforms import integer_shift
from advlab.predict import accuracy
from advlab.rng import generator, seeded


def small_cnn(k=4, shape=(1, 8, 8)):
    with seeded(0):
        return build_model("cnn-small", shape, k).eval()


# -- affine_transform -------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 30), w=st.integers(2, 30), seed=st.integers(0, 99))
def test_rotation_by_zero_and_shift_by_zero_is_exactly_the_identity(n, c, h, w, seed):
    x = torch.rand(n, c, h, w, generator=generator(seed))
    assert torch.equal(affine_transform(x, 0.0, (0.0, 0.0)), x)
    assert torch.equal(affine_transform(x, torch.zeros(n), torch.zeros(n, 2), fill=0.5), x)


@pytest.mark.parametrize("size", [(8, 8), (9, 9), (28, 28)])
def test_rotation_by_90_degrees_is_rot90(size):
    x = torch.rand(2, 3, *size, generator=generator(0))
    assert torch.allclose(affine_transform(x, 90.0, (0.0, 0.0)), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(affine_transform(x, -90.0, (0.0, 0.0)), torch.rot90(x, -1, (-2, -1)), atol=1e-5)


def test_whole_pixel_shifts_move_the_content_and_fill_the_rest():
    x = torch.rand(1, 1, 6, 7, generator=generator(1))
    out = affine_transform(x, 0.0, (2.0, -1.0), fill=0.25)  # right by 2, up by 1
    assert torch.equal(out[..., :-1, 2:], x[..., 1:, :-2])
    assert (out[..., :, :2] == 0.25).all() and (out[..., -1, :] == 0.25).all()
    # The interpolating path agrees with the exact one (a tiny rotation forces it).
    assert torch.allclose(affine_transform(x, 1e-30, (2.0, -1.0), fill=0.25), out, atol=1e-5)
    assert torch.equal(integer_shift(x, torch.tensor([[0, 0]])), x)


def test_resize_pad_matches_interpolate_then_pad():
    x = torch.rand(3, 2, 8, 8, generator=generator(2))
    t = RandomResizePad(min_scale=0.5)
    size_h, off_h = torch.tensor([6, 4, 8]), torch.tensor([1, 4, 0])
    size_w, off_w = torch.tensor([5, 8, 8]), torch.tensor([3, 0, 0])
    out = t.apply(x, (size_h, off_h, size_w, off_w))
    for i in range(3):
        ref = torch.zeros(2, 8, 8)
        small = F.interpolate(x[i:i + 1], size=(int(size_h[i]), int(size_w[i])), mode="bilinear", align_corners=False)
        ref[:, off_h[i]:off_h[i] + size_h[i], off_w[i]:off_w[i] + size_w[i]] = small[0]
        assert torch.allclose(out[i], ref, atol=1e-5)
    assert torch.equal(out[2], x[2])  # full size: exactly the input


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 999), min_scale=st.floats(0.3, 1.0), sigma=st.floats(0.0, 2.0))
def test_transforms_stay_in_bounds_and_repeat_with_the_generator(seed, min_scale, sigma):
    x = torch.rand(4, 2, 8, 8, generator=generator(seed))
    bounds = (0.0, 1.0)
    for t in (RandomResizePad(min_scale, fill=0.0), RandomAffine(30, 2, fill=1.0), GaussianNoise(sigma, bounds),
              UniformNoise(sigma, bounds), Compose(RandomAffine(10, 1), UniformNoise(0.1, bounds))):
        a, b = t(x, generator(seed)), t(x, generator(seed))
        assert torch.equal(a, b) and a.shape == x.shape
        assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6


def test_random_resize_pad_draws_sizes_in_range():
    x = torch.zeros(2000, 1, 10, 10)
    size_h, off_h, size_w, off_w = RandomResizePad(0.7).sample(x, generator(0))
    assert set(size_h.tolist()) == {7, 8, 9, 10} and set(size_w.tolist()) == {7, 8, 9, 10}
    assert (off_h >= 0).all() and (off_h + size_h <= 10).all() and (off_w + size_w <= 10).all()
    assert off_h[size_h == 7].unique().tolist() == [0, 1, 2, 3]


def test_bad_transform_options_are_clear_errors():
    with pytest.raises(AdvlabError, match="min_scale"):
        RandomResizePad(0)
    with pytest.raises(AdvlabError, match=r"\(N, C, H, W\)"):
        RandomAffine()(torch.rand(3, 5), generator(0))
    with pytest.raises(AdvlabError, match="unknown transform"):
        build_transform("blur")
    with pytest.raises(AdvlabError, match="samples"):
        EOT(small_cnn(), GaussianNoise(0.1), samples=0)
    assert isinstance(build_transform("resize-pad", min_scale=0.8), RandomResizePad)


# -- EOT and Randomized -----------------------------------------------------------------------
def test_eot_of_a_deterministic_transform_equals_the_model():
    model = small_cnn()
    x = torch.rand(5, 1, 8, 8, generator=generator(3))
    flip = lambda x, g: x.flip(-1)  # noqa: E731
    for samples, chunk in [(1, None), (7, None), (7, 3)]:
        out = EOT(model, flip, samples=samples, chunk=chunk)(x)
        assert torch.allclose(out, model(x.flip(-1)).log_softmax(1), atol=1e-5)


class Recorder:
    """Wraps a transform and keeps the parameters of every draw, so a test can replay them."""

    def __init__(self, transform):
        self.transform, self.params = transform, []

    def __call__(self, x, g):
        p = self.transform.sample(x, g)
        self.params.append(p)
        return self.transform.apply(x, p)


@pytest.mark.parametrize("transform", [GaussianNoise(0.2), RandomAffine(20, 1.5), RandomResizePad(0.6)])
@pytest.mark.parametrize("chunk", [None, 2])
def test_eot_gradient_is_the_average_of_the_per_sample_gradients(transform, chunk):
    model = small_cnn()
    x = torch.rand(3, 1, 8, 8, generator=generator(4))
    y = torch.tensor([0, 1, 3])
    samples, rec = 5, Recorder(transform)
    eot = EOT(model, rec, samples=samples, chunk=chunk)
    xg = x.clone().requires_grad_(True)
    prob = eot(xg).exp().gather(1, y[:, None]).sum()  # mean over samples of p_y(t_s(x))
    grad, = torch.autograd.grad(prob, xg)

    # The same draws, one sample at a time. EOT draws for the batch repeated `chunk` times.
    per_sample = []
    for params in rec.params:
        c = len(params[0]) // 3 if isinstance(params, tuple) else len(params) // 3
        for s in range(c):
            sl = slice(s * 3, (s + 1) * 3)
            p = tuple(q[sl] for q in params) if isinstance(params, tuple) else params[sl]
            xs = x.clone().requires_grad_(True)
            ps = model(transform.apply(xs, p)).softmax(1).gather(1, y[:, None]).sum()
            per_sample.append(torch.autograd.grad(ps, xs)[0])
    assert len(per_sample) == samples
    expected = torch.stack(per_sample).mean(0)
    assert grad.abs().max() > 0
    assert torch.allclose(grad, expected, atol=1e-6, rtol=1e-4)


def test_randomized_defense_varies_while_eot_with_many_samples_is_stable():
    with seeded(0):
        model = build_model("mlp", (1, 8, 8), 4, hidden=[16]).eval()
    x = torch.rand(6, 1, 8, 8, generator=generator(5))
    t = GaussianNoise(0.5)
    defense = Randomized(model, t, seed=1)
    a, b = defense(x).softmax(1), defense(x).softmax(1)
    assert not torch.equal(a, b)
    eot = EOT(model, t, samples=4000, chunk=1000, seed=1)
    with torch.no_grad():
        p, q = eot(x).exp(), eot(x).exp()
    # Each EOT output is a mean of 4000 draws: two passes agree to well within the spread of one draw.
    assert (p - q).abs().max() < 0.2 * (a - b).abs().max()
    assert (p - q).abs().max() < 0.02
    # EOT over the defense's own randomness (transform=None) estimates the same expectation.
    r = EOT(Randomized(model, t, seed=7), samples=4000, chunk=1000)
    with torch.no_grad():
        assert (r(x).exp() - p).abs().max() < 0.03


def test_wrappers_use_their_own_generator_and_reset_repeats_the_stream():
    model = small_cnn()
    x = torch.rand(4, 1, 8, 8, generator=generator(6))
    wrappers = (Randomized(model, RandomAffine(20, 1), seed=3), EOT(model, RandomResizePad(0.6), samples=3, seed=3))
    for wrapper in wrappers:
        state = torch.random.get_rng_state()
        first = [wrapper(x), wrapper(x)]
        assert torch.equal(torch.random.get_rng_state(), state), "the global RNG was used"
        wrapper.reset()
        assert torch.equal(wrapper(x), first[0]) and torch.equal(wrapper(x), first[1])
        wrapper.reset(seed=4)
        assert not torch.equal(wrapper(x), first[0])


def test_wrappers_follow_the_wrapped_models_mode():
    model = small_cnn()
    assert not EOT(model, GaussianNoise(0.1)).training and not Randomized(model, GaussianNoise(0.1)).training
    model.train()
    assert EOT(model, GaussianNoise(0.1)).training


@pytest.mark.slow
def test_eot_pgd_beats_naive_pgd_on_a_random_resize_pad_defense(digits, trained_digits):
    torch.set_num_threads(1)
    t = RandomResizePad(0.75)
    model = trained_digits("cnn-small", epochs=15, resize_pad=t.min_scale)  # trained under t
    x, y = digits.x_test[:150], digits.y_test[:150]
    # Averaged over three draws of the defense's randomness: one draw alone moves the gap by ~5 points.
    naive_acc, eot_acc, clean = [], [], []
    for seed in (1, 3, 5):
        defense = Randomized(model, t, seed=seed)
        clean.append(accuracy(defense, x, y))
        naive = transfer(PGD(steps=20), defense, {"defense": defense}, x, y, [0.1], digits.bounds)
        eot = transfer(PGD(steps=20), EOT(model, t, samples=8, seed=seed + 1), {"defense": defense}, x, y, [0.1],
                       digits.bounds)
        naive_acc.append(naive.scores["defense"].robust_accuracy()[0])
        eot_acc.append(eot.scores["defense"].robust_accuracy()[0])
    assert sum(clean) / 3 > 0.85, clean
    assert sum(eot_acc) / 3 < sum(naive_acc) / 3 - 0.08, (naive_acc, eot_acc)
    assert all(math.isfinite(a) for a in eot_acc)


class _Tiny(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :3]


def test_eot_works_on_flat_features_with_noise():
    x = torch.rand(4, 5, generator=generator(7))
    out = EOT(_Tiny(), GaussianNoise(0.0), samples=3)(x)
    assert torch.allclose(out, x[:, :3].log_softmax(1), atol=1e-6)
