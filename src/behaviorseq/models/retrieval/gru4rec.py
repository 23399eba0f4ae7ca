"""GRU4Rec: Session-based Recommendations with Recurrent Neural Networks (Hidasi et al., ICLR 2016).

In the form used as a next-item full-ranking baseline (RecBole ``sequential_recommender/gru4rec.py``,
S3-Rec and most later papers): item embedding, dropout, GRU layers, a dense layer back to the
embedding size, and a score for every item from the shared item table.

Deviations from the paper, one line each:
- Session-parallel mini-batches are replaced by padded user sequences, with the GRU run from a zero
  state over each sequence's last max_len items.
- The paper's BPR / TOP1 ranking losses (and the later BPR-max / TOP1-max) are replaced by softmax
  cross-entropy over all items (loss="ce"), or BCE with one sampled negative (loss="bce").
- The output layer is the input item table (after a dense layer to its width) instead of a separate
  output embedding, as in RecBole.
- Also RecBole's: a GRU without biases, dropout on the input embeddings (not between hidden layers), and no
  tanh on the output. Hidasi & Czapp (RecSys 2023) show such third-party versions trail the official GRU4Rec.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.losses import next_item_loss


class GRU4RecConfig(StrictConfig):
    embedding_size: int = Field(64, gt=0)  # RecBole GRU4Rec.yaml
    hidden_size: int = Field(128, gt=0)  # RecBole GRU4Rec.yaml
    num_layers: int = Field(1, gt=0)  # RecBole; the paper found one layer best
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # RecBole dropout_prob, on the input embeddings
    max_len: int = Field(50, gt=0)  # RecBole MAX_ITEM_LIST_LENGTH
    loss: Literal["ce", "bce"] = "ce"  # see the module docstring


@register("gru4rec")
class GRU4Rec(nn.Module):
    Config = GRU4RecConfig
    # Right padding: the GRU reads each sequence from its first item, and the trailing padding comes
    # after every real output, so it cannot change one (no packing needed).
    padding = "right"
    fields: tuple[str, ...] = ()

    def __init__(self, cfg: GRU4RecConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        self.item_emb = nn.Embedding(n_items + 1, cfg.embedding_size, padding_idx=0)  # input and output
        self.emb_dropout = Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.embedding_size, cfg.hidden_size, cfg.num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        # RecBole's initialisation.
        nn.init.xavier_normal_(self.item_emb.weight)
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @property
    def n_negatives(self) -> int:
        return 1 if self.cfg.loss == "bce" else 0

    def encode(self, item: Tensor) -> Tensor:
        """item [B, L] (right-padded, 0 = padding) -> [B, L, e]: the state after each item, projected."""
        if item.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence width {item.shape[1]} exceeds max_len {self.cfg.max_len}")
        x = self.emb_dropout(self.item_emb(item))  # [B, L, e]
        out, _ = self.gru(x)  # [B, L, h]
        return self.dense(out)  # [B, L, e]

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        h, target, neg = self.encode(batch["item"]), batch["target"], batch.get("negative")  # h [B, L, d]
        if target.dim() == 1:  # single-target samples (train_windows prefixes/random_target): last state
            h, target = self._last(h, batch["length"])[:, None], target[:, None]
            neg = neg[:, :1] if neg is not None else None
        return next_item_loss(h, target, self.item_emb.weight, self.cfg.loss, neg)

    @staticmethod
    def _last(h: Tensor, length: Tensor) -> Tensor:
        last = (length - 1).clamp(min=0)  # [B] right padding: the latest item is at length - 1
        return h.gather(1, last.view(-1, 1, 1).expand(-1, 1, h.shape[-1])).squeeze(1)  # [B, e]

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        h = self._last(self.encode(batch["item"]), batch["length"])  # [B, e]
        return h @ self.item_emb.weight.T  # [B, n_items + 1]
