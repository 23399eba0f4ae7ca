"""Two-level k-means training of a large IVF index, for the cell-sorted scan of :mod:`.ivfscan`.

A flat k-means with tens of thousands of centroids costs about ``n * nlist * d`` per pass (minutes at 10M
points); :func:`two_level_ivf` trains coarse clusters first, then k-means inside each.
"""

from __future__ import annotations

import faiss
import numpy as np

from behaviorseq.cluster.ivfscan import _fill_blocks, run_kernel

__all__ = ["TWO_LEVEL_CELLS", "two_level_ivf"]

TWO_LEVEL_CELLS = 4096  # above this many cells, :func:`two_level_ivf` trains and fills the index


def two_level_ivf(X32: np.ndarray, nlist: int, seed: int = 0, coarse_probes: int = 4) -> faiss.IndexIVFFlat:
    """An ``IndexIVFFlat`` with about ``nlist`` cells over ``X32``, trained and filled in two levels, for the
    many cells (hundreds of points each) that keep the scan linear in ``n`` at 10M points. A flat k-means with
    20k centroids costs about ``n * nlist * d`` per pass (minutes at 10M points); instead:

    1. k-means with ``sqrt(nlist)`` coarse centroids on a sample of ``40 * nlist`` points;
    2. k-means inside each coarse cluster with a share of ``nlist`` proportional to its sample count;
    3. each point goes to the nearest fine centroid among those of its ``coarse_probes`` nearest coarse
       clusters (the scan kernel with ``k = 1``), and the index is filled with these precomputed cells.

    Deviation from a flat IVF: a point near a coarse boundary can land in its second-nearest fine cell; the
    cells stay compact, and the recall that :func:`tune` measures includes the effect."""
    n, d = X32.shape
    rng = np.random.default_rng(seed)
    sample = X32 if n <= 40 * nlist else X32[np.sort(rng.choice(n, 40 * nlist, replace=False))]
    nc1 = max(1, min(int(np.sqrt(nlist)), sample.shape[0] // 40))
    km = faiss.Kmeans(d, nc1, niter=10, seed=int(seed), min_points_per_centroid=1)
    km.train(sample)
    coarse = np.ascontiguousarray(km.centroids, dtype=np.float32)
    a1 = km.index.search(sample, 1)[1][:, 0]
    order = np.argsort(a1, kind="stable")
    sizes = np.bincount(a1, minlength=nc1)
    share = np.minimum(sizes, np.maximum(sizes > 0, np.rint(nlist * sizes / sample.shape[0]))).astype(np.int64)
    fine, lo = [], 0
    for c in range(nc1):  # one k-means per coarse cluster (sqrt(nlist) of them: a short Python loop)
        pts = np.ascontiguousarray(sample[order[lo : lo + sizes[c]]])
        lo += sizes[c]
        if share[c] == 0:
            continue
        if share[c] == pts.shape[0]:
            fine.append(pts)
            continue
        km2 = faiss.Kmeans(d, int(share[c]), niter=10, seed=int(seed) + c, min_points_per_centroid=1)
        km2.train(pts)
        fine.append(km2.centroids)
    centroids = np.ascontiguousarray(np.concatenate(fine), dtype=np.float32)
    start = np.concatenate([[0], np.cumsum(share)]).astype(np.int64)
    blocks = np.empty(centroids.size, dtype=np.float32)
    _fill_blocks(centroids, start, blocks)
    cell = run_kernel(X32, np.zeros(n, dtype=np.int64), blocks, start, coarse,  # the nearest fine centroid:
                      np.arange(nc1, dtype=np.int64)[None, :], min(nc1, coarse_probes), 1)[1]  # a k = 1 scan
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, d, centroids.shape[0], faiss.METRIC_L2)
    index.add_core(n, faiss.swig_ptr(X32), None, faiss.swig_ptr(np.ascontiguousarray(cell[:, 0])))
    return index
