"""Category diversity of a recommended list, ComiRec's Diversity@N (Cen et al., KDD 2020, arXiv 2005.09347).

``Diversity@N = sum_{j<k} [cate(i_j) != cate(i_k)] / (N (N - 1) / 2)``. Computed from per-row category counts
``c_g``: the same-category pairs are ``sum_g c_g (c_g - 1) / 2``, found as run lengths of the sorted categories,
so the cost is ``O(B N log N)`` whatever the number of categories.
Empty slots (item 0) are left out and ``N`` is the number of real items in the row, as in the official
``compute_diversity``, which divides by the length of the (possibly short) list; a row with fewer than two
real items has diversity 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["diversity_at_n"]


def _as_long(x: Tensor | np.ndarray | Sequence) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"expected integer ids, got dtype {t.dtype}")
    return t.long()


def diversity_at_n(items: Tensor | np.ndarray | Sequence, cate: Tensor | np.ndarray | Sequence) -> Tensor:
    """Per-row share of item pairs from different categories.

    Args:
        items: ``[B, N]`` recommended item ids; 0 = empty slot (left out). A repeated id counts twice
            (a pair of the same category).
        cate: ``[n_items + 1]`` integer category of each item id (entry 0 is ignored).

    Returns:
        ``float64`` ``[B]`` in ``[0, 1]``: ``(pairs - same-category pairs) / pairs`` with ``pairs = m (m - 1) / 2``
        over the ``m`` real items of the row; 0 where ``m < 2``.
    """
    top = _as_long(items)
    cat = _as_long(cate).to(top.device)
    if top.dim() != 2:
        raise ValueError(f"items must be [B, N], got shape {tuple(top.shape)}")
    if cat.dim() != 1:
        raise ValueError(f"cate must be [n_items + 1], got shape {tuple(cat.shape)}")
    if top.numel() and (top.min() < 0 or top.max() >= cat.numel()):
        raise ValueError(f"item ids must lie in 0..{cat.numel() - 1}, got range [{int(top.min())}, {int(top.max())}]")
    b, n = top.shape
    if top.numel() == 0:
        return torch.zeros(b, dtype=torch.float64, device=top.device)
    valid = top != 0
    c = cat[top]
    # Empty slots share one category below every real one, so they form one run at the front; masked below.
    c = torch.where(valid, c, c.min() - 1)
    c, order = torch.sort(c, dim=1)
    valid_sorted = valid.gather(1, order)
    pos = torch.arange(n, device=top.device).expand(b, n)
    new_run = torch.ones_like(valid)
    new_run[:, 1:] = c[:, 1:] != c[:, :-1]
    run_start = torch.where(new_run, pos, torch.zeros_like(pos)).cummax(dim=1).values
    # The j-th member of a run (0-based) pairs with the j before it: sum over a run of size c is c (c - 1) / 2.
    same = ((pos - run_start) * valid_sorted).sum(dim=1).double()
    m = valid.sum(dim=1).double()
    pairs = m * (m - 1) / 2
    return torch.where(pairs > 0, (pairs - same) / pairs.clamp(min=1), torch.zeros_like(pairs))
