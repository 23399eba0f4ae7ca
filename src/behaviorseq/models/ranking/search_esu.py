"""What SIM and ETA share: their settings, the per-field tables, the ESU (target attention over the K behaviours a
search selected), the main head and, with ``esu="twin"``, TWIN's auxiliary head over all L behaviours. The models
differ only in ``search``, which chooses the K.

    ESU: s_j = <v, e_j> / sqrt(F) on e_j = [item; cat; pos], F = 3d (``esu="plain"``), or TWIN's split
        sqrt(2d) / sqrt(d) scaling (``esu="twin"``); h = sum_{j in S} softmax_S(s)_j e_j
    prediction: tower([v, h, v * h]); the target v = [item_t; cat_t; pos_0]
Loss: BCE(main) [+ aux_loss_weight * BCE(aux) with esu="twin"] + l2 * sum ||W||^2 (no biases, no embeddings).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.nn.ctr_tower import (
    CTRTower,
    add_field_tables,
    ctr_loss,
    dare_init_,
    embed_fields,
    require_fields,
    target_representation,
)
from behaviorseq.nn.target_attention import esu_scores, gather_rows, recency_positions, softmax_attention

FIELDS = ("item", "category", "target", "target_category")


class SearchESUConfig(StrictConfig):
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


class SearchESU(nn.Module):
    """A search (``search``, in the subclass) then the ESU and heads above."""

    padding = "left"
    fields: tuple[str, ...] = ("category",)
    name = "search_esu"  # the registered name, for error messages

    def __init__(self, cfg: SearchESUConfig, n_items: int, n_categories: int):
        super().__init__()
        self.cfg, self.n_items, self.n_categories = cfg, n_items, n_categories
        d = cfg.embedding_dim
        add_field_tables(self, n_items, n_categories, d, cfg.max_len + 1 if cfg.use_position else None)
        n_fields = 3 if cfg.use_position else 2
        self.tower = CTRTower(3 * n_fields * d, cfg.mlp_hidden)
        twin = cfg.esu == "twin" and cfg.aux_loss_weight > 0
        self.aux_tower = CTRTower(3 * n_fields * d, cfg.aux_hidden) if twin else None
        if cfg.init_std is not None:
            dare_init_(self, cfg.init_std)

    def embed(self, item: Tensor, category: Tensor, position: Tensor) -> Tensor:
        return embed_fields(self, item, category, position)

    def search(self, batch: dict[str, Tensor], mask: Tensor) -> Tensor:
        """The K behaviours' column indices [B, K] (non-differentiable)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor], aux: bool = False) -> dict[str, Tensor]:
        """Main logit [B]; ``topk_index`` / ``topk_weight`` [B, K]; ``aux_logit`` [B] if aux (esu="twin")."""
        require_fields(batch, FIELDS, self.name)
        item, category = batch["item"], batch["category"]
        B, W = item.shape
        mask = item > 0
        idx = self.search(batch, mask)  # GSU
        pos = recency_positions(W, item.device).expand(B, W)
        t = batch["target"]
        v = self.embed(t, batch["target_category"], torch.zeros_like(t))  # [B, F]
        cfg = self.cfg
        e = self.embed(gather_rows(item, idx), gather_rows(category, idx), gather_rows(pos, idx))  # [B, K, F]
        s = esu_scores(v, e, cfg.embedding_dim, cfg.use_position, cfg.esu)  # ESU scores [B, K]
        h, w = softmax_attention(s, e, gather_rows(mask, idx))
        out = {"logit": self.tower(target_representation(v, h)), "topk_index": idx, "topk_weight": w}
        if aux and self.aux_tower is not None:  # TWIN's auxiliary head: full attention over all L
            e_all = self.embed(item, category, pos)
            h_all, _ = softmax_attention(esu_scores(v, e_all, cfg.embedding_dim, cfg.use_position), e_all, mask)
            out["aux_logit"] = self.aux_tower(target_representation(v, h_all))
        return out

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return ctr_loss(self, self(batch, aux=True), batch["label"], self.cfg.aux_loss_weight, self.cfg.l2)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch)["logit"]
