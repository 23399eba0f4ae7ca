"""SIM (hard search): "Search-based User Interest Modeling with Lifelong Sequential Behavior Data for
Click-Through Rate Prediction" (Pi et al., CIKM 2020), hard-search variant, with DARE's "TWIN (hard)"
selection rule (brief 1.1) so that it is the category-match counterpart of TWIN / DARE.

    GSU (hard search): keep the behaviours whose category equals the target's, the most recent K of them;
        with fewer than K, fill up with the most recent other behaviours (DARE's rule)
    ESU: target attention over the K: s_j = <v, e_j> / sqrt(F) on e_j = [item; cat; pos], F = 3d,
        h = sum_{j in S} softmax_S(s)_j e_j; prediction tower([v, h, v * h])
Loss: BCE + l2 * sum ||W||^2 (no biases, no embeddings).

Deviations, one line each:
- SIM's ESU is multi-head attention with time-interval embeddings; this one is a single-head scaled dot
  product with a position field: by default one sqrt(3d) over [item; cat; pos] and no auxiliary head (the
  README's SIM rows). ``esu="twin"`` is TWIN's ESU exactly (semantic part over sqrt(2d), position part over
  sqrt(d), the auxiliary full-attention head), i.e. DARE's "TWIN (hard)": then only the search differs.
- The paper's search is an inverted index per user and category; the selection here is one top-K over
  a category-match key, the same result with static shapes.
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
from behaviorseq.nn.target_attention import (
    recency_positions,
    topk_search,
)

FIELDS = ("item", "category", "target", "target_category")


class SIMConfig(StrictConfig):
    max_len: int = Field(200, gt=0)  # DARE scripts: 200 behaviours
    embedding_dim: int = Field(16, gt=0)  # per field (item, category, position)
    top_k: int = Field(20, gt=0)  # DARE scripts: 20
    use_position: bool = True
    esu: Literal["plain", "twin"] = "plain"  # "twin": TWIN's score scaling and auxiliary head (module docstring)
    aux_loss_weight: float = Field(1.0, ge=0.0)  # esu="twin" only: weight of the auxiliary head (DARE: 1)
    aux_hidden: tuple[int, ...] = (200,)  # esu="twin" only: DARE's auxiliary MLP
    mlp_hidden: tuple[int, ...] = (200, 80)
    l2: float = Field(1e-6, ge=0.0)
    init_std: float | None = Field(0.01, gt=0.0)  # DARE's init, for comparability; None: torch default


def hard_search(category: Tensor, target_category: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices [B, min(k, L)] of the most recent same-category behaviours, then the most recent others.

    The key ranks every same-category behaviour above every other one and, within each group, later
    columns (more recent, left padding) first; padding ranks last (see ``topk_search``)."""
    width = category.shape[1]
    col = torch.arange(width, device=category.device, dtype=torch.float32)
    same = (category == target_category.unsqueeze(1)).float()
    return topk_search(same * width + col, mask, k)


@register("sim")
class SIM(nn.Module):
    Config = SIMConfig
    padding = "left"
    fields: tuple[str, ...] = ("category",)

    def __init__(self, cfg: SIMConfig, n_items: int, n_categories: int):
        super().__init__()
        self.cfg, self.n_items, self.n_categories = cfg, n_items, n_categories
        d = cfg.embedding_dim
        self.item_embedding = FastEmbedding(n_items + 1, d)
        self.category_embedding = FastEmbedding(n_categories + 1, d)
        n_fields = 3 if cfg.use_position else 2
        if cfg.use_position:
            self.position_embedding = FastEmbedding(cfg.max_len + 1, d)
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
        require_fields(batch, FIELDS, "sim")
        item, category = batch["item"], batch["category"]
        B, W = item.shape
        mask = item > 0
        idx = hard_search(category, batch["target_category"], mask, self.cfg.top_k)  # GSU
        pos = recency_positions(W, item.device).expand(B, W)
        v = self.embed(batch["target"], batch["target_category"], torch.zeros_like(batch["target"]))  # [B, F]
        return search_esu_heads(self, item, category, pos, v, idx, mask, aux)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return ctr_loss(self, self(batch, aux=True), batch["label"], self.cfg.aux_loss_weight, self.cfg.l2)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch)["logit"]
