"""Partition-and-merge neighbour search (``cluster/partition.py``) against one index over all points."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from behaviorseq.cluster import HDBSCAN, IndexSpec, as_working, knn_graph
from behaviorseq.cluster.partition import partitioned_knn_graph


def _blobs_10d(n=4000, seed=2):
    X, _ = make_blobs(n, n_features=10, centers=20, cluster_std=1.0, center_box=(-10, 10), random_state=seed)
    return np.vstack([X, np.random.default_rng(seed).uniform(-12, 12, (n // 20, 10))])


def _recall(a: np.ndarray, b: np.ndarray) -> float:
    return float((a[:, :, None] == b[:, None, :]).any(-1).mean())


def test_every_partition_holding_every_point_is_exact_search():
    Xw, _ = as_working(_blobs_10d(2000))
    exact, _ = knn_graph(Xw, 12, IndexSpec())
    report: dict = {}
    g = partitioned_knn_graph(Xw, 12, IndexSpec(), partitions=3, overlap=3, report=report)
    assert report["largest_partition"] == Xw.shape[0]
    np.testing.assert_allclose(g.dist, exact.dist, rtol=1e-12)
    assert (g.idx[:, 0] == np.arange(Xw.shape[0])).all()


@pytest.mark.parametrize("overlap", [1, 2])
def test_border_pass_makes_flat_partitions_exact_with_a_bounded_index(overlap):
    Xw, _ = as_working(_blobs_10d(6000))
    n = Xw.shape[0]
    exact, _ = knn_graph(Xw, 11, IndexSpec())
    report: dict = {}
    g = partitioned_knn_graph(Xw, 11, IndexSpec(refine=0), partitions=8, overlap=overlap, report=report)
    assert report["largest_partition"] < 0.6 * n  # no index ever holds all points
    assert 0.0 < report["certified"] < 1.0 and report["border_pairs"] > 0  # the border pass had work to do
    np.testing.assert_allclose(g.dist, exact.dist, rtol=1e-12)  # exact: ids equal up to distance ties
    assert (g.idx[:, 0] == np.arange(n)).all() and (np.diff(g.dist, axis=1) >= 0).all()


def test_the_certificate_is_what_makes_it_exact(monkeypatch):
    from behaviorseq.cluster import partition

    Xw, _ = as_working(_blobs_10d(6000))
    exact, _ = knn_graph(Xw, 11, IndexSpec())
    none = np.zeros(0, dtype=np.int64)  # a border pass that searches nothing keeps the first pass's misses
    monkeypatch.setattr(partition, "_border_pairs", lambda *a: (none, none))
    g = partitioned_knn_graph(Xw, 11, IndexSpec(refine=0), partitions=8, overlap=1)
    assert not np.allclose(g.dist, exact.dist, rtol=1e-12)


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_hdbscan_with_partitions_matches_one_index(index):
    X = _blobs_10d(5000)
    one = HDBSCAN(min_cluster_size=25, min_samples=10).fit(X)
    m = HDBSCAN(min_cluster_size=25, min_samples=10, index=index, partitions=6).fit(X)
    assert adjusted_rand_score(one.labels_, m.labels_) > 0.99
    assert m.knn_report_["partitions"] == 6 and m.knn_report_["overlap"] == 2
    assert (m.predict(X[::50]) == m.labels_[::50]).mean() > 0.95  # predict searches exactly (no index kept)


def test_small_partitions_still_give_full_lists():
    X = np.random.default_rng(0).standard_normal((300, 3))
    Xw, _ = as_working(X)
    g = partitioned_knn_graph(Xw, 40, IndexSpec(), partitions=30, overlap=1)  # ~10 points per partition
    assert (g.idx >= 0).all() and np.isfinite(g.dist).all()
    assert len({tuple(sorted(r)) for r in g.idx[:5].tolist()}) == 5 and all(len(set(r)) == 40 for r in g.idx.tolist())


@pytest.mark.parametrize("kw, match", [
    ({"partitions": 0}, "partitions must be an int >= 1 or None"),
    ({"partitions": 2, "partition_overlap": 3}, r"partition_overlap \(3\) must be <= partitions \(2\)"),
    ({"partitions": 2, "partition_overlap": 0}, "partition_overlap must be an int >= 1"),
])
def test_partition_config_errors_are_clear(kw, match):
    with pytest.raises(ValueError, match=match):
        HDBSCAN(**kw).fit(np.random.default_rng(0).standard_normal((50, 2)))
