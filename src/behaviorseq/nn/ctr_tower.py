"""Pieces shared by the long-sequence CTR models: the per-field embedding tables, the prediction tower, DARE's
official initialisation, its L2 term, and the [v, h, v * h] target representation.

The tower follows the official DARE code (``thuml/DARE``, brief 1.1): BatchNorm -> Linear(200) -> PReLU
-> Linear(80) -> PReLU -> output. It ends in one logit with BCE instead of two logits with a 2-way
softmax: softmax([z0, z1])[0] = sigmoid(z0 - z1), so the function class is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class CTRTower(nn.Module):
    """BatchNorm1d(in) then [Linear -> PReLU] per hidden size, then Linear(1). [B, in] -> logits [B]."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (200, 80)):
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim)]
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.PReLU()]
            d = h
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


class FastEmbedding(nn.Embedding):
    """``nn.Embedding`` whose lookup is ``weight.index_select``: the same values and gradients (a test), but
    the backward is one index-add instead of the CPU embedding backward, which sorts the ids and was
    about half of a TWIN / DARE training step at B = 2048, L = 200 (3x slower on the lookups alone).
    No padding_idx, max_norm or sparse gradients (the ranking models use none of them)."""

    def forward(self, ids: Tensor) -> Tensor:
        return self.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, self.embedding_dim)


def add_field_tables(module: nn.Module, n_items: int, n_categories: int, dim: int,
                     n_positions: int | None = None) -> None:
    """Register the ranking models' tables on ``module``: ``item_embedding`` (n_items + 1 rows, id 0 the padding),
    ``category_embedding`` and, with ``n_positions``, ``position_embedding``; ``dim`` columns each. The names
    (state-dict keys, the "embedding" that ``l2_penalty`` skips) and the order (``dare_init_``'s draws) are the
    models' own, so checkpoints and seeded runs stay as they were."""
    module.item_embedding = FastEmbedding(n_items + 1, dim)
    module.category_embedding = FastEmbedding(n_categories + 1, dim)
    if n_positions:
        module.position_embedding = FastEmbedding(n_positions, dim)


def embed_fields(module: nn.Module, item: Tensor, category: Tensor, position: Tensor | None = None) -> Tensor:
    """[...] ids -> [..., n_fields * dim]: the tables of ``add_field_tables`` concatenated; the position field
    only when ``module`` has its table."""
    parts = [module.item_embedding(item), module.category_embedding(category)]
    if getattr(module, "position_embedding", None) is not None:
        parts.append(module.position_embedding(position))
    return torch.cat(parts, dim=-1)


def target_representation(v: Tensor, h: Tensor) -> Tensor:
    """TWIN / DARE's MLP input [v, h, v * h] (the paper's sum_i w_i (e_i * v) is v * h). [B, 3D]."""
    return torch.cat([v, h, v * h], dim=-1)


def dare_init_(module: nn.Module, std: float = 0.01) -> None:
    """The official DARE initialisation: every parameter whose name has no "bias" ~ N(0, std), including
    embeddings, BatchNorm gamma (so gamma ~ 0) and PReLU slopes. Biases keep torch's default."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" not in name:
                p.normal_(0.0, std)


def l2_penalty(module: nn.Module) -> Tensor:
    """Sum of squares of the parameters whose names contain neither "bias" nor "embedding" (official
    DARE: this also covers BatchNorm and PReLU weights)."""
    terms = [p.pow(2).sum() for n, p in module.named_parameters()
             if p.requires_grad and "bias" not in n and "embedding" not in n]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def bce_with_logits(logit: Tensor, label: Tensor) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logit, label.to(logit.dtype))


def ctr_loss(model: nn.Module, out: dict[str, Tensor], label: Tensor, aux_weight: float, l2: float) -> Tensor:
    """BCE of the main head, plus ``aux_weight`` x BCE of the auxiliary head when ``out`` has one (TWIN, DARE and
    SIM / ETA with TWIN's ESU), plus ``l2`` x the L2 term (DARE's official regulariser)."""
    loss = bce_with_logits(out["logit"], label)
    if "aux_logit" in out:
        loss = loss + aux_weight * bce_with_logits(out["aux_logit"], label)
    return loss + l2 * l2_penalty(model) if l2 else loss


def require_fields(batch: dict[str, Tensor], names: Sequence[str], model: str) -> None:
    """Fail at once, naming the field, when a batch lacks a field the model reads."""
    missing = [n for n in names if n not in batch]
    if missing:
        raise KeyError(f"{model} reads batch field(s) {missing}; the batch has {sorted(batch)}")
