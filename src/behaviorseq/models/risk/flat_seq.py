"""No-folding baselines for LBSF (brief section 2, "no folding baselines"): a flat Transformer and a GRU
over the user's last N payments in the window, with the same multi-field encoder as LBSF
(``behaviorseq.nn.payment_fields``). At equal budget N = (M + 1) * Lm, the number of payments LBSF sees.

    x_k = FieldEncoder(payment k) (+ P_recency(k) for the Transformer)          # [B, N, d]
    Transformer: z = Blocks([CLS; x]), logit = MLP(z_CLS)                       # [B]
    GRU: o = GRU(x), logit = MLP(o at the last valid payment)                   # [B]
    (``max_pool``: the MLP also reads max_k of the payment outputs)

Deviations, one line each:
- The Transformer's learned position counts back from the latest payment (recency rank), so truncation
  to the last N never shifts the position of recent payments.
- The GRU reads the payments oldest first (right-padded, packed), as GRU4Rec does.
- ``max_pool`` (off by default) adds LBSF's max-pool head; on the 90-day benchmark (seed 0) it did not help.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.payment_fields import (
    PAYMENT_FIELDS,
    BinaryRiskModel,
    Block,
    PaymentFieldEncoder,
    require_fields,
)

FIELDS = PAYMENT_FIELDS + ("mask",)


class FlatConfig(StrictConfig):
    kind: str = Field("transformer", pattern="^(transformer|gru)$")
    d: int = Field(64, gt=0)
    heads: int = Field(2, gt=0)
    layers: int = Field(2, ge=1)  # Transformer blocks or GRU layers
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    n_hash: int = Field(2048, ge=2)
    max_days: int = Field(180, gt=0)
    max_pool: bool = False  # head reads [summary; max over payments] like LBSF's; did not help here (report)
    pos_weight: float = Field(1.0, gt=0.0)


class FlatSequenceModel(BinaryRiskModel):
    """Forward: a flat batch (payment fields [B, N], right-padded, ``mask`` [B, N]) -> logits [B]."""

    Config = FlatConfig
    fields = FIELDS

    def __init__(self, cfg: FlatConfig, merchant_ngrams, description_ngrams, edges, max_len: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.d
        self.encoder = PaymentFieldEncoder(merchant_ngrams, description_ngrams, edges, d, cfg.n_hash, cfg.max_days)
        if cfg.kind == "transformer":
            self.position = nn.Embedding(max_len, d)
            self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
            self.norm = nn.LayerNorm(d)
        else:
            self.gru = nn.GRU(d, d, num_layers=cfg.layers, batch_first=True,
                              dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Linear(2 * d if cfg.max_pool else d, d), nn.GELU(), Dropout(cfg.dropout), nn.Linear(d, 1))

    def forward(self, batch: dict) -> Tensor:
        require_fields(batch, FIELDS, f"FlatSequenceModel({self.cfg.kind})")
        mask = batch["mask"]  # [B, N], right-padded
        x = self.encoder({k: batch[k] for k in PAYMENT_FIELDS})  # [B, N, d]
        n = mask.sum(dim=1)  # [B]
        if self.cfg.kind == "transformer":
            back = (n[:, None] - 1 - torch.arange(mask.shape[1], device=mask.device)).clamp(min=0)  # recency rank
            x = x + self.position(back)
            B = x.shape[0]
            z = torch.cat([self.cls.expand(B, -1, -1), x], dim=1)  # [B, 1 + N, d]
            valid = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
            for blk in self.blocks:
                z = blk(z, valid)
            z = self.norm(z)
            h, seq = z[:, 0], z[:, 1:]  # [B, d], [B, N, d]
        else:
            packed = pack_padded_sequence(x, n.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            out, hn = self.gru(packed)  # hn [layers, B, d]
            h = hn[-1] * (n > 0)[:, None]  # a user with no payment gets a zero state
        if self.cfg.max_pool:
            if self.cfg.kind == "gru":
                seq, _ = pad_packed_sequence(out, batch_first=True, total_length=mask.shape[1])  # [B, N, d]
            hmax = seq.masked_fill(~mask[..., None], -1e4).amax(dim=1) * (n > 0)[:, None]  # [B, d]
            h = torch.cat([h, hmax], dim=-1)
        return self.head(h).squeeze(-1)  # [B]


# The registry's names for the two kinds: the same model with ``kind`` fixed by its config.
class FlatTransformerConfig(FlatConfig):
    kind: Literal["transformer"] = "transformer"


class FlatGRUConfig(FlatConfig):
    kind: Literal["gru"] = "gru"


@register("flat_transformer")
class FlatTransformer(FlatSequenceModel):
    Config = FlatTransformerConfig


@register("flat_gru")
class FlatGRU(FlatSequenceModel):
    Config = FlatGRUConfig
