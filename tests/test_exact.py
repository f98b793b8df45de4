"""Exact verification (issue 26): tests that fail when a decision is wrong.

- on networks with 2-D inputs, `verify_exact` (branch and bound, and the MILP) agrees with brute force
  on a fine grid of the ball (with the grid's Lipschitz slack), and decides every point;
- the same comparison finds disagreements when a ReLU relaxation is made wrong on purpose;
- on a trained digits MLP every verified point survives PGD with restarts and APGD, and every
  counterexample fools the fp32 model inside the ball and the bounds;
- a verification resumes from its saved state, and retries its unknown points with a longer timeout;
- `advlab certify --method exact` and `advlab evaluate --certify exact|crown` keep the JSON contract and
  say "robust accuracy = X (exact)" when every point is decided.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import advlab.certify.crown as crown_module
from advlab.certify import verify_exact
from advlab.cli import main
from advlab.errors import AdvlabError

BOUNDS = (0.0, 1.0)


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 3))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3)
    return net.eval()


def lipschitz(net: nn.Module) -> float:
    """A bound on how much any margin z_y - z_j moves per unit of Linf distance in the input."""
    w = [m.weight.detach().double() for m in net if isinstance(m, nn.Linear)]
    bound = 2 * w[-1].abs().sum(1).max()
    for m in w[:-1]:
        bound = bound * m.abs().sum(1).max()
    return float(bound)


def brute_force(net, x, y, eps, steps=400) -> tuple[torch.Tensor, float]:
    """(N,) the smallest margin over a grid of each ball intersected with the bounds, and the grid's slack."""
    net64 = net.double()
    out, slack = [], 0.0
    for xi, yi in zip(x.double(), y.tolist()):
        lo, hi = (xi - eps).clamp(*BOUNDS), (xi + eps).clamp(*BOUNDS)
        axes = [torch.linspace(float(a), float(b), steps + 1, dtype=torch.float64) for a, b in zip(lo, hi)]
        grid = torch.cartesian_prod(*axes)
        with torch.no_grad():
            z = net64(grid)
        margin = z[:, yi:yi + 1] - z
        margin[:, yi] = float("inf")
        out.append(margin.min())
        slack = max(slack, float((hi - lo).max()) / steps / 2)
    net.float()
    return torch.stack(out), slack * lipschitz(net)


def disagreements(strategy: str, seeds=range(3), attack_steps: int = 1) -> tuple[int, int, int, int]:
    """(disagreements with brute force, unambiguous points, breakable ones among them, undecided points) over
    tiny nets and points: a
    status that contradicts the grid, or a margin bound above the grid's smallest margin. A weak attack
    (`attack_steps`), so that the bounds and the search decide, not PGD."""
    bad = clear = breakable = undecided = 0
    for seed in seeds:
        net = tiny_net(seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(12, 2, generator=g)
        with torch.no_grad():
            y = net(x).argmax(1)
        y[0] = (y[0] + 1) % 3                  # one point the model gets wrong at the centre already
        eps = 0.12
        cert = verify_exact(net, x, y, eps, bounds=BOUNDS, timeout=60, strategy=strategy, attack_steps=attack_steps,
                            attack_restarts=1, progress=False)
        truth, slack = brute_force(net, x, y, eps)
        # the proven margin bound is below the smallest margin on the grid (which is above the true minimum)
        bad += int((cert.extra["margin_lower_bound"] > truth + 1e-9).sum())
        for status, t in zip(cert.status, truth.tolist()):
            undecided += status == "unknown"
            if t < 0:                               # a grid point is a counterexample
                clear += 1
                breakable += 1
                bad += status == "verified"
            elif t > slack:                         # no point of the ball is one
                clear += 1
                bad += status == "falsified"
    return bad, clear, breakable, undecided


@pytest.mark.parametrize("strategy", ["bab", "milp"])
def test_exact_agrees_with_brute_force_on_2d_inputs_and_decides_every_point(strategy):
    bad, clear, breakable, undecided = disagreements(strategy)
    assert clear >= 25 and 3 <= breakable <= clear - 10, (clear, breakable)   # both answers are tested
    assert bad == 0 and undecided == 0, (bad, undecided)


def test_a_wrong_relu_relaxation_makes_exact_disagree_with_brute_force(monkeypatch):
    """The tester tested: an upper line below the ReLU (the chord's slope quartered) makes bounds that verify
    points brute force breaks (without the attack stage, which would find the counterexamples first)."""
    import advlab.certify.exact as exact_module
    right = crown_module._relu_relaxation

    def wrong(lower, upper):
        unstable, active, slope, icpt = right(lower, upper)
        return unstable, active, torch.where(unstable, slope / 4, slope), torch.where(unstable, icpt / 4, icpt)
    monkeypatch.setattr(crown_module, "_relu_relaxation", wrong)
    monkeypatch.setattr(exact_module, "_attack", lambda model, x, y, *args: x)
    bad, clear, _, _ = disagreements("bab", seeds=range(4))
    assert bad > 0, (bad, clear)


def test_counterexamples_fool_the_model_inside_the_ball_and_verified_points_survive_attacks(trained_digits, digits):
    from advlab.attacks import APGD, PGD

    model = trained_digits("mlp", epochs=10, hidden=(64,))
    x, y = digits.test_subset(60)
    eps = 0.05
    cert = verify_exact(model, x, y, eps, bounds=digits.bounds, timeout=20, progress=False)
    status = cert.status
    assert status.count("unknown") <= 3, status
    falsified = [i for i, s in enumerate(status) if s == "falsified"]
    verified = torch.tensor([s == "verified" for s in status])
    assert len(falsified) >= 3 and int(verified.sum()) >= 20, (len(falsified), int(verified.sum()))
    assert set(cert.counterexamples) == {int(cert.index[i]) for i in falsified}
    assert torch.equal(cert.radius > 0, verified) and (cert.prediction[verified] == y[verified]).all()
    for i in falsified:
        adv = cert.counterexamples[int(cert.index[i])]
        assert adv.dtype == torch.float32 and adv.shape == x[i].shape
        assert float((adv.double() - x[i].double()).abs().max()) <= eps            # exact arithmetic: fp32 in fp64
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        with torch.no_grad():
            assert int(model(adv.unsqueeze(0)).argmax()) != int(y[i])
    for attack in (PGD("linf", steps=100, restarts=3, rel_step_size=0.1, seed=1),
                   PGD("linf", steps=100, loss="margin", restarts=2, seed=2),
                   APGD("linf", steps=100, restarts=2, loss="ce", seed=3),
                   APGD("linf", steps=100, loss="dlr", seed=4)):
        result = attack(model, x[verified], y[verified], eps=[eps], bounds=digits.bounds)
        assert int((~result.correct[0]).sum()) == 0, f"{type(attack).__name__} broke a verified point"


def test_verification_resumes_and_retries_unknown_points_with_a_longer_timeout(trained_digits, digits, tmp_path,
                                                                              capsys):
    model = trained_digits("mlp", epochs=10, hidden=(64,))
    x, y = digits.test_subset(30)
    kw = dict(bounds=digits.bounds, progress=False, state_dir=tmp_path)
    rushed = verify_exact(model, x[:20], y[:20], 0.12, timeout=1e-3, **kw)   # no time for the search
    assert rushed.status.count("unknown") >= 1, rushed.status
    capsys.readouterr()
    full = verify_exact(model, x, y, 0.12, timeout=30, **kw)
    err = capsys.readouterr().err
    assert "resuming" in err and "20 points done" in err
    assert full.status[:20].count("unknown") < rushed.status.count("unknown")  # the unknown ones were retried
    for a, b in zip(rushed.status, full.status[:20]):
        assert b == a or a == "unknown", (a, b)                             # decided points are kept as they were
    fresh = verify_exact(model, x, y, 0.12, timeout=30, bounds=digits.bounds, progress=False)
    assert fresh.status == full.status


def test_exact_options_are_checked():
    net = tiny_net(0)
    x, y = torch.rand(2, 2), torch.tensor([0, 1])
    with pytest.raises(AdvlabError, match="`timeout` must be a positive"):
        verify_exact(net, x, y, 0.1, timeout=0)
    with pytest.raises(AdvlabError, match="`norm='linf'` only"):
        verify_exact(net, x, y, 0.1, norm="l2")
    with pytest.raises(AdvlabError, match="`strategy` must be"):
        verify_exact(net, x, y, 0.1, strategy="guess")
    with pytest.raises(AdvlabError, match="exact verification cannot go through layer 1 .*Tanh"):
        verify_exact(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)), x, y, 0.1)


# -- the command line -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_run(trained_digits_run):
    return trained_digits_run("mlp", epochs=6)


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_certify_exact_json_contract_and_counterexamples(mlp_run, capsys):
    from advlab.io import load_tensors

    record = run_json(capsys, "certify", "--run", str(mlp_run), "--method", "exact", "--eps", "0.03", "--timeout",
                      "20", "--n", "16")
    assert {"method", "eps", "n", "seconds", "certified_accuracy", "points"} <= set(record)
    assert record["method"] == "exact" and record["norm"] == "linf" and record["timeout"] == 20
    statuses = [p["status"] for p in record["points"]]
    assert set(statuses) <= {"verified", "falsified", "unknown"}
    assert record["verified"] == statuses.count("verified") and record["falsified"] == statuses.count("falsified")
    for p in record["points"]:
        assert (p["radius"] > 0) == (p["status"] == "verified")
    assert record["certified_accuracy"][-1]["accuracy"] == pytest.approx(statuses.count("verified") / 16)
    if record["unknown"] == 0:
        assert record["robust_accuracy_exact"] == pytest.approx(statuses.count("verified") / 16)
    out = mlp_run / "certify" / "exact-linf-eps0.03"
    assert (out / "points.csv").read_text().splitlines()[0].startswith("index,label,prediction,radius,status")
    assert record["falsified"] >= 1   # at least the points the model gets wrong at the centre
    if record["falsified"]:
        saved = load_tensors(out / "counterexamples.safetensors")
        assert sorted(saved["index"].tolist()) == [p["index"] for p in record["points"] if p["status"] == "falsified"]
        assert ((saved["x_adv"] - saved["x"]).abs().amax(1) <= 0.03 + 1e-7).all()
        assert (saved["logits"].argmax(1) != saved["y"]).all()
    # the same command again: every point comes from the saved state
    assert main(["certify", "--run", str(mlp_run), "--method", "exact", "--eps", "0.03", "--timeout", "20", "--n", "16",
                 "--json", "--no-progress"]) == 0
    again, err = capsys.readouterr()
    assert json.loads(again)["points"] == record["points"] and "16 points done" in err


def test_certify_crown_json_contract(mlp_run, capsys):
    ibp = run_json(capsys, "certify", "--run", str(mlp_run), "--method", "ibp", "--eps", "0.02", "--n", "40")
    crown = run_json(capsys, "certify", "--run", str(mlp_run), "--method", "crown", "--eps", "0.02", "--n", "40")
    l2 = run_json(capsys, "certify", "--run", str(mlp_run), "--method", "crown", "--eps", "0.2", "--norm", "l2",
                  "--n", "15")
    assert crown["method"] == "crown" and crown["norm"] == "linf" and "status" not in crown["points"][0]
    assert crown["certified_accuracy"][1]["accuracy"] > ibp["certified_accuracy"][1]["accuracy"]
    assert l2["norm"] == "l2" and l2["certified_accuracy"][1]["accuracy"] > 0
    assert (mlp_run / "certify" / "crown-l2-eps0.2" / "result.json").is_file()
    assert l2["intermediate_bounds"] == "crown"


def test_evaluate_certify_exact_closes_the_bracket(mlp_run, tmp_path, capsys):
    record = run_json(capsys, "evaluate", "--run", str(mlp_run), "--eps", "0.02,0.04", "--suite", "fast", "--n", "20",
                      "--no-checks", "--certify", "exact", "--timeout", "20", "--out", str(tmp_path / "ev"))
    c = record["certify"]
    assert c["method"] == "exact" and c["contradictions"] == 0 and c["timeout"] == 20
    for r in record["results"]:
        assert r["certified_accuracy"] <= r["robust_accuracy"] + 1e-6 and r["certified_but_broken"] == 0
        assert r["missed_by_attacks"] >= 0 and r["falsified"] + r["certified_accuracy"] * 20 <= 20 + 1e-9
        if r["unknown"] == 0:
            assert r["robust_accuracy_exact"] == pytest.approx(r["certified_accuracy"])
            # decided: the attacked number is the exact one unless the attacks missed breakable points
            assert r["robust_accuracy"] == pytest.approx(r["certified_accuracy"] + r["missed_by_attacks"] / 20)
    assert any(r["robust_accuracy_exact"] is not None for r in record["results"])
    from advlab.cli.certify import certified_text        # what the command prints without --json
    text = "\n".join(certified_text(record))
    for r in record["results"]:
        assert (f"robust accuracy = {r['robust_accuracy_exact']:.4f} (exact)" in text) == \
            (r["robust_accuracy_exact"] is not None)


def test_evaluate_certify_crown_and_the_bare_flag(mlp_run, tmp_path, capsys):
    crown = run_json(capsys, "evaluate", "--run", str(mlp_run), "--eps", "0.02", "--suite", "fast", "--n", "30",
                     "--no-checks", "--certify", "crown", "--out", str(tmp_path / "a"))
    bare = run_json(capsys, "evaluate", "--run", str(mlp_run), "--eps", "0.02", "--suite", "fast", "--n", "30",
                    "--no-checks", "--certify", "--out", str(tmp_path / "b"))
    assert crown["certify"]["method"] == "crown" and bare["certify"]["method"] == "ibp"
    assert crown["results"][0]["certified_accuracy"] > bare["results"][0]["certified_accuracy"]
    assert crown["results"][0]["certified_but_broken"] == 0


@pytest.mark.parametrize("argv, match", [
    (["--certify", "exact", "--norm", "l2"], "--certify exact certifies linf balls"),
    (["--certify", "crown", "--sigma", "0.25"], "--sigma is an option of --certify smoothing"),
    (["--certify", "crown", "--timeout", "5"], "--timeout is an option of --certify exact"),
    (["--timeout", "5"], "--timeout is an option of --certify exact"),
    (["--certify", "smoothing"], "--certify smoothing certifies l2 radii"),
    (["--certify", "exact", "--timeout", "-1"], "--timeout: must be"),
    (["--certify", "beta"], "invalid choice: 'beta'"),
])
def test_evaluate_certify_method_errors(argv, match, mlp_run, capsys):
    import re
    code = main(["evaluate", "--run", str(mlp_run), "--eps", "0.1", "--n", "5", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and re.search(match, err), err


def test_the_report_says_exact_where_every_point_is_decided(mlp_run, capsys):
    from advlab.report.html import collect

    record = run_json(capsys, "evaluate", "--run", str(mlp_run), "--eps", "0.02", "--suite", "fast", "--n", "10",
                      "--no-checks", "--certify", "exact", "--timeout", "20")
    row = record["results"][0]
    assert row["unknown"] == 0 and row["robust_accuracy_exact"] is not None, row
    (bracket,) = [b for b in collect(mlp_run)["certified"]["brackets"] if b["method"] == "exact"]
    assert bracket["same_model"] and bracket["rows"][0]["exact"] == row["robust_accuracy_exact"]
    assert main(["report", str(mlp_run)]) == 0
    html = (mlp_run / "report.html").read_text()
    assert f"robust accuracy = {100 * row['robust_accuracy_exact']:.2f}% (exact" in html


def test_branch_and_bound_splits_convolution_neurons_and_agrees_with_the_milp():
    """Branch and bound on a CNN splits ReLUs after a convolution (node shape C, H, W): the split multipliers
    are flat per node and must take the node's shape (this crashed on the digits CNN at eps 0.05). Its answers
    match the MILP's wherever both decide."""
    from advlab.rng import seeded
    with seeded(3):  # a network where branch and bound splits convolution neurons at eps 0.05
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8), nn.ReLU(),
                            nn.Linear(8, 3)).eval()
    x = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    bab = verify_exact(net, x, y, 0.05, bounds=(0, 1), timeout=5, progress=False)
    milp = verify_exact(net, x, y, 0.05, bounds=(0, 1), timeout=5, progress=False, strategy="milp")
    decided = [(a, b) for a, b in zip(bab.status, milp.status) if "unknown" not in (a, b)]
    assert len(decided) >= 30 and all(a == b for a, b in decided)
    assert {"verified", "falsified"} <= set(bab.status)
