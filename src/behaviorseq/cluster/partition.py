"""Partition-and-merge neighbour search, for data beyond one index (issue 7; brief section 6, step 7 [R]).

pHDBSCAN (FinDeepBehaviorCluster, Min et al. 2021) reportedly clusters hundreds of millions of points on
GPUs, without public code; the brief reconstructs it as partition-and-merge. The neighbour search is the
one stage that needs an index over all the data (a GPU's memory, or a FAISS index's RAM), so that is the
stage partitioned here; the lists are merged before the hierarchy is built:

1. FAISS k-means with ``P`` centroids on a sample of up to ``256 P`` points. Each point joins the partitions
   of its ``overlap`` nearest centroids and is *owned* by the nearest (cuML's ``knn_n_clusters`` /
   ``knn_overlap_factor`` scheme).
2. One partition at a time: an index of the requested kind (flat, ivf, hnsw; GPU when asked) over its
   members only, via :func:`~behaviorseq.cluster.knn.knn_graph`; the lists of the points it owns are kept,
   with member ids mapped back to global ids. Peak index size = the largest partition, about
   ``overlap * n / P`` points.
3. A border pass certifies the lists. A point outside the members of ``x``'s partition lies beyond at
   least ``overlap`` bisector hyperplanes between ``x``'s centroid and others, so where the ``overlap``-th
   nearest of those hyperplanes is farther than ``x``'s k-th distance, ``x``'s list is exact; every other
   point is searched again in each partition whose bisector is nearer than that distance, and the lists are
   merged. With the flat kind the result equals exact search; with ivf / hnsw, the index's own
   approximation inside a partition remains. Then NN-descent passes (``spec.refine``, default 1).

The mutual-reachability MST, the condensed tree and the cluster selection then run once, on the merged
graph. Deviation from the brief's sketch (HDBSCAN inside each partition, clusters merged through overlap
points): one global hierarchy instead, because per-partition hierarchies split clusters at partition borders
and cannot rank a cluster's stability against clusters of another partition (the brief's own warning).
Cost: each member is searched inside every partition it joins (``overlap``x the queries of one index), plus
the border pass (5-60% of the points, 0.3-5 searches each, on 10-d blobs and rings with 8-32 partitions).
"""

from __future__ import annotations

from dataclasses import replace

import faiss
import numpy as np

from behaviorseq.cluster.knn import (
    NPROBE_START,
    IndexSpec,
    KnnGraph,
    _self_first,
    build_index,
    knn_graph,
    refine,
    search,
)

__all__ = ["partitioned_knn_graph"]


def _groups(labels: np.ndarray, P: int) -> list[np.ndarray]:
    """Row ids per label ``0..P-1`` (increasing within a group): one stable argsort, no loop over rows."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(P + 1))
    return [order[bounds[p] : bounds[p + 1]] for p in range(P)]


def _merge(d1: np.ndarray, i1: np.ndarray, d2: np.ndarray, i2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise union of two lists (exact distances; an id in both counts once), the ``k`` nearest kept."""
    d, i = np.concatenate([d1, d2], axis=1), np.concatenate([i1, i2], axis=1)
    o = np.argsort(i, axis=1, kind="stable")
    i, d = np.take_along_axis(i, o, 1), np.take_along_axis(d, o, 1)
    d[:, 1:][i[:, 1:] == i[:, :-1]] = np.inf
    d[i < 0] = np.inf
    o = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, o, 1), np.take_along_axis(i, o, 1)


def _border_pairs(Xw: np.ndarray, C: np.ndarray, owner: np.ndarray, r: np.ndarray,
                  overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, partitions)``: the points whose lists the first pass cannot certify, each with the partitions
    that may hold a closer point.

    A point ``y`` outside the members of ``x``'s partition ``p`` has at least ``overlap`` centroids nearer
    than ``c_p``, so it lies beyond that many bisector hyperplanes ``H_pq``, and ``||x - y||`` is at least the
    ``overlap``-th smallest distance from ``x`` to them, ``(||x - c_q||^2 - ||x - c_p||^2) / (2 ||c_q - c_p||)``.
    Where that bound reaches ``r`` (the k-th distance found), the list is exact; elsewhere every partition
    ``q`` whose bisector lies within ``r`` is searched. Distances in the working dtype, from differences."""
    n, d = Xw.shape
    P = C.shape[0]
    cc = np.sqrt(((C[:, None, :] - C[None, :, :]) ** 2).sum(-1))
    rows, parts = [], []
    step = max(1, (1 << 22) // (P * d))
    for s in range(0, n, step):
        x, o = Xw[s : s + step], owner[s : s + step]
        ar = np.arange(x.shape[0])
        d2 = ((x[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # [b, P]
        b = (d2 - d2[ar, o][:, None]) / (2 * np.maximum(cc[o], 1e-300))
        b[ar, o] = np.inf
        rr = r[s : s + step, None] * (1 + 1e-6) + 1e-9  # slack for float32 assignment near-ties: never certify on rounding
        bound = np.partition(b, overlap - 1, axis=1)[:, overlap - 1] if overlap < P else np.full(len(x), np.inf)
        hit = (b < rr) & (bound < rr[:, 0])[:, None]
        rw, q = np.nonzero(hit)
        rows.append(rw + s)
        parts.append(q)
    return np.concatenate(rows), np.concatenate(parts)


def partitioned_knn_graph(Xw: np.ndarray, k: int, spec: IndexSpec, partitions: int, overlap: int = 2,
                          report: dict | None = None) -> KnnGraph:
    """Each point's ``k`` nearest points (itself first), searched partition by partition (module docstring).

    ``Xw`` ``[n, d]`` is the working copy (:func:`~behaviorseq.cluster.knn.as_working`). With the flat kind
    the lists are exact: the border pass searches every partition the bisector bound cannot rule out.
    ``report``, when given, receives ``partitions``, ``overlap``, ``largest_partition`` (members),
    ``certified`` (share of points the first pass settled), ``border_pairs`` (point-partition searches of
    the border pass) and the ivf tuner's ``nprobe`` per partition where it ran."""
    n, d = Xw.shape
    if not 1 <= overlap <= partitions:
        raise ValueError(f"partition overlap must be in [1, partitions={partitions}], got {overlap}")
    X32 = np.ascontiguousarray(Xw, dtype=np.float32)
    rng = np.random.default_rng(spec.seed)
    sample = X32 if n <= 256 * partitions else X32[np.sort(rng.choice(n, 256 * partitions, replace=False))]
    km = faiss.Kmeans(d, partitions, niter=10, seed=int(spec.seed), min_points_per_centroid=1)
    km.train(sample)
    assign = km.index.search(X32, overlap)[1]  # [n, overlap], nearest centroid first
    owned = _groups(assign[:, 0], partitions)
    member = _groups(assign.ravel(), partitions)  # flat positions: row = position // overlap
    dist = np.empty((n, k), dtype=Xw.dtype)
    idx = np.empty((n, k), dtype=np.int64)
    inner = replace(spec, refine=0)  # NN-descent, if asked, runs once on the merged lists
    probes = np.full(partitions, spec.nprobe or NPROBE_START)
    for p in range(partitions):  # first pass: each point among the members of its own partition
        if owned[p].size == 0:
            continue
        rows = member[p] // overlap  # increasing: the stable argsort keeps row order
        kp = min(k, rows.size)
        sub: dict = {}
        g, _ = knn_graph(Xw[rows], kp, inner, sub)
        probes[p] = sub.get("nprobe", probes[p])
        local = np.searchsorted(rows, owned[p])  # the owned points' positions among the members
        dist[owned[p], :kp] = g.dist[local]
        idx[owned[p], :kp] = rows[g.idx[local]]
        if kp < k:  # a partition with fewer than k members: the border pass fills the rest
            dist[owned[p], kp:], idx[owned[p], kp:] = np.inf, -1
    C = km.centroids.astype(Xw.dtype)
    border, parts = _border_pairs(Xw, C, assign[:, 0], dist[:, -1], overlap)
    for q, sel in enumerate(_groups(parts, partitions)):  # border pass: the partitions not ruled out
        if sel.size == 0:
            continue
        base, qrows = owned[q], border[sel]
        index = build_index(X32[base], replace(inner, nprobe=int(probes[q]))) if spec.kind != "flat" else None
        g = search(index, Xw[base], Xw[qrows], min(k, base.size), spec.block_size)
        dist[qrows], idx[qrows] = _merge(dist[qrows], idx[qrows], g.dist, base[np.maximum(g.idx, 0)], k)
    passes = spec.refine if spec.refine is not None else 1
    graph = refine(Xw, KnnGraph(dist, idx), passes) if passes else _self_first(dist, idx)
    if report is not None:
        report.update(partitions=partitions, overlap=overlap, largest_partition=max(m.size for m in member),
                      certified=1.0 - np.unique(border).size / n, border_pairs=int(border.size))
        if spec.kind == "ivf" and spec.nprobe is None:
            report["nprobe_per_partition"] = probes.tolist()
    return graph
