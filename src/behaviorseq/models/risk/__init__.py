"""Financial-risk models over payment / behaviour sequences (e.g. ``lbsf``: LBSF and, in ``flat_seq``,
its no-folding baselines ``flat_transformer`` and ``flat_gru``).

Contract of a risk model (one sample per user, views from ``behaviorseq.data.folding`` through
``tasks.default_risk.to_tensors``): ``Model(cfg, merchant_ngrams, description_ngrams, edges, max_len)``;
``fields``: the batch fields it reads (LBSF a folded view, the flat models a flat one);
``score(batch) -> [B]``: default logits (= ``forward``); ``loss(batch, label=None) -> scalar``: BCE (label
from ``batch["label"]`` when not given). ``train.run_experiment`` trains them under ``task: default_risk``.
"""

from __future__ import annotations

import numpy as np

from behaviorseq import models


def build(name: str, merchant_ngrams: np.ndarray, description_ngrams: np.ndarray, edges: np.ndarray,
          max_len: int, config: dict | None = None):
    """``models.build`` for risk models, which read the payment-field tables instead of an item count
    (``nn.payment_fields``: hashed n-grams of merchant names and descriptions, amount bucket edges);
    ``max_len`` is the payments kept per merchant Lm for LBSF, the last N payments for the flat models."""
    cls = models.get(name)
    return cls(cls.Config.from_dict(config or {}), merchant_ngrams, description_ngrams, edges, max_len)
