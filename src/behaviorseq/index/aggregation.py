"""Candidate pooling and ComiRec's controllable aggregation (Cen et al., KDD 2020, arXiv 2005.09347, Alg. 2).

A user's K interests each retrieve their own top-N; the K*N candidates are pooled with
``f(u, i) = max_k e_i . v_k`` (one copy per item, the best score). With ``lam = 0`` the top N by ``f`` are
returned (sort, dedupe, drop item 0, keep N). With ``lam > 0`` the N items are chosen greedily: each step
takes the remaining candidate maximising ``f(u, i) - lam * #{chosen items in i's category}``, which is the
marginal gain of ``Q(u, S) = sum_{i in S} f(u, i) + lam * sum_{i, j in S} [cate(i) != cate(j)]``
because ``|S|`` is the same for every candidate at a step.

Conventions: ``scores`` / ``items`` are ``[B, C]``; an empty slot is item 0 with score ``-inf``. Outputs are
numpy. Everything is vectorised over users; the greedy loop runs over the N steps only.
Deviation from the official code: its scan stops early once a raw score falls below the best adjusted
score (a serial speed-up with the same result); here each step is one argmax over all ``[B, C]`` candidates.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["SearchResult", "as_numpy", "controllable_aggregate", "dedupe_max", "merge_top_n"]


class SearchResult(NamedTuple):
    """Scores ``[B, n]`` (float) and item ids ``[B, n]`` (int64), best first; empty slots are ``(-inf, 0)``."""

    scores: np.ndarray
    items: np.ndarray


def as_numpy(x: Any, dtype: Any | None = None) -> np.ndarray:
    """A numpy array from a numpy array, a (possibly CUDA, possibly grad-tracking) torch tensor or a sequence."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16: float32 holds it exactly
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _check_pool(scores: Any, items: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_numpy(scores)
    it = as_numpy(items)
    if s.ndim != 2 or s.shape != it.shape:
        raise ValueError(f"scores and items must both be [B, C], got shapes {s.shape} and {it.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if it.size and not np.issubdtype(it.dtype, np.integer):
        raise ValueError(f"items must be integer ids, got dtype {it.dtype}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    it = it.astype(np.int64, copy=False)
    if it.size and it.min() < 0:
        raise ValueError(f"item ids must be >= 0 (0 = empty slot), got min {it.min()}")
    return s, it


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return int(n)


def dedupe_max(scores: Any, items: Any) -> SearchResult:
    """Keep one copy of each item per row, the one with the highest score; mask the rest.

    Args:
        scores: ``[B, C]`` float scores; ``-inf`` marks an empty slot.
        items: ``[B, C]`` int item ids; 0 marks an empty slot.

    Returns:
        ``[B, C]`` in the input positions: the best copy of each item keeps its score and id, every other
        copy, every item 0 and every ``-inf`` score becomes ``(-inf, 0)``.
    """
    s, it = _check_pool(scores, items)
    if s.size == 0:
        return SearchResult(s.copy(), it.copy())
    order = np.lexsort((-s, it), axis=-1)  # per row: by item id, then by score, best first
    si = np.take_along_axis(it, order, axis=1)
    first = np.ones_like(si, dtype=bool)
    first[:, 1:] = si[:, 1:] != si[:, :-1]
    keep = np.empty_like(first)
    np.put_along_axis(keep, order, first, axis=1)
    keep &= (it != 0) & (s > -np.inf)
    return SearchResult(np.where(keep, s, -np.inf).astype(s.dtype, copy=False), np.where(keep, it, 0))


def merge_top_n(scores: Any, items: Any, n: int) -> SearchResult:
    """Pool candidates: dedupe (best score per item), drop item 0, sort by score, keep the top ``n``.

    Ties in score keep their input order. Rows with fewer than ``n`` real candidates end in ``(-inf, 0)``.

    Returns:
        :class:`SearchResult` with scores ``[B, n]`` (the input float dtype) and items ``[B, n]`` int64.
    """
    n = _check_n(n)
    s, it = dedupe_max(scores, items)
    b, c = s.shape
    order = np.argsort(-s, axis=1, kind="stable")[:, :n]
    top_s = np.full((b, n), -np.inf, dtype=s.dtype)
    top_i = np.zeros((b, n), dtype=np.int64)
    top_s[:, : order.shape[1]] = np.take_along_axis(s, order, axis=1)
    top_i[:, : order.shape[1]] = np.take_along_axis(it, order, axis=1)
    return SearchResult(top_s, top_i)


def controllable_aggregate(scores: Any, items: Any, item_cate: Any, n: int, lam: float = 0.0) -> SearchResult:
    """ComiRec's controllable aggregation (Alg. 2): pick ``n`` of the pooled candidates, trading score for diversity.

    Args:
        scores: ``[B, C]`` candidate scores ``f(u, i)`` (duplicates allowed: the best copy counts; ``-inf`` =
            empty slot), e.g. :meth:`ItemIndex.search_pool`.
        items: ``[B, C]`` candidate item ids (0 = empty slot, never returned).
        item_cate: ``[n_items + 1]`` integer category of every item id (entry 0 is ignored).
        n: number of items to return per user.
        lam: diversity weight ``lambda >= 0``; 0 returns the plain top-``n`` merge (:func:`merge_top_n`).

    Returns:
        :class:`SearchResult` ``[B, n]``: the raw scores ``f(u, i)`` and ids of the chosen items in the order
        they were picked (for ``lam = 0``, decreasing score). Among equal adjusted scores the candidate with the
        higher raw score, then the earlier one, wins. Rows with fewer than ``n`` candidates end in ``(-inf, 0)``.
    """
    n = _check_n(n)
    is_real = isinstance(lam, (int, float, np.integer, np.floating)) and not isinstance(lam, bool)
    if not (is_real and math.isfinite(float(lam)) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    if float(lam) == 0.0:
        return merge_top_n(scores, items, n)
    cate = as_numpy(item_cate)
    if cate.ndim != 1 or (cate.size and not np.issubdtype(cate.dtype, np.integer)):
        raise ValueError(f"item_cate must be a 1-d integer array [n_items + 1], got shape {cate.shape}, "
                         f"dtype {cate.dtype}")
    # Every real candidate, best copy only, sorted by raw score (so argmax ties go to the higher raw score).
    s, it = _check_pool(scores, items)
    s, it = merge_top_n(s, it, max(1, s.shape[1]))
    if it.size and it.max() >= len(cate):
        raise ValueError(f"item id {it.max()} has no category: item_cate has {len(cate)} entries")
    b, c = s.shape
    f = s.astype(np.float64)
    cand_cate = cate[it]  # [B, C]; entries of empty slots are never used
    avail = it != 0
    n_same = np.zeros((b, c), dtype=np.float64)  # chosen items sharing each candidate's category
    rows = np.arange(b)
    out_s = np.full((b, n), -np.inf, dtype=s.dtype)
    out_i = np.zeros((b, n), dtype=np.int64)
    for t in range(min(n, c)):
        adjusted = np.where(avail, f - lam * n_same, -np.inf)  # marginal gain of Q(u, S), up to a constant
        j = np.argmax(adjusted, axis=1)
        ok = avail[rows, j]
        out_s[:, t] = np.where(ok, s[rows, j], -np.inf)
        out_i[:, t] = np.where(ok, it[rows, j], 0)
        avail[rows, j] = False
        n_same += (cand_cate == cand_cate[rows, j][:, None]) & ok[:, None]
    return SearchResult(out_s, out_i)
