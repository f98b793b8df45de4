"""Distance kernels against brute force, chunked against unchunked, and the epsilon analysis."""

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.analysis.distances import mean_class_distances, min_distance_to_classes, pairwise_distances
from advlab.analysis.epsilon import analyze_distances, closer_than_itself, sample_per_class
from advlab.data import Dataset
from advlab.errors import AdvlabError

NORMS = ["l1", "l2", "linf"]


def brute(a, b, norm):
    """Reference: explicit differences in float64, one pair at a time in numpy."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    diff = a[:, None, :] - b[None, :, :]
    if norm == "l1":
        return np.abs(diff).sum(-1)
    if norm == "l2":
        return np.sqrt((diff ** 2).sum(-1))
    return np.abs(diff).max(-1)


@pytest.mark.parametrize("norm", NORMS)
def test_pairwise_matches_brute_force_for_images_and_vectors(norm):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(7, 1, 4, 4, generator=g)
    b = torch.rand(5, 1, 4, 4, generator=g)
    np.testing.assert_allclose(pairwise_distances(a, b, norm).numpy(), brute(a, b, norm), rtol=1e-10, atol=1e-7)
    v = torch.randn(6, 3, generator=g)
    np.testing.assert_allclose(pairwise_distances(v, v, norm).numpy(), brute(v, v, norm), rtol=1e-10, atol=1e-6)


def _labelled(n_ref=60, n_q=23, dim=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    refs = torch.rand(n_ref, dim, generator=g)
    labels = torch.randint(0, k, (n_ref,), generator=g)
    queries = torch.rand(n_q, dim, generator=g)
    return refs, labels, queries


@pytest.mark.parametrize("norm", NORMS)
def test_min_distance_to_classes_matches_brute_force(norm):
    refs, labels, queries = _labelled()
    d, idx = min_distance_to_classes(queries, refs, labels, 4, norm, block=7)
    full = brute(queries, refs, norm)
    for c in range(4):
        cols = np.flatnonzero(labels.numpy() == c)
        np.testing.assert_allclose(d[:, c], full[:, cols].min(1), rtol=1e-10, atol=1e-7)
        np.testing.assert_allclose(full[np.arange(len(queries)), idx[:, c]], d[:, c], atol=1e-7)
        assert (labels.numpy()[idx[:, c]] == c).all()


@pytest.mark.parametrize("norm", NORMS)
def test_self_index_excludes_only_the_point_itself(norm):
    refs, labels, _ = _labelled()
    refs[5] = refs[9]  # an exact duplicate of another point must still count (distance 0)
    labels[5] = labels[9]
    sample = torch.tensor([3, 5, 9, 40])
    d, idx = min_distance_to_classes(refs[sample], refs, labels, 4, norm, self_index=sample, block=4)
    full = brute(refs[sample], refs, norm)
    full[np.arange(4), sample.numpy()] = np.inf
    for c in range(4):
        cols = np.flatnonzero(labels.numpy() == c)
        np.testing.assert_allclose(d[:, c], full[:, cols].min(1), atol=1e-6)
    own = labels[5].item()
    assert d[1, own] == pytest.approx(0.0, abs=1e-6) and idx[1, own] == 9
    assert (idx[np.arange(4)] != sample.numpy()[:, None]).all()


@settings(max_examples=25, deadline=None)
@given(n_ref=st.integers(1, 40), n_q=st.integers(1, 30), dim=st.integers(1, 9), block=st.integers(1, 50),
       norm=st.sampled_from(NORMS), workers=st.sampled_from([1, 2]), seed=st.integers(0, 10_000))
def test_chunked_equals_unchunked(n_ref, n_q, dim, block, norm, workers, seed):
    refs, labels, queries = _labelled(n_ref, n_q, dim, 3, seed)
    d1, i1 = min_distance_to_classes(queries, refs, labels, 3, norm, block=block, workers=workers)
    d2, i2 = min_distance_to_classes(queries, refs, labels, 3, norm, block=10_000, workers=1)
    np.testing.assert_array_equal(d1 == np.inf, d2 == np.inf)
    np.testing.assert_allclose(d1, d2, rtol=1e-12, atol=1e-9)
    m1 = mean_class_distances(queries, labels[:n_q] if n_q <= n_ref else torch.zeros(n_q, dtype=torch.long),
                              refs, labels, 3, norm, block=block, workers=workers)
    m2 = mean_class_distances(queries, labels[:n_q] if n_q <= n_ref else torch.zeros(n_q, dtype=torch.long),
                              refs, labels, 3, norm, block=10_000)
    np.testing.assert_allclose(m1, m2, rtol=1e-10, equal_nan=True)


@pytest.mark.parametrize("norm", NORMS)
def test_mean_class_distances_matches_brute_force(norm):
    refs, labels, _ = _labelled(n_ref=30)
    m = mean_class_distances(refs, labels, refs, labels, 4, norm, same=True, block=8)
    full = brute(refs, refs, norm)
    y = labels.numpy()
    for i in range(4):
        for j in range(4):
            block = full[np.ix_(y == i, y == j)]
            if i == j:  # the diagonal leaves each point's zero distance to itself out
                n = len(block)
                expected = block.sum() / (n * (n - 1)) if n > 1 else np.nan
            else:
                expected = block.mean()
            np.testing.assert_allclose(m[i, j], expected, rtol=1e-10, equal_nan=True)


def test_streaming_memory_stays_bounded():
    """6,000 x 3,000 distances in float64 would take 144 MB; the blocks keep the peak far below."""
    g = torch.Generator().manual_seed(1)
    refs = torch.rand(6000, 16, generator=g)
    labels = torch.randint(0, 10, (6000,), generator=g)
    queries = torch.rand(3000, 16, generator=g)
    tracemalloc.start()
    try:
        min_distance_to_classes(queries, refs, labels, 10, "l1", block=256, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12e6, f"peak {peak / 1e6:.1f} MB"


def test_bad_inputs_are_reported():
    refs, labels, queries = _labelled()
    with pytest.raises(AdvlabError, match="unknown norm"):
        min_distance_to_classes(queries, refs, labels, 4, "l3")
    with pytest.raises(AdvlabError, match="features"):
        min_distance_to_classes(queries[:, :3], refs, labels, 4, "l2")
    with pytest.raises(AdvlabError, match="ref_labels"):
        min_distance_to_classes(queries, refs, labels, 2, "l2")
    with pytest.raises(AdvlabError, match="NaN"):
        min_distance_to_classes(queries * float("nan"), refs, labels, 4, "l2")


def test_closer_than_itself_finds_the_rows():
    m = np.array([[1.0, 0.5, 2.0],   # class 0 is closer to class 1
                  [0.5, 0.3, 0.9],
                  [2.0, 0.9, 1.0]])  # class 2 is closer to class 1
    rows = closer_than_itself(m, ["a", "b", "c"])
    assert [(r["class"], r["closest_class"]) for r in rows] == [(0, 1), (2, 1)]
    assert rows[0]["own_distance"] == 1.0 and rows[0]["closest_distance"] == 0.5


def _toy_dataset(seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2], [0.5, 0.2, 0.8, 0.8]])
    y_tr = torch.arange(90) % 3
    y_te = torch.arange(30) % 3
    x_tr = (centres[y_tr] + 0.1 * torch.randn(90, 4, generator=g)).clamp(0, 1)
    x_te = (centres[y_te] + 0.1 * torch.randn(30, 4, generator=g)).clamp(0, 1)
    return Dataset("toy", x_tr.reshape(90, 1, 2, 2), y_tr, x_te.reshape(30, 1, 2, 2), y_te, ("a", "b", "c"), (0.0, 1.0))


@pytest.mark.parametrize("norm", NORMS)
def test_suggested_eps_is_half_the_brute_force_separation(norm, tmp_path):
    ds = _toy_dataset()
    rec = analyze_distances(ds, per_class=10, norms=[norm], seed=3, out=tmp_path, progress=False, block=16)
    e = rec["norms"][norm]
    sample = sample_per_class(ds.y_train, 10, 3, seed=3)
    full_s = brute(ds.x_train[sample], ds.x_train, norm)
    full_s[np.arange(len(sample)), sample.numpy()] = np.inf
    full_t = brute(ds.x_test, ds.x_train, norm)
    ytr = ds.y_train.numpy()
    other_s = np.where(ds.y_train[sample].numpy()[:, None] != ytr[None], full_s, np.inf)
    other_t = np.where(ds.y_test.numpy()[:, None] != ytr[None], full_t, np.inf)
    gaps = np.concatenate([other_s.min(1), other_t.min(1)])
    labels = np.concatenate([ds.y_train[sample].numpy(), ds.y_test.numpy()])
    neighbours = ytr[np.concatenate([other_s.argmin(1), other_t.argmin(1)])]
    assert e["suggested_eps"] == pytest.approx(gaps.min() / 2, abs=1e-6)
    assert e["suggested_eps_percentile"] == pytest.approx(np.percentile(gaps, 5) / 2, abs=1e-6)
    eps = np.array(e["eps_per_class"])
    for c in range(3):
        involved = (labels == c) | (neighbours == c)
        assert eps[c] == pytest.approx(gaps[involved].min() / 2, abs=1e-6)
    # Per-class budgets never let the balls of a nearest between-class pair overlap.
    assert (eps[labels] + eps[neighbours] <= gaps + 1e-6).all()
    assert eps.min() == pytest.approx(e["suggested_eps"], abs=1e-9)
    cp = e["closest_pair"]
    assert cp["distance"] == pytest.approx(gaps.min(), abs=1e-6) and cp["label"] != cp["neighbour_label"]
    nn_acc = (ytr[full_t.argmin(1)] == ds.y_test.numpy()).mean()
    assert e["train_test_nn"]["one_nn_accuracy"] == pytest.approx(nn_acc)
    within = np.where(ds.y_train[sample].numpy()[:, None] == ytr[None], full_s, np.inf).min(1)
    assert e["within_class_nn"]["median"] == pytest.approx(np.median(within), abs=1e-6)
    assert np.shape(e["class_distance"]) == (3, 3)
    for name in ("class_distance", "nn_class_distance", "nn_histogram"):
        assert (tmp_path / f"{e['figures'][name].split('/')[-1]}").stat().st_size > 1000
    from advlab.analysis import load_eps_per_class
    np.testing.assert_allclose(load_eps_per_class(tmp_path / f"eps_per_class_{norm}.json", 3, norm=norm).numpy(),
                               e["eps_per_class"], rtol=1e-6)
