"""Minimum spanning tree of the mutual-reachability graph: kNN edges first, then Boruvka with FAISS-side searches.

HDBSCAN* (Campello et al. 2013/2015) builds the single-linkage hierarchy from a minimum spanning tree of the
complete graph weighted by ``d_mreach(p, q) = max(core(p), core(q), ||p - q||)``. McInnes & Healy (2017) get
it by Boruvka: every round, each component of the forest adds its lightest outgoing edge (the cut property
makes that edge an MST edge). This module runs the same rounds over the complete graph, but finds the
candidates the way the FAISS recipe of pHDBSCAN (FinDeepBehaviorCluster, Min et al. 2021; brief section 6)
suggests:

1. Candidates come from each point's kNN list (its mutual-reachability edges ``max(core_p, core_q, d_pq)``).
2. Certification: a point's unlisted neighbours are at least ``d_k(p)`` away, so every unlisted edge from
   ``p`` weighs at least ``lb(p) = max(core(p), d_k(p))``. If a component's best listed edge is ``<= min lb``
   over its points, it is provably the lightest outgoing edge: recorded as ``exact``.
3. Otherwise the points whose bound could still win are searched against all points
   (:func:`~behaviorseq.cluster.search.nearest_outside`: k-means-cell-pruned with numba, blocked brute force
   without). A searched point's bound becomes its exact best outgoing weight, valid in later rounds too (the
   outside only shrinks), and its exact distance to the outside is pushed along kNN edges as a lower bound
   for its neighbours (:func:`~behaviorseq.cluster.search.propagate_bounds`).
   ``mode="exact"`` repeats this until every component is certified, so every edge is exact and the tree
   weight equals the exact MST's. ``mode="approx"`` searches at most ``connect_queries`` points per
   uncertified component once (smallest bounds plus a random sample: a component with fewer candidates is
   thereby done exactly), then improves a still-uncertified component's best edge by two "closest point
   back, best partner out" walk steps; its edge is ``exact`` only when certified. Without any search this
   would be the kNN-graph MST of cuML-style implementations.
4. Chosen edges are de-duplicated per component pair and reduced to a spanning forest of the component graph
   (scipy ``minimum_spanning_tree``), so ties cannot close a cycle (each kept edge is still the lightest
   edge leaving the component that chose it, so the forest extends to a minimum spanning tree).

With an approximate index (ivf/hnsw) the kNN lists may miss neighbours, so ``exact`` then means "certified
given the lists". Deviation from hdbscan: its default ``approx_min_span_tree=True`` Boruvka is approximate
in another way (it stops refining early); our exact mode matches ``approx_min_span_tree=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from behaviorseq.cluster.cells import build_cells
from behaviorseq.cluster.knn import KnnGraph
from behaviorseq.cluster.linkage import HAVE_NUMBA
from behaviorseq.cluster.search import nearest_outside, propagate_bounds, sample_queries

__all__ = ["MST_MODES", "SpanningTree", "mutual_reachability_mst"]

MST_MODES = ("exact", "approx")


@dataclass
class SpanningTree:
    """``n - 1`` edges ``src -> dst`` with mutual-reachability ``weight``; ``exact[i]``: certified MST edge."""

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    exact: np.ndarray
    rounds: int
    searched: int  # brute-force query points over all rounds

    @property
    def exact_fraction(self) -> float:
        return float(self.exact.mean()) if self.exact.size else 1.0


def _component_min(values: np.ndarray, comp: np.ndarray, n_comp: int) -> np.ndarray:
    out = np.full(n_comp, np.inf)
    np.minimum.at(out, comp, values)
    return out


def _winners(cand_w: np.ndarray, comp: np.ndarray, cmin: np.ndarray) -> np.ndarray:
    """For each component with a finite minimum, one point whose candidate attains it (``-1`` otherwise)."""
    win = np.full(cmin.shape[0], -1, dtype=np.int64)
    hit = np.flatnonzero(np.isfinite(cand_w) & (cand_w == cmin[comp]))
    win[comp[hit[::-1]]] = hit[::-1]  # last write wins: the smallest point id
    return win


def _record(lb, cand_w, cand_q, pts, partner, w) -> None:
    """Exhaustive searches from ``pts``: ``w`` bounds every outgoing edge of ``pts`` (it is the lightest one,
    or the threshold nothing beat), and found partners that beat the candidates replace them."""
    lb[pts] = np.maximum(lb[pts], w)
    better = (w < cand_w[pts]) & (partner >= 0)
    cand_w[pts[better]] = w[better]
    cand_q[pts[better]] = partner[better]


class _State:
    """Per-point Boruvka state: bounds, this round's candidates, and the searched-point counter."""

    def __init__(self, Xw, core, graph, seed, cells_min_points):
        n, k = graph.idx.shape
        self.Xw, self.core, self.idx, self.dist = Xw, core, graph.idx, graph.dist
        self.W = np.maximum(np.maximum(core[:, None], core[graph.idx]), graph.dist)  # listed edge weights
        # unlisted points are >= d_k(p) away: lb bounds every outgoing edge not in p's list
        self.lb = np.full(n, np.inf) if k >= n else np.maximum(core, graph.dist[:, -1]).astype(np.float64)
        self.delta_lb = np.zeros(n)  # lower bound on the distance to the nearest point outside p's component
        self.sqnorm = np.einsum("nd,nd->n", Xw, Xw)
        self.rng = np.random.default_rng(seed)
        self.searched = 0
        self.cells = build_cells(Xw, seed=seed) if HAVE_NUMBA and n >= cells_min_points else None

    def search(self, comp, queries, cand_w, cand_q, within=None, thresh=None, want_delta=True):
        partner, w, delta = nearest_outside(self.Xw, self.core, comp, queries, self.sqnorm, within,
                                            self.cells, thresh, want_delta)
        self.searched += queries.size
        if within is None:
            _record(self.lb, cand_w, cand_q, queries, partner, w)
            self.delta_lb[queries] = np.maximum(self.delta_lb[queries], delta)
        return partner, w


def _search(st: _State, comp, n_comp, cand_w, cand_q, cmin, clb, cap: int | None, max_iter: float,
            propagate: bool = True):
    """Search uncertified components: per iteration and component, ``cap`` points (``None``: adaptive) with
    the smallest bounds plus a random half; then push their exact ``delta`` along kNN edges to rule out the
    rest (:func:`propagate_bounds`). Stops when all are certified or after ``max_iter`` iterations.
    Returns ``(cmin, clb, searched)`` with ``searched[c]`` = component ``c`` was searched."""
    searched = np.zeros(n_comp, dtype=bool)
    it = 0
    while it < max_iter:
        open_c = cmin > clb
        active = np.flatnonzero(open_c[comp] & (st.lb < cmin[comp]))
        if active.size == 0:
            break
        it += 1
        per = cap if cap is not None else max(32, int(np.bincount(comp[active]).max()) // 8)
        queries = sample_queries(active, comp[active], st.lb[active], per, st.rng)
        searched[comp[queries]] = True
        st.search(comp, queries, cand_w, cand_q, thresh=cmin[comp[queries]], want_delta=propagate)
        if propagate:
            rows = np.flatnonzero(open_c[comp])
            propagate_bounds(st.delta_lb, st.idx, st.dist, comp, rows)
            st.lb[rows] = np.maximum(st.lb[rows], st.delta_lb[rows])
        cmin = _component_min(cand_w, comp, n_comp)
        clb = _component_min(st.lb, comp, n_comp)
    return cmin, clb, searched


def _walk(st: _State, comp, n_comp, cand_w, cand_q, starts, steps: int = 2):
    """Approx mode: improve a component's best edge ``p -> q`` by walking back (the point of ``p``'s component
    nearest ``q``) and out again (that point's best partner), a bichromatic closest-pair walk."""
    p, q = starts, cand_q[starts]
    for _ in range(steps):
        if p.size == 0:
            break
        back, _ = st.search(comp, q, cand_w, cand_q, within=comp[p])
        p = back[back >= 0]
        q, _ = st.search(comp, p, cand_w, cand_q, want_delta=False)
    return _component_min(cand_w, comp, n_comp), _component_min(st.lb, comp, n_comp)


def mutual_reachability_mst(
    Xw: np.ndarray,
    core: np.ndarray,
    graph: KnnGraph,
    mode: str = "exact",
    connect_queries: int = 256,
    seed: int = 0,
    cells_min_points: int = 4096,
) -> SpanningTree:
    """Spanning tree of the mutual-reachability graph (see module docstring).

    Args:
        Xw: ``[n, d]`` working data. core: ``[n]`` core distances. graph: kNN lists (column 0 = self).
        mode: ``"exact"`` or ``"approx"``. connect_queries: approx mode, search points per component that
            the kNN lists do not certify. seed: sampling seed.
        cells_min_points: from this ``n`` on (and with numba) searches use k-means cells (:mod:`.cells`);
            below, plain blocked brute force.

    Returns:
        :class:`SpanningTree` with ``n - 1`` edges.
    """
    if mode not in MST_MODES:
        raise ValueError(f"unknown mst mode {mode!r}; valid: {', '.join(MST_MODES)}")
    n = graph.idx.shape[0]
    st = _State(Xw, core, graph, seed, cells_min_points)
    comp = np.arange(n)
    n_comp = n
    rows = np.arange(n)  # rows whose list may still cross a component boundary
    out_src, out_dst, out_w, out_exact = [], [], [], []
    rounds = 0
    while n_comp > 1:
        rounds += 1
        cand_w = np.full(n, np.inf)
        cand_q = np.full(n, -1, dtype=np.int64)
        if rows.size:
            cross = comp[st.idx[rows]] != comp[rows, None]
            keep = cross.any(axis=1)
            rows, cross = rows[keep], cross[keep]
            Wr = np.where(cross, st.W[rows], np.inf)
            j = np.argmin(Wr, axis=1)
            cand_w[rows] = Wr[np.arange(rows.size), j]
            cand_q[rows] = st.idx[rows, j]
        cmin = _component_min(cand_w, comp, n_comp)
        clb = _component_min(st.lb, comp, n_comp)
        if mode == "exact":
            cmin, clb, _ = _search(st, comp, n_comp, cand_w, cand_q, cmin, clb, None, np.inf)
        else:
            cmin, clb, searched = _search(st, comp, n_comp, cand_w, cand_q, cmin, clb, connect_queries, 1,
                                          propagate=False)
            walk = _winners(cand_w, comp, cmin)[searched & (cmin > clb)]
            if walk.size:
                cmin, clb = _walk(st, comp, n_comp, cand_w, cand_q, walk[walk >= 0])
        win = _winners(cand_w, comp, cmin)
        has = win >= 0
        if not has.any():
            raise RuntimeError("Boruvka round found no outgoing edge; the kNN lists are inconsistent")
        p, q = win[has], cand_q[win[has]]
        w, ex = cmin[has], (cmin <= clb)[has]
        comp, n_comp, kept = _merge(comp, n_comp, p, q, w)
        out_src.append(p[kept])
        out_dst.append(q[kept])
        out_w.append(w[kept])
        out_exact.append(ex[kept])
    if n == 1:
        e = np.zeros(0, dtype=np.int64)
        return SpanningTree(e, e, np.zeros(0), np.zeros(0, dtype=bool), 0, 0)
    tree = SpanningTree(np.concatenate(out_src), np.concatenate(out_dst), np.concatenate(out_w),
                        np.concatenate(out_exact), rounds, st.searched)
    assert tree.src.size == n - 1, (tree.src.size, n)
    return tree


def _merge(comp, n_comp, p, q, w):
    """Add the chosen edges as a spanning forest of the component graph; returns new labels and kept mask."""
    a, b = comp[p], comp[q]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    order = np.argsort(w, kind="stable")
    key = lo[order] * n_comp + hi[order]
    _, first = np.unique(key, return_index=True)  # lightest edge per component pair
    cand = order[first]
    cand = cand[np.argsort(w[cand], kind="stable")]
    g = coo_matrix((np.arange(1, cand.size + 1, dtype=np.float64), (lo[cand], hi[cand])),
                   shape=(n_comp, n_comp)).tocsr()
    forest = minimum_spanning_tree(g).tocoo()
    kept = np.zeros(p.size, dtype=bool)
    kept[cand[forest.data.astype(np.int64) - 1]] = True
    n_new, labels = connected_components(forest, directed=False)
    return labels[comp], n_new, kept
