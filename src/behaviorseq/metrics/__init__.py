"""Evaluation metrics: ranking (one target or a target set) and pointwise CTR metrics.

All functions are pure and vectorized; ranking functions take torch tensors (numpy accepted), pointwise
ones take numpy arrays or tensors and return Python floats.
"""

from behaviorseq.metrics.comirec_official import comirec_official_metrics
from behaviorseq.metrics.diversity import diversity_at_n
from behaviorseq.metrics.pointwise import auc, gauc, logloss, per_group_auc
from behaviorseq.metrics.ranking import (
    per_sample_ranking_metrics,
    ranking_metrics,
    set_metrics,
    set_metrics_from_ranks,
    set_target_ranks,
    summarize,
    target_ranks,
    topk_with_exclusion,
)

__all__ = [
    "auc",
    "comirec_official_metrics",
    "diversity_at_n",
    "gauc",
    "logloss",
    "per_group_auc",
    "per_sample_ranking_metrics",
    "ranking_metrics",
    "set_metrics",
    "set_metrics_from_ranks",
    "set_target_ranks",
    "summarize",
    "target_ranks",
    "topk_with_exclusion",
]
