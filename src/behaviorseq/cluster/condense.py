"""Condensed cluster tree and cluster stabilities (HDBSCAN* step 4; Campello et al. 2013 section 3.3, 2015
section 4.2; Algorithm "condense_tree" of hdbscan).

Walking the single-linkage tree from the root with ``lambda = 1 / distance``: at each split, a child with
fewer than ``min_cluster_size`` points is "points falling out" of the current cluster at that lambda; when
both children are large enough the cluster ends and two new clusters are born; when exactly one is large it
continues the parent cluster. Equivalently, bottom-up:

* a tree node is *big* if it holds ``>= min_cluster_size`` points (the root always counts, as in hdbscan);
* a big node whose sibling is big is a *newborn* cluster (the root is the first cluster);
* every big node belongs to its nearest newborn ancestor-or-self; every point falls out of its lowest big
  ancestor, at that node's lambda.

Both "nearest ancestor with property X" maps are computed by pointer jumping (``ptr = ptr[ptr]`` until it
stops changing): ``O(n log depth)`` vectorised NumPy, no Python loop over points.

Stability of cluster ``C`` (Campello et al. 2013 eq. 4): ``S(C) = sum_{x in C} (lambda_x - lambda_birth(C))``
where ``lambda_x`` is the lambda at which ``x`` leaves ``C``, either alone or inside a child cluster (each
child contributes ``(lambda_birth(child) - lambda_birth(C)) * |child|``).

Deviation from hdbscan: clusters are numbered by descending single-linkage node id (root = 0; a child always
after its parent) instead of hdbscan's breadth-first order; the tree is the same up to that renumbering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CondensedTree", "condense_tree"]


@dataclass
class CondensedTree:
    """The condensed tree in array form. Clusters are indexed ``0..c-1``; 0 is the root; parents come first.

    Attributes:
        point_parent: ``[n]`` cluster each point falls out of. point_lambda: ``[n]`` its lambda (may be inf).
        cluster_parent: ``[c]`` parent cluster (``-1`` for the root). cluster_birth: ``[c]`` birth lambda
        (root: 0). cluster_size: ``[c]`` points in the cluster at birth.
    """

    point_parent: np.ndarray
    point_lambda: np.ndarray
    cluster_parent: np.ndarray
    cluster_birth: np.ndarray
    cluster_size: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.point_parent.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_parent.shape[0])

    def has_children(self) -> np.ndarray:
        """``[c]`` bool: the cluster splits into child clusters."""
        out = np.zeros(self.n_clusters, dtype=bool)
        out[self.cluster_parent[1:]] = True
        return out

    def stability(self) -> np.ndarray:
        """``[c]`` excess of mass ``S(C)`` (see module docstring)."""
        c, b = self.n_clusters, self.cluster_birth
        gap = _lambda_gap(self.point_lambda, b[self.point_parent])
        s = np.bincount(self.point_parent, weights=gap, minlength=c)
        kids = np.arange(1, c)
        par = self.cluster_parent[kids]
        s += np.bincount(par, weights=_lambda_gap(b[kids], b[par]) * self.cluster_size[kids], minlength=c)
        return s

    def direct_max_lambda(self) -> np.ndarray:
        """``[c]`` the largest lambda over a cluster's own rows (points leaving it and child births)."""
        out = np.zeros(self.n_clusters)
        np.maximum.at(out, self.point_parent, self.point_lambda)
        np.maximum.at(out, self.cluster_parent[1:], self.cluster_birth[1:])
        return out

    def to_records(self) -> np.ndarray:
        """hdbscan's raw condensed tree: rows ``(parent, child, lambda_val, child_size)``; cluster ``k`` is id
        ``n + k``, points keep their index. Rows sorted by parent then lambda."""
        n, c = self.n_points, self.n_clusters
        rec = np.empty(n + c - 1, dtype=[("parent", np.intp), ("child", np.intp), ("lambda_val", float),
                                         ("child_size", np.intp)])
        rec["parent"] = np.r_[self.cluster_parent[1:], self.point_parent] + n
        rec["child"] = np.r_[np.arange(1, c) + n, np.arange(n)]
        rec["lambda_val"] = np.r_[self.cluster_birth[1:], self.point_lambda]
        rec["child_size"] = np.r_[self.cluster_size[1:], np.ones(n, dtype=np.intp)]
        return rec[np.lexsort((rec["lambda_val"], rec["parent"]))]


def _lambda_gap(lam: np.ndarray, birth: np.ndarray) -> np.ndarray:
    """``lam - birth`` with ``inf - inf = 0`` (duplicate points born and leaving at distance 0)."""
    with np.errstate(invalid="ignore"):
        gap = lam - birth
    gap[lam == birth] = 0.0
    return gap


def _jump(ptr: np.ndarray) -> np.ndarray:
    """Pointer jumping to the fixed points of ``ptr`` (each node reaches the fixed point above it)."""
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            return ptr
        ptr = nxt


def condense_tree(Z: np.ndarray, min_cluster_size: int) -> CondensedTree:
    """Condense a linkage ``Z`` ``[n - 1, 4]`` (``(left, right, distance, size)``, node ``n + i`` = row ``i``).

    Args:
        Z: single-linkage tree from :func:`~behaviorseq.cluster.linkage.single_linkage`.
        min_cluster_size: smallest cluster, ``>= 2``.
    """
    n = Z.shape[0] + 1
    if n == 1:
        z = np.zeros(1, dtype=np.int64)
        return CondensedTree(z, np.zeros(1), np.array([-1]), np.zeros(1), np.ones(1, dtype=np.int64))
    n_nodes = 2 * n - 1
    root = n_nodes - 1
    left, right = Z[:, 0].astype(np.int64), Z[:, 1].astype(np.int64)
    with np.errstate(divide="ignore"):
        lam_internal = 1.0 / Z[:, 2]  # distance 0 -> inf
    nodes = np.arange(n_nodes)
    par = np.empty(n_nodes, dtype=np.int64)
    par[left] = par[right] = np.arange(n, n_nodes)
    par[root] = root
    sib = np.empty(n_nodes, dtype=np.int64)
    sib[left], sib[right] = right, left
    sib[root] = root
    size = np.r_[np.ones(n, dtype=np.int64), Z[:, 3].astype(np.int64)]
    big = size >= min_cluster_size
    big[root] = True
    newborn = big & big[sib]
    newborn[root] = True
    owner = _jump(np.where(newborn, nodes, par))  # big node -> the newborn node that starts its cluster
    fall = _jump(np.where(big, nodes, par))  # small node -> its lowest big ancestor
    born = np.flatnonzero(newborn)[::-1]  # root first, every child after its parent
    index = np.full(n_nodes, -1, dtype=np.int64)
    index[born] = np.arange(born.size)
    point_node = fall[:n]
    cluster_parent = np.r_[-1, index[owner[par[born[1:]]]]]
    cluster_birth = np.r_[0.0, lam_internal[par[born[1:]] - n]]
    return CondensedTree(
        point_parent=index[owner[point_node]],
        point_lambda=lam_internal[point_node - n],
        cluster_parent=cluster_parent.astype(np.int64),
        cluster_birth=cluster_birth,
        cluster_size=size[born],
    )
