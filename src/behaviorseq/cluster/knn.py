"""k-nearest-neighbour lists and HDBSCAN core distances on FAISS (step 1 of HDBSCAN*).

Campello, Moulavi & Sander (PAKDD 2013; TKDD 2015) define the core distance of ``x`` as the distance to its
``min_samples``-th nearest neighbour. Convention, as in the ``hdbscan`` package (McInnes, Healy & Astels,
JOSS 2017): ``min_samples`` does NOT count the point itself, i.e. ``core(x)`` is the distance to the
``min_samples``-th *other* point (hdbscan queries ``k = min_samples + 1`` with the point included and takes
the last column; ``sklearn.cluster.HDBSCAN`` counts the point, so its ``min_samples`` is ours + 1).

Search is FAISS (the pHDBSCAN recipe of FinDeepBehaviorCluster, Min et al. 2021, brief section 6): ``"flat"``
is exact brute force in query blocks (``faiss.knn``, no copy of the data), ``"ivf"`` (``IndexIVFFlat``) and
``"hnsw"`` (``IndexHNSWFlat``) are approximate, for large ``n``; ``use_gpu`` moves the index to all GPUs when
faiss was built with CUDA. FAISS works in float32 on ``||x||^2 + ||y||^2 - 2 x.y``; the lists it returns are
re-measured as ``||x - y||`` in the working dtype (float64 for float64 input) and re-sorted, so core
distances match hdbscan's float64 KD-tree values to rounding, except where neighbours' distances differ by less
than float32's resolution of the centred coordinates (about 1e-7 of a point's distance from the mean): there
float32 may reorder more neighbours than the two spare ones absorb (a review: 271 of 3,000 rows off by up to
4.3% for clusters 1e-5 wide at distance 20 from the mean; exact from 1e-4 wide).

For ``"ivf"`` on the CPU with numba, the all-points search is :mod:`.ivfscan`'s cell-sorted scan over the
index's cells (same cells and probes; 4x faster than FAISS's per-query search at 10-d when it was written, and
its grouped kernel another 2-3x); the FAISS index is kept for ``approximate_predict``.

Approximate indexes miss some neighbours; one NN-descent pass (:func:`refine`, Dong et al. 2011) repairs
most of them (at 20k 10-d points, ivf with 512 cells / 16 probes: recall@16 0.955 -> 0.991).
Deviation from hdbscan: with ``"ivf"``/``"hnsw"`` the lists, hence core distances, are approximate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import faiss
import numpy as np

from behaviorseq.cluster import ivfscan, ivftrain, ivftune
from behaviorseq.cluster.linkage import HAVE_NUMBA, maybe_jit, prange

__all__ = ["INDEX_KINDS", "IndexSpec", "KnnGraph", "as_working", "build_index", "knn_graph", "refine", "search",
           "tune_nprobe"]

INDEX_KINDS = ("flat", "ivf", "hnsw")
NPROBE_START = 16  # ivf cells probed by default, and where tune_nprobe starts
CELL_POINTS = 512  # ivf cells hold at most about this many points by default (2 sqrt(n) cells up to 1M points)


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index finds the neighbours (validated by :class:`~behaviorseq.cluster.HDBSCAN`).

    Attributes:
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate).
        nlist: ivf cells; ``None`` = ``max(2 sqrt(n), n / 512)`` clipped to ``[1, n // 39]`` (k-means: 10
            iterations on up to 64 points per cell; above 4,096 cells two-level k-means, see
            :func:`~behaviorseq.cluster.ivftrain.two_level_ivf`). Cells of at most ~512 points keep the scan's
            cost linear in ``n`` beyond 1M points.
        nprobe: ivf cells visited per query; ``None`` = tuned (:func:`tune_nprobe`, or
            :func:`~behaviorseq.cluster.ivftune.tune` on the scan path): the first of 16, 32, 48, 64, 96,
            ... (:func:`~behaviorseq.cluster.ivftune.probe_ladder`) whose recall@k, measured against exact
            search on ``recall_sample`` random rows, reaches ``target_recall`` (before NN-descent; a GPU index
            keeps 16). A fixed 16 gave recall 0.975 on the planted-ring benchmark data at 100k points and ARI
            0.77 against hdbscan; 32 gave 0.998 and 0.9998. The target is not a parity guarantee: 23 probes
            there gave recall 0.993 and still ARI 0.77, so the ladder's first step stays a doubling
            (``benchmarks/README.md`` §10).
        hnsw_m: hnsw links per node. ef_search / ef_construction: hnsw beam widths.
        use_gpu: move the index to the GPUs (faiss-gpu only).
        block_size: queries per FAISS call (bounds the ``[block, k]`` result buffers).
        seed: ivf k-means seed.
        refine: NN-descent passes over the lists (:func:`refine`); ``None`` = 1 for ivf/hnsw, 0 for flat.
        target_recall / recall_sample: see ``nprobe``.
    """

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_search: int = 64
    ef_construction: int = 80
    use_gpu: bool = False
    block_size: int = 65_536
    seed: int = 0
    refine: int | None = None
    target_recall: float = 0.985
    recall_sample: int = 1000


class KnnGraph(NamedTuple):
    """``dist`` ``[n, k]`` ascending, column 0 the point itself (distance 0); ``idx`` ``[n, k]`` int64."""

    dist: np.ndarray
    idx: np.ndarray


def as_working(X: np.ndarray, center: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """C-contiguous, mean-centred copy (float64, or float32 if the input is float32) and the centre ``[d]``.

    Centring is free for Euclidean distances and keeps FAISS's norm expansion accurate far from the origin.
    """
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    Xw = np.array(X, dtype=dtype, order="C", copy=True)
    if center is None:
        center = Xw.mean(axis=0, dtype=np.float64).astype(dtype)
    Xw -= center
    return Xw, center


def _f32(X: np.ndarray) -> np.ndarray:
    return X if X.dtype == np.float32 else np.ascontiguousarray(X, dtype=np.float32)


def build_index(X32: np.ndarray, spec: IndexSpec) -> faiss.Index | None:
    """The FAISS index over ``X32`` ``[n, d]`` float32; ``None`` for the CPU flat kind (``faiss.knn`` instead)."""
    n, d = X32.shape
    if spec.kind == "flat":
        if not spec.use_gpu:
            return None
        index: faiss.Index = faiss.IndexFlatL2(d)
    elif spec.kind == "ivf":
        nlist = spec.nlist or max(1, min(max(2 * math.isqrt(n), n // CELL_POINTS), n // 39))
        if nlist > ivftrain.TWO_LEVEL_CELLS and HAVE_NUMBA and not spec.use_gpu:
            index = ivftrain.two_level_ivf(X32, nlist, spec.seed)
            index.nprobe = spec.nprobe or min(index.nlist, NPROBE_START)
            return index
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
        index.cp.seed = int(spec.seed)
        index.cp.niter = 10  # cells only need to be compact; faiss's 25 iterations cost minutes at 10M
        rng = np.random.default_rng(spec.seed)
        sample = X32 if n <= 64 * nlist else X32[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        index.train(sample)
        index.nprobe = spec.nprobe or min(nlist, NPROBE_START)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_L2)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    else:
        raise ValueError(f"unknown index kind {spec.kind!r}; valid kinds: {', '.join(INDEX_KINDS)}")
    if spec.use_gpu:
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            raise RuntimeError("use_gpu=True needs faiss built with CUDA and a visible GPU")
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(X32)
    return index


def _raw_search(index: faiss.Index | None, X32: np.ndarray, Q32: np.ndarray, k: int) -> np.ndarray:
    """FAISS ids ``[m, k]`` (``-1`` where the index found fewer) of the ``k`` nearest base rows."""
    if index is None:
        return faiss.knn(Q32, X32, k)[1]
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(index.hnsw.efSearch, k)  # hnsw returns at most efSearch results
    return index.search(Q32, k)[1]


def _measure(Xw: np.ndarray, Q: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``||q - x_idx||`` in the working dtype, each row re-sorted; missing ids (-1) become ``inf``."""
    m, k = idx.shape
    dist = np.empty((m, k), dtype=Xw.dtype)
    rows = max(1, (1 << 22) // max(1, k * Xw.shape[1]))  # ~32 MB of float64 differences per step
    for s in range(0, m, rows):
        ids = idx[s : s + rows]
        diff = Xw[np.maximum(ids, 0)] - Q[s : s + rows, None, :]  # [b, k, d]
        dist[s : s + rows] = np.sqrt(np.einsum("bkd,bkd->bk", diff, diff))
    dist[idx < 0] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def search(index: faiss.Index | None, Xw: np.ndarray, Q: np.ndarray, k: int, block_size: int,
           X32: np.ndarray | None = None) -> KnnGraph:
    """The ``k`` nearest rows of ``Xw`` to each query ``Q`` ``[m, d]`` (same centring), exact distances."""
    X32 = _f32(Xw) if X32 is None else X32
    Q32 = _f32(Q)
    dists, idxs = [], []
    for s in range(0, Q.shape[0], block_size):
        idx = _raw_search(index, X32, Q32[s : s + block_size], k)
        d, i = _measure(Xw, Q[s : s + block_size], idx)
        dists.append(d)
        idxs.append(i)
    return KnnGraph(np.concatenate(dists), np.concatenate(idxs))


def tune_nprobe(index: faiss.Index, X32: np.ndarray, k: int, target: float, sample: int,
                seed: int = 0) -> tuple[int, float]:
    """Set ``index.nprobe`` (ivf) to the first of :func:`~behaviorseq.cluster.ivftune.probe_ladder`'s probe
    counts whose recall@k on ``sample`` random rows, against exact search, reaches ``target``; returns
    ``(nprobe, measured recall)``. Costs one exact search of
    the sample (``sample * n * d``) and one ivf search of it per step."""
    n = X32.shape[0]
    rows = np.random.default_rng(seed).choice(n, min(n, sample), replace=False)
    Q = X32[np.sort(rows)]
    exact = faiss.knn(Q, X32, k)[1]

    def recall_at(nprobe: int) -> float:
        index.nprobe = nprobe
        return ivftune.recall(index.search(Q, k)[1], exact)

    nprobe, recall = ivftune.smallest_on_ladder(recall_at, NPROBE_START, index.nlist, target)
    index.nprobe = nprobe
    return nprobe, recall


def knn_graph(Xw: np.ndarray, k: int, spec: IndexSpec,
              report: dict | None = None) -> tuple[KnnGraph, faiss.Index | None]:
    """Each point's ``k`` nearest points *including itself* (column 0), and the index used.

    ``k`` must be ``<= n``. Two extra neighbours are searched and dropped after exact re-measuring so that
    float32 near-ties at the boundary do not change the list. Rows whose list came back short (ivf probes
    with too few points) are searched again exactly; see :func:`_self_first` for the point itself. ``report``,
    when given, receives the tuned ``nprobe`` and its measured ``recall`` (ivf with ``spec.nprobe=None``).
    """
    n = Xw.shape[0]
    X32 = _f32(Xw)
    index = build_index(X32, spec)
    k_search = min(n, k + 2)
    use_scan = spec.kind == "ivf" and not spec.use_gpu and HAVE_NUMBA  # the cell-sorted self-join (.ivfscan)
    cb = ivfscan.cell_blocks(index, X32) if use_scan else None
    if spec.kind == "ivf" and spec.nprobe is None and not spec.use_gpu:
        target, sample = spec.target_recall, spec.recall_sample
        if use_scan:
            nprobe, recall = ivftune.tune(cb, X32, k, NPROBE_START, target, sample, spec.seed)
        else:
            nprobe, recall = tune_nprobe(index, X32, k, target, sample, spec.seed)
        index.nprobe = nprobe  # approximate_predict searches the FAISS index with the same probes
        if report is not None:
            report.update(nprobe=nprobe, recall=recall, recall_sample=min(n, spec.recall_sample))
    if use_scan:
        ids = ivfscan.scan(cb, X32, np.arange(n), k_search, index.nprobe)
        g = KnnGraph(*_measure(Xw, Xw, ids[np.argsort(cb.perm)]))
    else:
        g = search(index, Xw, Xw, k_search, spec.block_size, X32)
    dist, idx = g.dist[:, :k].copy(), g.idx[:, :k].copy()
    short = np.flatnonzero(idx[:, -1] < 0)
    if short.size and index is not None:  # an approximate index came back short: exact search for those rows
        fix = search(None, Xw, Xw[short], k, spec.block_size, X32)
        dist[short], idx[short] = fix.dist, fix.idx
    graph = _self_first(dist, idx)
    passes = spec.refine if spec.refine is not None else (0 if spec.kind == "flat" else 1)
    return (refine(Xw, graph, passes) if passes else graph), index


def _self_first(dist: np.ndarray, idx: np.ndarray) -> KnnGraph:
    """Column 0 = the point itself: put back where an approximate index missed it (the last neighbour drops
    out), and move it first among zero-distance ties (duplicate points)."""
    rows = np.arange(idx.shape[0])
    has_self = (idx == rows[:, None]).any(axis=1)
    if not has_self.all():
        miss = np.flatnonzero(~has_self)
        dist[miss, 1:], idx[miss, 1:] = dist[miss, :-1], idx[miss, :-1]
        dist[miss, 0], idx[miss, 0] = 0.0, miss
    self_pos = np.argmax(idx == rows[:, None], axis=1)
    moved = np.flatnonzero(self_pos > 0)
    if moved.size:
        idx[moved, self_pos[moved]] = idx[moved, 0]
        idx[moved, 0] = moved
    return KnnGraph(dist, idx)


@maybe_jit(parallel=True)
def _refine_rows(X, src, out_d, out_i):
    """One NN-descent pass: row ``p`` keeps the ``k`` nearest of its list and its neighbours' lists."""
    n, k = src.shape
    d = X.shape[1]
    for p in prange(n):
        bd = np.full(k, np.inf)
        bi = np.full(k, -1, dtype=np.int64)
        for a in range(-1, k):
            row = np.int64(p) if a < 0 else src[p, a]
            if row < 0:
                continue
            for b in range(k):
                c = src[row, b]
                if c < 0:
                    continue
                seen = False
                for t in range(k):
                    if bi[t] == c:
                        seen = True
                        break
                if seen:
                    continue
                acc = 0.0
                for j in range(d):
                    diff = X[p, j] - X[c, j]
                    acc += diff * diff
                dist = np.sqrt(acc)
                if dist < bd[k - 1]:
                    ivfscan.insert_sorted(bd, bi, dist, c)
        out_d[p], out_i[p] = bd, bi


def refine(Xw: np.ndarray, graph: KnnGraph, rounds: int = 1, use_numba: bool | None = None) -> KnnGraph:
    """NN-descent passes (Dong, Charikar & Li, WWW 2011: "a neighbour of a neighbour is likely a neighbour"):
    each point's list is merged with its neighbours' lists, re-measured exactly, and the ``k`` nearest kept.
    Repairs most misses of an approximate index at ``O(n k^2 d)`` per pass; never makes a list worse.
    numba when available (one parallel pass), else NumPy in row blocks."""
    dist, idx = graph.dist.copy(), graph.idx.copy()
    n, k = idx.shape
    if (HAVE_NUMBA if use_numba is None else use_numba) and HAVE_NUMBA:
        for _ in range(rounds):
            src = idx.copy()
            out_d = np.empty((n, k))
            _refine_rows(Xw, src, out_d, idx)
            dist = out_d.astype(dist.dtype)
        return _self_first(dist, idx)
    rows_per = max(1, (1 << 21) // max(1, (k + k * k) * Xw.shape[1]))
    for _ in range(rounds):
        src = idx.copy()  # read the lists of this pass, write the next
        for s in range(0, n, rows_per):
            rows = np.arange(s, min(n, s + rows_per))
            cand = np.concatenate([src[rows], src[src[rows]].reshape(rows.size, k * k)], axis=1)
            cand = np.sort(cand, axis=1)
            cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = -1  # duplicates (and ids already listed)
            d, i = _measure(Xw, Xw[rows], cand)
            dist[rows], idx[rows] = d[:, :k], i[:, :k]
    return _self_first(dist, idx)


def core_distances(graph: KnnGraph, min_samples: int) -> np.ndarray:
    """``core[p]`` = distance to the ``min_samples``-th other point = column ``min_samples`` (self is column 0)."""
    return np.ascontiguousarray(graph.dist[:, min_samples])
