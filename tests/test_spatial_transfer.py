"""The spatial (rotation + translation grid) attack and transfer attacks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from advlab.attacks import PGD, Spatial, TransferResult, build_attack, transfer
from advlab.errors import AdvlabError
from advlab.models import affine_transform, build_model
from advlab.predict import predict_logits
from advlab.rng import generator, seeded


def random_cnn(k=4, seed=0):
    with seeded(seed):
        return build_model("cnn-small", (1, 8, 8), k).eval()


# -- spatial ------------------------------------------------------------------------------------------
def test_spatial_with_eps_zero_is_the_identity():
    model = random_cnn()
    x = torch.rand(10, 1, 8, 8, generator=generator(0))
    y = torch.randint(0, 4, (10,), generator=generator(1))
    r = Spatial()(model, x, y, [0.0], bounds=(0, 1))
    assert torch.equal(r.x_adv[0], x)
    assert (r.info["angle"] == 0).all() and (r.info["shift"] == 0).all() and (r.distances == 0).all()
    assert torch.equal(r.logits[0].argmax(1), r.clean_logits.argmax(1))
    assert r.robust_accuracy()[0] == r.clean_accuracy()


@pytest.mark.parametrize("targeted", [False, True])
def test_spatial_finds_the_worst_grid_point_by_brute_force(targeted):
    model = random_cnn(seed=3)
    x = torch.rand(6, 1, 8, 8, generator=generator(2))
    with torch.no_grad():
        y = model(x).argmax(1)  # start correct, so the attack has something to do
    targets = (y + 1) % 4 if targeted else None
    attack = Spatial(max_rotation=20, max_shift=2, rotations=5, shifts=5, targeted=targeted)
    r = attack(model, x, y, [0.5, 1.0], bounds=(0, 1), targets=targets)
    angles = torch.linspace(-20, 20, 5)
    moves = torch.arange(-2.0, 3.0)
    for e, share in enumerate([0.5, 1.0]):
        for i in range(len(x)):
            best = None  # (goal met, loss) maximised lexicographically
            for a in angles:
                for dx in moves:
                    for dy in moves:
                        if max(abs(a) / 20, abs(dx) / 2, abs(dy) / 2) > share + 1e-6:
                            continue
                        with torch.no_grad():
                            lg = model(affine_transform(x[i:i + 1], a, (dx, dy)))
                        if targeted:
                            key = (bool(lg.argmax(1) == targets[i]), -F.cross_entropy(lg, targets[i:i + 1]).item())
                        else:
                            key = (bool(lg.argmax(1) != y[i]), F.cross_entropy(lg, y[i:i + 1]).item())
                        best = key if best is None or key > best else best
            lg = r.logits[e, i:i + 1]
            got = -F.cross_entropy(lg, targets[i:i + 1]) if targeted else F.cross_entropy(lg, y[i:i + 1])
            assert bool(r.success[e, i]) == best[0]
            assert got.item() == pytest.approx(best[1], rel=1e-4, abs=1e-5)
    assert (r.distances[0] <= 0.5 + 1e-6).all()


class LeftRight(nn.Module):
    """Class 0 when the mass is left of centre, class 1 when it is right of it: not shift-invariant."""

    def forward(self, x):
        cols = torch.arange(x.shape[-1], dtype=x.dtype) - (x.shape[-1] - 1) / 2
        score = (x.sum((1, 2)) * cols).sum(1)
        return torch.stack([-score, score], 1)


def test_spatial_moves_content_across_the_decision_line():
    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, 2:6, 2] = 1  # a bar left of centre: class 0
    x[1, 0, 2:6, 5] = 1  # right of centre: class 1
    y = torch.tensor([0, 1])
    attack = Spatial(max_rotation=0, max_shift=3, rotations=1, shifts=7)
    r = attack(LeftRight().eval(), x, y, [1 / 3, 1.0], bounds=(0, 1))
    # One pixel is not enough to cross the centre line; three pixels are, and the worst case goes furthest.
    assert r.robust_accuracy() == [1.0, 0.0]
    assert r.info["shift"][1, :, 0].tolist() == [3.0, -3.0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 999), eps=st.lists(st.floats(0, 1), min_size=1, max_size=3),
       lo=st.floats(-1, 0.5), max_rotation=st.floats(0, 45), max_shift=st.floats(0, 3))
def test_spatial_stays_in_bounds_and_is_monotone_in_eps(seed, eps, lo, max_rotation, max_shift):
    model = random_cnn(seed=seed % 3)
    g = generator(seed)
    bounds = (lo, lo + 1)
    x = lo + torch.rand(5, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (5,), generator=g)
    r = Spatial(max_rotation=max_rotation, max_shift=max_shift, rotations=3, shifts=3)(model, x, y, eps, bounds=bounds)
    assert torch.isfinite(r.x_adv).all()
    assert r.x_adv.min() >= lo - 1e-6 and r.x_adv.max() <= lo + 1 + 1e-6
    for e, share in enumerate(eps):
        assert (r.distances[e] <= share + 1e-5).all()
    order = sorted(range(len(eps)), key=lambda e: eps[e])
    acc = [r.robust_accuracy()[e] for e in order]
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    assert max(acc) <= r.clean_accuracy()


def test_spatial_breaks_a_digits_model(digits, digits_cnn):
    torch.set_num_threads(1)
    model = digits_cnn
    x, y = digits.x_test[:100], digits.y_test[:100]
    r = Spatial(max_rotation=30, max_shift=3, rotations=5, shifts=7)(model, x, y, [0.0, 1.0], bounds=digits.bounds)
    clean, worst = r.robust_accuracy()
    assert clean == r.clean_accuracy() > 0.9
    assert worst < 0.2  # 8x8 digits are not invariant to 3-pixel shifts


def test_spatial_bad_input():
    model = random_cnn()
    x = torch.rand(3, 1, 8, 8)
    y = torch.zeros(3, dtype=torch.long)
    with pytest.raises(AdvlabError, match="share of the transformation range"):
        Spatial()(model, x, y, [0.5, 2.0])
    with pytest.raises(AdvlabError, match=r"\(N, C, H, W\)"):
        Spatial()(build_model("softmax", (64,), 4).eval(), x.flatten(1), y, [1.0])
    with pytest.raises(AdvlabError, match="labels must be in 0..3"):
        Spatial()(model, x, y + 7, [1.0])
    with pytest.raises(AdvlabError, match="targeted"):
        Spatial(targeted=True)(model, x, y, [1.0])
    with pytest.raises(AdvlabError, match="rotations"):
        Spatial(rotations=0)
    assert isinstance(build_attack("spatial", max_rotation=10), Spatial)


def test_spatial_restores_model_mode():
    with seeded(0):
        model = build_model("cnn-small", (1, 8, 8), 4, dropout=0.5)  # train mode, with dropout
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.warns(UserWarning, match="train mode"):
        r = Spatial(rotations=3, shifts=3)(model, x, y, [1.0])
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()  # the attack ran in eval mode: its scores are the eval-mode model's
    with torch.no_grad():
        assert torch.allclose(model(r.x_adv[0]), r.logits[0], atol=1e-5)


# -- transfer -----------------------------------------------------------------------------------------
def test_transfer_to_the_source_itself_equals_the_attacks_own_result(digits, digits_cnn):
    torch.set_num_threads(1)
    model = digits_cnn
    x, y = digits.x_test[:120], digits.y_test[:120]
    attack = PGD(steps=10, batch_size=50)
    eps = [0.05, 0.1, 0.2]
    t = transfer(attack, model, {"self": model}, x, y, eps, digits.bounds)
    own = attack(model, x, y, eps, bounds=digits.bounds)
    assert isinstance(t, TransferResult) and t.eps == eps
    assert torch.equal(t.source.x_adv, own.x_adv)
    s = t.scores["self"]
    assert s.robust_accuracy() == own.robust_accuracy()
    assert s.success_rate() == own.success_rate()
    assert torch.allclose(s.logits, own.logits, atol=1e-5)
    assert t.error("self") == pytest.approx([1 - a for a in own.robust_accuracy()])


def test_transfer_scores_each_target_on_the_source_examples(digits, digits_cnn):
    torch.set_num_threads(1)
    source = digits_cnn
    with seeded(1):
        other = build_model("mlp", digits.input_shape, 10, hidden=[32]).eval()
    x, y = digits.x_test[:60], digits.y_test[:60]
    t = transfer(PGD(steps=5), source, {"mlp": other, "cnn": source}, x, y, [0.1, math.inf], digits.bounds)
    for e in range(2):
        expected = (predict_logits(other, t.source.x_adv[e]).argmax(1) == y).float().mean().item()
        assert t.scores["mlp"].robust_accuracy()[e] == pytest.approx(expected)
    clean = (predict_logits(other, x).argmax(1) == y).float().mean().item()
    assert t.scores["mlp"].clean_accuracy() == pytest.approx(clean)
    rows = t.summary()
    assert [(r["target"], r["eps"]) for r in rows] == [("mlp", 0.1), ("mlp", math.inf), ("cnn", 0.1), ("cnn", math.inf)]
    assert {"clean_accuracy", "robust_accuracy", "error", "success_rate", "mean_wrong_confidence",
            "median_norm"} <= set(rows[0])


def test_transfer_bad_input():
    model = random_cnn()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(AdvlabError, match="non-empty dict"):
        transfer(PGD(), model, {}, x, y, [0.1])
    with pytest.raises(AdvlabError, match="must be a torch.nn.Module"):
        transfer(PGD(), model, {"f": lambda z: z}, x, y, [0.1])
