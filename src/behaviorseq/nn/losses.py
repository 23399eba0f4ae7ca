"""Next-item training losses shared by the sequential retrieval models (torch only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def next_item_loss(h: Tensor, target: Tensor, item_table: Tensor, kind: str, negative: Tensor | None = None) -> Tensor:
    """Loss of hidden states ``h`` [B, L, d] predicting ``target`` [B, L] (0 = padding, ignored).

    ``kind="bce"``: SASRec's binary cross-entropy of the target against one sampled ``negative`` [B, L],
    averaged over real positions. ``kind="ce"``: softmax cross-entropy over all items of ``item_table``
    [n_items + 1, d] (row 0, the padding item, is never a class).
    """
    valid = target > 0  # [B, L]
    if kind == "bce":
        if negative is None:
            raise KeyError("the bce loss needs batch['negative'] (one sampled negative per position)")
        pos = (h * item_table[target]).sum(-1)[valid]  # [N]
        neg = (h * item_table[negative]).sum(-1)[valid]  # [N]
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))
    if kind != "ce":
        raise ValueError(f"loss must be 'bce' or 'ce', got {kind!r}")
    logits = h[valid] @ item_table[1:].T  # [N, n_items]
    return F.cross_entropy(logits, target[valid] - 1)
