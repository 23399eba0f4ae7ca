"""Single-linkage tree from a spanning tree (Kruskal order + union-find), step 3 of HDBSCAN*.

Campello et al. (2013, section 3.2) turn the MST of the mutual-reachability graph into the HDBSCAN
hierarchy by removing edges in decreasing weight; equivalently (and how hdbscan's ``label`` does it) the
edges are merged in increasing weight with a union-find, giving a scipy-style linkage ``[n - 1, 4]`` =
``(left, right, distance, size)`` where node ``n + i`` is created by row ``i``.

The merge loop is inherently sequential over the ``n - 1`` edges. It is compiled with numba when numba is
importable (``O(n alpha(n))``, path halving + union by creation order); otherwise the same Python function
runs on plain lists (about 1 s per million edges). ``BEHAVIORSEQ_NO_NUMBA=1`` forces the Python path.

Deviation from hdbscan: ties in edge weight are merged in a stable order (by weight, then by position in the
tree) rather than by NumPy's unstable ``argsort``; both are valid single-linkage trees, but where three or
more components meet at the same height a point on the tie may be attached to a different child.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

__all__ = ["HAVE_NUMBA", "maybe_jit", "prange", "single_linkage"]

try:  # optional accelerator; every jitted function also runs as plain Python
    if os.environ.get("BEHAVIORSEQ_NO_NUMBA"):
        raise ImportError("disabled by BEHAVIORSEQ_NO_NUMBA")
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    numba = None
    HAVE_NUMBA = False


prange = numba.prange if HAVE_NUMBA else range


def maybe_jit(fn: Callable | None = None, *, parallel: bool = False, fastmath: bool = False) -> Callable:
    """``numba.njit(cache=True)(fn)`` when numba is available, else ``fn``; ``.py_func`` is always the Python.
    ``parallel=True`` lets ``prange`` loops (this module's ``prange``) run on all numba threads; ``fastmath``
    lets float reductions vectorise."""
    if fn is None:
        return lambda f: maybe_jit(f, parallel=parallel, fastmath=fastmath)
    if HAVE_NUMBA:
        return numba.njit(cache=True, nogil=True, parallel=parallel, fastmath=fastmath)(fn)
    fn.py_func = fn  # type: ignore[attr-defined]
    return fn


def _union_find_linkage(src, dst, n, left, right, size):
    """Fill ``left/right/size`` ``[n - 1]`` from edges already sorted by weight. Node ids: points ``0..n-1``,
    merges ``n..2n-2``; ``uf`` maps a node to its newer ancestor (union-find parent)."""
    uf = np.arange(2 * n - 1)
    node_size = np.ones(2 * n - 1, dtype=np.int64)
    for i in range(n - 1):
        a = src[i]
        while uf[a] != a:  # find with path halving
            uf[a] = uf[uf[a]]
            a = uf[a]
        b = dst[i]
        while uf[b] != b:
            uf[b] = uf[uf[b]]
            b = uf[b]
        new = n + i
        left[i] = a
        right[i] = b
        uf[a] = new
        uf[b] = new
        node_size[new] = node_size[a] + node_size[b]
        size[i] = node_size[new]


_union_find_linkage_fast = maybe_jit(_union_find_linkage)


def _linkage_python(src, dst, n):
    """The list-based fallback (no numba): same algorithm, Python ints are several times faster than
    element access on numpy arrays."""
    uf = list(range(2 * n - 1))
    node_size = [1] * (2 * n - 1)
    left, right, size = [0] * (n - 1), [0] * (n - 1), [0] * (n - 1)
    for i, (a, b) in enumerate(zip(src.tolist(), dst.tolist())):
        while uf[a] != a:
            uf[a] = uf[uf[a]]
            a = uf[a]
        while uf[b] != b:
            uf[b] = uf[uf[b]]
            b = uf[b]
        new = n + i
        left[i], right[i] = a, b
        uf[a] = uf[b] = new
        node_size[new] = node_size[a] + node_size[b]
        size[i] = node_size[new]
    return np.asarray(left, np.int64), np.asarray(right, np.int64), np.asarray(size, np.int64)


def single_linkage(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int,
                   use_numba: bool | None = None) -> np.ndarray:
    """Linkage matrix ``[n - 1, 4]`` float64 ``(left, right, distance, size)`` from ``n - 1`` spanning-tree edges.

    Args:
        src, dst: ``[n - 1]`` endpoint ids. weight: ``[n - 1]`` mutual-reachability distances.
        n: number of points. use_numba: ``None`` = numba when available.
    """
    if src.shape[0] != n - 1:
        raise ValueError(f"a spanning tree of {n} points has {n - 1} edges, got {src.shape[0]}")
    order = np.argsort(weight, kind="stable")
    s = np.ascontiguousarray(src[order], dtype=np.int64)
    d = np.ascontiguousarray(dst[order], dtype=np.int64)
    if (HAVE_NUMBA if use_numba is None else use_numba) and HAVE_NUMBA:
        left = np.empty(n - 1, dtype=np.int64)
        right = np.empty(n - 1, dtype=np.int64)
        size = np.empty(n - 1, dtype=np.int64)
        _union_find_linkage_fast(s, d, n, left, right, size)
    else:
        left, right, size = _linkage_python(s, d, n)
    Z = np.empty((n - 1, 4), dtype=np.float64)
    Z[:, 0], Z[:, 1], Z[:, 2], Z[:, 3] = left, right, weight[order], size
    return Z
