"""Serving trained models: ``Recommender`` (next-item retrieval: raw item ids in, top-N raw ids out) and
``http.make_server``, its JSON endpoint (``behaviorseq serve RUN``)."""

from behaviorseq.serve.recommender import ITEMS_FILE, Recommendation, Recommender, write_item_table

__all__ = ["ITEMS_FILE", "Recommendation", "Recommender", "write_item_table"]
