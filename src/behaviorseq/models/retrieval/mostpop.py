"""MostPopular: every user gets the items ranked by their training frequency (the non-personalised
floor of the ComiRec paper's Table 3, and of most retrieval tables).

Nothing is learned: ``use_item_counts`` (called by ``run_experiment`` with the training split's
counts) sets the scores, and ``run_experiment`` skips training for a model with no trainable weights.
Ties between equally frequent items are broken by the evaluator's tie rule (pessimistic by default).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register


class MostPopConfig(StrictConfig):
    max_len: int = Field(1, gt=0)  # the history is not read; one slot keeps batches tiny


@register("mostpop")
class MostPop(nn.Module):
    Config = MostPopConfig
    padding = "left"
    fields: tuple[str, ...] = ()
    n_negatives = 0

    def __init__(self, cfg: MostPopConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        self.register_buffer("counts", torch.zeros(n_items + 1, dtype=torch.float32))

    def use_item_counts(self, counts) -> None:
        self.counts.copy_(torch.as_tensor(counts, dtype=torch.float32))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        raise RuntimeError("MostPop has nothing to train; run_experiment evaluates it directly")

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return self.counts.expand(len(batch["item"]), -1).clone()  # [B, n_items + 1]
