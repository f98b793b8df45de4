"""advlab.metric: triplet loss and mining against brute force, the embedding threat model's
constraint, attack strength, resumable training, calibration, the CLI and its errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from advlab.cli import main
from advlab.data import load_dataset
from advlab.errors import AdvlabError
from advlab.metric import (EmbeddingNet, EmbeddingPGD, embed, embedding_attack, embedding_quality, knn_predict,
                           load_embedding, mine_triplets, pairwise_distances, recall_at_1, train_embedding,
                           triplet_loss)
from advlab.metric.compare import calibrate, match, refine
from advlab.rng import seeded


# -- triplet loss and mining ---------------------------------------------------------------------------
def brute_force(z: torch.Tensor, y: torch.Tensor, margin: float, mining: str) -> float:
    """The triplet loss by looping over every (anchor, positive, negative) of the batch."""
    z, y = z.double(), y.tolist()
    d = lambda i, j: float(torch.sqrt(((z[i] - z[j]) ** 2).sum()))  # noqa: E731
    b = len(y)
    losses = []
    for a in range(b):
        pos = [p for p in range(b) if p != a and y[p] == y[a]]
        neg = [n for n in range(b) if y[n] != y[a]]
        if not pos or not neg:
            continue
        if mining == "all":
            losses += [max(d(a, p) - d(a, n) + margin, 0.0) for p in pos for n in neg]
        elif mining == "batch-hard":
            losses.append(max(max(d(a, p) - d(a, n) + margin, 0.0) for p in pos for n in neg))
        else:  # semi-hard: nearest negative farther than the positive, else the farthest negative
            for p in pos:
                farther = [n for n in neg if d(a, n) > d(a, p)]
                n = min(farther, key=lambda n: d(a, n)) if farther else max(neg, key=lambda n: d(a, n))
                losses.append(max(d(a, p) - d(a, n) + margin, 0.0))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("mining", ["all", "batch-hard", "semi-hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_loss_matches_brute_force(mining, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(13, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (13,), generator=g)
    y[-1] = 3  # a class with a single member: an anchor without positives
    for margin in (0.0, 0.3, 2.0):
        got = triplet_loss(z, y, margin, mining).item()
        assert got == pytest.approx(brute_force(z, y, margin, mining), rel=1e-9, abs=1e-12)


def test_triplet_loss_is_zero_without_triplets_and_has_gradients():
    z = torch.randn(4, 3, requires_grad=True)
    loss = triplet_loss(z, torch.tensor([0, 1, 2, 3]), 0.2)  # no positives at all
    assert loss.item() == 0.0
    loss.backward()
    z2 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    triplet_loss(z2, y, 5.0, "batch-hard").backward()  # the diagonal's sqrt(0) must not give NaN
    assert torch.isfinite(z2.grad).all() and z2.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: triplet_loss(t, y, 0.5, "all"), (z2.detach().clone().requires_grad_(),))


def test_mining_picks_hardest_and_semi_hard_on_a_hand_made_batch():
    # Points on a line: class 0 at 0, 1, 3; class 1 at 0.5, 2.5; class 2 at 10.
    z = torch.tensor([[0.0], [1.0], [3.0], [0.5], [2.5], [10.0]])
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    a, p, n = mine_triplets(pairwise_distances(z), y, "batch-hard")
    picks = {int(i): (int(j), int(k)) for i, j, k in zip(a, p, n)}
    assert set(picks) == {0, 1, 2, 3, 4}  # 5 has no positive
    assert picks[0] == (2, 3)  # farthest positive 3 (d=3), nearest negative 0.5 (d=0.5)
    assert picks[1] == (2, 3)  # from 1: positives d 1, 2 -> 3; negatives 0.5 (0.5), 2.5 (1.5) -> 0.5
    assert picks[2] == (0, 4)  # from 3: positives 3, 2 -> 0; negative 2.5 (0.5)
    assert picks[3] == (4, 0)  # from 0.5: positive 2.5; negatives 0 and 1 tie at 0.5 -> the first, index 0
    a, p, n = mine_triplets(pairwise_distances(z), y, "semi-hard")
    picks = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n)}
    assert picks[(0, 1)] == 4   # d_ap = 1: negatives farther than 1 are 2.5 and 10 -> 2.5
    assert picks[(0, 2)] == 5   # d_ap = 3: only 10 is farther
    assert picks[(3, 4)] == 2   # d_ap = 2: 3 (d 2.5) and 10 (9.5) are farther -> 3
    # No negative farther than the positive: the farthest negative. Equal distance is not "farther".
    z = torch.tensor([[0.0], [5.0], [1.0], [2.0]])
    y = torch.tensor([0, 0, 1, 1])
    a, p, n = mine_triplets(pairwise_distances(z), y, "semi-hard")
    picks = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n)}
    assert picks[(0, 1)] == 3   # negatives at d 1 and 2, none beyond 5 -> the farthest, 2.0
    assert picks[(2, 3)] == 1   # d_ap = 1; the negative at d 1 is not farther -> 5.0 (d 4)
    with pytest.raises(AdvlabError, match="mining"):
        mine_triplets(pairwise_distances(z), y, "hardest")


def test_knn_predict_and_recall_match_brute_force():
    g = torch.Generator().manual_seed(0)
    refs, labels = torch.randn(60, 3, generator=g), torch.randint(0, 4, (60,), generator=g)
    q = torch.randn(25, 3, generator=g)
    d = torch.cdist(q.double(), refs.double())
    for k in (1, 4, 5):
        order = d.argsort(1)[:, :k]
        expected = []
        for row in order:
            votes = torch.bincount(labels[row], minlength=4)
            best = (votes == votes.max()).nonzero().flatten().tolist()
            expected.append(next(int(labels[j]) for j in row if int(labels[j]) in best))  # tie: nearer one
        assert knn_predict(q, refs, labels, 4, k, block=7).tolist() == expected
    dd = torch.cdist(refs.double(), refs.double()).fill_diagonal_(float("inf"))
    assert recall_at_1(refs, labels, 4) == pytest.approx((labels[dd.argmin(1)] == labels).float().mean().item())
    with pytest.raises(AdvlabError, match="k must be"):
        knn_predict(q, refs, labels, 4, 0)


def test_match_and_refine():
    rows = [{"eps": 0.1, "success_rate": 0.1}, {"eps": 0.3, "success_rate": 0.5}, {"eps": 0.5, "success_rate": 0.9}]
    assert refine(rows, [0.5, 0.7, 0.3, 0.95]) == [0.2, 0.4]  # 0.5 is measured, 0.95 is out of range
    m = match(rows, [{"eps": 1.0, "success_rate": 0.45}, {"eps": 2.0, "success_rate": 0.8}], [0.5])[0]
    assert m["pixel"]["eps"] == 0.3 and m["embedding"]["eps"] == 1.0 and m["success_gap"] == pytest.approx(0.05)


# -- the embedding threat model ------------------------------------------------------------------------
def small_net(seed: int, d_in: int, d_out: int, normalize: bool) -> nn.Module:
    with seeded(seed):
        body = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, d_out))
    return EmbeddingNet(body, l2_normalize=True) if normalize else body


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 1.5), pixel=st.sampled_from([None, 0.05, 0.3]),
       norm=st.sampled_from(["linf", "l2"]), images=st.booleans(), random_start=st.booleans())
def test_every_embedding_adversarial_example_satisfies_its_constraint(seed, eps, pixel, norm, images,
                                                                      random_start):
    g = torch.Generator().manual_seed(seed)
    shape = (1, 3, 3) if images else (9,)
    x = torch.rand(10, *shape, generator=g)
    y = torch.randint(0, 3, (10,), generator=g)
    emb = small_net(seed, 9, 4, normalize=seed % 2 == 0)
    clf = small_net(seed + 1, 9, 3, normalize=False)
    attack = EmbeddingPGD(emb, pixel_norm=norm, pixel_eps=pixel, steps=3, bisection_steps=4,
                          random_start=random_start, step_size=0.5 if seed % 3 == 0 else None, batch_size=4,
                          seed=seed)
    budgets = [0.0, eps / 2, eps]
    result = attack(clf, x, y, budgets, bounds=(0.0, 1.0))
    direct = attack.perturb(clf, x, y, eps, bounds=(0.0, 1.0))
    for xa, e in [*zip(result.x_adv, budgets), (direct, eps)]:
        # Recomputed independently, one example at a time (another batch composition than the attack's).
        d = torch.stack([(emb(xa[i:i + 1]) - emb(x[i:i + 1])).norm() for i in range(len(x))])
        assert (d <= e).all(), (d.max().item(), e)
        assert xa.min() >= 0 and xa.max() <= 1
        if pixel is not None:
            size = (xa - x).flatten(1).norm(p=float("inf") if norm == "linf" else 2, dim=1)
            assert (size <= pixel * (1 + 1e-6)).all()
    assert torch.equal(result.x_adv[0], x)  # eps_e = 0 leaves the input unchanged
    # The reported distances are the embedding distances (up to float rounding of another batch composition).
    recomputed = torch.stack([attack.embedding_distance(x, xa) for xa in result.x_adv])
    assert torch.allclose(result.distances, recomputed, rtol=1e-5, atol=1e-6)
    if eps == 0:
        assert torch.equal(direct, x)


def test_enforce_reverts_points_that_break_the_constraint():
    emb = small_net(0, 9, 4, normalize=False)
    attack = EmbeddingPGD(emb)
    x = torch.rand(6, 9, generator=torch.Generator().manual_seed(0))
    far = (x + 0.5).clamp(0, 1)
    d = attack.embedding_distance(x, far)
    eps = d + 1e-5  # inside, with room for the absolute slack of 1e-6
    eps[::2] = d[::2] / 2  # these break the constraint: back to x
    out = attack.threat.enforce(x, far, eps, (0.0, 1.0))
    assert torch.equal(out[::2], x[::2]) and torch.equal(out[1::2], far[1::2])
    assert torch.equal(attack.threat.enforce(x, far, torch.zeros(6), (0.0, 1.0)), x)


@functools.lru_cache(maxsize=None)
def digits_embedding():
    ds = load_dataset("digits")
    net, card = train_embedding(ds, None, epochs=4, mining="semi-hard", lr=3e-3, progress=False)
    return ds, net, card


def test_triplet_net_on_digits_is_good_and_calibrated():
    ds, net, card = digits_embedding()
    m = card["metrics"]
    assert m["knn_accuracy"] > 0.9 and m["recall_at_1"] > 0.9
    z = embed(net, ds.x_test)
    assert torch.allclose(z.norm(dim=1), torch.ones(len(z)), atol=1e-5)  # on the unit sphere
    c = calibrate(net, ds, per_class=20, seed=0)
    # Against an independent computation: the smallest between-class distance over the sample and the test set.
    from advlab.analysis.epsilon import sample_per_class
    zt = embed(net, ds.x_train)
    s = sample_per_class(ds.y_train, 20, 10, 0)
    q, yq = torch.cat([zt[s], z]), torch.cat([ds.y_train[s], ds.y_test])
    d = torch.cdist(q.double(), zt.double())
    d[yq[:, None] == ds.y_train[None]] = float("inf")
    between = d.min(1).values.numpy()
    assert c["suggested_eps_separation"] == pytest.approx(between.min() / 2, rel=1e-6)
    assert c["suggested_eps"] == pytest.approx(np.percentile(between, 5) / 2, rel=1e-6)
    assert c["mean_within_class"] < c["mean_between_class"]


def test_embedding_attack_reduces_accuracy(digits_cnn):
    ds, net, _ = digits_embedding()
    clf = digits_cnn
    x, y = ds.x_test[:60], ds.y_test[:60]
    attack = EmbeddingPGD(net, steps=10)
    result = attack(clf, x, y, [0.0, 0.1, 0.6], bounds=ds.bounds)
    acc = result.robust_accuracy()
    assert acc[0] == pytest.approx(result.clean_accuracy())
    assert acc[2] < acc[0] - 0.3, acc
    assert acc[1] >= acc[2]
    assert (result.distances <= torch.tensor([0.0, 0.1, 0.6])[:, None]).all()
    # The constraint binds: at eps_e = 0.1 the fooled points (4 of these 60) sit near the boundary of the ball.
    fooled = result.success[1] & result.clean_correct
    assert int(fooled.sum()) >= 2, acc
    assert result.distances[1][fooled].min() > 0.05, result.distances[1][fooled]


def test_comparison_rows_and_referee(digits_cnn):
    from advlab.metric.compare import compare_threats
    ds, net, _ = digits_embedding()
    # An independent referee: another seed, another dimension; good on its own (k-NN ~0.96).
    referee, _ = train_embedding(ds, None, epochs=2, dim=8, mining="semi-hard", lr=3e-3, seed=1, progress=False)
    cmp = compare_threats(digits_cnn, net, ds, pixel_eps=[0.05, 0.2], embedding_eps=[0.1, 0.5], n=30, steps=3,
                          targets=[0.5], refine_rounds=1, referee=referee)
    x, _ = ds.test_subset(30)

    def knn_change(judge, x_adv, fooled):  # among the fooled points, how often the judge's k-NN label moves
        z_train = embed(judge, ds.x_train)
        before, after = (knn_predict(embed(judge, v), z_train, ds.y_train, ds.num_classes, 5) for v in (x, x_adv))
        return float(((after != before) & fooled).sum()) / int(fooled.sum())

    differs = 0
    for name in ("pixel", "embedding"):
        rows = cmp[name]["rows"]
        assert [r["eps"] for r in rows] == sorted(r["eps"] for r in rows) and {0.05, 0.2, 0.1, 0.5} >= \
            {r["eps"] for r in rows if not r["refined"]}
        for r in rows:  # every row has fooled points, and both rates are those of the saved examples
            res, e, _ = cmp[f"_{name}"][r["eps"]]
            fooled = res.success[e] & res.clean_correct
            assert r["n_fooled"] == int(fooled.sum()) > 0
            assert r["success_rate"] == pytest.approx(r["n_fooled"] / int(res.clean_correct.sum()))
            assert r["knn_change_rate"] == pytest.approx(knn_change(net, res.x_adv[e], fooled))
            assert r["referee_knn_change_rate"] == pytest.approx(knn_change(referee, res.x_adv[e], fooled))
            differs += r["referee_knn_change_rate"] != r["knn_change_rate"]
    assert differs >= 1  # the referee is not the attacked embedding: it judges some rows differently
    m = cmp["matched"][0]
    assert m["success_gap"] == abs(m["pixel"]["success_rate"] - m["embedding"]["success_rate"])


def test_training_resumes_to_the_same_weights(tmp_path):
    ds = load_dataset("digits")
    kwargs = dict(epochs=2, mining="batch-hard", lr=3e-3, dim=8, progress=False)
    full, _ = train_embedding(ds, tmp_path / "a", **kwargs)

    def stop_after_first(message):
        if message.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_embedding(ds, tmp_path / "b", log=stop_after_first, **kwargs)
    assert (tmp_path / "b" / "checkpoint").is_dir() and not (tmp_path / "b" / "card.json").exists()
    with pytest.raises(AdvlabError, match="already holds a run"):
        train_embedding(ds, tmp_path / "b", **kwargs)
    resumed, card = train_embedding(ds, tmp_path / "b", resume=True, **kwargs)
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    loaded, card2 = load_embedding(tmp_path / "b")
    assert card2["kind"] == "embedding" and card2["embedding"]["dim"] == 8
    assert torch.equal(embed(loaded, ds.x_test[:5]), embed(resumed, ds.x_test[:5]))


# -- CLI -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_analyze_embedding_and_attack_with_embedding_threat(tmp_path, capsys):
    out = tmp_path / "an"
    args = ["analyze", "embedding", "--dataset", "digits", "--epochs", "2", "--dim", "8", "--classifier-epochs", "3",
            "--classifier-model", "mlp", "--n", "40", "--steps", "3", "--pixel-eps", "0.05,0.2",
            "--embedding-eps", "0.1,0.4", "--targets", "0.5", "--per-class", "10", "--out", str(out), "--json",
            "--no-progress"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert 0 <= record["quality"]["knn_accuracy"] <= 1 and 0 <= record["quality"]["recall_at_1"] <= 1
    assert record["suggested_eps"] > 0
    net, _ = load_embedding(out / "embedding")
    assert record["quality"] == embedding_quality(net, load_dataset("digits"), 5)
    cmp = record["comparison"]
    assert {r["eps"] for r in cmp["pixel"]["rows"]} >= {0.05, 0.2}
    assert all(0 <= r["success_rate"] <= 1 for r in cmp["embedding"]["rows"])
    assert len(cmp["matched"]) == 1
    for name in ("projection", "distances", "change_curve"):
        assert Path(record["figures"][name]).is_file()
    assert json.loads((out / "embedding.json").read_text())["dataset"] == "digits"
    # Rerunning reuses the trained embedding and classifier.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["quality"] == record["quality"]

    assert main(["attack", "--run", str(out / "classifier"), "--attack", "pgd", "--threat", "embedding", "--save",
                 "--embedding", str(out / "embedding"), "--eps", "0,0.3", "--steps", "3", "--n", "20",
                 "--pixel-eps", "0.2", "--json", "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["norm"] == "embedding" and r["threat"] == "embedding" and r["pixel_eps"] == 0.2
    assert r["results"][0]["success_rate"] == 0.0
    assert r["results"][1]["success_rate"] >= r["results"][0]["success_rate"]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    emb_dir, clf_dir = root / "emb", root / "clf"
    train_embedding(load_dataset("digits"), emb_dir, epochs=1, dim=4, progress=False)
    assert main(["train", "--dataset", "digits", "--model", "softmax", "--epochs", "1", "--out", str(clf_dir),
                 "--no-progress"]) == 0
    return emb_dir, clf_dir


@pytest.mark.parametrize("extra, message", [
    (["--threat", "embedding", "--embedding", "NOPE", "--eps", "0.1"], "--embedding: no such folder"),
    (["--threat", "embedding", "--eps", "0.1"], "needs --embedding"),
    (["--threat", "embedding", "--embedding", "EMB", "--eps", "-0.1"], ">= 0"),
    (["--threat", "embedding", "--embedding", "EMB", "--eps", "0.1", "--pixel-eps", "-1"], "--pixel-eps"),
    (["--threat", "embedding", "--embedding", "CLF", "--eps", "0.1"], "not an embedding run"),
    (["--embedding", "EMB", "--eps", "0.1"], "add --threat embedding"),
])
def test_attack_cli_errors(cli_runs, tmp_path, capsys, extra, message):
    emb_dir, clf_dir = cli_runs
    extra = [str(emb_dir) if a == "EMB" else str(clf_dir) if a == "CLF" else str(tmp_path / a) if a == "NOPE" else a
             for a in extra]
    assert main(["attack", "--run", str(clf_dir), "--attack", "pgd", "--n", "5", *extra]) == 2
    assert message in capsys.readouterr().err
    # An embedding run is not a classifier.
    assert main(["attack", "--run", str(emb_dir), "--attack", "pgd", "--eps", "0.1"]) == 2
    assert "embedding run" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--embedding", "NOPE"], "--embedding: no such folder"),
    (["--referee", "NOPE"], "--referee: no such folder"),
    (["--percentile", "101"], "--percentile"),
    (["--pixel-eps", "0.1,-1"], ">= 0"),
    (["--embedding-eps", "abc"], "must be a number"),
    (["--epochs", "0"], "--epochs"),
    (["--targets", "1.5"], "--targets"),
])
def test_analyze_embedding_cli_errors(tmp_path, capsys, extra, message):
    extra = [str(tmp_path / a) if a == "NOPE" else a for a in extra]
    assert main(["analyze", "embedding", "--dataset", "digits", "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "embedding.json").exists()


def test_api_errors():
    emb = small_net(0, 9, 4, normalize=True)
    with pytest.raises(AdvlabError, match="pixel_eps"):
        EmbeddingPGD(emb, pixel_eps=-0.1)
    with pytest.raises(AdvlabError, match="nn.Module"):
        EmbeddingPGD("not a net")
    x, y = torch.rand(3, 9), torch.tensor([0, 1, 2])
    with pytest.raises(AdvlabError, match=">= 0"):
        EmbeddingPGD(emb)(small_net(1, 9, 3, False), x, y, -0.5, bounds=(0.0, 1.0))
    with pytest.raises(AdvlabError, match="supports the attacks"):
        embedding_attack("cw", emb)
    with pytest.raises(AdvlabError, match="no option"):
        embedding_attack("pgd", emb, decay=0.5)
    with pytest.raises(AdvlabError, match="advlab.metric.embedding_attack"):  # attacks/ does not import metric/
        from advlab.attacks import build_attack
        build_attack("pgd", threat="embedding", embedding=emb)
    with pytest.raises(AdvlabError, match="margin"):
        train_embedding(load_dataset("digits"), None, margin=-1.0, epochs=1, progress=False)
