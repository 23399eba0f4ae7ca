"""``HDBSCAN``: a scikit-learn-style estimator for FAISS-accelerated HDBSCAN* (euclidean).

Pipeline (Campello, Moulavi & Sander, PAKDD 2013 / TKDD 2015; McInnes & Healy, ICDMW 2017; the FAISS-based
pHDBSCAN of FinDeepBehaviorCluster, Min et al., arXiv 2101.04285, as the project brief reconstructs it):

1. kNN lists and core distances on FAISS (:mod:`.knn`, with :mod:`.ivfscan` for the ivf self-join; ``min_samples``
   excludes the point, as in hdbscan);
2. the mutual-reachability MST by Boruvka over kNN edges plus cell-pruned exact searches (:mod:`.mst`,
   :mod:`.search`, :mod:`.cells`); 3. the single-linkage tree (:mod:`.linkage`);
4. the condensed tree (:mod:`.condense`); 5. EOM or leaf selection, probabilities, GLOSH (:mod:`.select`);
6. ``predict`` (:mod:`.predict`).

Deviations from ``hdbscan.HDBSCAN``, one line each (stage-level ones are in each module's docstring):

- euclidean only: no ``metric``, ``p``, ``algorithm``, ``leaf_size``; FAISS options instead.
- no ``alpha`` (fixed at 1.0).
- ``mst="auto"`` is exact up to ``exact_max_points`` points and approximate above; hdbscan's default
  (``approx_min_span_tree=True``) is approximate at every size.
- ``predict`` is ``approximate_predict`` and needs no ``prediction_data=True``.
- no soft clustering, branch detection, exemplars, ``memory`` caching or ``min_spanning_tree`` plots.
"""

from __future__ import annotations

import time
from typing import Any

import faiss
import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from behaviorseq.cluster.condense import CondensedTree, condense_tree
from behaviorseq.cluster.knn import INDEX_KINDS, IndexSpec, as_working, core_distances, knn_graph, search
from behaviorseq.cluster.linkage import single_linkage
from behaviorseq.cluster.mst import MST_MODES, SpanningTree, mutual_reachability_mst
from behaviorseq.cluster.partition import partitioned_knn_graph
from behaviorseq.cluster.predict import attach
from behaviorseq.cluster.select import SELECTION_METHODS, Flat, glosh, select_clusters

__all__ = ["HDBSCAN"]

_IVF_ONLY = ("nlist", "nprobe")
_HNSW_ONLY = ("hnsw_m", "ef_search")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class HDBSCAN(ClusterMixin, BaseEstimator):
    """Hierarchical density-based clustering with FAISS neighbour search.

    Args:
        min_cluster_size: smallest cluster (``>= 2``). min_samples: density smoothing, the number of *other*
            points within the core distance (hdbscan's convention); ``None`` = ``min_cluster_size``.
        cluster_selection_method: ``"eom"`` (excess of mass) or ``"leaf"``.
        allow_single_cluster: let the root be selected, as hdbscan's flag (one cluster may then be returned).
        index: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate, for large ``n``).
        n_neighbors: kNN list length including the point; ``None`` = ``max(min_samples + 1, 16)``. Longer lists
            certify more MST edges and leave fewer components to search.
        mst: ``"exact"``, ``"approx"`` or ``"auto"`` (exact when ``n <= exact_max_points``).
        exact_max_points: threshold of ``mst="auto"``.
        connect_queries: approx MST, points searched per component (and round) that the kNN lists do not
            certify; a component with fewer candidate points is thereby resolved exactly.
        nlist, nprobe: ivf options (``None`` = automatic). hnsw_m, ef_search: hnsw options.
        knn_refine: NN-descent passes repairing an approximate index's lists; ``None`` = 1 for ivf/hnsw and
            with ``partitions``, 0 for flat.
        partitions: ``None`` = one index over all points; an int ``P`` = partition-and-merge neighbour search
            for data beyond one index (:mod:`.partition`): ``P`` k-means partitions, each point searched in
            the partitions of its ``partition_overlap`` nearest centroids, one index per partition (of the
            ``index`` kind), lists merged after a border pass that certifies them (exact with the flat
            kind), then one global hierarchy. ``approximate_predict`` then searches exactly (no index kept).
        use_gpu: run FAISS on the GPUs (faiss-gpu). block_size: queries per FAISS call.
        random_state: seed of the ivf k-means and the approx-mode sampling.

    Attributes after ``fit``: ``labels_`` ``[n]`` (-1 noise), ``probabilities_``, ``outlier_scores_`` (GLOSH),
    ``core_distances_``, ``cluster_persistence_``, ``minimum_spanning_tree_`` (:class:`SpanningTree`, with the
    per-edge ``exact`` flags), ``single_linkage_tree_`` (scipy linkage ``[n-1, 4]``), ``condensed_tree_``
    (:class:`CondensedTree`; ``.to_records()`` gives hdbscan's format), ``timings_`` (seconds per stage) and
    ``knn_report_`` (ivf: the tuned ``nprobe`` and its measured recall; with ``partitions``: the largest
    partition, the share of lists the first pass certified, the border searches and the probes per
    partition; empty otherwise).
    """

    def __init__(
        self,
        min_cluster_size: int = 5,
        min_samples: int | None = None,
        cluster_selection_method: str = "eom",
        allow_single_cluster: bool = False,
        index: str = "flat",
        n_neighbors: int | None = None,
        mst: str = "auto",
        exact_max_points: int = 10_000,
        connect_queries: int = 256,
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int | None = None,
        ef_search: int | None = None,
        knn_refine: int | None = None,
        partitions: int | None = None,
        partition_overlap: int = 2,
        use_gpu: bool = False,
        block_size: int = 65_536,
        random_state: int = 0,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.allow_single_cluster = allow_single_cluster
        self.index = index
        self.n_neighbors = n_neighbors
        self.mst = mst
        self.exact_max_points = exact_max_points
        self.connect_queries = connect_queries
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.knn_refine = knn_refine
        self.partitions = partitions
        self.partition_overlap = partition_overlap
        self.use_gpu = use_gpu
        self.block_size = block_size
        self.random_state = random_state

    # ---------------------------------------------------------------- validation
    def _check_params(self) -> None:
        def positive(name: str, low: int, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not _is_int(v) or v < low:
                raise ValueError(f"HDBSCAN.{name} must be an int >= {low}{' or None' if allow_none else ''}, "
                                 f"got {v!r}")

        positive("min_cluster_size", 2)
        positive("min_samples", 1, allow_none=True)
        positive("n_neighbors", 2, allow_none=True)
        positive("exact_max_points", 0)
        positive("connect_queries", 1)
        positive("block_size", 1)
        positive("random_state", 0)
        positive("knn_refine", 0, allow_none=True)
        positive("partitions", 1, allow_none=True)
        positive("partition_overlap", 1)
        if self.partitions is not None and self.partition_overlap > self.partitions:
            raise ValueError(f"HDBSCAN.partition_overlap ({self.partition_overlap}) must be <= partitions "
                             f"({self.partitions})")
        for name, choices in (("cluster_selection_method", SELECTION_METHODS), ("index", INDEX_KINDS),
                              ("mst", (*MST_MODES, "auto"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"HDBSCAN.{name}={getattr(self, name)!r} is not valid; choose one of "
                                 f"{', '.join(map(repr, choices))}")
        for names, kind in ((_IVF_ONLY, "ivf"), (_HNSW_ONLY, "hnsw")):
            for name in names:
                if getattr(self, name) is not None:
                    if self.index != kind:
                        raise ValueError(f"HDBSCAN.{name} only applies to index={kind!r}, not {self.index!r}")
                    positive(name, 1)
        if self.nlist is not None and self.nprobe is not None and self.nprobe > self.nlist:
            raise ValueError(f"HDBSCAN.nprobe ({self.nprobe}) must be <= nlist ({self.nlist})")
        for name in ("use_gpu", "allow_single_cluster"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"HDBSCAN.{name} must be a bool, got {getattr(self, name)!r}")

    def _spec(self) -> IndexSpec:
        extra = {k: getattr(self, k) for k in ("nlist", "nprobe", "hnsw_m", "ef_search")
                 if getattr(self, k) is not None}
        return IndexSpec(kind=self.index, use_gpu=self.use_gpu, block_size=self.block_size,
                         seed=self.random_state, refine=self.knn_refine, **extra)

    @staticmethod
    def _check_X(X: Any, what: str = "X") -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"{what} must be a non-empty 2-d array [n_samples, n_features], got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
            raise ValueError(f"{what} must be numeric and finite (no NaN/inf)")
        return X

    # ---------------------------------------------------------------- fit / predict
    def fit(self, X: Any, y: Any = None) -> HDBSCAN:
        """Cluster ``X`` ``[n, d]``. ``y`` is ignored."""
        self._check_params()
        X = self._check_X(X)
        n = X.shape[0]
        if self.partitions is not None and self.partitions > n:  # FAISS's k-means refused it with 'nx >= k'
            raise ValueError(f"HDBSCAN.partitions ({self.partitions}) exceeds the {n} points; use at most {n} (or None)")
        t = {}
        t0 = time.perf_counter()
        ms = self.min_cluster_size if self.min_samples is None else self.min_samples
        ms = max(1, min(n - 1, ms))  # hdbscan clips the same way
        k = min(n, max(ms + 1, self.n_neighbors or 16))
        Xw, center = as_working(X)
        knn_report: dict = {}
        if self.partitions is None:
            graph, fitted_index = knn_graph(Xw, k, self._spec(), knn_report)
        else:  # partition-and-merge: no index over all points is kept, predict searches exactly
            graph = partitioned_knn_graph(Xw, k, self._spec(), self.partitions, self.partition_overlap, knn_report)
            fitted_index = None
        core = core_distances(graph, ms) if n > 1 else np.zeros(1)
        t["knn"] = time.perf_counter() - t0
        mode = self.mst if self.mst != "auto" else ("exact" if n <= self.exact_max_points else "approx")
        t0 = time.perf_counter()
        tree = mutual_reachability_mst(Xw, core, graph, mode, self.connect_queries, self.random_state)
        t["mst"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        Z = single_linkage(tree.src, tree.dst, tree.weight, n)
        t["linkage"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        condensed = condense_tree(Z, self.min_cluster_size)
        flat = select_clusters(condensed, self.cluster_selection_method, self.allow_single_cluster)
        scores = glosh(condensed, flat.max_lambda)
        t["condense_select"] = time.perf_counter() - t0

        self.n_features_in_ = X.shape[1]
        self.min_samples_ = ms
        self.mst_mode_ = mode
        self.labels_ = flat.labels
        self.probabilities_ = flat.probabilities
        self.outlier_scores_ = scores
        self.cluster_persistence_ = flat.persistence
        self.core_distances_ = core
        self.minimum_spanning_tree_: SpanningTree = tree
        self.single_linkage_tree_ = Z
        self.condensed_tree_: CondensedTree = condensed
        self.timings_ = t
        self.knn_report_ = knn_report
        self._flat: Flat = flat
        self._Xw, self._center, self._faiss_index = Xw, center, fitted_index
        return self

    def approximate_predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """hdbscan's ``approximate_predict`` for new points ``[m, d]``: ``(labels [m], probabilities [m])``."""
        if not hasattr(self, "labels_"):
            raise RuntimeError("HDBSCAN is not fitted; call fit(X) first")
        X = self._check_X(X, "points")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"points have {X.shape[1]} features, the model was fitted on {self.n_features_in_}")
        Q, _ = as_working(X, self._center)
        Q = Q.astype(self._Xw.dtype, copy=False)
        k = min(self._Xw.shape[0], 2 * self.min_samples_)
        nb = search(self._faiss_index, self._Xw, Q, k, self.block_size)
        labels, prob, _ = attach(nb, self.core_distances_, self.min_samples_, self.condensed_tree_, self._flat)
        return labels, prob

    def predict(self, X: Any) -> np.ndarray:
        """Cluster labels of new points (``approximate_predict``; -1 = noise)."""
        return self.approximate_predict(X)[0]

    # a FAISS index does not pickle: it travels as faiss.serialize_index bytes (moved to the CPU first)
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # object.__getstate__ returns the live __dict__
        index = state.pop("_faiss_index", None)
        if index is not None:
            if self.use_gpu:
                index = faiss.index_gpu_to_cpu(index)
            state["_faiss_index_bytes"] = faiss.serialize_index(index)
        return state

    def __setstate__(self, state: dict) -> None:
        blob = state.pop("_faiss_index_bytes", None)
        super().__setstate__(state)
        if "labels_" in state:
            self._faiss_index = faiss.deserialize_index(blob) if blob is not None else None
