"""The all-points IVF kNN self-join, as a cell-sorted numba scan over a FAISS IVF index's cells.

HDBSCAN needs every point's ``k`` nearest neighbours, so the queries are the base points themselves. FAISS's
``IndexIVFFlat.search`` treats them as unrelated queries: each one walks its ``nprobe`` inverted lists
through a heap, and at 10 dimensions that costs about 13 ns per scanned point and thread here (the 1M-point
benchmark spent 154 of its 168 s in it). This scan keeps FAISS's cells (its k-means centroids and inverted
lists) and visits the same number of cells per query, but:

- the queries of one cell (up to ``MAX_GROUP``) run together: they share the candidate centroids of their
  cell, each picks its ``nprobe`` probes among them, and then the kernel walks the candidate cells once,
  scanning each for every query of the group that probes it, so a cell's block is read from memory once per
  group and stays in L1 across those queries;
- each cell is stored as a contiguous ``[d, L]`` block (structure of arrays), so the squared distances from
  one query to a whole cell are ``d`` vectorisable passes over ``L`` floats that also count the points below
  the query's current ``k``-th distance; the scalar top-``k`` update runs only when that count is not zero;
- a query's probes are its ``nprobe`` nearest centroids among the ``8 * nprobe`` nearest centroids of its own
  cell's centroid (not among all ``nlist``): ``8 nprobe d`` operations per query instead of ``nlist d``,
  selected by a bisection on the float bit patterns (vectorised counts, no sort).
  The probes can differ from FAISS's exact choice; the recall that :func:`~behaviorseq.cluster.ivftune.tune`
  measures against exact search includes that effect.

Against the previous per-query kernel (same probes, identical lists; ``benchmarks/_work/s8/scan_ab.py``):
1.7-3.3x on 3M rings points on one thread (32-64 probes), and 1.8-2.0x on 10M on two threads before the
bisection selection; with it, the 10M-rings scan at 64 probes takes 189 s on two threads
(``benchmarks/README.md`` §10).

The result is the same kind of approximate list as FAISS's IVF search, in float32 squared distances
(:func:`~behaviorseq.cluster.knn.search` re-measures them exactly). Without numba, the caller falls back to FAISS.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from behaviorseq.cluster.linkage import maybe_jit, prange

__all__ = ["CellBlocks", "cell_blocks", "groups", "insert_sorted", "run_kernel", "scan"]

PROBE_POOL = 8  # a query's probes are chosen among PROBE_POOL * nprobe centroids near its own cell's


@dataclass
class CellBlocks:
    """The points of an IVF index in cell order: ``perm`` (original ids in that order), ``start`` ``[nlist + 1]``,
    ``cell`` ``[n]`` (the cell of each sorted position), ``blocks`` (flat float32: cell ``c`` as a ``[d, L_c]``
    block at offset ``start[c] * d``), ``centroids`` ``[nlist, d]`` float32."""

    perm: np.ndarray
    start: np.ndarray
    cell: np.ndarray
    blocks: np.ndarray
    centroids: np.ndarray

    def near(self, nprobe: int) -> np.ndarray:
        """``[nlist, C]`` the ``C = min(nlist, PROBE_POOL * nprobe)`` nearest centroids of each centroid."""
        nlist = self.centroids.shape[0]
        return faiss.knn(self.centroids, self.centroids, min(nlist, PROBE_POOL * nprobe))[1]


@maybe_jit
def insert_sorted(vals, ids, v, i):
    """Insert ``(v, i)`` into the ascending top-k buffers ``vals`` / ``ids``, dropping the last entry (the
    caller has checked ``v < vals[-1]``)."""
    u = vals.shape[0] - 1
    while u > 0 and vals[u - 1] > v:
        vals[u], ids[u] = vals[u - 1], ids[u - 1]
        u -= 1
    vals[u], ids[u] = v, i


@maybe_jit
def _fill_blocks(Xs, start, out):
    d = Xs.shape[1]
    for c in range(start.shape[0] - 1):
        s, e = start[c], start[c + 1]
        L = e - s
        for j in range(L):
            for t in range(d):
                out[s * d + t * L + j] = Xs[s + j, t]


def cell_blocks(index: faiss.IndexIVF, X32: np.ndarray) -> CellBlocks:
    """The cell-sorted copy of ``X32`` ``[n, d]`` (the rows added to ``index``) as the scan reads it."""
    inv = index.invlists
    sizes = np.array([inv.list_size(c) for c in range(index.nlist)], dtype=np.int64)
    ids = [faiss.rev_swig_ptr(inv.get_ids(c), int(s)).copy() for c, s in enumerate(sizes) if s > 0]
    perm = np.concatenate(ids).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    blocks = np.empty(X32.size, dtype=np.float32)
    _fill_blocks(np.ascontiguousarray(X32[perm]), start, blocks)
    centroids = np.ascontiguousarray(index.quantizer.reconstruct_n(0, index.nlist), dtype=np.float32)
    cell = np.repeat(np.arange(index.nlist, dtype=np.int64), sizes)
    return CellBlocks(perm, start, cell, blocks, centroids)


MAX_GROUP = 1024  # queries that share a candidate row are scanned together, at most this many at a time
BIG = np.float32(3.0e38)  # the empty top-k slot (finite: fastmath may assume no infinities)


@maybe_jit(fastmath=True)
def _kth_bits(ci, kk):
    """The bit pattern of the ``kk + 1``-th smallest of the non-negative float32 values whose int32 views
    are ``ci``: bisection on the patterns (their order is the values' order), each step one vectorised
    count; about 4x faster than a quickselect at 512 values, where branches mispredict."""
    lo, hi = np.int32(-1), np.int32(0x7F800000)  # count(ci <= lo) < kk + 1 <= count(ci <= hi)
    need = np.float32(kk + 1)
    while hi - lo > 1:
        mid = np.int32(lo + ((hi - lo) >> 1))
        c = np.float32(0.0)
        for a in range(ci.shape[0]):
            c += np.float32(1.0) if ci[a] <= mid else np.float32(0.0)
        if c >= need:
            hi = mid
        else:
            lo = mid
    return hi


@maybe_jit(parallel=True, fastmath=True)
def _scan(dims, Q, gstart, gcell, blocks, start, cent, near, nprobe, k, out_d, out_i):
    """Group ``g`` = rows ``gstart[g]:gstart[g + 1]`` of ``Q``, which share the candidate centroids
    ``near[gcell[g]]``. Row ``q``: the ``k`` nearest cell-sorted positions (``out_i``) and squared float32
    distances (``out_d``, ascending; ``-1`` / ``BIG`` where fewer than ``k`` points were scanned).

    ``dims`` is a tuple of ``D`` zeros: its length, the dimension, is part of its numba type, so ``D`` is a
    compile-time constant (the inner ``D`` loops unroll and the loop over a cell's points vectorises, 30%
    faster at 10-d than a runtime ``d``), and each ``D`` is one disk-cached overload. (``numba.literally``
    did the same but re-dispatched through an exception on every call, whose traceback kept the scan's
    arrays alive until the next garbage collection: 2.7 GB at 3M points.)"""
    D = len(dims)
    C = near.shape[1]
    maxc = 0
    for c in range(start.shape[0] - 1):
        maxc = max(maxc, start[c + 1] - start[c])
    take = min(nprobe, C)
    for g in prange(gstart.shape[0] - 1):
        q0 = gstart[g]
        G = gstart[g + 1] - q0
        row = near[gcell[g]]
        cand = np.empty(D * C, dtype=np.float32)  # the candidate centroids as a [D, C] block
        for a in range(C):
            for t in range(D):
                cand[t * C + a] = cent[row[a], t]
        # 1. each row's probes: the `take` nearest candidates (strictly nearer than the take-th
        #    distance, then ties in candidate order), bucketed by candidate
        cd = np.empty(C, dtype=np.float32)
        ci = cd.view(np.int32)
        pa = np.empty((G, take), dtype=np.int64)
        got = np.empty(G, dtype=np.int64)
        cnt = np.zeros(C + 1, dtype=np.int64)
        for i in range(G):
            qv = Q[q0 + i]
            for a in range(C):
                acc = np.float32(0.0)
                for t in range(D):
                    diff = qv[t] - cand[t * C + a]
                    acc += diff * diff
                cd[a] = acc
            kth = _kth_bits(ci, take - 1)
            u = 0
            for a in range(C):
                if ci[a] < kth and u < take:  # (u < take always holds for squares; a guard, not a case)
                    pa[i, u] = a
                    u += 1
            for a in range(C):
                if u == take:
                    break
                if ci[a] == kth:
                    pa[i, u] = a
                    u += 1
            got[i] = u  # = take, unless some distances are NaN (never scanned then)
            for t in range(u):
                cnt[pa[i, t] + 1] += 1
        for a in range(C):
            cnt[a + 1] += cnt[a]
        fill = cnt[:C].copy()
        lst = np.empty(cnt[C], dtype=np.int64)
        for i in range(G):
            for t in range(got[i]):
                lst[fill[pa[i, t]]] = i
                fill[pa[i, t]] += 1
        # 2. cell by cell, every row that probes it: the cell's block stays in L1 across those rows
        bd = np.full((G, k), BIG, dtype=np.float32)
        bi = np.full((G, k), -1, dtype=np.int64)
        buf = np.empty(maxc, dtype=np.float32)
        for a in range(C):
            if cnt[a + 1] == cnt[a]:
                continue
            c = row[a]
            s = start[c]
            L = start[c + 1] - s
            blk = blocks[s * D : (s + L) * D]  # the cell's [D, L] block
            for u in range(cnt[a], cnt[a + 1]):
                i = lst[u]
                qv = Q[q0 + i]
                th = bd[i, k - 1]
                hits = np.float32(0.0)  # a float count keeps the loop vectorised (an int or min does not)
                for j in range(L):
                    acc = np.float32(0.0)
                    for t in range(D):
                        diff = qv[t] - blk[t * L + j]
                        acc += diff * diff
                    buf[j] = acc
                    hits += np.float32(1.0) if acc < th else np.float32(0.0)
                if hits == 0:  # most cells: nothing beats the k-th distance, skip the scalar pass
                    continue
                for j in range(L):
                    v = buf[j]
                    if v < th:
                        insert_sorted(bd[i], bi[i], v, s + j)
                        th = bd[i, k - 1]
        out_d[q0 : q0 + G] = bd
        out_i[q0 : q0 + G] = bi


def groups(qcell: np.ndarray, max_group: int = MAX_GROUP) -> tuple[np.ndarray, np.ndarray]:
    """``(gstart [G + 1], gcell [G])``: runs of equal ``qcell`` (consecutive rows), cut at ``max_group`` rows."""
    m = qcell.shape[0]
    cuts = np.flatnonzero(np.diff(qcell)) + 1
    run_start, run_end = np.r_[0, cuts], np.r_[cuts, m]
    n_parts = -(-(run_end - run_start) // max_group)
    first = np.repeat(run_start, n_parts)
    offset = (np.arange(n_parts.sum()) - np.repeat(np.cumsum(n_parts) - n_parts, n_parts)) * max_group
    gstart = np.r_[first + offset, m].astype(np.int64)
    return gstart, np.ascontiguousarray(qcell[gstart[:-1]], dtype=np.int64)


def run_kernel(Q: np.ndarray, qcell: np.ndarray, blocks: np.ndarray, start: np.ndarray, cent: np.ndarray,
               near: np.ndarray, nprobe: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The scan of rows ``Q`` ``[m, d]`` (their candidate rows ``near[qcell]``) over the cells ``blocks`` /
    ``start``: ``(out_d, out_i)`` ``[m, k]``, squared float32 distances and block positions (``-1`` short)."""
    m = Q.shape[0]
    out_d = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    if m:
        gstart, gcell = groups(qcell, MAX_GROUP)
        _scan((0,) * Q.shape[1], np.ascontiguousarray(Q, dtype=np.float32), gstart, gcell, blocks, start, cent,
              np.ascontiguousarray(near, dtype=np.int64), nprobe, k, out_d, out_i)
    return out_d, out_i


def scan(cb: CellBlocks, X32: np.ndarray, rows: np.ndarray, k: int, nprobe: int) -> np.ndarray:
    """Original ids ``[len(rows), k]`` (``-1`` where short) of the approximate ``k`` nearest points of the
    cell-sorted positions ``rows`` (``X32`` the indexed rows); pass ``rows`` increasing, for cache locality."""
    nprobe = min(nprobe, cb.centroids.shape[0])
    Q = X32[cb.perm[rows]]
    out_i = run_kernel(Q, cb.cell[rows], cb.blocks, cb.start, cb.centroids, cb.near(nprobe), nprobe, k)[1]
    return np.where(out_i >= 0, cb.perm[np.maximum(out_i, 0)], -1)
