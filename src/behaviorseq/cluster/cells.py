"""Cell-pruned exact search for the nearest point outside a component (numba path of :mod:`.search`).

The dual-tree Boruvka of McInnes & Healy (2017) prunes node pairs with ball bounds. A one-level version is
enough here and maps onto FAISS: the points are bucketed into ``B`` k-means cells (``faiss.Kmeans``, the
coarse quantiser an IVF index uses), each with a centre ``c_b`` and radius ``r_b``. For a query ``p`` every
point ``q`` of cell ``b`` satisfies ``||p - q|| >= ||p - c_b|| - r_b`` (the ball bound) and, since ``q`` is
nearer ``c_b`` than the query's nearest centre ``c_a``, ``||p - q|| >= (||p - c_b||^2 - ||p - c_a||^2) /
(2 ||c_a - c_b||)``, the distance from ``p`` to the bisector of ``c_a`` and ``c_b`` (the bisector bound).
Cells are scanned in order of the larger of the two. In 10 dimensions the cells' radii are about twice the
spacing of their centres, so the ball bound alone prunes little: on the captured searches of rings-300k's
MST the bisector bound cut the points scanned per query from 74k to 2.7k and the time 12x, with the same
answers (``benchmarks/_work/s7/replay.py``). The scan stops once the bound reaches both the best
mutual-reachability distance found so far (or the caller's threshold: the component's current best
candidate, which a point must beat to matter) and ``delta``, the Euclidean distance to the nearest outside
point found so far (so ``delta`` is exact, for :func:`~behaviorseq.cluster.search.propagate_bounds`; the
approximate mode skips that part). Cells that hold only the query's own component are skipped without a
scan, which is what makes the late Boruvka rounds (a few large components) cheap; cells whose smallest core
distance cannot beat the best are skipped once ``delta`` is resolved. Exact: a cell is
skipped only when none of its points can change either answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from behaviorseq.cluster.linkage import HAVE_NUMBA, maybe_jit, prange

__all__ = ["Cells", "build_cells", "cell_search"]


@dataclass
class Cells:
    """Points bucketed by k-means cell: ``perm`` (cell-sorted ids), ``start`` ``[B + 1]`` offsets, ``X``
    (the rows in ``perm`` order, contiguous), ``centroid`` ``[B, d]``, ``radius`` ``[B]`` (with slack);
    ``half_inv`` ``[B, B]`` float32 ``1 / (2 ||c_a - c_b||)`` (0 on the diagonal and between coincident
    centres; ``[0, 0]`` when ``B > BISECT_MAX_CELLS``: ball bounds only) and ``slack``, what the float32
    assignment may get wrong in ``||q - c_b||^2 - ||q - c_a||^2``."""

    perm: np.ndarray
    start: np.ndarray
    X: np.ndarray
    centroid: np.ndarray
    radius: np.ndarray
    half_inv: np.ndarray
    slack: float


BISECT_MAX_CELLS = 8192  # the [B, B] float32 table of the bisector bound: at most 256 MB


def build_cells(Xw: np.ndarray, n_cells: int | None = None, seed: int = 0) -> Cells:
    """k-means cells over ``Xw`` ``[n, d]``; ``n_cells`` default ``2 sqrt(n)`` capped at ``n / 40`` (a few
    iterations suffice: the cells only need to be compact, not optimal)."""
    n, d = Xw.shape
    B = int(n_cells or max(1, min(n // 40, 2 * math.isqrt(n))))  # faiss wants >= 39 points per centroid
    x32 = np.ascontiguousarray(Xw, dtype=np.float32)
    km = faiss.Kmeans(d, B, niter=4, seed=int(seed), max_points_per_centroid=32, verbose=False)
    km.train(x32)
    _, cell = km.index.search(x32, 1)
    cell = cell[:, 0]
    perm = np.argsort(cell, kind="stable")
    start = np.searchsorted(cell[perm], np.arange(B + 1))
    centroid = km.centroids.astype(Xw.dtype)
    Xs = np.ascontiguousarray(Xw[perm])
    r = np.sqrt(np.einsum("nd,nd->n", Xs - centroid[cell[perm]], Xs - centroid[cell[perm]], dtype=np.float64))
    radius = np.zeros(B)
    np.maximum.at(radius, cell[perm], r)
    radius = radius * (1 + 1e-6) + 1e-12  # slack for rounding in the bound
    if B <= BISECT_MAX_CELLS:
        c = centroid.astype(np.float64)
        sq = np.einsum("bd,bd->b", c, c)
        cc = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), 0.0))
        with np.errstate(divide="ignore"):
            half_inv = np.where(cc > 1e-9 * (1.0 + np.sqrt(sq.max())), (0.5 - 1e-6) / cc, 0.0).astype(np.float32)
    else:
        half_inv = np.zeros((0, 0), dtype=np.float32)
    # FAISS assigns in float32 (||x||^2 + ||c||^2 - 2 x.c): a point may sit on the wrong side of a bisector by
    # that rounding, ~6e-8 (||x||^2 + ||c||^2); 1e-5 of the largest such sum covers it a hundred times over
    slack = 1e-5 * (float(np.einsum("nd,nd->n", Xs, Xs).max()) + float(np.einsum("bd,bd->b", centroid, centroid).max()))
    return Cells(perm, start, Xs, centroid, radius, half_inv, slack)


def _kernel(Xs, core2s, comps, start, centroid, radius, half_inv, slack, cmin_c, cmax_c, core2min_c,
            Q, qcore2, target, outside, want_delta, thresh2, best_m, best_j, best_d):
    m, d = Q.shape
    B = centroid.shape[0]
    bisect = half_inv.shape[0] == B
    for i in prange(m):
        bound = np.empty(B)
        cell_of = np.empty(B, dtype=np.int64)
        dq = np.empty(B)
        a = 0
        for b in range(B):
            acc = 0.0
            for k in range(d):
                t = Q[i, k] - centroid[b, k]
                acc += t * t
            dq[b] = acc
            if acc < dq[a]:
                a = b
        # without delta, a cell whose bound reaches the threshold can never be scanned (the best only drops
        # below it), so only the cells under it are sorted: the O(B log B) sort was most of a query's time
        limit2 = np.inf if want_delta else thresh2[i]
        floor = np.inf  # smallest bound among nonempty cells left unscanned
        n_open = 0
        for b in range(B):
            if start[b] == start[b + 1]:
                continue
            lb = max(math.sqrt(dq[b]) - radius[b], 0.0)  # ball bound
            if bisect:
                lb = max(lb, (dq[b] - dq[a] - slack) * half_inv[a, b])  # bisector bound (0 for b = a)
            if lb * lb < limit2:
                bound[n_open] = lb
                cell_of[n_open] = b
                n_open += 1
            elif lb < floor:
                floor = lb
        order = np.argsort(bound[:n_open])
        bm = thresh2[i]
        bj = -1
        bd = np.inf
        tgt = target[i]
        floor2 = qcore2[i]  # the query's own core: no partner's weight max(core_p, core_q, d) goes below it
        for t in range(n_open):
            b = cell_of[order[t]]
            lb2 = bound[order[t]] * bound[order[t]]
            done_d = lb2 >= bd or not want_delta  # delta is resolved (or not wanted)
            settled = lb2 >= bm or bm <= floor2  # no cell left can give a lighter partner
            if settled and done_d:
                floor = min(floor, bound[order[t]])
                break
            if outside:
                if cmin_c[b] == tgt and cmax_c[b] == tgt:
                    continue  # only the query's own component
            elif cmin_c[b] > tgt or cmax_c[b] < tgt:
                continue
            if (core2min_c[b] >= bm or bm <= floor2) and done_d:
                floor = min(floor, bound[order[t]])
                continue
            for s in range(start[b], start[b + 1]):
                if (comps[s] == tgt) == outside:
                    continue
                acc = 0.0
                for k in range(d):
                    t2 = Q[i, k] - Xs[s, k]
                    acc += t2 * t2
                if acc < bd:
                    bd = acc
                mm = max(acc, core2s[s])
                if mm < bm:
                    bm = mm
                    bj = s
        best_m[i] = bm
        best_j[i] = bj
        best_d[i] = min(math.sqrt(bd), floor)


_kernel_fast = maybe_jit(_kernel, parallel=True)


def cell_search(cells: Cells, core: np.ndarray, comp: np.ndarray, Q: np.ndarray, target: np.ndarray,
                outside: bool, thresh: np.ndarray, want_delta: bool = True, qcore: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best partner (point id or ``-1``), its squared ``max(d, core_q)`` (or ``thresh^2`` if none beats the
    threshold) and the ``delta`` bound, for queries ``Q`` ``[m, d]`` of component ``target`` ``[m]``.

    ``outside=True`` searches ``comp != target``, ``False`` searches ``comp == target``. ``want_delta=False``
    stops as soon as the partner is settled; ``delta`` is then only the bound reached (still valid).
    ``qcore`` ``[m]``: the queries' own core distances. A partner's mutual-reachability weight is never below
    it, so the search stops once it has a partner within it (the weight is then exact; the partner is one of
    the tied lightest). At 3M blob points it cut the first Boruvka round's search from 50 to 36 s, the MST
    from 130 to 92 s (both under the same background load).
    """
    if not HAVE_NUMBA:
        raise RuntimeError("cell_search needs numba; use search.nearest_outside's brute-force path")
    comps = np.ascontiguousarray(comp[cells.perm], dtype=np.int64)
    core2s = np.square(core[cells.perm]).astype(np.float64)
    seg = cells.start[:-1]
    nonempty = cells.start[1:] > seg
    cmin_c = np.full(seg.size, np.iinfo(np.int64).max)
    cmax_c = np.full(seg.size, -1, dtype=np.int64)
    c2min = np.full(seg.size, np.inf)
    cmin_c[nonempty] = np.minimum.reduceat(comps, seg[nonempty])
    cmax_c[nonempty] = np.maximum.reduceat(comps, seg[nonempty])
    c2min[nonempty] = np.minimum.reduceat(core2s, seg[nonempty])
    m = Q.shape[0]
    best_m, best_d = np.empty(m), np.empty(m)
    best_j = np.empty(m, dtype=np.int64)
    _kernel_fast(cells.X, core2s, comps, cells.start, cells.centroid, cells.radius, cells.half_inv, cells.slack,
                 cmin_c, cmax_c, c2min,
                 np.ascontiguousarray(Q), np.zeros(m) if qcore is None else np.square(qcore).astype(np.float64),
                 np.asarray(target, dtype=np.int64), outside, want_delta and outside,
                 np.square(np.asarray(thresh, dtype=np.float64)), best_m, best_j, best_d)
    partner = np.where(best_j >= 0, cells.perm[np.maximum(best_j, 0)], -1)
    return partner, best_m, best_d
