"""ComiRec's own metric variants (THUDM/ComiRec @a576eed, ``src/train.py: evaluate_full``), kept apart from
the corrected ones in :func:`behaviorseq.metrics.set_metrics` so that numbers can be set beside the paper's.

Both official branches score a user's top-K list against the held-out target list ``iid_list`` (in its order,
repeats kept) and normalise the NDCG by the number of hits, not by min(|targets|, K), which ComiRec's issue #25
reports as a bug; the authors advise trusting only recall and HR. They differ in what they iterate over:

* ``master`` (NDCG "fixed"): over the top-K positions. A hit at position i adds 1 / log2(i + 2);
  recall = hits / len(iid_list).
* ``paper`` (the published numbers): over the target list. A target at list position j that is in the top-K
  set adds 1 / log2(j + 2), so the DCG ignores where in the top K it was retrieved, and a repeated target
  counts every time; recall = that count / len(iid_list).

In both, IDCG = sum_{i < n} 1 / log2(i + 2) with n the hit count, and a user with no hit scores 0. So
either NDCG is 1 whenever the hits fill the first ranks of their own loop, however few hits there are. The
master variant is never below the corrected NDCG; the paper variant can be (hits late in a long target list).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["comirec_official_metrics"]


def comirec_official_metrics(
    topk_items: Tensor | np.ndarray, targets: Tensor | np.ndarray, ks: Sequence[int] = (20, 50)
) -> dict[str, Tensor]:
    """Per-user ``recall_master@K, ndcg_master@K, recall_paper@K, ndcg_paper@K`` as ComiRec's two branches
    compute them (module docstring); HR is the same in both and in :func:`set_metrics`.

    Args:
        topk_items: ``[B, L]`` distinct recommended ids by decreasing score, ``L >= max(ks)``; 0 = empty slot.
        targets: ``[B, T]`` int target lists in their held-out order, 0 = pad. A bool mask is refused: the
            paper branch depends on the order of the list and both count repeats.
        ks: cut-offs.

    Returns:
        name -> ``[B]`` ``float64``.
    """
    top = torch.as_tensor(topk_items).long()
    t = torch.as_tensor(targets, device=top.device)
    if t.dtype == torch.bool or t.dim() != 2 or top.dim() != 2 or t.shape[0] != top.shape[0]:
        raise ValueError(f"need topk_items [B, L] and int targets [B, T] in held-out order, got "
                         f"{tuple(top.shape)} and {tuple(t.shape)} {t.dtype}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > top.shape[1]:
        raise ValueError(f"cut-offs {ks} must lie in 1..{top.shape[1]} (the recommended items per row)")
    t = t.long()
    real_t = t != 0
    n_list = real_t.sum(1).double()  # len(iid_list), repeats counted
    if n_list.numel() and n_list.min() < 1:
        raise ValueError("every row needs at least one target (drop users with an empty holdout)")
    width = max(ks[-1], t.shape[1])
    disc = 1.0 / torch.log2(torch.arange(width, device=top.device, dtype=torch.float64) + 2.0)
    cum = torch.cat([disc.new_zeros(1), disc.cumsum(0)])  # cum[n] = IDCG over n hits
    eq = (top[:, :, None] == t[:, None, :]) & real_t[:, None, :] & (top != 0)[:, :, None]  # [B, L, T]
    out: dict[str, Tensor] = {}
    for k in ks:  # loop over cut-offs only
        e = eq[:, :k]
        hit_pos = e.any(2).double()  # [B, K]: top position i is a target
        n = hit_pos.sum(1)
        dcg = (hit_pos * disc[:k]).sum(1)
        out[f"recall_master@{k}"] = n / n_list
        out[f"ndcg_master@{k}"] = torch.where(n > 0, dcg / cum[n.long()].clamp_min(1e-12), 0.0)
        in_top = e.any(1).double()  # [B, T]: target list position j is in the top-K set
        n = in_top.sum(1)
        dcg = (in_top * disc[: t.shape[1]]).sum(1)
        out[f"recall_paper@{k}"] = n / n_list
        out[f"ndcg_paper@{k}"] = torch.where(n > 0, dcg / cum[n.long()].clamp_min(1e-12), 0.0)
    return out
