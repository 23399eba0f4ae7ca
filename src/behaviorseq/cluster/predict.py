"""Approximate prediction for new points: hdbscan's ``approximate_predict`` (McInnes, hdbscan docs
"Predicting clusters for new points"), vectorised over the points.

A new point ``x`` is not re-clustered; it is attached to the existing condensed tree:

1. its ``2 * min_samples`` nearest training points (FAISS, the fitted index);
2. its core distance = the distance to neighbour number ``min_samples`` counting from 0 (for a training point
   queried against itself that is exactly its fitted core distance, since it is its own first neighbour);
3. its nearest neighbour ``q`` under mutual reachability among them, at ``lambda = 1 / d_mreach(x, q)``;
4. it starts in the cluster ``q`` falls out of; if ``q`` stays longer than ``x`` would (``lambda_q >
   lambda``) it climbs to the ancestor cluster still alive at ``lambda`` (birth ``< lambda``);
5. its label is that cluster's selected owner; probability ``min(lambda, lambda_max) / lambda_max`` of the
   owner, 0 for noise.

Deviation from hdbscan: the training points' core distances are the fitted ones (``min_samples`` other
points); hdbscan's ``PredictionData`` recomputes them with ``k = min_samples`` *including* the point, i.e.
one neighbour fewer than the fit used.
"""

from __future__ import annotations

import numpy as np

from behaviorseq.cluster.condense import CondensedTree
from behaviorseq.cluster.knn import KnnGraph
from behaviorseq.cluster.select import Flat

__all__ = ["attach"]


def attach(
    neighbours: KnnGraph, core: np.ndarray, min_samples: int, tree: CondensedTree, flat: Flat
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``[m]``, probabilities ``[m]`` and the connecting training point ``[m]`` of new points.

    Args:
        neighbours: the new points' nearest training points, ascending (``[m, k]``, ``k <= 2 * min_samples``).
        core: ``[n]`` fitted core distances. min_samples: the fitted value.
        tree, flat: the fitted condensed tree and selection.
    """
    dist, idx = neighbours.dist, neighbours.idx
    m, k = idx.shape
    own_core = dist[:, min(min_samples, k - 1)]
    mr = np.maximum(np.maximum(core[np.maximum(idx, 0)], own_core[:, None]), dist)
    mr[idx < 0] = np.inf
    j = np.argmin(mr, axis=1)
    rows = np.arange(m)
    nearest = idx[rows, j]
    w = mr[rows, j]
    with np.errstate(divide="ignore"):
        lam = np.where(w > 0, 1.0 / w, np.finfo(np.float64).max)
    cluster = tree.point_parent[nearest]
    climb = tree.point_lambda[nearest] > lam
    # climb while the current cluster was born at or after lambda (all points step together, per tree level)
    todo = np.flatnonzero(climb)
    while todo.size:
        c = cluster[todo]
        up = (c > 0) & (tree.cluster_birth[c] >= lam[todo])
        todo = todo[up]
        cluster[todo] = tree.cluster_parent[cluster[todo]]
    labels = flat.cluster_label[cluster]
    owner = flat.cluster_owner[cluster]
    if flat.cluster_owner[0] == 0:  # the root is the single cluster: fit's noise rule (hdbscan's do_labelling), so
        # points fit left as noise come back as noise (they came back as cluster 0)
        labels = np.where((owner == 0) & (np.minimum(lam, tree.point_lambda[nearest]) < flat.max_lambda[0]), -1, labels)
    ref = flat.max_lambda[np.maximum(owner, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where(ref > 0, np.minimum(ref, lam) / ref, 1.0)
    prob[labels < 0] = 0.0
    return labels, prob, nearest
