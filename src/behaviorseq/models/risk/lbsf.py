"""LBSF: "Long-term Payment Behavior Sequence Folding for Default Risk Prediction" (Qiao, Tang, Ao, Yuan,
Liu, Shen, Zheng; Tencent Weixin + UCAS; arXiv 2411.15056). Brief: ``risk-fraud-tpp-agents.md`` section 2.

Confirmed by the paper's abstract and reviews: fold the payment sequence by merchant (per-merchant
chronological sub-sequences, processed in parallel, no external knowledge), multi-field behaviour
encoding (merchant name, description, time, amount), merchant-level aggregation, relational learning
across merchants giving the user representation, then a default head. Everything below that is not in
that list is the brief's reconstruction [R], configurable where it is a choice:

    x_{j,k} = FieldEncoder(payment k of merchant slot j) + P_pos(k)                   # [B, S, Lm, d]
    h_{j,:} = Transformer_intra(x_{j,:}) (masked, ``intra_layers`` blocks)             # [B, S, Lm, d]
    m_j = AttnPool(h_{j,:}) + MLP_s(stats_j) + E_type(top / rest)                       # [B, S, d]
    z = Transformer_cross([CLS; m_1..m_S]) (no slot position: permutation-invariant)   # [B, 1 + S, d]
    logit = MLP([z_CLS; max_j z_j])                                                     # [B]

Deviations / reconstructions, one line each:
- Folding (top-M by count, last Lm each, pooled "rest" slot) follows the brief's [R] recipe; see
  ``behaviorseq.data.folding`` for the ranking and tie rules.
- Within a merchant, order enters through a learned position over the Lm chronological slots plus the
  payment's recency and dt-since-previous features (brief: "Transformer over Lm with time encoding").
- Merchant statistics (count, sum, mean, std of amount, first/last-seen recency) are added, not concatenated.
- Text is hashed char n-grams through an EmbeddingBag, not a pretrained text encoder (none is offline here).
- The head reads the CLS output and a max-pool over the merchant outputs (both order-free); the max-pool
  lets one anomalous merchant (a dormant pillar, a stopped rent) reach the head directly and speeds up training.
- Loss: BCE with an optional positive-class weight (``pos_weight``); focal loss is not implemented.
- Not built: a label (performance) window after the cut with delayed or immature labels (each user has one
  label date, global or per user; payments at or after it are refused or dropped). The no-folding
  baselines are in ``flat_seq`` (flat Transformer, GRU) and ``chunked_seq`` (chunked Transformer).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.payment_fields import (
    PAYMENT_FIELDS,
    AttentionPool,
    BinaryRiskModel,
    Block,
    PaymentFieldEncoder,
    require_fields,
)

FIELDS = PAYMENT_FIELDS + ("txn_mask", "merchant_mask", "stats")
N_STATS = 6  # behaviorseq.data.folding.N_STATS (models import nn/ only; a test checks they agree)


class LBSFConfig(StrictConfig):
    d: int = Field(64, gt=0)  # brief [R]: d = 64-128
    heads: int = Field(2, gt=0)
    intra_layers: int = Field(1, ge=0)  # brief [R]: a 1-2 layer Transformer over Lm
    cross_layers: int = Field(2, ge=0)  # brief [R]: a 2-layer Transformer over merchants
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    n_hash: int = Field(2048, ge=2)  # hashed char n-gram buckets (shared by names and descriptions)
    max_days: int = Field(180, gt=0)  # recency embedding size (days before the label date)
    use_position: bool = True  # learned chronological position inside a merchant
    use_stats: bool = True  # add the merchant statistics to m_j
    pos_weight: float = Field(1.0, gt=0.0)  # BCE weight of the default class


@register("lbsf")
class LBSF(BinaryRiskModel):
    """Forward: a folded batch (``FIELDS``; payment fields [B, S, Lm], ``txn_mask`` [B, S, Lm],
    ``merchant_mask`` [B, S], ``stats`` [B, S, 6]; slot S-1 is the pooled rest) -> logits [B]."""

    Config = LBSFConfig
    fields = FIELDS

    def __init__(self, cfg: LBSFConfig, merchant_ngrams, description_ngrams, edges, max_per_merchant: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.d
        self.encoder = PaymentFieldEncoder(merchant_ngrams, description_ngrams, edges, d, cfg.n_hash, cfg.max_days)
        self.position = nn.Embedding(max_per_merchant, d) if cfg.use_position else None
        self.intra = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.intra_layers))
        self.pool = AttentionPool(d)
        self.stats = nn.Sequential(nn.Linear(N_STATS, d), nn.GELU(), nn.Linear(d, d)) if cfg.use_stats else None
        # Fixed rescaling of the stats to O(1): log1p(count), log1p(sum), mean, std of log1p(amount), recencies.
        self.register_buffer("stats_scale", torch.tensor([1 / 3, 1 / 8, 1 / 4, 1.0, 1.0, 1.0]))
        self.slot_type = nn.Embedding(2, d)  # 0: one of the top-M merchants, 1: the pooled rest
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.cross = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.cross_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), Dropout(cfg.dropout), nn.Linear(d, 1))
        nn.init.normal_(self.cls, std=0.02)

    def merchant_vectors(self, batch: dict) -> Tensor:
        """Intra-merchant aggregation: [B, S, d] merchant vectors m_j."""
        require_fields(batch, FIELDS, "LBSF")
        txn = batch["txn_mask"]  # [B, S, Lm]
        B, S, Lm = txn.shape
        x = self.encoder({k: batch[k] for k in PAYMENT_FIELDS})  # [B, S, Lm, d]
        if self.position is not None:
            x = x + self.position.weight[:Lm]
        x = x.reshape(B * S, Lm, -1)  # [B*S, Lm, d]: merchants processed in parallel
        valid = txn.reshape(B * S, Lm)
        for blk in self.intra:
            x = blk(x, valid)
        m = self.pool(x, valid).view(B, S, -1)  # [B, S, d]
        if self.stats is not None:
            m = m + self.stats(batch["stats"].float() * self.stats_scale)
        rest = torch.zeros(S, dtype=torch.long, device=m.device)
        rest[-1] = 1
        return m + self.slot_type(rest)

    def forward(self, batch: dict) -> Tensor:
        m = self.merchant_vectors(batch)  # [B, S, d]
        B = m.shape[0]
        z = torch.cat([self.cls.expand(B, -1, -1), m], dim=1)  # [B, 1 + S, d]
        ones = torch.ones(B, 1, dtype=torch.bool, device=m.device)
        valid = torch.cat([ones, batch["merchant_mask"]], dim=1)  # [B, 1 + S]
        for blk in self.cross:
            z = blk(z, valid)
        z = self.norm(z)
        zmax = z[:, 1:].masked_fill(~valid[:, 1:, None], -1e4).amax(dim=1) * valid[:, 1:].any(1, keepdim=True)
        return self.head(torch.cat([z[:, 0], zmax], dim=-1)).squeeze(-1)  # [B]
