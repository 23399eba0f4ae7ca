"""Serving trained models from their run folders: ``Recommender`` (next-item retrieval: raw item ids in, top-N
raw ids out), ``Ranker`` (CTR: a history and candidates in, click probabilities out), ``EventPredictor``
(event streams: the next event's time and type after a sequence); ``load_run`` picks the one a run needs and
``http.make_server`` puts it behind JSON endpoints (``behaviorseq serve RUN``)."""

from __future__ import annotations

from pathlib import Path

from behaviorseq.data.item_table import ITEMS_FILE, write_item_table
from behaviorseq.serve.events import EventPredictor, NextEvent
from behaviorseq.serve.ranker import Ranker, Scored
from behaviorseq.serve.recommender import Recommendation, Recommender

SERVED = {"retrieval": Recommender, "ctr": Ranker, "tpp": EventPredictor}


def load_run(run_dir: str | Path, device: str = "cpu") -> Recommender | Ranker | EventPredictor:
    """The serving object of a trained run, by its task (retrieval, ctr, tpp)."""
    from behaviorseq.train.run import load_run_config

    task = load_run_config(run_dir).task
    if task not in SERVED:
        raise ValueError(f"{run_dir}: {task} runs are not served (served: {', '.join(SERVED)}); risk models score "
                         "through their Python API")
    return SERVED[task].from_run(run_dir, device)


__all__ = ["EventPredictor", "ITEMS_FILE", "NextEvent", "Ranker", "Recommendation", "Recommender", "SERVED", "Scored",
           "load_run", "write_item_table"]
