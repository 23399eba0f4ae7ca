"""Long-sequence CTR (ranking) models: DIN over the full sequence, SIM (hard), ETA, TWIN, DARE and SDIM.

Contract of a ranking model (batches as built by ``data.ctr.CTRBatcher``):
    ``Model(cfg, n_items, n_categories)``; ``fields``: the batch fields it reads;
    ``forward(batch) -> dict`` with ``logit`` [B] (the main head) and model-specific extras;
    ``loss(batch) -> scalar``: main BCE + auxiliary terms + L2; ``score(batch) -> [B]``: main-head logits.
"""

from __future__ import annotations

from behaviorseq import models

RANKING_MODELS = ("din", "sim", "eta", "twin", "dare", "sdim")


def build(name: str, n_items: int, n_categories: int, config: dict | None = None):
    """``models.build`` for ranking models, which also need the number of categories."""
    cls = models.get(name)
    return cls(cls.Config.from_dict(config or {}), n_items, n_categories)
