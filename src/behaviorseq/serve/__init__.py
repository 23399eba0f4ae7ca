"""Serving trained models from their run folders: ``Recommender`` (next-item retrieval: raw item ids in, top-N
raw ids out), ``Ranker`` (CTR: a history and candidates in, click probabilities out), ``EventPredictor``
(event streams: the next event's time and type after a sequence), ``RiskScorer`` (default risk: new users'
payments in, default probabilities out); ``load_run`` picks the one a run needs and
``http.make_server`` puts it behind JSON endpoints (``behaviorseq serve RUN``)."""

from __future__ import annotations

from pathlib import Path

from behaviorseq.data.item_table import ITEMS_FILE, write_item_table
from behaviorseq.serve.events import EventPredictor, NextEvent
from behaviorseq.serve.ranker import Ranker, Scored
from behaviorseq.serve.recommender import Recommendation, Recommender
from behaviorseq.serve.risk import RiskScorer, RiskScores

SERVED = {"retrieval": Recommender, "ctr": Ranker, "tpp": EventPredictor, "default_risk": RiskScorer}


def load_run(run_dir: str | Path, device: str = "cpu") -> Recommender | Ranker | EventPredictor | RiskScorer:
    """The serving object of a trained run, by its task (retrieval, ctr, tpp, default_risk)."""
    from behaviorseq.train.run import load_run_config

    task = load_run_config(run_dir).task
    if task not in SERVED:
        raise ValueError(f"{run_dir}: {task} runs are not served (served: {', '.join(SERVED)})")
    return SERVED[task].from_run(run_dir, device)


__all__ = ["EventPredictor", "ITEMS_FILE", "NextEvent", "Ranker", "Recommendation", "Recommender", "RiskScorer",
           "RiskScores", "SERVED", "Scored", "load_run", "write_item_table"]
