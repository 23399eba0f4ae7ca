"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018).

Follows the paper and its PyTorch reference pmixer/SASRec.pytorch (model.py, main.py):
item embeddings scaled by sqrt(d) plus learned positions, embedding dropout, then ``num_blocks`` of
    Q = LayerNorm(x);  x = Q + MHA(Q, x, x)  (causal);  x = LayerNorm(x);  x = x + FFN(x)
with padded positions zeroed after each block, a final LayerNorm, and the input item table reused as
the output layer ("shared item embedding").

Deviations from the reference, one line each:
- The point-wise FFN is two Linear layers instead of two 1x1 Conv1d: the same function and init.
- Padding keys are masked in attention (the reference attends to zeroed padding rows), so a
  prediction does not depend on how much padding precedes the sequence.
- Positions are right-aligned to the max_len table: the latest item always has position max_len - 1,
  as in the reference's fixed-width batches, also when a batch is narrower than max_len.
- loss="ce" (softmax over all items) is not in the paper; it is the variant most later papers report.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.losses import next_item_loss
from behaviorseq.nn.transformer import MultiHeadAttention, PointWiseFFN, attention_mask


class SASRecConfig(StrictConfig):
    hidden_size: int = Field(50, gt=0)  # paper (implementation details): d = 50
    num_blocks: int = Field(2, gt=0)  # paper: b = 2
    num_heads: int = Field(1, gt=0)  # paper: one head (two heads were no better in its ablation)
    # paper: 0.2 on MovieLens-1M, 0.5 on the sparse Amazon (Beauty, Games) and Steam sets
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    max_len: int = Field(50, gt=0)  # paper: n = 200 on MovieLens-1M, 50 on the others
    loss: Literal["bce", "ce"] = "bce"  # paper: BCE with one sampled negative per position
    init: Literal["xavier", "torch"] = "xavier"  # reference main.py: xavier_normal_ on every matrix

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> SASRecConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


@register("sasrec")
class SASRec(nn.Module):
    Config = SASRecConfig
    padding = "left"  # the latest item sits at position -1
    fields: tuple[str, ...] = ()

    def __init__(self, cfg: SASRecConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        d = cfg.hidden_size
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)  # input and output item table
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_dropout = Dropout(cfg.dropout)
        # LayerNorm eps 1e-8 as in the reference.
        self.attn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.num_blocks))
        self.attns = nn.ModuleList(MultiHeadAttention(d, cfg.num_heads, cfg.dropout)
                                   for _ in range(cfg.num_blocks))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.num_blocks))
        self.ffns = nn.ModuleList(PointWiseFFN(d, d, "relu", cfg.dropout, cfg.dropout)
                                  for _ in range(cfg.num_blocks))
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        if cfg.init == "xavier":
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @property
    def n_negatives(self) -> int:
        return 1 if self.cfg.loss == "bce" else 0

    def encode(self, item: Tensor) -> Tensor:
        """item [B, L] (left-padded, 0 = padding) -> hidden states [B, L, d]; position t sees items <= t."""
        return self._encode(item, last_only=False)

    def encode_last(self, item: Tensor) -> Tensor:
        """item [B, L] -> [B, d], ``encode(item)[:, -1]`` without the rest: the last block runs its query, FFN and
        norms at the latest position only (its keys and values still cover every position). The same states
        up to float rounding; fewer dropout draws in training, so not the same random stream."""
        return self._encode(item, last_only=True)[:, 0]

    def _encode(self, item: Tensor, last_only: bool) -> Tensor:
        L, max_len = item.shape[1], self.cfg.max_len
        if L > max_len:
            raise ValueError(f"sequence width {L} exceeds max_len {max_len}")
        valid = item > 0  # [B, L]
        keep = valid.unsqueeze(-1).to(self.item_emb.weight.dtype)  # [B, L, 1] the reference's timeline mask
        pos = torch.arange(max_len - L, max_len, device=item.device)  # [L]
        x = self.item_emb(item) * self.cfg.hidden_size ** 0.5 + self.pos_emb(pos)  # [B, L, d]
        x = self.emb_dropout(x) * keep
        mask = attention_mask(valid, causal=True)  # [B, 1, L, L]
        last = len(self.attns) - 1
        for i, (attn_norm, attn, ffn_norm, ffn) in enumerate(zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns)):
            if last_only and i == last:  # queries (and all that follows them) at the latest position only
                mask, keep = mask[:, :, -1:], keep[:, -1:]
                q = attn_norm(x[:, -1:])
            else:
                q = attn_norm(x)  # only the query is normalised (reference)
            x = q + attn(q, x, x, mask)  # [B, L, d] ([B, 1, d] in the last_only block)
            x = ffn_norm(x)
            x = (x + ffn(x)) * keep
        return self.last_norm(x)  # [B, L, d] or [B, 1, d]

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        target, neg = batch["target"], batch.get("negative")
        if target.dim() == 1:  # single-target samples (train_windows prefixes/random_target): last position
            h, target = self.encode_last(batch["item"])[:, None], target[:, None]  # [B, 1, d]
            neg = neg[:, :1] if neg is not None else None
        else:
            h = self.encode(batch["item"])  # [B, L, d]
        return next_item_loss(h, target, self.item_emb.weight, self.cfg.loss, neg)  # paper: BCE, 1 negative

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encode_last(batch["item"])  # [B, d] left padding: the latest item is at -1
        return h @ self.item_emb.weight.T  # [B, n_items + 1]
