"""Nearest point outside a component under mutual reachability: blocked brute force and bound propagation.

The Boruvka step of HDBSCAN* (McInnes & Healy, "Accelerated Hierarchical Density Clustering", ICDMW 2017,
section 3) needs, for each component ``C`` of the current spanning forest, its lightest edge to the rest
under the mutual-reachability distance of Campello et al. (2013, eq. 3):

    d_mreach(p, q) = max(core(p), core(q), ||p - q||).

hdbscan prunes that search with a dual KD-tree. Here, with numba, the k-means-cell-pruned exact search of
:mod:`.cells` answers it; without numba (or for small ``n``) a query is compared with every point, one
``[queries, block]`` matrix product at a time (``||p||^2 + ||q||^2 - 2 p.q``, in float64), exact up to rounding and
BLAS/GPU-friendly, ``O(m n d)`` for ``m`` queries, the per-block reduction (mask the query's component,
track the smallest squared distance ``delta^2`` and the smallest ``max(d^2, core_q^2)``) being one numba
pass or a few NumPy passes. Chosen partners are re-measured as ``||p - q||``.

Pruning instead of a tree: ``delta(p)``, the distance from ``p`` to the nearest point outside its component,
is 1-Lipschitz, so ``delta(p) >= delta(q) - ||p - q||`` for ``p, q`` in the same component;
:func:`propagate_bounds` pushes the exact ``delta`` of searched points along the kNN edges, and any point
with ``max(core(p), delta_lb(p)) >= `` its component's best candidate never needs a search. Components only
grow, so ``delta`` only grows and the bounds stay valid in later rounds.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from behaviorseq.cluster.cells import Cells, cell_search
from behaviorseq.cluster.linkage import HAVE_NUMBA, maybe_jit

__all__ = ["nearest_outside", "propagate_bounds", "sample_queries"]


@maybe_jit
def _reduce_block(G, sq_q, sq_b, core2_b, comp_q, comp_b, outside, offset, best_m, best_j, best_d):
    """One pass over a ``[qb, bb]`` block of dot products ``G``: running minima per query row."""
    qb, bb = G.shape
    for i in range(qb):
        bm, bj, bd = best_m[i], best_j[i], best_d[i]
        for j in range(bb):
            if (comp_b[j] == comp_q[i]) == outside:
                continue
            d2 = max(sq_q[i] + sq_b[j] - 2.0 * G[i, j], 0.0)
            if d2 < bd:
                bd = d2
            m = max(d2, core2_b[j])
            if m < bm:
                bm = m
                bj = j + offset
        best_m[i], best_j[i], best_d[i] = bm, bj, bd


def _reduce_block_numpy(G, sq_q, sq_b, core2_b, comp_q, comp_b, outside, offset, best_m, best_j, best_d):
    d2 = G * -2.0
    d2 += sq_q[:, None]
    d2 += sq_b[None, :]
    np.maximum(d2, 0.0, out=d2)
    same = comp_q[:, None] == comp_b[None, :]
    d2[same if outside else ~same] = np.inf
    np.minimum(best_d, d2.min(axis=1), out=best_d)
    np.maximum(d2, core2_b[None, :], out=d2)
    j = np.argmin(d2, axis=1)
    v = d2[np.arange(d2.shape[0]), j]
    better = v < best_m
    best_m[better] = v[better]
    best_j[better] = j[better] + offset


def nearest_outside(
    Xw: np.ndarray,
    core: np.ndarray,
    comp: np.ndarray,
    queries: np.ndarray,
    sqnorm: np.ndarray,
    within: np.ndarray | None = None,
    cells: Cells | None = None,
    thresh: np.ndarray | None = None,
    want_delta: bool = True,
    block_elems: int = 1 << 22,
    use_numba: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query ``p``: ``argmin_{q : comp[q] != comp[p]} d_mreach(p, q)``.

    Args:
        Xw: ``[n, d]`` working (centred) data. core: ``[n]`` core distances. comp: ``[n]`` component ids.
        queries: ``[m]`` point ids. sqnorm: ``[n]`` cached ``||x||^2``.
        within: optional ``[m]`` component ids; searches ``comp[q] == within[i]`` instead of the outside.
        cells: with numba, use the cell-pruned search (:mod:`.cells`) instead of brute force.
        thresh: ``[m]`` optional; only partners lighter than it are needed (cell search only).
        want_delta: resolve ``delta`` exactly (cell search only; else it is just a valid lower bound).
        block_elems: size of one ``[queries, base]`` block of dot products.

    Returns:
        ``(partner [m] int64, weight [m] float64, delta [m] float64)``: the best partner (``-1`` if there is
        none, or none lighter than ``thresh``), its mutual-reachability distance (else ``thresh``, a lower
        bound, or ``inf``) and a lower bound on the Euclidean distance to the nearest searched point (exact
        for the brute force).
    """
    n, m = Xw.shape[0], queries.shape[0]
    fast = (HAVE_NUMBA if use_numba is None else use_numba) and HAVE_NUMBA
    if fast and cells is not None:
        target = comp[queries] if within is None else np.asarray(within, dtype=np.int64)
        th = np.full(m, np.inf) if thresh is None else np.asarray(thresh, dtype=np.float64)
        partner, _, delta = cell_search(cells, core, comp, Xw[queries], target, within is None, th, want_delta,
                                        core[queries])
        return partner, _remeasure(Xw, core, queries, partner, th), delta
    reduce = _reduce_block if fast else _reduce_block_numpy
    # float64 here: |p|^2 + |q|^2 - 2 p.q in float32 errs by ~6e-8 |x|^2, enough to pick a wrong partner and to
    # overstate delta, so an "exact" MST of float32 data came out up to 25% heavier on an edge (n < cells_min_points)
    Xw = np.asarray(Xw, dtype=np.float64)
    core2 = np.square(np.asarray(core, dtype=np.float64))
    sq = sqnorm if sqnorm.dtype == np.float64 else np.einsum("ij,ij->i", Xw, Xw)  # float32 norms are rounded too
    comp = np.ascontiguousarray(comp, dtype=np.int64)
    best_m = np.full(m, np.inf, dtype=np.float64)
    best_d = np.full(m, np.inf, dtype=np.float64)
    partner = np.full(m, -1, dtype=np.int64)
    qb = int(min(max(m, 1), max(64, block_elems // max(n, 1))))
    bb = int(min(n, max(1024, block_elems // qb)))
    cq_all = comp[queries] if within is None else np.asarray(within, dtype=np.int64)
    for qs in range(0, m, qb):
        q = queries[qs : qs + qb]
        Xq, sq_q, cq = Xw[q], sq[q], cq_all[qs : qs + qb]
        sl = slice(qs, qs + qb)
        for bs in range(0, n, bb):
            be = min(n, bs + bb)
            G = Xq @ Xw[bs:be].T
            reduce(G, sq_q, sq[bs:be], core2[bs:be], cq, comp[bs:be], within is None, bs,
                   best_m[sl], partner[sl], best_d[sl])
    return partner, _remeasure(Xw, core, queries, partner, np.full(m, np.inf)), np.sqrt(best_d.astype(np.float64))


def _remeasure(Xw, core, queries, partner, fallback):
    """``max(core_p, core_q, ||p - q||)`` measured directly; ``fallback`` where there is no partner."""
    weight = np.array(fallback, dtype=np.float64)
    ok = partner >= 0
    p, r = queries[ok], partner[ok]
    diff = Xw[p] - Xw[r]
    dist = np.sqrt(np.einsum("md,md->m", diff, diff, dtype=np.float64))
    weight[ok] = np.maximum(np.maximum(core[p], core[r]), dist)
    return weight


def propagate_bounds(delta_lb: np.ndarray, idx: np.ndarray, dist: np.ndarray, comp: np.ndarray,
                     rows: np.ndarray) -> None:
    """In place, for points ``rows``: ``delta_lb[p] = max_q (delta_lb[q] - dist_G(p, q))`` where ``dist_G`` is the
    shortest path over kNN edges inside one component (each edge is a Euclidean distance, so by the triangle
    inequality the result still lower-bounds ``delta``). One multi-source Dijkstra (scipy) from a virtual
    source joined to every ``q`` with weight ``top - delta_lb[q]``; ``O(k |rows| log |rows|)``."""
    if rows.size == 0:
        return
    nb, dd = idx[rows], dist[rows]
    same = (comp[nb] == comp[rows, None]) & (nb != rows[:, None])
    local = np.full(comp.shape[0], -1, dtype=np.int64)
    local[rows] = np.arange(rows.size)
    src = np.broadcast_to(local[rows][:, None], nb.shape)[same]
    dst = local[nb[same]]
    keep = dst >= 0  # neighbours outside ``rows`` belong to closed components: not needed
    seeds = np.flatnonzero(delta_lb[rows] > 0)
    if seeds.size == 0 or not keep.any():
        return
    top = float(delta_lb[rows].max())
    m = rows.size  # node m is the virtual source
    # + tiny: scipy drops explicit zeros, and an exact-zero edge (duplicates) must stay an edge
    w = np.r_[dd[same][keep].astype(np.float64) + 1e-300, top - delta_lb[rows[seeds]] + 1e-300]
    g = csr_matrix((w, (np.r_[src[keep], np.full(seeds.size, m)], np.r_[dst[keep], seeds])), shape=(m + 1, m + 1))
    reach = dijkstra(g, directed=False, indices=m, limit=top)
    delta_lb[rows] = np.maximum(delta_lb[rows], top - reach[:m])


def sample_queries(points: np.ndarray, comp_of: np.ndarray, lb: np.ndarray, cap: int,
                   rng: np.random.Generator) -> np.ndarray:
    """At most ``cap`` query points per component: half the smallest bounds (the likeliest owners of the
    lightest edge), half a uniform sample of the rest (coverage of elongated components). One lexsort each."""
    if points.size == 0:
        return points
    half = max(1, cap // 2)
    by_lb = np.lexsort((lb, comp_of))
    by_rand = np.lexsort((rng.random(points.size), comp_of))
    starts = np.r_[0, np.flatnonzero(np.diff(comp_of[by_lb])) + 1]
    sizes = np.diff(np.r_[starts, points.size])
    rank = np.arange(points.size) - np.repeat(starts, sizes)
    take = np.zeros(points.size, dtype=bool)
    take[by_lb[rank < half]] = True
    free = ~take[by_rand]  # the random half skips points already taken
    cs = np.cumsum(free)
    free_rank = cs - np.repeat(cs[starts] - free[starts], sizes) - 1
    take[by_rand[free & (free_rank < cap - half)]] = True
    return points[take]
