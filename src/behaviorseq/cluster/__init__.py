"""Scalable HDBSCAN* on FAISS (issue 7; brief sections 1 and 6).

``HDBSCAN`` is the estimator; the stages are importable for tests and for building other pipelines on them:
:func:`knn_graph` / :func:`refine` / :func:`core_distances`, :func:`mutual_reachability_mst`, :func:`single_linkage`,
:func:`condense_tree`, :func:`select_clusters`, :func:`glosh`.
"""

from behaviorseq.cluster.condense import CondensedTree, condense_tree
from behaviorseq.cluster.hdbscan import HDBSCAN
from behaviorseq.cluster.knn import IndexSpec, KnnGraph, as_working, core_distances, knn_graph, refine
from behaviorseq.cluster.linkage import HAVE_NUMBA, single_linkage
from behaviorseq.cluster.mst import SpanningTree, mutual_reachability_mst
from behaviorseq.cluster.select import Flat, glosh, select_clusters

__all__ = [
    "HAVE_NUMBA",
    "HDBSCAN",
    "CondensedTree",
    "Flat",
    "IndexSpec",
    "KnnGraph",
    "SpanningTree",
    "as_working",
    "condense_tree",
    "core_distances",
    "glosh",
    "knn_graph",
    "mutual_reachability_mst",
    "refine",
    "select_clusters",
    "single_linkage",
]
