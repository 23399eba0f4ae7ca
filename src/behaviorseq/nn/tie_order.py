"""Each row's k best candidates by value, equal values in a fixed pseudo-random order: the tie rule of SRA-CL's
item and prefix neighbours (``models/retrieval/semantic_items.py``, ``semantic_prefixes.py``).

Candidate ``cand[r, j]`` of query ``rows[r]`` ranks by (``val[r, j]`` descending, then
``counter_uniform(seed, rows[r], cand[r, j], stream)`` descending); ``val`` = -inf is no candidate.

With numba (the ``cluster`` extra), one pass per row keeps the k best in a small sorted buffer and draws a
pair's number only when its value can still enter it, so nothing of size [t, c] is allocated and a row that
ties with G others costs G draws at compiled speed (the numpy form below draws every pair, about 14M per
second on one core here, then sorts). Without numba, or for a caller that prefers it: the numbers of all pairs,
then one lexsort. Both give the same positions (up to pairs whose 53-bit numbers are equal, which the rule leaves
unordered).
"""

from __future__ import annotations

import numpy as np

from behaviorseq.data.sampling import _mix64, counter_uniform
from behaviorseq.nn.topk import HAVE_NUMBA, numba, with_torch_threads

_mix = _mix64  # counter_uniform's rounds, compiled below for the kernel's scalars


def _best_k(val, cand, rows, k, seed_mixed, stream_hi, out):
    t, c = val.shape
    for r in numba.prange(t):
        bv = np.empty(k)
        bu = np.empty(k)
        bj = out[r]
        bj[:] = -1
        size = 0
        h_row = _mix(seed_mixed + np.uint64(rows[r]))  # counter_uniform's first two rounds: seed, then key
        cr = r * min(cand.shape[0] - 1, 1)  # row 0 when one candidate row is shared by every query (exact search)
        for j in range(c):
            v = val[r, j]
            if not v > -np.inf or (size == k and v < bv[k - 1]):  # -inf and NaN: no candidate (as numpy's form)
                continue
            u = np.float64(_mix(h_row + stream_hi + np.uint64(cand[cr, j])) >> np.uint64(11)) * 2.0 ** -53
            if size == k and v == bv[k - 1] and u <= bu[k - 1]:
                continue
            p = min(size, k - 1)  # full: the last entry drops
            while p > 0 and (bv[p - 1] < v or (bv[p - 1] == v and bu[p - 1] < u)):
                bv[p], bu[p], bj[p] = bv[p - 1], bu[p - 1], bj[p - 1]
                p -= 1
            bv[p], bu[p], bj[p] = v, u, j
            size = min(size + 1, k)


if HAVE_NUMBA:
    _mix = numba.njit(cache=True, nogil=True)(_mix64)
    _best_k_jit = numba.njit(cache=True, nogil=True, parallel=True)(_best_k)


def best_k(val: np.ndarray, cand: np.ndarray, rows: np.ndarray, k: int, seed: int, stream: int,
           use_numba: bool | None = None) -> np.ndarray:
    """[t, k] column positions of each row's k best: ``val`` [t, c] (float64 on the caller's grid, -inf = none)
    descending, equal values by the pair number of (``seed``, ``rows`` [t], ``cand`` [t, c] >= 0, or [c] / a
    repeated row shared by all rows, ``stream``) descending; -1 past a row's candidates. ``use_numba`` None: numba
    when installed."""
    val = np.ascontiguousarray(val, dtype=np.float64)
    cand = np.asarray(cand)
    if cand.ndim == 2 and cand.shape[0] > 1 and cand.strides[0] == 0:  # one row repeated (an expanded tensor)
        cand = cand[:1]
    cand = np.ascontiguousarray(cand if cand.ndim == 2 else cand[None, :], dtype=np.int64)  # [t or 1, c]
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    t, c = val.shape
    if (HAVE_NUMBA if use_numba is None else use_numba) and t and c and k > 0:
        out = np.empty((t, k), dtype=np.int64)
        seed_mixed = np.uint64(_mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))  # the jitted _mix gives a Python int
        with_torch_threads(_best_k_jit, val, cand, rows, k, seed_mixed, np.uint64(stream) << np.uint64(32), out)
        return out
    cand = np.broadcast_to(cand, val.shape)
    u = counter_uniform(seed, np.broadcast_to(rows[:, None], cand.shape), cand, stream)
    order = np.lexsort((-u, -val), axis=1)[:, :k]  # value descending, then the number descending
    pos = np.where(np.take_along_axis(val, order, 1) > -np.inf, order, -1)
    return np.pad(pos, ((0, 0), (0, k - pos.shape[1])), constant_values=-1) if pos.shape[1] < k else pos
