"""DARE: "Long-Sequence Recommendation Models Need Decoupled Embeddings" (Feng et al., ICLR 2025,
arXiv 2410.02604), following the official code ``thuml/DARE`` (``model_name=DARE``).

TWIN with two independent embedding tables per field (item, category, position):
    attention tables E^A (dim d_A per field) -> search and attention scores only
    representation tables E^R (dim d_R per field) -> aggregated values and the target representation
    s_j = <v^A_[item,cat], e^A_j,[item,cat]> / sqrt(2 d_A) + <v^A_pos, e^A_j,pos> / sqrt(d_A)   (target pos id 0)
    S = topK(s) (non-differentiable); h = sum_{j in S} softmax_S(s)_j e^R_j in R^{3 d_R}
    main head: tower([v^R, h, v^R * h]) (9 d_R inputs); auxiliary head: the same with full softmax over all L,
    the only path that sends attention gradient to behaviours outside the top K.
Loss: BCE(main) + aux_loss_weight * BCE(aux) + l2 * sum ||W||^2 (no biases, no embeddings).
Init: N(0, 0.01) on every non-bias parameter (embeddings, BatchNorm gamma, PReLU slopes), as the official code.
Gradients from the scores reach only E^A; gradients from the aggregation and the MLP reach only E^R.

Bugs of the official code avoided (brief 1.6), one line each:
- Booleans are typed config fields, not argparse ``type=bool`` flags where "False" means True.
- Top-K is topk + gather over the batch, not a Python loop building a mask row by row.
- Padding is masked in the search (never chosen while K real behaviours exist) and in both softmaxes.
Deviations, one line each:
- One output logit with BCE instead of a 2-way softmax (equivalent, see ``nn.ctr_tower``).
- The position tables have max_len + 1 rows (ids 0..max_len) instead of 2000; the extra rows are never used.
- At evaluation the K chosen ids are embedded after the search (O(B K d_R)) instead of embedding all L.
- ``score_candidates`` is the serving path: E^A / E^R of the history looked up once per user, not per candidate.
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
    real_suffix,
    recency_positions,
    softmax_attention,
    topk_attention,
    topk_search,
)
from behaviorseq.nn.topk import topk_rows

FIELDS = ("item", "category", "target", "target_category")


class DAREConfig(StrictConfig):
    max_len: int = Field(200, gt=0)  # DARE scripts: 200 behaviours
    embedding_dim: int = Field(16, gt=0)  # d_R per field (item, category, position); DARE scripts: 16
    attention_dim: int | None = Field(None, gt=0)  # d_A per field; None: = embedding_dim (scripts)
    top_k: int = Field(20, gt=0)  # DARE scripts: 20
    use_position: bool = True  # DARE scripts: position ("time") field concatenated
    aux_loss_weight: float = Field(1.0, ge=0.0)  # DARE scripts: use_aux_loss=True, weight 1
    mlp_hidden: tuple[int, ...] = (200, 80)  # official main MLP
    aux_hidden: tuple[int, ...] = (200,)  # official auxiliary MLP
    l2: float = Field(1e-6, ge=0.0)  # official weight_decay, applied by name (see nn.ctr_tower.l2_penalty)
    init_std: float | None = Field(0.01, gt=0.0)  # official N(0, 0.01) on every non-bias parameter; None: torch default


class _FieldTables(nn.Module):
    """One embedding table per field; ``forward`` concatenates the fields: [...] -> [..., n_fields * dim]."""

    def __init__(self, n_items: int, n_categories: int, n_positions: int | None, dim: int):
        super().__init__()
        self.dim = dim
        add_field_tables(self, n_items, n_categories, dim, n_positions)

    def forward(self, item: Tensor, category: Tensor, position: Tensor) -> Tensor:
        return embed_fields(self, item, category, position)


@register("dare")
class DARE(nn.Module):
    Config = DAREConfig
    padding = "left"
    fields: tuple[str, ...] = ("category",)

    def __init__(self, cfg: DAREConfig, n_items: int, n_categories: int):
        super().__init__()
        self.cfg, self.n_items, self.n_categories = cfg, n_items, n_categories
        n_pos = cfg.max_len + 1 if cfg.use_position else None
        self.attention = _FieldTables(n_items, n_categories, n_pos, self.attention_dim)  # E^A
        self.representation = _FieldTables(n_items, n_categories, n_pos, cfg.embedding_dim)  # E^R
        n_fields = 3 if cfg.use_position else 2
        self.tower = CTRTower(3 * n_fields * cfg.embedding_dim, cfg.mlp_hidden)
        self.aux_tower = (CTRTower(3 * n_fields * cfg.embedding_dim, cfg.aux_hidden)
                          if cfg.aux_loss_weight > 0 else None)
        if cfg.init_std is not None:
            dare_init_(self, cfg.init_std)

    @property
    def attention_dim(self) -> int:
        return self.cfg.attention_dim or self.cfg.embedding_dim

    def attention_scores(self, v: Tensor, e: Tensor) -> Tensor:
        """v^A [B, F_A], e^A [B, L, F_A] -> s [B, L]; semantic and position parts scaled separately."""
        d = self.attention_dim
        sem = torch.bmm(e[..., :2 * d], v[:, :2 * d].unsqueeze(-1)).squeeze(-1) / math.sqrt(2 * d)
        if not self.cfg.use_position:
            return sem
        return sem + torch.bmm(e[..., 2 * d:], v[:, 2 * d:].unsqueeze(-1)).squeeze(-1) / math.sqrt(d)

    def forward(self, batch: dict[str, Tensor], aux: bool = False, detach_scores: bool = False) -> dict[str, Tensor]:
        """Main logit [B]; ``scores`` [B, L], ``topk_index`` / ``topk_weight`` [B, K]; ``aux_logit`` [B] if aux.

        ``detach_scores`` stops the gradient at the attention weights (the gradient-isolation test)."""
        require_fields(batch, FIELDS, "dare")
        item, category = batch["item"], batch["category"]
        B, W = item.shape
        mask = item > 0
        pos = recency_positions(W, item.device).expand(B, W)
        t, tc, t0 = batch["target"], batch["target_category"], torch.zeros_like(batch["target"])
        s = self.attention_scores(self.attention(t, tc, t0), self.attention(item, category, pos))  # [B, W]
        s_used = s.detach() if detach_scores else s
        v = self.representation(t, tc, t0)  # v^R [B, F_R]
        idx = topk_search(s, mask, self.cfg.top_k)
        e_full = None
        if aux and self.aux_tower is not None:
            e_full = self.representation(item, category, pos)  # [B, W, F_R], needed by the aux head anyway
            h, w, _ = topk_attention(s_used, e_full, mask, self.cfg.top_k, idx=idx)
        else:  # embed only the K chosen behaviours
            _, w, _ = topk_attention(s_used, None, mask, self.cfg.top_k, idx=idx)
            e_k = self.representation(item.gather(1, idx), category.gather(1, idx), pos.gather(1, idx))
            h = torch.bmm(w.unsqueeze(1), e_k).squeeze(1)
        out = {"logit": self.tower(target_representation(v, h)), "scores": s, "topk_index": idx, "topk_weight": w}
        if e_full is not None:
            h_full, _ = softmax_attention(s_used, e_full, mask)
            out["aux_logit"] = self.aux_tower(target_representation(v, h_full))
        return out

    def candidate_scores(self, v: Tensor, e: Tensor) -> Tensor:
        """Serving form of :meth:`attention_scores`: candidates v^A [C, F_A], one history e^A [L, F_A] -> s [C, L].
        The target's position id is 0 for every candidate, so the position part is one [L] row."""
        d = self.attention_dim
        q = v[:, :2 * d] / math.sqrt(2 * d)  # scale the [C, 2d] queries, not the [C, L] scores (one pass over them)
        if not self.cfg.use_position:
            return q @ e[:, :2 * d].T
        return torch.addmm((e[:, 2 * d:] @ v[0, 2 * d:] / math.sqrt(d)).unsqueeze(0), q, e[:, :2 * d].T)

    def search_candidates(self, history: dict[str, Tensor], candidates: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The search stage of :meth:`score_candidates`, E^A only: (scores [C, n], top-K indices [C, K']) over
        the history's n real behaviours (indices count from the first real one; K' = min(K, n))."""
        item, category = real_suffix(history["item"], history["category"], max_len=self.cfg.max_len)
        e = self.attention(item, category, recency_positions(item.shape[0], item.device))  # e^A [n, F_A], once
        t = candidates["target"]
        s = self.candidate_scores(self.attention(t, candidates["target_category"], torch.zeros_like(t)), e)
        return s, topk_rows(s, self.cfg.top_k)[1]  # torch.topk's values; a threshold scan on CPU (nn.topk)

    @inference
    def score_candidates(self, history: dict[str, Tensor], candidates: dict[str, Tensor]) -> Tensor:
        """Serving: one user's left-padded history ``item`` / ``category`` [L] and C candidates ``target`` /
        ``target_category`` [C] -> main logits [C]. Both tables embed the real behaviours once (per-user
        caches); the search is one [C, n] product and only the K chosen E^R rows are read per candidate.
        Equal to :meth:`score` on the history repeated per candidate (a test); runs in eval mode."""
        s, idx = self.search_candidates(history, candidates)
        item, category = real_suffix(history["item"], history["category"], max_len=self.cfg.max_len)
        e_r = self.representation(item, category, recency_positions(item.shape[0], item.device))  # [n, F_R]
        w = torch.softmax(s.gather(1, idx), dim=-1)  # [C, K']
        t = candidates["target"]
        v = self.representation(t, candidates["target_category"], torch.zeros_like(t))  # v^R [C, F_R]
        h = torch.bmm(w.unsqueeze(1), e_r[idx]).squeeze(1)
        return self.tower(target_representation(v, h))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return ctr_loss(self, self(batch, aux=True), batch["label"], self.cfg.aux_loss_weight, self.cfg.l2)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        """Main-head logits [B] (the auxiliary head is training-only)."""
        return self(batch)["logit"]
