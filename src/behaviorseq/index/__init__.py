"""Item retrieval indexes (faiss) and ComiRec's multi-interest candidate aggregation."""

from behaviorseq.index.aggregation import SearchResult, controllable_aggregate, dedupe_max, merge_top_n
from behaviorseq.index.faiss_index import KINDS, IndexConfig, ItemIndex, build_index

__all__ = [
    "KINDS",
    "IndexConfig",
    "ItemIndex",
    "SearchResult",
    "build_index",
    "controllable_aggregate",
    "dedupe_max",
    "merge_top_n",
]
