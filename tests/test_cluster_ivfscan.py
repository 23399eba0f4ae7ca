"""The cell-sorted IVF self-join (``cluster/ivfscan.py``) against exact search and FAISS's own IVF search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from behaviorseq.cluster import HAVE_NUMBA, IndexSpec, as_working, ivftune, knn_graph
from behaviorseq.cluster.knn import build_index

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="the scan is the numba path; without numba FAISS searches")


def _blobs(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, (12, d))
    return (centers[rng.integers(12, size=n)] + rng.standard_normal((n, d))).astype(np.float32)


def _setup(X32: np.ndarray, nlist: int):
    from behaviorseq.cluster import ivfscan

    index = build_index(X32, IndexSpec(kind="ivf", nlist=nlist))
    return ivfscan, ivfscan.cell_blocks(index, X32), index


def _recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float((got[:, :, None] == exact[:, None, :]).any(-1).mean())


@pytest.mark.parametrize("d", [3, 10, 33])
def test_scan_over_every_cell_is_exact_search(d):
    X32 = _blobs(1500, d)
    ivfscan, cb, _ = _setup(X32, nlist=24)
    assert sorted(cb.perm.tolist()) == list(range(1500))  # every point sits in exactly one cell
    got = ivfscan.scan(cb, X32, np.arange(1500), 9, nprobe=24)[np.argsort(cb.perm)]
    exact = faiss.knn(X32, X32, 9)[1]
    assert _recall(got, exact) == 1.0


def test_scan_recall_matches_faiss_ivf_at_the_same_probes():
    X32 = _blobs(6000, 10)
    ivfscan, cb, index = _setup(X32, nlist=150)
    exact = faiss.knn(X32, X32, 11)[1]
    for nprobe in (2, 6):
        index.nprobe = nprobe
        ref = _recall(index.search(X32, 11)[1], exact)
        ours = _recall(ivfscan.scan(cb, X32, np.arange(6000), 11, nprobe)[np.argsort(cb.perm)], exact)
        assert ref < 0.99 and abs(ours - ref) < 0.01, (nprobe, ours, ref)  # probes from a pool, not all cells


def test_tune_reaches_the_target_at_the_first_rung_of_the_ladder():
    X32 = _blobs(5000, 10, seed=1)
    ivfscan, cb, _ = _setup(X32, nlist=400)
    exact = faiss.knn(X32, X32, 12)[1]
    true_recall = lambda p: _recall(ivfscan.scan(cb, X32, np.arange(5000), 12, p)[np.argsort(cb.perm)], exact)  # noqa: E731
    nprobe, measured = ivftune.tune(cb, X32, 12, start=2, target=0.99, sample=5000)
    assert measured >= 0.99 and measured == pytest.approx(true_recall(nprobe))  # the sample is every row
    ladder = ivftune.probe_ladder(2, 400)
    assert nprobe > 2 and true_recall(ladder[ladder.index(nprobe) - 1]) < 0.99
    assert ivftune.tune(cb, X32, 12, start=2, target=1.01, sample=300)[0] == 400  # capped at nlist


def test_probe_ladder_doubles_once_then_takes_half_octave_steps():

    assert ivftune.probe_ladder(16, 20000)[:9] == [16, 32, 48, 64, 96, 128, 192, 256, 384]
    assert ivftune.probe_ladder(16, 40) == [16, 32, 40] and ivftune.probe_ladder(16, 16) == [16]
    assert ivftune.probe_ladder(16, 5) == [5]


@pytest.mark.parametrize("d", [2, 10])
def test_exact_matches_brute_force_including_far_isolated_queries(d):
    X32 = _blobs(4000, d, seed=2)
    X32[:20] *= 6.0  # isolated points far outside the blobs: their neighbours sit in distant cells
    ivfscan, cb, _ = _setup(X32, nlist=90)
    rows = np.sort(np.r_[np.flatnonzero(np.isin(cb.perm, np.arange(20))), np.arange(0, 4000, 7)])
    got = ivftune.exact(cb, X32, rows, 15)
    ref_d, ref_i = faiss.knn(X32[cb.perm[rows]], X32, 15)
    got_d = ((X32[got] - X32[cb.perm[rows]][:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.sort(got_d, 1), ref_d, rtol=1e-4, atol=1e-6)  # equal up to ties
    assert _recall(got, ref_i) > 0.999


def test_knn_graph_ivf_lists_are_well_formed_and_short_cells_are_searched_exactly():
    X = _blobs(800, 5).astype(np.float64)
    Xw, _ = as_working(X)
    exact, _ = knn_graph(Xw, 40, IndexSpec())
    report: dict = {}
    g, _ = knn_graph(Xw, 40, IndexSpec(kind="ivf", nlist=20, nprobe=1, refine=0), report)
    assert report == {} and (g.idx >= 0).all()  # cells of ~40 points with one probe: short rows re-searched
    assert (g.idx[:, 0] == np.arange(800)).all() and (np.diff(g.dist, axis=1) >= 0).all()
    tuned, _ = knn_graph(Xw, 40, IndexSpec(kind="ivf", nlist=20, target_recall=0.999), report)
    assert report["recall"] >= 0.999 and _recall(tuned.idx, exact.idx) >= 0.999
    np.testing.assert_allclose(tuned.dist[:, -1], exact.dist[:, -1], rtol=1e-9)  # core distances exact


def test_two_level_cells_cover_every_point_and_match_flat_kmeans_recall():
    from behaviorseq.cluster import ivfscan, ivftrain

    X32 = _blobs(30000, 10, seed=3)
    index = ivftrain.two_level_ivf(X32, 300, seed=0)
    cb = ivfscan.cell_blocks(index, X32)
    assert abs(index.nlist - 300) <= 12 and sorted(cb.perm.tolist()) == list(range(30000))
    nearest = index.quantizer.search(X32, 1)[1][:, 0]
    assert (nearest[cb.perm] == cb.cell).mean() > 0.98  # the coarse probes find almost every nearest centroid
    flat = ivfscan.cell_blocks(build_index(X32, IndexSpec(kind="ivf", nlist=300)), X32)
    exact = faiss.knn(X32, X32, 11)[1]
    r2, r1 = (_recall(ivfscan.scan(c, X32, np.arange(30000), 11, 8)[np.argsort(c.perm)], exact) for c in (cb, flat))
    assert r2 > r1 - 0.01, (r2, r1)


def _reference_scan(cb, X32: np.ndarray, rows: np.ndarray, k: int, nprobe: int) -> np.ndarray:
    """Per query in NumPy: the probes are the ``nprobe`` nearest of its cell's candidate centroids (float32
    squared distances, ties in candidate order), then the ``k`` smallest squared distances over their points."""
    near = cb.near(nprobe)
    out = np.empty((rows.size, k), dtype=np.float32)
    for r, pos in enumerate(rows):
        q = X32[cb.perm[pos]]
        cand = near[cb.cell[pos]]
        cd = ((cb.centroids[cand] - q) ** 2).sum(1, dtype=np.float32)
        probes = cand[np.argsort(cd, kind="stable")[:nprobe]]
        pts = np.concatenate([np.arange(cb.start[c], cb.start[c + 1]) for c in probes])
        d2 = ((X32[cb.perm[pts]] - q) ** 2).sum(1, dtype=np.float32)
        out[r] = np.sort(d2)[:k]
    return out


@pytest.mark.parametrize("max_group", [1024, 7])
def test_grouped_scan_equals_a_per_query_reference_with_ties(monkeypatch, max_group):
    """The scan runs queries of a cell together, cell by cell; each query must still get exactly its own
    probes and the k nearest points among them. The lattice rows add many equal point distances."""
    from behaviorseq.cluster import ivfscan

    rng = np.random.default_rng(4)
    X32 = np.r_[_blobs(2500, 10, seed=5), rng.integers(0, 3, (500, 10)).astype(np.float32)]
    _, cb, _ = _setup(X32, nlist=60)
    monkeypatch.setattr(ivfscan, "MAX_GROUP", max_group)  # 7: big cells are cut into many groups
    rows = np.arange(0, 3000, 3)
    for nprobe in (1, 5, 60):
        got = ivfscan.scan(cb, X32, rows, 9, nprobe)
        assert (got >= 0).all()
        got_d = np.sort(((X32[got] - X32[cb.perm[rows]][:, None]) ** 2).sum(-1), 1)
        ref = _reference_scan(cb, X32, rows, 9, nprobe)
        np.testing.assert_allclose(got_d, ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(_reference_scan(cb, X32, rows, 9, 1), _reference_scan(cb, X32, rows, 9, 5))


def test_groups_cut_runs_of_one_cell_at_max_group():
    from behaviorseq.cluster import ivfscan

    gstart, gcell = ivfscan.groups(np.array([0, 0, 0, 0, 0, 3, 3, 7]), max_group=2)
    assert gstart.tolist() == [0, 2, 4, 5, 7, 8] and gcell.tolist() == [0, 0, 0, 3, 7]


def test_scan_leaves_no_reference_cycle_holding_its_arrays():
    """The kernel's arrays must be freed when the result is dropped, without a garbage collection (a
    ``numba.literally`` dispatch once kept them in an exception traceback: 2.7 GB at 3M points)."""
    import gc
    import tracemalloc

    from behaviorseq.cluster import ivfscan

    X32 = _blobs(20000, 10, seed=6)
    _, cb, _ = _setup(X32, nlist=80)
    rows = np.arange(20000)
    ivfscan.scan(cb, X32, rows, 9, 4)  # compiled or loaded from the cache before measuring
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        ids = ivfscan.scan(cb, X32, rows, 9, 4)
        held = tracemalloc.get_traced_memory()[0]
        del ids
        left = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        gc.enable()
    assert held > 1_400_000 and left < 200_000, (held, left)  # the [20000, 9] int64 result alone is 1.44 MB
