"""ETA: "Efficient Long Sequential User Data Modeling for Click-Through Rate Prediction" (Chen et al.,
2021, arXiv 2108.04468; also "End-to-End User Behavior Retrieval in Click-Through Rate Prediction Model").

    search: SimHash the [item; cat] embeddings of the target and of every behaviour with m fixed random
        projections (sign bits); keep the K behaviours with the smallest Hamming distance to the target
        (computed as one matmul of +-1 codes: <c_t, c_j> = m - 2 * Hamming), non-differentiable
    ESU: target attention over the K: s_j = <v, e_j> / sqrt(F) on e_j = [item; cat; pos], F = 3d,
        h = sum_{j in S} softmax_S(s)_j e_j; prediction tower([v, h, v * h])
The hashed embeddings are the trained ones (end-to-end: the search follows the embeddings as they learn).
Loss: BCE + l2 * sum ||W||^2 (no biases, no embeddings).

Deviations, one line each:
- Ties in Hamming distance go to the more recent behaviour (a fraction < 1 added to the similarity).
- ETA's ESU is multi-head attention; this one is a single-head scaled dot product with a position field,
  as SIM's here: by default one sqrt(3d) and no auxiliary head; ``esu="twin"`` is TWIN's ESU exactly (split
  sqrt(2d) / sqrt(d) scaling, auxiliary head), so that only the search differs from TWIN / DARE.
- One output logit with BCE and DARE's tower and N(0, 0.01) init, for comparability.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.models.ranking.search_esu import search_esu_heads
from behaviorseq.nn.ctr_tower import (
    CTRTower,
    FastEmbedding,
    ctr_loss,
    dare_init_,
    require_fields,
)
from behaviorseq.nn.simhash import SimHash
from behaviorseq.nn.target_attention import (
    recency_positions,
    topk_search,
)

FIELDS = ("item", "category", "target", "target_category")


class ETAConfig(StrictConfig):
    max_len: int = Field(200, gt=0)  # DARE scripts: 200 behaviours
    embedding_dim: int = Field(16, gt=0)  # per field (item, category, position)
    top_k: int = Field(20, gt=0)  # DARE scripts: 20
    n_hashes: int = Field(64, gt=0)  # SimHash bits m
    hash_seed: int = 0  # seed of the fixed projections
    use_position: bool = True
    esu: Literal["plain", "twin"] = "plain"  # "twin": TWIN's score scaling and auxiliary head (module docstring)
    aux_loss_weight: float = Field(1.0, ge=0.0)  # esu="twin" only: weight of the auxiliary head (DARE: 1)
    aux_hidden: tuple[int, ...] = (200,)  # esu="twin" only: DARE's auxiliary MLP
    mlp_hidden: tuple[int, ...] = (200, 80)
    l2: float = Field(1e-6, ge=0.0)
    init_std: float | None = Field(0.01, gt=0.0)  # DARE's init, for comparability; None: torch default


def hamming_search(hasher: SimHash, query: Tensor, keys: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices [B, min(k, L)] of the keys [B, L, D] nearest to query [B, D] in Hamming distance of their
    SimHash bits; ties go to later (more recent) columns, padding last."""
    cq = hasher.bits(query).to(keys.dtype) * 2 - 1  # [B, m] in {-1, +1}
    ck = hasher.bits(keys).to(keys.dtype) * 2 - 1  # [B, L, m]
    agree = torch.bmm(ck, cq.unsqueeze(-1)).squeeze(-1)  # m - 2 * Hamming, exact small integers
    width = keys.shape[1]
    recency = torch.arange(width, device=keys.device, dtype=keys.dtype) / width  # in [0, 1): breaks ties only
    return topk_search(agree + recency, mask, k)


@register("eta")
class ETA(nn.Module):
    Config = ETAConfig
    padding = "left"
    fields: tuple[str, ...] = ("category",)

    def __init__(self, cfg: ETAConfig, n_items: int, n_categories: int):
        super().__init__()
        self.cfg, self.n_items, self.n_categories = cfg, n_items, n_categories
        d = cfg.embedding_dim
        self.item_embedding = FastEmbedding(n_items + 1, d)
        self.category_embedding = FastEmbedding(n_categories + 1, d)
        n_fields = 3 if cfg.use_position else 2
        if cfg.use_position:
            self.position_embedding = FastEmbedding(cfg.max_len + 1, d)
        self.hash = SimHash(2 * d, cfg.n_hashes, 1, cfg.hash_seed)
        self.tower = CTRTower(3 * n_fields * d, cfg.mlp_hidden)
        twin = cfg.esu == "twin" and cfg.aux_loss_weight > 0
        self.aux_tower = CTRTower(3 * n_fields * d, cfg.aux_hidden) if twin else None
        if cfg.init_std is not None:
            dare_init_(self, cfg.init_std)

    def embed(self, item: Tensor, category: Tensor, position: Tensor) -> Tensor:
        parts = [self.item_embedding(item), self.category_embedding(category)]
        if self.cfg.use_position:
            parts.append(self.position_embedding(position))
        return torch.cat(parts, dim=-1)

    def forward(self, batch: dict[str, Tensor], aux: bool = False) -> dict[str, Tensor]:
        """Main logit [B]; ``topk_index`` / ``topk_weight`` [B, K]; ``aux_logit`` [B] if aux (esu="twin")."""
        require_fields(batch, FIELDS, "eta")
        item, category = batch["item"], batch["category"]
        B, W = item.shape
        mask = item > 0
        t, tc = batch["target"], batch["target_category"]
        with torch.no_grad():  # the search is non-differentiable
            q = torch.cat([self.item_embedding(t), self.category_embedding(tc)], dim=-1)
            keys = torch.cat([self.item_embedding(item), self.category_embedding(category)], dim=-1)
            idx = hamming_search(self.hash, q, keys, mask, self.cfg.top_k)
        pos = recency_positions(W, item.device).expand(B, W)
        v = self.embed(t, tc, torch.zeros_like(t))  # [B, F]
        return search_esu_heads(self, item, category, pos, v, idx, mask, aux)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return ctr_loss(self, self(batch, aux=True), batch["label"], self.cfg.aux_loss_weight, self.cfg.l2)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch)["logit"]
