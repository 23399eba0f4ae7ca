"""ComiRec-SA: Controllable Multi-Interest Framework for Recommendation, self-attentive extractor
(Cen, Zhang, Zou, Zhou, Yang, Tang; KDD 2020, arXiv 2005.09347). Reference: THUDM/ComiRec (TF1),
``model.py`` (``Model_ComiRec_SA``).

The user's K interests are K attention read-outs of the history (Lin et al.'s structured
self-attention, d_a = 4d):
    A = softmax_L( W2 tanh(W1 (H + P) + b1) + b2 )      [B, K, L], padded positions at -2^32 + 1
    V = A H                                             [B, K, d]
with H the (masked) item embeddings and P a learned position table that enters the attention only.
Training reads out the interest closest to the target (hard argmax) and trains it with a sampled
softmax over the tied item table (shared negatives, logQ correction: see nn/sampled_softmax.py).
Serving scores an item by its best interest, max_k e_i . v_k, which is what pooling each interest's
top-N from an inner-product index (the official Faiss step) ranks by.

Deviations, one line each:
- Positions are slots from the oldest kept item (right padding), as the official fixed-width batches;
  a batch trimmed to its longest sequence uses the first slots of P, so results do not change.
- The sampled-softmax proposal ranks items by training frequency instead of renumbering item ids.
- Initialisation: Xavier-uniform for the embedding tables (TF's default glorot_uniform for
  ``get_variable``), torch's default for the dense layers.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.multi_interest import MultiInterestLoss, max_interest_scores

PAD_LOGIT = -(2.0 ** 32) + 1  # the official padding value for attention logits


class ComiRecSAConfig(StrictConfig):
    hidden_size: int = Field(64, gt=0)  # paper/code: d = 64
    num_interests: int = Field(4, gt=0)  # paper: K = 4
    max_len: int = Field(20, gt=0)  # code: 20 on Book, 50 on Taobao
    attn_factor: int = Field(4, gt=0)  # d_a = attn_factor * d (code: hidden_size * 4)
    add_pos: bool = True  # code: add_pos=True (positions in the attention only)
    loss: Literal["sampled", "full"] = "sampled"  # code: tf.nn.sampled_softmax_loss
    neg_ratio: int = Field(10, gt=0)  # code: num_sampled = 10 * batch, shared by the batch
    proposal: Literal["log_uniform", "unigram", "uniform"] = "log_uniform"  # TF's default sampler
    max_sample_fraction: float = Field(0.5, gt=0, le=1)  # cap on shared negatives (small catalogues)


@register("comirec_sa")
class ComiRecSA(nn.Module):
    Config = ComiRecSAConfig
    padding = "right"  # slot 0 = oldest kept item, as the official batches
    fields: tuple[str, ...] = ()
    n_negatives = 0  # negatives are drawn in the loss (shared by the batch), not by the batcher
    train_windows = "random_target"  # official: each step, random users and a uniform target index

    def __init__(self, cfg: ComiRecSAConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        d, k = cfg.hidden_size, cfg.num_interests
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)  # input and output table (tied)
        self.pos_emb = nn.Parameter(torch.empty(cfg.max_len, d))
        self.attn_hidden = nn.Linear(d, cfg.attn_factor * d)  # W1, b1
        self.attn_out = nn.Linear(cfg.attn_factor * d, k)  # W2, b2
        nn.init.xavier_uniform_(self.item_emb.weight)
        nn.init.xavier_uniform_(self.pos_emb)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.criterion = MultiInterestLoss(n_items, cfg.loss, cfg.neg_ratio, cfg.proposal, cfg.max_sample_fraction)

    def use_item_counts(self, counts) -> None:
        """Training item counts for the sampled-softmax proposal (called before training)."""
        self.criterion.use_item_counts(counts)

    def attention(self, item: Tensor) -> Tensor:
        """item [B, L] (right-padded) -> attention weights A [B, K, L], zero on padding."""
        L = item.shape[1]
        if L > self.cfg.max_len:
            raise ValueError(f"sequence width {L} exceeds max_len {self.cfg.max_len}")
        valid = item > 0  # [B, L]
        h = self.item_emb(item) * valid.unsqueeze(-1)  # [B, L, d]
        x = h + self.pos_emb[:L] if self.cfg.add_pos else h
        logits = self.attn_out(torch.tanh(self.attn_hidden(x))).transpose(1, 2)  # [B, K, L]
        # the official value, or the dtype's lowest where it does not fit (fp16 autocast: -2^32 overflows); either
        # way exp() of it is 0 next to any real logit
        logits = logits.masked_fill(~valid.unsqueeze(1), max(PAD_LOGIT, torch.finfo(logits.dtype).min))
        return torch.softmax(logits, -1) * valid.unsqueeze(1)  # the zero is exact for empty rows too

    def interests(self, batch: dict[str, Tensor]) -> Tensor:
        """The K interest vectors [B, K, d] (what serving puts through the item index)."""
        item = batch["item"]
        a = self.attention(item)  # [B, K, L]
        h = self.item_emb(item) * (item > 0).unsqueeze(-1)  # raw embeddings, without positions
        return a @ h  # [B, K, d]

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        # hard readout (the interest closest to the target), then the sampled or full softmax
        return self.criterion(self.interests(batch), batch["target"], self.item_emb.weight)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return max_interest_scores(self.interests(batch), self.item_emb.weight)  # [B, n_items + 1]
