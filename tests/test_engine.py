"""The one attack engine: every threat and goal through one loop, sync-free early stopping, batches."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab.attacks import APGD, APGDT, PGD, Fooling, HighConfidence
from advlab.attacks.engine import ascend
from advlab.attacks.goals import Confident, Misclassify, Rubbish
from advlab.models import build_model
from advlab.profiling import HostSyncCounter
from advlab.rng import generator
from advlab.threat import LpBall


@pytest.fixture(scope="module")
def cnn(trained_digits):
    return trained_digits("cnn-small", epochs=6)  # digits_cnn_short, shared by the module


ATTACKS = {
    "pgd": lambda sf: PGD(steps=10, sync_free=sf),
    "pgd-restarts-momentum": lambda sf: PGD(steps=6, restarts=2, momentum=1.0, sync_free=sf),
    "pgd-l1": lambda sf: PGD("l1", steps=8, sync_free=sf),
    "highconf": lambda sf: HighConfidence(kappa=0.8, steps=15, sync_free=sf),
    "apgd": lambda sf: APGD(steps=15, sync_free=sf),
    "apgd-giveup": lambda sf: APGD(steps=15, give_up=2, sync_free=sf),
    "apgdt": lambda sf: APGDT(steps=10, n_target_classes=3, sync_free=sf),
    "fooling": lambda sf: Fooling(steps=30, step_size=0.05, target_confidence=0.8, per_class=15, sync_free=sf),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_masked_early_stopping_gives_exactly_the_shrinking_batchs_results(name, cnn, digits):
    """On a GPU finished rows stay in the batch under a device mask; on the CPU they leave it. Same
    arithmetic per row, so the same adversarial examples, bit for bit."""
    x, y = digits.test_subset(150)
    eps = {"pgd-l1": [5.0, 10.0], "fooling": [0.3, 1.0], "highconf": [0.1, 0.3]}.get(name, [0.05, 0.15])
    shrinking = ATTACKS[name](False)(cnn, x, y, eps, bounds=digits.bounds)
    masked = ATTACKS[name](True)(cnn, x, y, eps, bounds=digits.bounds)
    assert torch.equal(shrinking.x_adv, masked.x_adv)
    assert torch.equal(shrinking.success, masked.success)
    assert shrinking.success[-1].float().mean() > 0.2  # the attacks did something
    assert masked.passes["forward"] >= shrinking.passes["forward"]  # frozen rows still cost compute


def _syncs_per_step(make, model, x, y):
    """Marginal would-be host synchronisations per step: (count at 40 steps - at 20) / 20."""
    counts = []
    for steps in (20, 40):
        with HostSyncCounter() as syncs:
            make(steps).perturb(model, x, y, 0.1, bounds=(0.0, 1.0), early_stop=True)
        counts.append(syncs.count)
    return (counts[1] - counts[0]) / 20


@pytest.mark.parametrize("make", [lambda s, sf: PGD(steps=s, sync_free=sf), lambda s, sf: APGD(steps=s, sync_free=sf)],
                         ids=["pgd", "apgd"])
def test_sync_free_early_stopping_waits_for_the_host_at_most_once_per_check(make, digits):
    torch.manual_seed(0)
    model = build_model("cnn-small", digits.input_shape, digits.num_classes).eval()
    x, y = digits.test_subset(100)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correct and most stay unbroken: the loop runs on
    masked = _syncs_per_step(lambda s: make(s, True), model, x, y)
    shrinking = _syncs_per_step(lambda s: make(s, False), model, x, y)
    assert masked <= 0.25 + 1e-9, masked  # one check every 4 steps (engine.CHECK_EVERY)
    assert shrinking >= 0.9, shrinking  # the CPU path asks about every step: the counter does see syncs


def test_the_counter_sees_the_calls_that_stall_a_gpu():
    x, m = torch.rand(5), torch.tensor([True, False, True, False, True])
    with HostSyncCounter() as syncs:
        x.sum().item()
        bool(x.sum() > 0)
        x[m] = 0.0
        _ = x[m]
        m.nonzero()
        torch.where(m, x, -x)  # no sync
    assert syncs.by_kind == {"item": 1, "__bool__": 1, "__setitem__[mask]": 1, "__getitem__[mask]": 1, "nonzero": 1}


GOALS = {"misclassify": lambda: Misclassify("ce"), "margin": lambda: Misclassify("margin"),
         "confident": lambda: Confident(0.7), "rubbish": lambda: Rubbish(0.9, l2=0.1)}


@settings(max_examples=30, deadline=None)
@given(goal=st.sampled_from(sorted(GOALS)), norm=st.sampled_from(["linf", "l2", "l1"]),
       eps=st.floats(0.0, 3.0), bounded=st.booleans(), random_start=st.booleans(), seed=st.integers(0, 10**6),
       image=st.booleans())
def test_every_goal_and_lp_threat_stays_inside_the_ball_and_bounds(goal, norm, eps, bounded, random_start, seed, image):
    """The loop itself (before the base class enforces anything) keeps every iterate feasible."""
    torch.manual_seed(seed)
    shape = (6, 1, 3, 3) if image else (6, 9)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 4))
    x0 = torch.rand(shape)
    y = torch.randint(0, 4, (6,))
    bounds = (0.0, 1.0) if bounded else None
    e = torch.full((6,), eps)
    out, loss, met = ascend(model, x0, y, y if goal == "rubbish" else None, e, e / 4 + 0.01,
                            threat=LpBall(norm), goal=GOALS[goal](), steps=5, random_start=random_start,
                            generator=generator(seed), early_stop=bool(seed % 2), bounds=bounds)
    size = LpBall(norm).distance(x0, out)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), (size, eps)
    if bounded:
        assert out.min() >= 0 and out.max() <= 1
    assert met.dtype == torch.bool and loss.shape == (6,)


def test_the_goals_say_done_exactly_when_their_definition_holds():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.1, 0.0]])
    y = torch.tensor([0, 0, 0])
    p = logits.softmax(1)
    assert Misclassify().met(logits, y, None).tolist() == [False, True, True]
    assert Confident(0.8).met(logits, y, None).tolist() == [False, bool(p[1, 1] >= 0.8), False]
    t = torch.tensor([0, 1, 1])
    assert Rubbish(0.5).met(logits, y, t).tolist() == [bool(p[0, 0] >= 0.5), True, False]
    Rubbish(0.5).check_targets(y, y)  # a rubbish image's target may be its "label"
    with pytest.raises(Exception, match="different class"):
        Misclassify().check_targets(y, y)


def test_one_fgsm_step_through_the_engine_moves_a_linear_margin_by_exactly_eps_times_the_dual_norm():
    """Closed form: for logits w.x (binary margin), one Linf step of size eps changes the margin by
    eps * ||w||_1, an L2 step by eps * ||w||_2."""
    torch.manual_seed(3)
    w = torch.randn(2, 12)
    model = nn.Linear(12, 2, bias=False)
    model.weight.data = w
    x0 = torch.randn(8, 12)
    y = model(x0).argmax(1).detach()
    d = w[1] - w[0]
    for norm, dual in (("linf", d.abs().sum()), ("l2", d.norm())):
        eps = torch.full((8,), 0.3)
        out, _, _ = ascend(model, x0, y, None, eps, eps, threat=LpBall(norm), goal=Misclassify("margin"), steps=1,
                           random_start=False, generator=generator(0), early_stop=False, bounds=None)
        sign = torch.where(y == 0, 1.0, -1.0)  # the margin of the wrong class grows
        moved = sign * ((out - x0) @ d)
        assert torch.allclose(moved, 0.3 * dual.expand(8), rtol=1e-5), (norm, moved)


def test_a_default_batch_is_chosen_for_the_device():
    from advlab.device import default_batch_size
    seen = []

    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            seen.append(len(x))
            return self.lin(x)

    x, y = torch.rand(1200, 4), torch.randint(0, 3, (1200,))
    PGD(steps=2)(Recording().eval(), x, y, [0.1])
    assert default_batch_size("cpu") == 500 < default_batch_size("cuda")
    assert max(seen) == 500  # 1,200 points: batches of 500, 500, 200 on the CPU


def test_zero_steps_of_fooling_return_the_start_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 3)).eval()
    r = Fooling(steps=0)(model, torch.rand(2, 1, 3, 3), None, [math.inf], bounds=(0.0, 1.0))
    assert torch.equal(r.x_adv[0], r.info["start"])
