"""Flat clusters from the condensed tree: excess-of-mass or leaf selection, labels, membership
probabilities and GLOSH outlier scores (HDBSCAN* step 5).

* EOM (Campello et al. 2013 section 3.3, eq. 5-6): bottom-up, a cluster is kept if its stability is at least
  the sum of its children's (propagated) stabilities; a kept cluster discards everything below it. The root
  is a candidate only with ``allow_single_cluster`` (hdbscan's flag). ``"leaf"``: the clusters with no
  children, never the root (hdbscan and sklearn mark a childless root, then overwrite it with the empty
  leaf set, so the flag has no effect there; kept as is).
* Labels: a point belongs to the selected cluster above the cluster it falls out of; otherwise noise (-1).
  When the root is the one selected cluster, hdbscan keeps only the points whose lambda reaches the largest
  lambda of the root's own rows (the others are noise); so does this.
* Probabilities (hdbscan ``get_probabilities``): ``min(lambda_p, lambda_max(C)) / lambda_max(C)`` where
  ``lambda_max(C)`` is the largest lambda among the selected cluster's own rows; 1 for infinite lambdas.
* GLOSH (Campello et al. 2015 section 5, eq. 8): ``1 - lambda_p / lambda_max(subtree of p's cluster)``.

The three loops over *clusters* (never points) run in topological order and are numba-compiled when available.

Deviations from hdbscan, one line each:

- ``cluster_selection_epsilon``, ``cluster_selection_epsilon_max``, ``max_cluster_size`` and
  ``cluster_selection_persistence`` are not implemented.
- the EOM comparison sums children's stabilities in float64 (hdbscan: a C ``float``).
- GLOSH is 1.0 (hdbscan: NaN) for a finite lambda under a subtree whose largest lambda is infinite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorseq.cluster.condense import CondensedTree
from behaviorseq.cluster.linkage import maybe_jit

__all__ = ["SELECTION_METHODS", "Flat", "glosh", "select_clusters"]

SELECTION_METHODS = ("eom", "leaf")


@maybe_jit
def _eom(parent, stability, keep):
    """Bottom-up EOM over clusters ``c-1..0`` (children have larger indices than their parents); the caller
    decides whether the root's verdict ``keep[0]`` stands."""
    c = parent.shape[0]
    child_sum = np.zeros(c)
    for k in range(c - 1, -1, -1):
        if child_sum[k] > stability[k]:
            keep[k] = False
            add = child_sum[k]
        else:
            keep[k] = True
            add = stability[k]
        if k > 0:
            child_sum[parent[k]] += add


@maybe_jit
def _owners(parent, keep, owner):
    """Top-down: the selected ancestor-or-self of every cluster (``-1`` if none); ``keep`` of a cluster under
    a selected one is ignored, as hdbscan discards a kept cluster's descendants."""
    for k in range(1, parent.shape[0]):
        up = owner[parent[k]]
        if up >= 0:
            owner[k] = up
        elif keep[k]:
            owner[k] = k


@maybe_jit
def _subtree_max(parent, values):
    """In place: ``values[k] = max(values over k's subtree)``, children before parents."""
    for k in range(parent.shape[0] - 1, 0, -1):
        if values[k] > values[parent[k]]:
            values[parent[k]] = values[k]


@dataclass
class Flat:
    """A flat clustering read off the tree.

    Attributes:
        labels: ``[n]`` 0..L-1, -1 noise. probabilities: ``[n]`` in [0, 1].
        cluster_owner: ``[c]`` the selected cluster index above each tree cluster, or -1.
        cluster_label: ``[c]`` the label of ``cluster_owner`` (-1 if none). selected: ``[L]`` tree indices.
        max_lambda: ``[c]`` largest lambda among each cluster's own rows (for probabilities and predict).
        persistence: ``[L]`` hdbscan's ``cluster_persistence_``: ``S(C) / (|C| * max lambda in the tree)``.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    cluster_owner: np.ndarray
    cluster_label: np.ndarray
    selected: np.ndarray
    max_lambda: np.ndarray
    persistence: np.ndarray


def select_clusters(tree: CondensedTree, method: str = "eom", allow_single_cluster: bool = False) -> Flat:
    """Select clusters by ``"eom"`` or ``"leaf"`` and label every point (module docstring)."""
    if method not in SELECTION_METHODS:
        raise ValueError(f"unknown cluster_selection_method {method!r}; valid: {', '.join(SELECTION_METHODS)}")
    c = tree.n_clusters
    parent = tree.cluster_parent
    stability = tree.stability()
    keep = np.zeros(c, dtype=bool)
    if method == "eom":
        _eom(parent, stability, keep)
    else:
        keep[:] = ~tree.has_children()
    keep[0] = keep[0] and allow_single_cluster and method == "eom"
    owner = np.full(c, -1, dtype=np.int64)
    owner[0] = 0 if keep[0] else -1
    _owners(parent, keep, owner)
    selected = np.flatnonzero(owner == np.arange(c))
    rank = np.full(c, -1, dtype=np.int64)
    rank[selected] = np.arange(selected.size)
    cluster_label = np.where(owner >= 0, rank[np.maximum(owner, 0)], -1)
    labels = cluster_label[tree.point_parent]
    max_lambda = tree.direct_max_lambda()
    if keep[0]:  # the root is the single cluster: hdbscan's do_labelling threshold
        labels = np.where(tree.point_lambda >= max_lambda[0], labels, -1)
    lam = tree.point_lambda
    ref = max_lambda[np.maximum(owner[tree.point_parent], 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.minimum(lam, ref) / ref
    prob[(ref == 0) | ~np.isfinite(lam)] = 1.0
    prob[labels < 0] = 0.0
    top = float(np.max(tree.point_lambda, initial=0.0))
    top = max(top, float(np.max(tree.cluster_birth, initial=0.0)))
    sizes = np.bincount(labels[labels >= 0], minlength=selected.size)
    if not np.isfinite(top) or top == 0.0:
        persistence = np.ones(selected.size)
    else:
        persistence = stability[selected] / np.maximum(sizes, 1) / top
        persistence[sizes == 0] = 1.0
    return Flat(labels, prob, owner, cluster_label, selected, max_lambda, persistence)


def glosh(tree: CondensedTree, max_lambda: np.ndarray | None = None) -> np.ndarray:
    """GLOSH outlier scores ``[n]`` in [0, 1] (Campello et al. 2015 eq. 8; hdbscan ``outlier_scores``)."""
    sub = (tree.direct_max_lambda() if max_lambda is None else max_lambda).copy()
    _subtree_max(tree.cluster_parent, sub)
    ref = sub[tree.point_parent]
    lam = tree.point_lambda
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (ref - lam) / ref
    score[np.isinf(ref) & np.isfinite(lam)] = 1.0
    score[(ref == 0) | ~np.isfinite(lam)] = 0.0
    return score
