"""TWIN: "TWo-stage Interest Network for Lifelong User Behavior Modeling in CTR Prediction at Kuaishou"
(Chang et al., KDD 2023), as configured in DARE's official code (``thuml/DARE``, ``model_name=twin``).

One embedding table per field (item, category, position) serves both stages:
    e_j = [item; cat; pos] in R^{3d}, the target v = [item_t; cat_t; pos_0] (position id 0)
    s_j = <v_[item,cat], e_j,[item,cat]> / sqrt(2d) + <v_pos, e_j,pos> / sqrt(d)   (DARE Sec. 3 / brief 1.1)
    search: S = topK(s) (non-differentiable); aggregation: h = sum_{j in S} softmax_S(s)_j e_j
    main head: tower([v, h, v * h]); auxiliary head: the same with full softmax attention over all L.
Loss: BCE(main) + aux_loss_weight * BCE(aux) + l2 * sum ||W||^2 (no biases, no embeddings).

Deviations, one line each:
- Top-K gathers the K scores and values (topk + gather) instead of the official per-row Python loop
  that re-masks the scores: the same function.
- One output logit with BCE instead of a 2-way softmax (equivalent, see ``nn.ctr_tower``).
- The position table has max_len + 1 rows (ids 0..max_len) instead of 2000; the extra rows are never used.
- The auxiliary head is computed only in ``loss`` (it never affects the main head's prediction).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.ctr_tower import (
    CTRTower,
    add_field_tables,
    ctr_loss,
    dare_init_,
    embed_fields,
    require_fields,
    target_representation,
)
from behaviorseq.nn.inference import inference
from behaviorseq.nn.target_attention import (
    candidate_topk_attention,
    esu_scores,
    real_suffix,
    recency_positions,
    softmax_attention,
    topk_attention,
)

FIELDS = ("item", "category", "target", "target_category")


class TWINConfig(StrictConfig):
    max_len: int = Field(200, gt=0)  # DARE scripts: 200 behaviours
    embedding_dim: int = Field(16, gt=0)  # per field (item, category, position); DARE scripts: 16
    top_k: int = Field(20, gt=0)  # DARE scripts: 20
    use_position: bool = True  # DARE scripts: position ("time") field concatenated
    aux_loss_weight: float = Field(1.0, ge=0.0)  # DARE scripts: use_aux_loss=True, weight 1
    mlp_hidden: tuple[int, ...] = (200, 80)  # official main MLP
    aux_hidden: tuple[int, ...] = (200,)  # official auxiliary MLP
    l2: float = Field(1e-6, ge=0.0)  # official weight_decay, applied by name (see nn.ctr_tower.l2_penalty)
    init_std: float | None = Field(0.01, gt=0.0)  # official N(0, 0.01) on every non-bias parameter; None: torch default


@register("twin")
class TWIN(nn.Module):
    Config = TWINConfig
    padding = "left"
    fields: tuple[str, ...] = ("category",)

    def __init__(self, cfg: TWINConfig, n_items: int, n_categories: int):
        super().__init__()
        self.cfg, self.n_items, self.n_categories = cfg, n_items, n_categories
        d = cfg.embedding_dim
        add_field_tables(self, n_items, n_categories, d, cfg.max_len + 1 if cfg.use_position else None)
        n_fields = 3 if cfg.use_position else 2
        self.tower = CTRTower(3 * n_fields * d, cfg.mlp_hidden)
        self.aux_tower = CTRTower(3 * n_fields * d, cfg.aux_hidden) if cfg.aux_loss_weight > 0 else None
        if cfg.init_std is not None:
            dare_init_(self, cfg.init_std)

    def embed(self, item: Tensor, category: Tensor, position: Tensor | None) -> Tensor:
        """[...] ids -> [..., n_fields * d]: the concatenated field embeddings."""
        return embed_fields(self, item, category, position)

    def attention_scores(self, v: Tensor, e: Tensor) -> Tensor:
        """v [B, F], e [B, L, F] -> s [B, L]; semantic and position parts scaled by their own sqrt(dim)."""
        return esu_scores(v, e, self.cfg.embedding_dim, self.cfg.use_position)

    def forward(self, batch: dict[str, Tensor], aux: bool = False) -> dict[str, Tensor]:
        """Main logit [B]; ``scores`` [B, L], ``topk_index`` / ``topk_weight`` [B, K]; ``aux_logit`` [B] if aux."""
        require_fields(batch, FIELDS, "twin")
        item, category = batch["item"], batch["category"]
        B, W = item.shape
        mask = item > 0
        pos = recency_positions(W, item.device).expand(B, W)
        e = self.embed(item, category, pos)  # [B, W, F]
        v = self.embed(batch["target"], batch["target_category"], torch.zeros_like(batch["target"]))  # [B, F]
        s = self.attention_scores(v, e)
        h, w, idx = topk_attention(s, e, mask, self.cfg.top_k)
        out = {"logit": self.tower(target_representation(v, h)), "scores": s, "topk_index": idx, "topk_weight": w}
        if aux and self.aux_tower is not None:
            h_full, _ = softmax_attention(s, e, mask)
            out["aux_logit"] = self.aux_tower(target_representation(v, h_full))
        return out

    def candidate_scores(self, v: Tensor, e: Tensor) -> Tensor:
        """Serving form of :meth:`attention_scores`: candidates v [C, F], one history e [L, F] -> s [C, L].
        The target's position id is 0 for every candidate, so the position part is one [L] row."""
        d = self.cfg.embedding_dim
        q = v[:, :2 * d] / math.sqrt(2 * d)  # scale the [C, 2d] queries, not the [C, L] scores (one pass over them)
        if not self.cfg.use_position:
            return q @ e[:, :2 * d].T
        return torch.addmm((e[:, 2 * d:] @ v[0, 2 * d:] / math.sqrt(d)).unsqueeze(0), q, e[:, :2 * d].T)

    @inference
    def score_candidates(self, history: dict[str, Tensor], candidates: dict[str, Tensor]) -> Tensor:
        """Serving: one user's left-padded history ``item`` / ``category`` [L] and C candidates ``target`` /
        ``target_category`` [C] -> main logits [C]. The history's real behaviours are embedded once (keys
        cached per user, as TWIN is served) and all C candidates are scored by one product; equal to
        :meth:`score` on the history repeated per candidate (a test); runs in eval mode."""
        item, category = real_suffix(history["item"], history["category"], max_len=self.cfg.max_len)
        e = self.embed(item, category, recency_positions(item.shape[0], item.device))  # [n, F]
        t = candidates["target"]
        v = self.embed(t, candidates["target_category"], torch.zeros_like(t))  # [C, F]
        h, _, _ = candidate_topk_attention(self.candidate_scores(v, e), e, self.cfg.top_k)
        return self.tower(target_representation(v, h))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return ctr_loss(self, self(batch, aux=True), batch["label"], self.cfg.aux_loss_weight, self.cfg.l2)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        """Main-head logits [B] (the auxiliary head is training-only)."""
        return self(batch)["logit"]
