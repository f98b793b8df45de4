"""The suites' new rules on models whose answers are known: target ranking, Square's screen, the
give-up rules together, and the worst case over what a run directory records."""

import json

import pytest
import torch
from torch import nn

from advlab.attacks import APGDT, Square
from advlab.attacks.apgd import rank_targets
from advlab.errors import AdvlabError, ConfigError
from advlab.evaluate import evaluate_robustness, get_suite
from advlab.passes import PassCounter
from advlab.rng import seeded
from advlab.threat import get_norm

from attack_models import hyperplane_distance, logistic


def linear_classes(n=160, d=20, k=5, eps=0.25, seed=0):
    """(model, x, y, eps, dist): a linear K-class model whose classes differ a lot in ||w||_1, labels =
    its own predictions, and each point's exact Linf distance to each wrong class's boundary,
    (z_y - z_j) / ||w_y - w_j||_1 (inf for j = y). Without bounds the optimal Linf attack on class j
    lowers z_y - z_j by exactly eps * ||w_y - w_j||_1, so a point is breakable iff min_j dist < eps."""
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):
        model = nn.Linear(d, k).eval()
    with torch.no_grad():
        scale = torch.linspace(0.3, 3.0, k)[:, None]  # boundaries of the large-weight classes are close in Linf
        model.weight.copy_(torch.randn(k, d, generator=g) * scale)
        model.bias.copy_(torch.randn(k, generator=g) * 2)
    x = torch.randn(n, d, generator=g)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = model.weight.detach()
    gap = z.gather(1, y[:, None]) - z                               # (n, k) >= 0
    size = (w[y][:, None, :] - w[None, :, :]).abs().sum(2)          # (n, k) ||w_y - w_j||_1
    dist = torch.where(torch.arange(k)[None] == y[:, None], torch.inf, gap / size.clamp_min(1e-12))
    return model, x, y, eps, dist


def test_linear_ranking_puts_the_nearest_boundary_first_where_the_logits_do_not():
    model, x, y, eps, dist = linear_classes()
    best = dist.argmin(1)
    linear = rank_targets(model, x, y, get_norm("linf"), "linear")
    logits = rank_targets(model, x, y, get_norm("linf"), "logits")
    assert linear.shape == logits.shape == (len(x), 4)
    assert torch.equal(linear[:, 0], best)                           # exact on a linear model
    assert torch.equal(linear.sort(1).values, logits.sort(1).values)  # both rank every wrong class once
    assert (linear != y[:, None]).all()
    assert (logits[:, 0] != best).float().mean() >= 0.2              # the case the ranking is for


def test_one_ranked_target_breaks_exactly_the_breakable_points():
    model, x, y, eps, dist = linear_classes()
    breakable = dist.min(1).values < eps
    clear = ((dist.min(1).values - eps).abs() > 0.1 * eps)
    attack = APGDT("linf", n_target_classes=1, ranking="linear", steps=50)
    broken = ~attack(model, x, y, [eps]).correct[0]
    assert breakable[clear].any() and (~breakable[clear]).any()
    assert torch.equal(broken[clear], breakable[clear])


def test_ranking_must_be_known():
    with pytest.raises(AdvlabError, match="ranking"):
        APGDT(ranking="oracle")


def test_square_screen_drops_only_points_that_cannot_halve_their_margin():
    model, x, y, z = logistic(n=300)
    dist = hyperplane_distance(model, z, 1)
    eps = dist.median().item() / 2
    screen, budget = 50, 600
    # Beyond 3 eps the margin cannot halve from wherever the start lands (it is at least |z| - eps ||w||_1
    # > (|z| + eps ||w||_1) / 2): with nothing broken these points stop at the screen, and they are
    # unbreakable, so stopping them changes nothing.
    far = dist > 3 * eps
    counted = PassCounter(model)
    out = Square("linf", n_queries=budget, screen=screen).perturb(counted, x[far], y[far], eps, early_stop=True)
    assert (model(out).argmax(1) == y[far]).all()
    assert counted.forward_rows <= int(far.sum()) * (screen + 1)
    # A batch where Square breaks a point the far ones are not screened: a break is the sign to spend it all.
    near = dist < 0.5 * eps
    mixed = far | near
    counted = PassCounter(model)
    out = Square("linf", n_queries=budget, screen=screen).perturb(counted, x[mixed], y[mixed], eps, early_stop=True)
    assert counted.forward_rows > int(far.sum()) * budget * 0.9
    # Breakable points are never the ones screened out: alone in their batch, every one still falls.
    reach = (dist < 0.9 * eps) & (dist > 0.5 * eps)
    out = Square("linf", n_queries=budget, screen=screen).perturb(model, x[reach], y[reach], eps, early_stop=True)
    assert (model(out).argmax(1) != y[reach]).all()


def test_square_screen_must_be_a_query_count():
    for bad in (0, -5, 1.5, True):
        with pytest.raises(AdvlabError, match="screen"):
            Square(screen=bad)


def test_standard_suite_finds_the_exact_answer_and_spends_little_on_what_it_cannot_break():
    model, x, y, eps, dist = linear_classes(n=120)
    robust = dist.min(1).values > eps
    clear = (dist.min(1).values - eps).abs() > 0.1 * eps
    counter = PassCounter(model)
    ev = evaluate_robustness(counter, x, y, [eps], get_suite("standard"), progress=False)
    assert torch.equal(ev.robust[0][clear], robust[clear])
    # AutoAttack's budgets on the points nothing can break: 100 APGD-CE steps (forward and backward),
    # 3 x 100 APGD-T steps and 5000 Square queries, each; the give-up rules and the screen cut that.
    full = int(robust.sum()) * (2 * 100 + 3 * 2 * 100 + 5000)
    assert sum(ev.passes.values()) < 0.3 * full, ev.attack_passes


def test_suites_by_name_and_norm():
    fast, standard, aa = get_suite("fast"), get_suite("standard"), get_suite("autoattack")
    assert [e.attack for e in fast] == ["apgd-ce", "apgd-t"]
    assert [e.attack for e in aa] == ["apgd-ce", "apgd-t", "square"]
    # standard: AutoAttack's attacks, and APGD-CE through BPDA where the model has a layer to see through
    assert [e.attack for e in standard] == ["apgd-ce", "apgd-t", "apgd-ce", "square"]
    assert [e.needs for e in standard] == [None, None, "preprocessing", None] and standard[2].options == {"bpda": True}
    assert aa[1].options == {} and aa[2].options == {"n_queries": 5000}  # AutoAttack's full budgets
    assert standard[1].options["ranking"] == "linear" and standard[3].options["screen"] == 250
    assert [e.attack for e in get_suite("fast", norm="l1")] == ["pgd"]
    with pytest.raises(ConfigError, match="linf and l2"):
        get_suite("autoattack", norm="l1")
    for e in [*fast, *standard, *aa]:
        e.build("l2")


def test_fast_suite_works_on_a_binary_model():
    model, x, y, z = logistic(n=40)
    ev = evaluate_robustness(model, x, y, [0.05, 0.2], get_suite("fast"), progress=False)
    acc = ev.robust_accuracy()
    assert acc[0] >= acc[1]


# -- the worst case over everything a run records ------------------------------------------------------------
def _cli(*args):
    import contextlib
    import io

    from advlab.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*map(str, args), "--json", "--no-progress"]) == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("recorded") / "run"
    _cli("train", "--dataset", "digits", "--model", "softmax", "--epochs", "3", "--out", run)
    # One small step from the clean point: far weaker than PGD-20.
    (run.parent / "weak.toml").write_text('[[attack]]\nname = "pgd"\nsteps = 1\nstep_size = 0.01\n'
                                          'random_start = false\n')
    return run


def test_an_evaluation_counts_the_saved_attacks_and_says_which_broke_what(softmax_run):
    run = softmax_run
    pgd = _cli("attack", "--run", run, "--attack", "pgd", "--eps", "0.05,0.2", "--steps", "20", "--n", "120", "--save")
    ev = _cli("evaluate", "--run", run, "--eps", "0.05,0.1", "--suite", "custom", "--suite-file",
              run.parent / "weak.toml", "--n", "120", "--no-checks", "--out", run / "eval" / "weak-a")
    clean_wrong = round(120 * (1 - ev["clean_accuracy"]))
    at = {r["eps"]: r for r in pgd["results"]}
    # eps 0.05: every point PGD broke at 0.05 counts, found by the recorded examples (they go first)
    row = ev["results"][0]
    assert row["broken_by"]["recorded attacks/pgd-linf"] == 120 - clean_wrong - round(120 * at[0.05]["robust_accuracy"])
    assert row["robust_accuracy"] <= at[0.05]["robust_accuracy"]
    # eps 0.1: PGD's 0.2 examples of the points it did not break at 0.05 lie outside the 0.1 ball: they
    # do not count, so the recorded source breaks nothing new at 0.1.
    moved = _tensors(run / "attacks" / "pgd-linf")
    outside = (moved["x_adv"][1] - moved["x"]).flatten(1).abs().amax(1) > 0.1 + 1e-6
    assert outside.any()
    assert ev["results"][1]["broken_by"]["recorded attacks/pgd-linf"] == row["broken_by"]["recorded attacks/pgd-linf"]
    assert ev["summary"]["command"].startswith("advlab evaluate --run ")
    assert {"clean_accuracy", "robust_accuracy", "ci95", "threat", "eps", "n", "passes", "seconds", "device"} <= \
        set(ev["summary"])
    # --ignore-recorded: the suite alone
    alone = _cli("evaluate", "--run", run, "--eps", "0.05", "--suite", "custom", "--suite-file", run.parent / "weak.toml",
                 "--n", "120", "--no-checks", "--ignore-recorded", "--out", run / "eval" / "weak-b")
    assert not any(k.startswith("recorded") for k in alone["results"][0]["broken_by"])


def _tensors(d):
    from advlab.io import load_tensors
    return load_tensors(d / "adversarial.safetensors")


def test_the_report_never_shows_a_worst_case_above_an_attack_on_the_same_page(softmax_run, tmp_path):
    import shutil

    from advlab.report.html import write_report
    run = tmp_path / "run"
    shutil.copytree(softmax_run, run, ignore=shutil.ignore_patterns("attacks", "eval"))
    # The evaluation first, with a weak suite; the stronger attack is saved after it.
    _cli("evaluate", "--run", run, "--eps", "0.05,0.1", "--suite", "custom", "--suite-file",
         softmax_run.parent / "weak.toml", "--n", "100", "--no-checks")
    _cli("attack", "--run", run, "--attack", "pgd", "--eps", "0.05,0.1", "--steps", "20", "--n", "100", "--save")
    _, ctx = write_report(run)
    series = [s for fig in ctx["curves"] for s in fig["series"]]
    evals = [s for s in series if "worst case" in s["label"]]
    attacks = [s for s in series if "worst case" not in s["label"]]
    assert evals and attacks
    for ev in evals:
        for at in attacks:  # the same 100 points and budgets (0, 0.05, 0.1): every budget is compared
            assert at["n"] == ev["n"] and set(ev["eps"]) <= set(at["eps"]), (at["label"], at["eps"], ev["eps"])
            for e, acc in zip(ev["eps"], ev["acc"]):
                assert acc <= at["acc"][at["eps"].index(e)] + 1e-9, (ev["label"], at["label"], e)
    (shown,) = ctx["evals"]
    assert shown["record"]["folded_recorded"]
    assert any(r["broken_by"].get("recorded attacks/pgd-linf", 0) > 0 for r in shown["rows"])
    assert shown["record"]["summary"]["robust_accuracy"] == [r["acc"] for r in shown["rows"]]


@pytest.mark.slow
def test_ranked_targets_with_give_up_are_identical_with_and_without_device_masks(digits, digits_cnn_short):
    """The suites' APGD-T (linear ranking, give_up) keeps the engine's promise: the masked path a GPU
    takes and the shrinking batch of the CPU give the same examples, bit for bit."""
    model = digits_cnn_short
    x, y = digits.test_subset(120)
    runs = [APGDT(steps=20, n_target_classes=2, ranking="linear", give_up=3.0, sync_free=sf)(
        model, x, y, [0.05, 0.15], bounds=digits.bounds) for sf in (False, True)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].success, runs[1].success)
    assert runs[0].success[-1].float().mean() > 0.2


def test_a_recorded_file_that_cannot_be_read_breaks_nothing(tmp_path, capsys):
    from advlab.evaluate.recorded import RecordedEntry
    bad = tmp_path / "adversarial.safetensors"
    bad.write_bytes(b"not safetensors")
    model, x, y, eps, dist = linear_classes(n=30)
    entry = RecordedEntry("recorded attacks/bad", "recorded", {"path": str(bad)})
    ev = evaluate_robustness(model, x, y, [eps], [entry], progress=False)
    assert ev.robust_accuracy()[0] == ev.clean_accuracy()
    assert "skipping the recorded examples" in capsys.readouterr().err


def test_near_restarts_rerun_only_the_unbroken_points_that_end_near_the_boundary():
    """On a linear model APGD-CE's Linf optimum is exact, so a point just beyond eps ends with a margin of
    (dist - eps) / dist of its clean one: near (< NEAR_SHARE) from 1 to 1/(1 - NEAR_SHARE) times eps."""
    from advlab.attacks import APGD
    from advlab.attacks.apgd import NEAR_SHARE
    model, x, y, z = logistic(n=2000)
    dist = hyperplane_distance(model, z, 1)
    eps = dist.median().item()
    near = (dist > 1.01 * eps) & (dist < 0.99 * eps / (1 - NEAR_SHARE))
    far = dist > 1.2 * eps
    assert near.sum() >= 5 and far.sum() >= 5

    def cost(rows, restarts):
        counted = PassCounter(model)
        out = APGD("linf", steps=10, near_restarts=restarts).perturb(counted, x[rows], y[rows], eps, early_stop=True)
        assert (model(out).argmax(1) == y[rows]).all()  # unbreakable, whatever the restarts
        return counted.counts()

    n_near, n_far = int(near.sum()), int(far.sum())
    once, twice, thrice = cost(near, 0), cost(near, 1), cost(near, 2)
    run = twice["backward"] - once["backward"]
    assert run > 0 and thrice["backward"] - once["backward"] == 2 * run  # two more full runs on every near point
    # and the check: clean and best, one forward pass each
    assert thrice["forward"] - once["forward"] == 2 * (thrice["forward"] - twice["forward"]) + 2 * n_near
    once, thrice = cost(far, 0), cost(far, 2)
    assert thrice == {"forward": once["forward"] + 2 * n_far, "backward": once["backward"]}  # the check only


def test_near_restarts_must_be_a_count():
    from advlab.attacks import APGD
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(AdvlabError, match="near_restarts"):
            APGD(near_restarts=bad)



def quantised_linear(n=200, d=30, seed=0):
    """(model, x, y): a linear model behind 4-level input quantisation (zero gradient everywhere), labels =
    its own predictions, inputs in [0, 1] away from the rounding thresholds (every point starts correct)."""
    from advlab.models import Preprocessed, Quantize
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):
        inner = nn.Linear(d, 3).eval()
    model = Preprocessed(inner, Quantize(4, bounds=(0.0, 1.0))).eval()
    x = torch.randint(0, 4, (n, d), generator=g).float() / 3
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_bpda_stage_breaks_what_the_zero_gradient_hides_and_leaves_the_model_as_it_was():
    from advlab.attacks import APGD
    from advlab.models import Preprocessed
    model, x, y = quantised_linear()
    eps = 0.2  # past the rounding threshold (1/6 from each level): every input coordinate can move one level
    naive = APGD("linf", steps=20)(model, x, y, [eps], bounds=(0, 1))
    through = APGD("linf", steps=20, bpda=True)(model, x, y, [eps], bounds=(0, 1))
    assert through.attack == "apgd-ce-bpda"
    # The gradient is zero: the naive attack breaks only what its random start happens to (5 of 200 here);
    # straight-through gradients find what the quantisation hides (196).
    assert (~through.correct[0]).sum() >= 10 * max(int((~naive.correct[0]).sum()), 1)
    with torch.no_grad():  # scored on the model itself (the harness), inside the ball
        assert torch.equal(~through.correct[0], model(through.x_adv[0]).argmax(1) != y)
    assert ((through.x_adv[0] - x).abs().amax(1) <= eps + 1e-6).all()
    assert isinstance(model, Preprocessed) and not any(type(m).__name__ == "BPDA" for m in model.modules())
    wrapped = nn.Sequential(model)  # in place inside a container, restored afterwards
    APGD("linf", steps=5, bpda=True)(wrapped, x[:10], y[:10], [eps], bounds=(0, 1))
    assert wrapped[0] is model
    with seeded(0):
        plain = nn.Linear(30, 3)
    with torch.no_grad():
        own = plain(x[:4]).argmax(1)  # its own predictions: every point is attacked, none is wrong already
    with pytest.raises(AdvlabError, match="preprocessing"):
        APGD("linf", bpda=True)(plain, x[:4], own, [eps], bounds=(0, 1))


def test_standard_runs_the_bpda_stage_only_where_the_model_has_a_layer_to_see_through():
    model, x, y = quantised_linear(n=60)
    ev = evaluate_robustness(model, x, y, [0.2], get_suite("standard"), bounds=(0, 1), progress=False)
    assert "apgd-ce-bpda" in ev.attacks and ev.broken_by_attack()[0].get("apgd-ce-bpda", 0) >= 5
    plain, xp, yp, _ = logistic(n=40)[0], *logistic(n=40)[1:]
    ev = evaluate_robustness(plain, xp, yp, [0.1], get_suite("standard"), progress=False)
    assert "apgd-ce-bpda" not in ev.attacks


def test_suite_file_needs_preprocessing(tmp_path):
    from advlab.evaluate.suites import load_suite_file
    good = tmp_path / "s.toml"
    good.write_text('[[attack]]\nname = "apgd-ce"\nbpda = true\nneeds = "preprocessing"\n')
    assert load_suite_file(good)[0].needs == "preprocessing"
    bad = tmp_path / "b.toml"
    bad.write_text('[[attack]]\nname = "apgd-ce"\nneeds = "gpu"\n')
    with pytest.raises(ConfigError, match="needs"):
        load_suite_file(bad)


def test_a_suite_with_no_stage_for_the_model_is_refused():
    from advlab.evaluate.suites import SuiteEntry
    plain, x, y, _ = logistic(n=10)
    only_bpda = [SuiteEntry("apgd-ce-bpda", "apgd-ce", {"bpda": True}, needs="preprocessing")]
    with pytest.raises(AdvlabError, match="no stage of the suite applies"):
        evaluate_robustness(plain, x, y, [0.1], only_bpda, progress=False)


def test_bpda_sees_through_nested_preprocessing_inside_wrappers():
    """Preprocessed(Preprocessed(net, a), b) inside a pass counter: both layers' twins, innermost first, so the
    gradient is the straight-through one (not zero), and the model is the same afterwards."""
    from advlab.models import Preprocessed, Quantize
    from advlab.models.adaptive import bpda_gradients
    model, x, y = quantised_linear(n=50)
    nested = Preprocessed(Preprocessed(model.model, Quantize(4, bounds=(0.0, 1.0))), Quantize(4, bounds=(0.0, 1.0)))
    counted = PassCounter(nested)
    row = x[:5].clone().requires_grad_(True)
    with bpda_gradients(counted) as twin:
        grad, = torch.autograd.grad(twin(row).sum(), row)
    assert grad.abs().sum() > 0
    assert counted.model is nested and isinstance(nested.model, Preprocessed)  # restored, both levels
    with torch.no_grad():  # quantising twice is quantising once: the same model
        assert torch.equal(nested(x[:5]), model(x[:5]))
    assert counted.backward_rows >= 5  # the search's passes go through the counter


def test_bpda_stage_left_out_where_the_straight_through_gradient_cannot_flow():
    """A preprocessing layer that changes the input's shape, without a backward_approximation: the identity
    backward cannot run, so the stage that needs it is left out instead of failing halfway."""
    from advlab.evaluate.suites import SuiteEntry
    from advlab.models import Preprocessed
    with seeded(0):
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model = Preprocessed(net, nn.AvgPool2d(2)).eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    suite = [SuiteEntry("apgd-ce", "apgd-ce", {"steps": 5}),
             SuiteEntry("apgd-ce-bpda", "apgd-ce", {"steps": 5, "bpda": True}, needs="preprocessing")]
    with pytest.warns(UserWarning, match="BPDA cannot see through"):
        ev = evaluate_robustness(model, x, y, [0.1], suite, bounds=(0, 1), progress=False)
    assert ev.attacks == ["apgd-ce"]
    # Without `needs`, a BPDA stage on a model it cannot run on is refused before any work.
    plain, xp, yp, _ = logistic(n=10)
    with pytest.raises(AdvlabError, match="searches through BPDA"):
        evaluate_robustness(plain, xp, yp, [0.1], [suite[0], SuiteEntry("b", "apgd-ce", {"bpda": True})],
                            progress=False)
