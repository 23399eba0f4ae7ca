"""Row-wise top-K of a serving score matrix [C, L] with K << L (TWIN / DARE scoring C candidates against
one user's L behaviours), as a two-pass threshold scan in numba.

``torch.topk`` on CPU selects within every row at a cost of a few ns per element, which does not depend on
the dimension of the vectors that produced the scores: at 1,000 candidates and L = 8k it was most of DARE's
search time, hiding the saving of a smaller attention dim (DARE's Sec. 4 claim). The scan here:

1. takes the K-th largest value ``tau`` of a strided sample of ``m = min(L, 256)`` columns of the row; at
   least K elements of the row are ``>= tau``, so every element of the true top-K is too;
2. reads the row once, and only elements ``>= tau`` that beat the current K-th best enter a sorted buffer of
   K (about ``K L / m`` of them on any order of the row, so an adversarial order costs little more).

Values equal ``torch.topk``'s exactly; among tied values the indices may differ (torch leaves tie order
unspecified too). A row with NaN falls back to ``torch.topk`` (which ranks NaN first); serving scores are
finite. Without numba, off the CPU, with gradients or for K > 64, :func:`topk_rows` is ``torch.topk``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor

try:  # optional accelerator (the ``cluster`` extra); torch.topk otherwise
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    numba = None
    HAVE_NUMBA = False

SAMPLE = 256  # columns in the threshold sample
MAX_K = 64  # above this the sorted buffer's insertion cost outgrows the saving


def _insert(vals, ids, v, j, size):
    """Insert (v, j) into the descending buffers holding ``size`` entries; when full, the last one drops."""
    u = min(size, vals.shape[0] - 1)
    while u > 0 and vals[u - 1] < v:
        vals[u], ids[u] = vals[u - 1], ids[u - 1]
        u -= 1
    vals[u], ids[u] = v, j


def _topk_rows(S, k, out_v, out_i):
    C, L = S.shape
    m = min(L, SAMPLE)
    step = L / m
    for c in numba.prange(C):
        row = S[c]
        bv = out_v[c]  # the output rows are the buffers: no allocation per row
        bi = out_i[c]
        bv[:] = -np.inf
        bi[:] = -1
        size = 0
        for t in range(m):  # pass 1: the threshold from a strided sample
            v = row[int(t * step)]
            if size < k or v > bv[k - 1]:
                _insert(bv, bi, v, 0, size)
                size = min(size + 1, k)
        tau = bv[k - 1]
        size = 0
        bi[:] = -1
        nan = False
        for j in range(L):  # pass 2: one compare per element, an insertion for the few above tau
            v = row[j]
            if not v < tau:  # NaN enters here too, to be flagged
                if v != v:
                    nan = True
                elif size < k or v > bv[k - 1]:
                    _insert(bv, bi, v, j, size)
                    size = min(size + 1, k)
        if nan or tau != tau:
            bi[k - 1] = -1  # the caller falls back to torch.topk


if HAVE_NUMBA:
    _insert = numba.njit(cache=True, nogil=True)(_insert)
    _topk_rows_jit = numba.njit(cache=True, nogil=True, parallel=True)(_topk_rows)


def with_torch_threads(fn, *args):
    """Call a parallel numba function with as many threads as torch has (a one-thread process stays so), then put
    numba's count back and, after it, torch's and FAISS's: with numba's OpenMP layer, setting numba's count can
    reach the OpenMP runtime torch and FAISS share (a one-thread process once ran two threads after the first
    call, and FAISS's ivf training then gave other lists)."""
    t = torch.get_num_threads()
    faiss = sys.modules.get("faiss")
    f = faiss.omp_get_max_threads() if faiss is not None else None
    threads = numba.get_num_threads()
    numba.set_num_threads(max(1, min(t, numba.config.NUMBA_NUM_THREADS)))
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(threads)  # numba's own kernels elsewhere (cluster/) keep their count
        if torch.get_num_threads() != t:
            torch.set_num_threads(t)
        if faiss is not None and faiss.omp_get_max_threads() != f:
            faiss.omp_set_num_threads(f)


def topk_rows(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(values, indices)`` [C, k'] of each row's k' = min(k, L) largest scores, descending, like
    ``scores.topk(k, dim=-1)`` (see the module docstring for ties and NaN). Uses as many numba threads as
    torch has, so a single-thread serving process stays single-threaded."""
    k = min(int(k), scores.shape[-1])
    fast = (HAVE_NUMBA and scores.device.type == "cpu" and scores.dim() == 2 and not scores.requires_grad
            and scores.dtype in (torch.float32, torch.float64) and 0 < k <= MAX_K and scores.shape[-1] >= 4 * k)
    if not fast:
        return scores.topk(k, dim=-1)
    S = scores.detach().contiguous().numpy()
    out_v = np.empty((S.shape[0], k), dtype=S.dtype)
    out_i = np.empty((S.shape[0], k), dtype=np.int64)
    with_torch_threads(_topk_rows_jit, S, k, out_v, out_i)
    if (out_i[:, -1] < 0).any():  # a row with NaN in its top k: torch's NaN-first order
        return scores.topk(k, dim=-1)
    return torch.from_numpy(out_v), torch.from_numpy(out_i)
