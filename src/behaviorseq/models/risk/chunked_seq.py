"""Chunked Transformer: the third no-folding baseline the LBSF brief lists (section 2, "Metrics": "flat
Transformer truncated to the last N, chunked Transformer, GRU"), the "naive chunking" the LBSF paper
argues loses long-range dependence (arXiv 2411.15056, motivation).

It is LBSF with the payments grouped by time instead of by merchant: the last N payments in the window
(the flat view) are cut into chunks of C consecutive payments, and each chunk goes through LBSF's
pieces (the multi-field encoder, an intra-chunk Transformer, attention pooling, a Transformer across
chunks with a CLS token, the CLS + max-pool head). At C = Lm and N = (M + 1) * Lm the tensors have
LBSF's shape, so a gap between the two is the folding's, not the architecture's:

    x_k = FieldEncoder(payment k) + P_pos(position of k in its chunk)          # [B, N, d]
    h_j = Transformer_intra(x of chunk j) (masked)                             # [B, J, C, d]
    c_j = AttnPool(h_j) + E_chunk(j)                                           # [B, J, d]
    z = Transformer_cross([CLS; c_1..c_J]), logit = MLP([z_CLS; max_j z_j])    # [B]

Deviations / choices, one line each:
- Chunks are counted back from the latest payment (chunk 0 holds the latest C), so truncation to the last
  N never moves recent payments between chunks; inside a chunk payments stay oldest first.
- Chunks carry a learned chunk position (chronology is what chunking keeps); LBSF's slots have none.
- No per-chunk statistics (LBSF's merchant statistics summarise a merchant over the whole window).
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

FIELDS = PAYMENT_FIELDS + ("mask",)


class ChunkedConfig(StrictConfig):
    chunk: int = Field(10, ge=1)  # C: payments per chunk (LBSF's Lm by default)
    d: int = Field(64, gt=0)
    heads: int = Field(2, gt=0)
    intra_layers: int = Field(1, ge=0)
    cross_layers: int = Field(2, ge=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    n_hash: int = Field(2048, ge=2)
    max_days: int = Field(180, gt=0)
    pos_weight: float = Field(1.0, gt=0.0)


@register("chunked_transformer")
class ChunkedTransformer(BinaryRiskModel):
    """Forward: a flat batch (payment fields [B, N], right-padded, ``mask`` [B, N]) -> logits [B]."""

    Config = ChunkedConfig
    fields = FIELDS

    def __init__(self, cfg: ChunkedConfig, merchant_ngrams, description_ngrams, edges, max_len: int):
        super().__init__()
        self.cfg = cfg
        d, C = cfg.d, cfg.chunk
        self.n_chunks = -(-max_len // C)
        self.encoder = PaymentFieldEncoder(merchant_ngrams, description_ngrams, edges, d, cfg.n_hash, cfg.max_days)
        self.position = nn.Embedding(C, d)
        self.intra = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.intra_layers))
        self.pool = AttentionPool(d)
        self.chunk_position = nn.Embedding(self.n_chunks, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.cross = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.cross_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), Dropout(cfg.dropout), nn.Linear(d, 1))
        nn.init.normal_(self.cls, std=0.02)

    def chunks(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Where each flat position goes: slot [B, N] in the [J * C] chunk layout (J * C for padding, a spare
        slot), and the chunk layout's mask [B, J, C]."""
        B, N = mask.shape
        C, J = self.cfg.chunk, self.n_chunks
        n = mask.sum(dim=1, keepdim=True)  # [B, 1]
        back = n - 1 - torch.arange(N, device=mask.device)  # recency rank: 0 = the latest payment
        j = back.clamp(min=0) // C
        pos = C - 1 - back.clamp(min=0) % C  # oldest first inside a chunk; the oldest chunk may start late
        slot = torch.where(mask, j * C + pos, torch.full_like(back, J * C))
        layout = torch.zeros(B, J * C + 1, dtype=torch.bool, device=mask.device)
        layout.scatter_(1, slot, mask)
        return slot, layout[:, :-1].reshape(B, J, C)

    def forward(self, batch: dict) -> Tensor:
        require_fields(batch, FIELDS, "ChunkedTransformer")
        mask = batch["mask"]  # [B, N], right-padded, oldest first
        x = self.encoder({k: batch[k] for k in PAYMENT_FIELDS})  # [B, N, d]
        B, N, d = x.shape
        C, J = self.cfg.chunk, self.n_chunks
        slot, valid = self.chunks(mask)
        x = x.new_zeros(B, J * C + 1, d).scatter(1, slot[..., None].expand(-1, -1, d), x)[:, :-1]
        h = x.reshape(B * J, C, d) + self.position.weight  # chunks processed in parallel
        v = valid.reshape(B * J, C)
        for blk in self.intra:
            h = blk(h, v)
        c = self.pool(h, v).view(B, J, d) + self.chunk_position.weight  # [B, J, d]
        has = valid.any(dim=2)  # [B, J]
        z = torch.cat([self.cls.expand(B, -1, -1), c], dim=1)  # [B, 1 + J, d]
        zv = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), has], dim=1)
        for blk in self.cross:
            z = blk(z, zv)
        z = self.norm(z)
        zmax = z[:, 1:].masked_fill(~has[..., None], -1e4).amax(dim=1) * has.any(1, keepdim=True)
        return self.head(torch.cat([z[:, 0], zmax], dim=-1)).squeeze(-1)  # [B]
