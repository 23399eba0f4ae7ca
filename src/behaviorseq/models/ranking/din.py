"""DIN: "Deep Interest Network for Click-Through Rate Prediction" (Zhou et al., KDD 2018), run over the
whole long sequence (DIN-long: the accuracy anchor that TWIN, DARE and SDIM approximate), with the
scoring and tower of DARE's official code (``model_name=DIN``).

    e_j = [item; cat] in R^{2d}, the target v = [item_t; cat_t] (no position field)
    a_j = MLP([v, e_j, v - e_j, v * e_j]) / (2d)    (activation unit, Fig. 2; 36 PReLU units)
    h = sum_j softmax(a)_j e_j over the real behaviours; prediction tower([v, h, v * h])
Loss: BCE + l2 * sum ||W||^2 (no biases, no embeddings).

Deviations, one line each:
- Softmax-normalised weights and scores divided by the dim, as DARE's DIN; the DIN paper leaves weights unnormalised.
- No search and no auxiliary head: DARE's scripts run their DIN row with the same top-20 search and aux
  loss as TWIN / DARE (``-top_k 20 -use_aux_loss True``); this one attends to all L (the issue's DIN-long).
- The tower and the [v, h, v * h] input are DARE's (shared with TWIN / DARE for comparability); the DIN
  paper feeds [user features, h, v] into a 200-80 MLP with Dice.
- The activation unit never builds the [B, L, 4 * 2d] input (see ``nn.target_attention.DINActivationUnit``).
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.ctr_tower import (
    CTRTower,
    add_field_tables,
    bce_with_logits,
    dare_init_,
    embed_fields,
    l2_penalty,
    require_fields,
    target_representation,
)
from behaviorseq.nn.target_attention import DINActivationUnit, softmax_attention

FIELDS = ("item", "category", "target", "target_category")


class DINConfig(StrictConfig):
    max_len: int = Field(200, gt=0)  # the whole long sequence (DARE: 200)
    embedding_dim: int = Field(16, gt=0)  # per field (item, category); DARE scripts: 16
    attention_hidden: int = Field(36, gt=0)  # DARE's DIN: 36 units (DIN paper: 80-40 with Dice)
    mlp_hidden: tuple[int, ...] = (200, 80)  # DARE's main MLP
    l2: float = Field(1e-6, ge=0.0)  # DARE's weight_decay, applied by name (see nn.ctr_tower.l2_penalty)
    init_std: float | None = Field(0.01, gt=0.0)  # DARE's N(0, 0.01) on every non-bias parameter; None: torch default


@register("din")
class DIN(nn.Module):
    Config = DINConfig
    padding = "left"
    fields: tuple[str, ...] = ("category",)

    def __init__(self, cfg: DINConfig, n_items: int, n_categories: int):
        super().__init__()
        self.cfg, self.n_items, self.n_categories = cfg, n_items, n_categories
        d = cfg.embedding_dim
        add_field_tables(self, n_items, n_categories, d)
        self.activation_unit = DINActivationUnit(2 * d, cfg.attention_hidden)
        self.tower = CTRTower(6 * d, cfg.mlp_hidden)
        if cfg.init_std is not None:
            dare_init_(self, cfg.init_std)

    def embed(self, item: Tensor, category: Tensor) -> Tensor:
        return embed_fields(self, item, category)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Main logit [B] and the attention weights ``weights`` [B, L]."""
        require_fields(batch, FIELDS, "din")
        item = batch["item"]
        e = self.embed(item, batch["category"])  # [B, L, 2d]
        v = self.embed(batch["target"], batch["target_category"])  # [B, 2d]
        s = self.activation_unit(v, e) / e.shape[-1]
        h, w = softmax_attention(s, e, item > 0)
        return {"logit": self.tower(target_representation(v, h)), "scores": s, "weights": w}

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        loss = bce_with_logits(self(batch)["logit"], batch["label"])
        return loss + self.cfg.l2 * l2_penalty(self) if self.cfg.l2 else loss

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch)["logit"]
