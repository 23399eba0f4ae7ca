"""Serving trained models: ``Recommender`` (next-item retrieval: raw item ids in, top-N raw ids out) and
``http.make_server``, its JSON endpoint (``behaviorseq serve RUN``); ``EventPredictor`` (event streams: the next
event's time and type after a sequence)."""

from behaviorseq.serve.events import EventPredictor, NextEvent
from behaviorseq.serve.recommender import ITEMS_FILE, Recommendation, Recommender, write_item_table

__all__ = ["EventPredictor", "NextEvent", "ITEMS_FILE", "Recommendation", "Recommender", "write_item_table"]
