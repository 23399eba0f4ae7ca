"""behaviorseq.cluster.HDBSCAN against the references: scipy's exact MST of the dense mutual-reachability
graph, the ``hdbscan`` package (labels, probabilities, GLOSH, approximate_predict) and its own single-linkage
tree (so the tree stages are compared without MST tie-breaking), plus the fast-vs-plain paths.

Ties: mutual-reachability weights tie often (every edge inside a core radius weighs that core distance).
Any MST gives the same single-linkage *levels*, but where three components meet at one height the binary
merge order is arbitrary (hdbscan sorts with an unstable quicksort), and a point on such a tie can land in
a different child. Label parity is therefore asserted exactly on inputs checked to be tie-free where it
matters, and by ARI elsewhere.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs, make_circles
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KDTree

from behaviorseq.cluster import (
    HAVE_NUMBA,
    HDBSCAN,
    IndexSpec,
    as_working,
    condense_tree,
    core_distances,
    glosh,
    knn_graph,
    mutual_reachability_mst,
    refine,
    select_clusters,
    single_linkage,
)
from behaviorseq.cluster.search import nearest_outside

hdbscan = pytest.importorskip("hdbscan")


def _noisy_blobs(n=1500, d=5, seed=3):
    X, _ = make_blobs(n, n_features=d, centers=7, cluster_std=[0.5, 1, 1.5, 2, 0.3, 1, 0.8], random_state=seed)
    rng = np.random.default_rng(1)
    return np.vstack([X, rng.uniform(X.min(0), X.max(0), (n // 10, d))])


def _noisy_rings(n=1200):
    X, _ = make_circles(n, noise=0.05, factor=0.5, random_state=0)
    return np.vstack([X, np.random.default_rng(1).uniform(-1.5, 1.5, (n // 12, 2))])


def _blobs_10d(n=3000, seed=2):
    X, _ = make_blobs(n, n_features=10, centers=20, cluster_std=1.0, center_box=(-10, 10), random_state=seed)
    return np.vstack([X, np.random.default_rng(seed).uniform(-12, 12, (n // 20, 10))])


def _reference(X, **kw):
    return hdbscan.HDBSCAN(algorithm="boruvka_kdtree", approx_min_span_tree=False, gen_min_span_tree=True,
                           **kw).fit(X)


def _same_up_to_permutation(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return (len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))
            and all((x < 0) == (y < 0) for x, y in pairs))


def _exact_mst_weight(X, core):
    mr = np.maximum(np.maximum(cdist(X, X), core[:, None]), core[None, :])
    np.fill_diagonal(mr, 0.0)
    return minimum_spanning_tree(mr + 1e-300).sum()  # +tiny: scipy drops zero entries as missing edges


def test_min_samples_excludes_the_point_like_hdbscan():
    X = _noisy_blobs(600)
    for ms in (1, 5, 12):
        Xw, _ = as_working(X)
        graph, _ = knn_graph(Xw, ms + 1, IndexSpec())
        want = KDTree(X).query(X, k=ms + 1)[0][:, ms]  # what hdbscan's Boruvka uses
        np.testing.assert_allclose(core_distances(graph, ms), want, rtol=1e-10)


@pytest.mark.parametrize("data", ["blobs", "rings", "blobs10d"])
@pytest.mark.parametrize("search", ["brute", "cells"])
def test_mst_weight_equals_scipy_exact_mst(data, search):
    X = {"blobs": _noisy_blobs(700), "rings": _noisy_rings(700), "blobs10d": _blobs_10d(900)}[data]
    if search == "cells" and not HAVE_NUMBA:
        pytest.skip("the cell search needs numba")
    Xw, _ = as_working(X)
    graph, _ = knn_graph(Xw, 16, IndexSpec())
    core = core_distances(graph, 5)
    tree = mutual_reachability_mst(Xw, core, graph, "exact", cells_min_points=0 if search == "cells" else 10**9)
    assert tree.src.size == X.shape[0] - 1 and tree.exact.all() and tree.searched > 0
    np.testing.assert_allclose(tree.weight.sum(), _exact_mst_weight(X, core), rtol=1e-10)
    approx = mutual_reachability_mst(Xw, core, graph, "approx", connect_queries=8)
    assert approx.src.size == X.shape[0] - 1
    assert approx.weight.sum() >= tree.weight.sum() * (1 - 1e-12)  # a spanning tree, never lighter


@pytest.mark.parametrize("make, mcs, ms", [(_noisy_blobs, 15, 5), (_noisy_blobs, 40, 20), (_noisy_rings, 15, 5),
                                           (_blobs_10d, 15, 5), (_blobs_10d, 40, 20)])
def test_labels_and_probabilities_match_hdbscan(make, mcs, ms):
    X = make()
    ref = _reference(X, min_cluster_size=mcs, min_samples=ms)
    ours = HDBSCAN(min_cluster_size=mcs, min_samples=ms).fit(X)
    np.testing.assert_allclose(np.sort(ours.minimum_spanning_tree_.weight),
                               np.sort(ref.minimum_spanning_tree_._mst[:, 2]), rtol=1e-10)
    assert _same_up_to_permutation(ref.labels_, ours.labels_)
    assert adjusted_rand_score(ref.labels_, ours.labels_) == 1.0
    np.testing.assert_allclose(ours.probabilities_, ref.probabilities_, atol=1e-9)


@pytest.mark.parametrize("make, mcs, ms, method", [(_noisy_blobs, 5, None, "eom"), (_noisy_rings, 5, None, "eom"),
                                                   (_noisy_rings, 10, 3, "leaf"), (_blobs_10d, 10, 3, "leaf")])
def test_tie_heavy_inputs_agree_up_to_ties(make, mcs, ms, method):
    X = make()
    ref = _reference(X, min_cluster_size=mcs, min_samples=ms, cluster_selection_method=method)
    ours = HDBSCAN(min_cluster_size=mcs, min_samples=ms, cluster_selection_method=method).fit(X)
    np.testing.assert_allclose(np.sort(ours.minimum_spanning_tree_.weight),
                               np.sort(ref.minimum_spanning_tree_._mst[:, 2]), rtol=1e-10)
    assert adjusted_rand_score(ref.labels_, ours.labels_) > (0.99 if method == "eom" else 0.9)


@pytest.mark.parametrize("make, mcs, ms, method", [(_noisy_blobs, 5, None, "eom"), (_noisy_blobs, 10, 3, "leaf"),
                                                   (_noisy_rings, 5, None, "eom"), (_noisy_rings, 10, 3, "leaf"),
                                                   (_blobs_10d, 40, 20, "eom")])
def test_tree_stages_equal_hdbscan_on_its_own_linkage(make, mcs, ms, method):
    """Fed hdbscan's single-linkage tree, condensing, selection, probabilities, GLOSH and persistence agree
    exactly: the only source of difference in the full pipeline is the MST tie order."""
    X = make()
    ref = _reference(X, min_cluster_size=mcs, min_samples=ms, cluster_selection_method=method)
    tree = condense_tree(ref.single_linkage_tree_._linkage, mcs)
    flat = select_clusters(tree, method)
    assert _same_up_to_permutation(ref.labels_, flat.labels)
    np.testing.assert_allclose(flat.probabilities, ref.probabilities_, atol=1e-12)
    np.testing.assert_allclose(glosh(tree), ref.outlier_scores_, atol=1e-12)
    np.testing.assert_allclose(np.sort(flat.persistence), np.sort(ref.cluster_persistence_), atol=1e-12)
    assert tree.n_clusters == np.unique(ref.condensed_tree_._raw_tree["parent"]).size


@pytest.mark.parametrize("make", [_noisy_blobs, _noisy_rings, _blobs_10d])
def test_glosh_close_to_hdbscan(make):
    X = make()
    ref = _reference(X, min_cluster_size=5)
    ours = HDBSCAN(min_cluster_size=5).fit(X)
    diff = np.abs(ours.outlier_scores_ - ref.outlier_scores_)
    assert np.mean(diff < 1e-9) > 0.95  # differences only on tie points
    assert diff.mean() < 0.01
    assert np.corrcoef(ours.outlier_scores_, ref.outlier_scores_)[0, 1] > 0.98


def test_predict_on_training_points_and_new_points():
    X = _noisy_blobs()
    ours = HDBSCAN(min_cluster_size=15, min_samples=5).fit(X)
    assert np.mean(ours.predict(X) == ours.labels_) > 0.97
    labels, prob = ours.approximate_predict(X)
    strong = ours.probabilities_ > 0.5
    assert np.array_equal(labels[strong], ours.labels_[strong])
    assert ((prob >= 0) & (prob <= 1)).all()
    ref = _reference(X, min_cluster_size=15, min_samples=5, prediction_data=True)
    new = X[::7] + np.random.default_rng(0).normal(0, 0.1, X[::7].shape)
    ref_new, _ = hdbscan.approximate_predict(ref, new)
    ours_new = ours.predict(new)
    # label ids differ by a permutation: map ours to the reference through the fitted labels
    mapping = {o: r for o, r in zip(ours.labels_.tolist(), ref.labels_.tolist())}
    assert np.mean(np.array([mapping[o] for o in ours_new.tolist()]) == ref_new) > 0.95


def test_approx_mode_and_approximate_indexes_agree_with_exact():
    X = _blobs_10d(4000)
    exact = HDBSCAN(min_cluster_size=25, min_samples=10, mst="exact").fit(X)
    # knn_refine=0 here: the NN-descent pass has its own test (and its numba compile belongs there)
    for kw in ({"mst": "approx", "connect_queries": 16}, {"index": "ivf", "nprobe": 8, "knn_refine": 0},
               {"index": "hnsw", "knn_refine": 0}):
        m = HDBSCAN(min_cluster_size=25, min_samples=10, **kw).fit(X)
        assert adjusted_rand_score(exact.labels_, m.labels_) > 0.98, kw
        assert m.minimum_spanning_tree_.src.size == X.shape[0] - 1
    approx = HDBSCAN(min_cluster_size=25, min_samples=10, mst="approx", connect_queries=16).fit(X)
    assert 0.9 < approx.minimum_spanning_tree_.exact_fraction <= 1.0


def test_fitted_model_pickles_with_its_index():
    X = _blobs_10d(3000)
    m = HDBSCAN(min_cluster_size=25, min_samples=10, index="ivf", knn_refine=0).fit(X)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.predict(X[::11]), m.predict(X[::11]))
    np.testing.assert_array_equal(back.labels_, m.labels_)


def test_separated_components_are_connected():
    rng = np.random.default_rng(0)  # kNN graph of 3 far-apart groups is disconnected: Boruvka must search
    X = np.vstack([rng.standard_normal((200, 4)) + off for off in (0, 50, 120)])
    for mst in ("exact", "approx"):
        m = HDBSCAN(min_cluster_size=10, n_neighbors=8, mst=mst).fit(X)
        assert len(set(m.labels_.tolist()) - {-1}) == 3
        np.testing.assert_allclose(m.minimum_spanning_tree_.weight.sum(),
                                   _exact_mst_weight(X, m.core_distances_), rtol=1e-10)


def test_duplicates_and_tiny_inputs():
    rng = np.random.default_rng(0)
    X = np.vstack([np.repeat(rng.standard_normal((20, 3)), 5, axis=0), rng.standard_normal((50, 3)) + 10])
    m = HDBSCAN(min_cluster_size=5).fit(X)  # zero distances: lambda = inf
    assert np.isfinite(m.outlier_scores_).all() and np.isfinite(m.probabilities_).all()
    ref = _reference(X, min_cluster_size=5)
    assert adjusted_rand_score(ref.labels_, m.labels_) > 0.9
    small = HDBSCAN(min_cluster_size=5).fit(rng.standard_normal((4, 2)))
    assert (small.labels_ == -1).all()
    assert HDBSCAN(min_cluster_size=2).fit(np.zeros((1, 2))).labels_.tolist() == [-1]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(5, 300), d=st.integers(1, 6), n_comp=st.integers(2, 6), seed=st.integers(0, 10**6))
def test_nearest_outside_paths_agree_with_dense(n, d, n_comp, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10)
    core = rng.uniform(0, 1, n)
    comp = rng.integers(0, n_comp, n)
    if np.unique(comp).size < 2:
        comp[0], comp[1] = 0, 1
    queries = np.arange(n)
    mr = np.maximum(np.maximum(cdist(X, X), core[:, None]), core[None, :])
    mr[comp[:, None] == comp[None, :]] = np.inf
    want = mr.min(axis=1)
    sq = np.einsum("nd,nd->n", X, X)
    for use_numba in ([False, True] if HAVE_NUMBA else [False]):
        _, w, _ = nearest_outside(X, core, comp, queries, sq, use_numba=use_numba, block_elems=4096)
        np.testing.assert_allclose(w, want, rtol=1e-9)
    if HAVE_NUMBA:
        from behaviorseq.cluster.cells import build_cells

        cells = build_cells(X, n_cells=max(1, n // 40))
        p, w, delta = nearest_outside(X, core, comp, queries, sq, cells=cells)
        np.testing.assert_allclose(w, want, rtol=1e-9)
        d_out = np.where(comp[:, None] == comp[None, :], np.inf, cdist(X, X)).min(axis=1)
        np.testing.assert_allclose(delta, d_out, rtol=1e-9)


def test_single_linkage_fast_and_plain_paths_agree():
    rng = np.random.default_rng(0)
    n = 500
    src, dst = np.arange(1, n), rng.integers(0, np.arange(1, n))  # a random tree
    w = rng.random(n - 1)
    Z_plain = single_linkage(src, dst, w, n, use_numba=False)
    if HAVE_NUMBA:
        np.testing.assert_array_equal(single_linkage(src, dst, w, n, use_numba=True), Z_plain)
    assert Z_plain[-1, 3] == n and np.all(np.diff(Z_plain[:, 2]) >= 0)


def test_knn_refine_repairs_an_approximate_index_on_both_paths():
    X = _blobs_10d(3000)
    Xw, _ = as_working(X)
    exact, _ = knn_graph(Xw, 16, IndexSpec())
    rough, _ = knn_graph(Xw, 16, IndexSpec(kind="ivf", nlist=70, nprobe=2, refine=0))
    plain = refine(Xw, rough, 1, use_numba=False)
    if HAVE_NUMBA:
        fast = refine(Xw, rough, 1, use_numba=True)
        np.testing.assert_allclose(fast.dist, plain.dist, rtol=1e-12)
    recall = lambda g: np.mean([len(set(a) & set(b)) for a, b in zip(g.idx.tolist(), exact.idx.tolist())]) / 16  # noqa: E731
    assert recall(plain) > recall(rough) and recall(plain) > 0.97
    assert (plain.idx[:, 0] == np.arange(X.shape[0])).all() and (np.diff(plain.dist, axis=1) >= 0).all()


def test_tuned_nprobe_reaches_the_recall_target_and_reports_it():
    import faiss

    from behaviorseq.cluster.knn import build_index, tune_nprobe

    X = _blobs_10d(3000)
    Xw, _ = as_working(X)
    X32 = np.ascontiguousarray(Xw, dtype=np.float32)
    index = build_index(X32, IndexSpec(kind="ivf", nlist=1000))
    exact = faiss.knn(X32, X32, 12)[1]
    recall_at = lambda p: (index.__setattr__("nprobe", p), np.mean(  # noqa: E731
        [len(set(a) & set(b)) for a, b in zip(index.search(X32, 12)[1].tolist(), exact.tolist())]) / 12)[1]
    assert recall_at(16) < 0.99  # so the tuner has to move
    nprobe, measured = tune_nprobe(index, X32, 12, target=0.99, sample=len(X32))
    assert nprobe in (32, 64, 128, 256, 512, 1000) and measured >= 0.99 and index.nprobe == nprobe
    assert measured == pytest.approx(recall_at(nprobe))  # the sample here is every row: the true recall
    assert recall_at(nprobe // 2) < 0.99  # the smallest doubling that reaches the target
    assert tune_nprobe(index, X32, 12, target=0.0, sample=500)[0] == 16
    assert tune_nprobe(index, X32, 12, target=1.01, sample=500)[0] == 1000  # capped at nlist
    report: dict = {}
    knn_graph(Xw, 12, IndexSpec(kind="ivf", nlist=1000, target_recall=0.99), report)
    assert report["nprobe"] == nprobe and report["recall"] >= 0.99
    fixed: dict = {}
    knn_graph(Xw, 12, IndexSpec(kind="ivf", nlist=1000, nprobe=4), fixed)
    assert fixed == {}  # a given nprobe is used as is


def test_without_numba_gives_the_same_clustering():
    code = ("import numpy as np; from sklearn.datasets import make_blobs;"
            "from behaviorseq.cluster import HDBSCAN, HAVE_NUMBA; assert not HAVE_NUMBA;"
            "X, _ = make_blobs(800, n_features=4, centers=5, random_state=1);"
            "m = HDBSCAN(min_cluster_size=10).fit(X); print(','.join(map(str, m.labels_)))")
    env = dict(os.environ, BEHAVIORSEQ_NO_NUMBA="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    plain = np.array(out.stdout.strip().split(","), dtype=int)
    X, _ = make_blobs(800, n_features=4, centers=5, random_state=1)
    np.testing.assert_array_equal(HDBSCAN(min_cluster_size=10).fit(X).labels_, plain)


@pytest.mark.parametrize("kw, match", [
    ({"min_cluster_size": 1}, "min_cluster_size must be an int >= 2"),
    ({"min_samples": 0}, "min_samples must be an int >= 1 or None"),
    ({"index": "kdtree"}, "'flat', 'ivf', 'hnsw'"),
    ({"cluster_selection_method": "excess"}, "'eom', 'leaf'"),
    ({"mst": "fast"}, "'exact', 'approx', 'auto'"),
    ({"nprobe": 4}, "nprobe only applies to index='ivf'"),
    ({"index": "ivf", "nlist": 4, "nprobe": 8}, r"nprobe \(8\) must be <= nlist \(4\)"),
    ({"ef_search": 16}, "only applies to index='hnsw'"),
])
def test_config_errors_are_clear(kw, match):
    with pytest.raises(ValueError, match=match):
        HDBSCAN(**kw).fit(np.random.default_rng(0).standard_normal((50, 2)))


def test_input_and_predict_errors():
    with pytest.raises(ValueError, match="finite"):
        HDBSCAN().fit(np.array([[0.0, np.nan]] * 10))
    with pytest.raises(TypeError):
        HDBSCAN(min_clustr_size=5)  # misspelt keyword: an error, never a silent default
    m = HDBSCAN(min_cluster_size=5)
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict(np.zeros((2, 2)))
    m.fit(np.random.default_rng(0).standard_normal((60, 2)))
    with pytest.raises(ValueError, match="features"):
        m.predict(np.zeros((2, 3)))


@pytest.mark.skipif(not HAVE_NUMBA, reason="the cell search needs numba")
@pytest.mark.parametrize("kind", ["blobs10d", "lattice3d"])
def test_cell_search_with_bisector_bounds_is_exact_with_many_cells(kind):
    """Many small cells, so the bisector bound (not only the ball bound) decides what is skipped; the lattice
    puts points exactly on bisectors and gives many tied distances."""
    from behaviorseq.cluster.cells import build_cells

    rng = np.random.default_rng(3)
    if kind == "blobs10d":
        X = _blobs_10d(4000)
    else:
        X = rng.integers(0, 8, (4000, 3)).astype(np.float64) + 100.0  # far from the origin: float32 rounding
    n = X.shape[0]
    core = rng.uniform(0, 0.5, n)
    comp = rng.integers(0, 40, n)
    cells = build_cells(X, n_cells=100)
    assert cells.half_inv.shape == (100, 100) and cells.slack > 0
    queries = rng.choice(n, 300, replace=False)
    D = cdist(X[queries], X)
    mr = np.maximum(np.maximum(D, core[queries, None]), core[None, :])
    sq = np.einsum("nd,nd->n", X, X)
    outside = comp[None, :] != comp[queries, None]
    _, w, delta = nearest_outside(X, core, comp, queries, sq, cells=cells)
    np.testing.assert_allclose(w, np.where(outside, mr, np.inf).min(axis=1), rtol=1e-9)
    np.testing.assert_allclose(delta, np.where(outside, D, np.inf).min(axis=1), rtol=1e-9, atol=1e-12)
    within = comp[queries]  # the search inside the query's own component (the approx mode's walk)
    _, w_in, _ = nearest_outside(X, core, comp, queries, sq, within=within, cells=cells)
    np.testing.assert_allclose(w_in, np.where(~outside, mr, np.inf).min(axis=1), rtol=1e-9)


def _one_blob(n=400, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3))


def _two_blobs(n=400):
    X, _ = make_blobs(n, n_features=3, centers=[[0, 0, 0], [6, 0, 0]], random_state=1)
    return X


@pytest.mark.parametrize("make, mcs, method", [(_one_blob, 30, "eom"), (_one_blob, 150, "eom"),
                                               (_one_blob, 250, "leaf"), (_two_blobs, 20, "eom"),
                                               (_noisy_blobs, 10, "eom"), (_noisy_rings, 10, "leaf")])
def test_allow_single_cluster_matches_hdbscan(make, mcs, method):
    """hdbscan's allow_single_cluster: the root competes in EOM (and is the leaf of a tree that never splits);
    when it wins, only points reaching the largest lambda of the root's own rows keep the label."""
    X = make()
    ref = _reference(X, min_cluster_size=mcs, min_samples=5, cluster_selection_method=method,
                     allow_single_cluster=True)
    flat = select_clusters(condense_tree(ref.single_linkage_tree_._linkage, mcs), method, allow_single_cluster=True)
    assert _same_up_to_permutation(ref.labels_, flat.labels)
    np.testing.assert_allclose(flat.probabilities, ref.probabilities_, atol=1e-12)
    ours = HDBSCAN(min_cluster_size=mcs, min_samples=5, cluster_selection_method=method,
                   allow_single_cluster=True).fit(X)
    assert adjusted_rand_score(ref.labels_, ours.labels_) > (0.99 if method == "eom" else 0.9)  # ties: see top
    default = HDBSCAN(min_cluster_size=mcs, min_samples=5, cluster_selection_method=method).fit(X)
    if ref.labels_.max() == 0:  # the root won: without the flag it can never be returned
        assert default.labels_.max() != 0 or (default.labels_ == -1).all()


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_use_gpu_path_with_faiss_gpu_calls_stubbed(monkeypatch, index):
    """The faiss-gpu branch on a CPU-only machine: the index-moving calls are stubbed by identities, so the
    branch's own logic (no numba scan, no CPU-only shortcuts, the index moved back to the CPU to pickle) runs
    and must give the CPU path's clustering. The real GPU run needs a faiss-gpu machine."""
    import faiss

    moved = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda ix: moved.append(type(ix).__name__) or ix,
                        raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda ix: ix, raising=False)
    X = _blobs_10d(1500)
    kw = dict(min_cluster_size=15, min_samples=5, index=index)
    if index == "ivf":
        kw.update(nlist=16, nprobe=16)  # every cell probed: exact, so the two paths must agree
    gpu = HDBSCAN(use_gpu=True, **kw).fit(X)
    cpu = HDBSCAN(**kw).fit(X)
    assert moved and adjusted_rand_score(cpu.labels_, gpu.labels_) > 0.99
    again = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_array_equal(again.predict(X[:50]), gpu.predict(X[:50]))


def test_use_gpu_without_a_gpu_says_so(monkeypatch):
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    with pytest.raises(RuntimeError, match="use_gpu=True needs faiss built with CUDA and a visible GPU"):
        HDBSCAN(min_cluster_size=5, use_gpu=True).fit(_noisy_blobs(300))


def test_cli_cluster_on_npy_and_csv(tmp_path, capsys):
    from behaviorseq.cli import main as cli_main

    X = _noisy_blobs(600)
    np.save(tmp_path / "x.npy", X)
    assert cli_main(["cluster", str(tmp_path / "x.npy"), "--out", str(tmp_path / "a.npz"), "--min-cluster-size",
                     "15", "--min-samples", "5", "--json", str(tmp_path / "s.json")]) == 0
    got = np.load(tmp_path / "a.npz")
    ref = HDBSCAN(min_cluster_size=15, min_samples=5).fit(X)
    np.testing.assert_array_equal(got["labels"], ref.labels_)
    assert got["outlier_scores"].shape == (X.shape[0],)
    import json as _json

    assert _json.loads((tmp_path / "s.json").read_text())["clusters"] == ref.labels_.max() + 1
    import pandas as pd

    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]).assign(name="row")
    df.to_csv(tmp_path / "x.csv", index=False)
    assert cli_main(["cluster", str(tmp_path / "x.csv"), "--out", str(tmp_path / "b.npz"), "--min-cluster-size",
                     "15", "--min-samples", "5"]) == 0  # the text column is left out
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["labels"], ref.labels_)
    df.loc[7, "f2"] = np.nan
    df.to_csv(tmp_path / "bad.csv", index=False)
    assert cli_main(["cluster", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "c.npz")]) == 2
    assert "bad.csv, row 8, field 'f2': not a finite number" in capsys.readouterr().err
    assert not (tmp_path / "c.npz").exists()
    Xn = X.copy()
    Xn[4, 1] = np.inf
    np.save(tmp_path / "bad.npy", Xn)
    assert cli_main(["cluster", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "c.npz")]) == 2
    assert "bad.npy, row 5, column 1: not a finite number" in capsys.readouterr().err
    # a missing output folder and a bad setting are refused before any clustering work
    assert cli_main(["cluster", str(tmp_path / "x.npy"), "--out", str(tmp_path / "nodir" / "c.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["cluster", str(tmp_path / "x.npy"), "--out", str(tmp_path / "c.npz"),
                     "--min-cluster-size", "1"]) == 2
    assert "min_cluster_size" in capsys.readouterr().err
    # session 25: a typo in one cell dropped its whole column silently; outputs were replaced without asking
    typo = df.astype({"f2": object})
    typo.loc[7, "f2"] = "1.2x"
    typo.to_csv(tmp_path / "typo.csv", index=False)
    assert cli_main(["cluster", str(tmp_path / "typo.csv"), "--out", str(tmp_path / "d.npz")]) == 2
    assert "typo.csv, row 8, field 'f2': not a number ('1.2x')" in capsys.readouterr().err
    before = (tmp_path / "a.npz").read_bytes()
    for extra, why in [([], "a.npz exists: --overwrite"), (["--overwrite", "--json", str(tmp_path / "a.npz")],
                                                          "name one file"), (["--overwrite", "--json", str(tmp_path)],
                                                                             "is a folder")]:
        assert cli_main(["cluster", str(tmp_path / "x.npy"), "--out", str(tmp_path / "a.npz"), *extra]) == 2
        assert why in capsys.readouterr().err and (tmp_path / "a.npz").read_bytes() == before
    np.save(tmp_path / "cplx.npy", X.astype(np.complex64))  # clustered on the real part, with a warning only
    assert cli_main(["cluster", str(tmp_path / "cplx.npy"), "--out", str(tmp_path / "e.npz")]) == 2
    assert "expected real numbers" in capsys.readouterr().err


def test_the_exact_mst_of_float32_data_is_prims_and_too_many_partitions_are_named():
    from scipy.spatial.distance import cdist

    from behaviorseq.cluster import HDBSCAN

    rng = np.random.default_rng(0)  # tight blobs far from the mean, rows repeated: float32 brute force erred
    base = np.r_[rng.normal(size=(100, 8)) * 0.01 + 20, rng.normal(size=(50, 8)) * 0.01 - 20]
    X = np.repeat(base, 20, axis=0).astype(np.float32)
    h = HDBSCAN(min_cluster_size=25, min_samples=10).fit(X)
    Xw, core = h._Xw.astype(np.float64), h.core_distances_.astype(np.float64)
    mr = np.maximum(np.maximum(cdist(Xw, Xw), core[:, None]), core[None, :])
    inside, best, total = np.zeros(len(X), bool), np.full(len(X), np.inf), 0.0  # dense Prim (a test-sized loop)
    best[0] = 0.0
    for _ in range(len(X)):
        j = int(np.argmin(np.where(inside, np.inf, best)))
        inside[j], total = True, total + best[j]
        best = np.minimum(best, mr[j])
    assert h.minimum_spanning_tree_.exact_fraction == 1.0
    assert h.minimum_spanning_tree_.weight.sum() == pytest.approx(total, rel=1e-6)  # was 3.8e-3 heavier
    with pytest.raises(ValueError, match="partitions .16. exceeds the 10 points"):
        HDBSCAN(partitions=16).fit(rng.normal(size=(10, 2)))
