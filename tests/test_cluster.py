"""k-means: seeding, convergence on separable data, determinism, agreement with scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans

from speechssl.cluster import KMeans, squared_distances
from speechssl.errors import ConfigError


def blobs(n_per=200, k=6, d=5, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    x = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(k), n_per)
    return x, y, centers


def test_squared_distances_matches_cdist():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(50, 7, generator=g), torch.randn(9, 7, generator=g)
    torch.testing.assert_close(squared_distances(x, c), torch.cdist(x, c) ** 2, atol=1e-4, rtol=1e-4)


def test_recovers_separable_clusters():
    x, y, _ = blobs()
    km = KMeans(6, batch_size=256, max_iter=20, n_init=3, seed=0, device="cpu", progress=False).fit(x)
    pred = km.predict(x)
    # every true blob maps to exactly one cluster and vice versa
    pairs = set(zip(y.tolist(), pred.tolist()))
    assert len(pairs) == 6 and len({p for _, p in pairs}) == 6
    # inertia is the within-blob scatter: about n * d * spread^2
    assert km.inertia(x) == pytest.approx(len(x) * 5 * 0.05 ** 2, rel=0.2)


def test_deterministic_given_seed():
    x, _, _ = blobs(k=10, seed=1)
    a = KMeans(10, batch_size=128, max_iter=5, n_init=2, seed=3, device="cpu", progress=False).fit(x)
    b = KMeans(10, batch_size=128, max_iter=5, n_init=2, seed=3, device="cpu", progress=False).fit(x)
    torch.testing.assert_close(a.cluster_centers_, b.cluster_centers_, rtol=0, atol=0)
    c = KMeans(10, batch_size=128, max_iter=5, n_init=2, seed=4, device="cpu", progress=False).fit(x)
    assert not torch.equal(a.cluster_centers_, c.cluster_centers_)


def test_inertia_close_to_sklearn_on_overlapping_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 8)).astype(np.float32)
    ours = KMeans(20, batch_size=1000, max_iter=30, n_init=3, seed=0, device="cpu", progress=False).fit(x)
    ref = MiniBatchKMeans(20, batch_size=1000, max_iter=30, n_init=3, random_state=0, reassignment_ratio=0.0).fit(x)
    ref_inertia = float(((x - ref.cluster_centers_[ref.predict(x)]) ** 2).sum())
    assert ours.inertia(x) / ref_inertia == pytest.approx(1.0, abs=0.03)


def test_errors():
    with pytest.raises(ConfigError, match="n_clusters"):
        KMeans(0)
    with pytest.raises(ValueError, match="at least n_clusters=5"):
        KMeans(5, device="cpu").fit(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        KMeans(1, device="cpu").fit(np.array([[np.nan, 0.0], [0.0, 1.0]], np.float32))
    with pytest.raises(RuntimeError, match="not fitted"):
        KMeans(2).predict(np.zeros((1, 2), np.float32))


def test_same_centres_at_any_thread_count():
    """The batched seeding and the mini-batch updates give bit-identical centres with 1 and 2 threads."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6000, 12, generator=g) + 4 * torch.randint(0, 5, (6000, 1), generator=g).float()
    threads = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(KMeans(40, n_init=4, batch_size=1000, seed=1, device="cpu", progress=False).fit(x).cluster_centers_)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out[0], out[1])


def test_lloyd_ends_at_a_fixed_point_below_its_seeding_and_the_mini_batch_fit():
    """Lloyd's passes from the same seeding: with tol=0 it stops only when no assignment changes, so every centre is
    the mean of the points nearest to it; its inertia is below the seeding's and, on these overlapping
    Gaussians, below the mini-batch fit's; it is repeatable and the same at 1 and 2 threads."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 8)).astype(np.float32)
    common = dict(n_init=3, seed=0, device="cpu", progress=False, batch_size=1000)
    lloyd = KMeans(20, max_iter=500, algorithm="lloyd", **common).fit(x)
    assert lloyd.result_.converged and 1 < lloyd.result_.n_steps < 500
    assign = lloyd.predict(x)
    means = np.stack([x[assign == j].mean(0) for j in range(20)])
    np.testing.assert_allclose(lloyd.cluster_centers_.numpy(), means, rtol=0, atol=1e-5)
    seeding = KMeans(20, max_iter=1, algorithm="lloyd", **common).fit(x)     # one pass: about the seeding
    minibatch = KMeans(20, max_iter=30, **common).fit(x)
    assert lloyd.inertia(x) < seeding.inertia(x) and lloyd.inertia(x) < minibatch.inertia(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = KMeans(20, max_iter=500, algorithm="lloyd", **common).fit(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(again.cluster_centers_, lloyd.cluster_centers_)


def test_lloyd_stops_on_the_centre_moves_and_keeps_a_centre_without_points():
    """With scikit-learn's tol the passes stop earlier than at the fixed point; a centre that no point is nearest
    to stays where it is, and a pass over separable blobs recovers them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 8)).astype(np.float32)
    common = dict(n_init=1, seed=0, device="cpu", progress=False, algorithm="lloyd")
    exact = KMeans(20, max_iter=500, **common).fit(x)
    early = KMeans(20, max_iter=500, tol=1e-2, **common).fit(x)
    assert early.result_.converged and early.result_.n_steps < exact.result_.n_steps
    km = KMeans(2, **common)
    pts = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    out = km._lloyd(pts, torch.tensor([[0.0, 0.5], [9.0, 9.0]]))
    torch.testing.assert_close(out.cluster_centers_, torch.tensor([[0.0, 0.5], [9.0, 9.0]]))
    xb, y, _ = blobs()
    pred = KMeans(6, **{**common, "n_init": 3}).fit(xb).predict(xb)
    assert len(set(zip(y.tolist(), pred.tolist()))) == 6
    with pytest.raises(ConfigError, match=r"algorithm: expected one of minibatch, lloyd, got 'elkan'"):
        KMeans(2, algorithm="elkan")
