"""Ranking metrics for next-item (one target) and user-holdout (target set) evaluation.

Conventions shared by every function here:

* ``scores`` is ``[B, N]`` over the whole item vocabulary; column 0 is the padding item and never takes
  part in a ranking (as if its score were ``-inf``).
* Ranks are 0-based: rank 0 means no other candidate is ahead of the target.
* Per-sample functions return ``float64`` tensors of shape ``[B]`` so that callers can sum them over
  chunks and over processes and divide once at the end (:func:`summarize`); means of means are never
  needed.

Everything is vectorized (comparisons against the target's score, ``topk``, ``gather``); there are no
Python loops over users or items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ExcludeLike",
    "per_sample_ranking_metrics",
    "ranking_metrics",
    "set_metrics",
    "summarize",
    "target_ranks",
    "topk_with_exclusion",
]

Ties = Literal["pessimistic", "optimistic", "average"]
Reduction = Literal["mean", "sum", "none"]
# A dense bool mask [B, N] (True = remove), or a sparse pair (row_idx [E], col_idx [E]).
ExcludeLike = Tensor | np.ndarray | tuple[Tensor | np.ndarray, Tensor | np.ndarray]

_TIES = ("pessimistic", "optimistic", "average")


def _as_tensor(x: Tensor | np.ndarray | Sequence, device: torch.device | None = None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device) if device is not None and t.device != device else t


def _as_scores(x) -> Tensor:
    """Scores as a tensor; bfloat16 (which numpy cannot hold) as float32, exactly: same order, same ties."""
    t = _as_tensor(x)
    return t.float() if t.dtype == torch.bfloat16 else t


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def _exclusion_mask(exclude: ExcludeLike | None, shape: tuple[int, int], device: torch.device) -> Tensor:
    """Dense bool mask ``[B, N]`` (True = remove) from a dense mask or a ``(row_idx, col_idx)`` pair."""
    if exclude is None:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    if isinstance(exclude, tuple):
        if len(exclude) != 2:
            raise ValueError("sparse exclude must be a pair (row_idx, col_idx)")
        rows = _as_tensor(exclude[0], device).long().reshape(-1)
        cols = _as_tensor(exclude[1], device).long().reshape(-1)
        if rows.shape != cols.shape:
            raise ValueError(
                f"exclude row_idx and col_idx differ in length: {rows.numel()} vs {cols.numel()}"
            )
        if rows.numel() and (
            rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0 or cols.max() >= shape[1]
        ):
            raise ValueError(f"exclude indices out of range for scores of shape {tuple(shape)}")
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        mask[rows, cols] = True
        return mask
    mask = _as_tensor(exclude, device)
    if mask.dtype != torch.bool:
        raise TypeError(f"a dense exclude mask must be bool, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"exclude mask has shape {tuple(mask.shape)}, scores have {tuple(shape)}")
    return mask


def _check_scores(scores: Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    if scores.is_floating_point():
        has_nan = np.isnan(scores.detach().numpy()).any() if scores.device.type == "cpu" else torch.isnan(scores).any()
        if has_nan:
            raise ValueError("scores contain NaN")


def target_ranks(
    scores: Tensor | np.ndarray,
    targets: Tensor | np.ndarray,
    *,
    exclude: ExcludeLike | None = None,
    ties: Ties = "pessimistic",
) -> Tensor:
    """0-based rank of each target among the non-padding, non-excluded items.

    Args:
        scores: ``[B, N]`` scores over all items; column 0 (padding) never counts.
        targets: ``[B]`` target item ids in ``1..N-1``.
        exclude: items to remove from the ranking (e.g. the user's history): a bool mask ``[B, N]``
            (True = remove) or a sparse pair ``(row_idx [E], col_idx [E])``. The target itself is never
            removed, even if listed.
        ties: how items scoring exactly the target's score count: ``"pessimistic"`` all of them are ahead,
            ``"optimistic"`` none is, ``"average"`` half of them are.

    Returns:
        ``[B]`` rank = #(others scoring strictly higher) + tie term; ``int64`` for ``"pessimistic"`` and
        ``"optimistic"``, ``float64`` (a multiple of 1/2) for ``"average"``.
    """
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    scores = _as_scores(scores)
    _check_scores(scores)
    b, n = scores.shape
    targets = _as_tensor(targets, scores.device).long()
    if tuple(targets.shape) != (b,):
        raise ValueError(f"targets must be [B]={b}, got shape {tuple(targets.shape)}")
    if b and (targets.min() < 1 or targets.max() >= n):
        raise ValueError(f"targets must be item ids in 1..{n - 1} (0 is the padding item)")
    rows = torch.arange(b, device=scores.device)
    s_t = scores[rows, targets].unsqueeze(1)
    if exclude is None:
        others = None  # fast path: count over all columns, then take out the padding column and the target
    else:
        others = ~_exclusion_mask(exclude, (b, n), scores.device)
        others[:, 0] = False  # padding item
        others[rows, targets] = False  # the target is not one of the "others" and is never excluded

    on_cpu = scores.device.type == "cpu"
    s_np, t_np = (scores.detach().numpy(), s_t.detach().numpy()) if on_cpu else (None, None)

    def count(op: str, self_hit: int) -> Tensor:
        # On CPU, numpy's comparison + count_nonzero is several times faster than torch's bool reduction.
        if on_cpu:
            hit = {"gt": np.greater, "eq": np.equal, "ge": np.greater_equal}[op](s_np, t_np)
            if others is None:
                return torch.from_numpy(np.count_nonzero(hit, axis=1) - hit[:, 0] - self_hit).long()
            return torch.from_numpy(np.count_nonzero(hit & others.numpy(), axis=1)).long()
        hit = {"gt": torch.gt, "eq": torch.eq, "ge": torch.ge}[op](scores, s_t)
        if others is None:
            return torch.count_nonzero(hit, dim=1) - hit[:, 0].long() - self_hit
        return torch.count_nonzero(hit.logical_and_(others), dim=1)

    if ties == "pessimistic":  # one pass: every other item scoring >= the target is ahead of it
        return count("ge", 1)
    higher = count("gt", 0)  # the target never scores above itself
    if ties == "optimistic":
        return higher
    tied = count("eq", 1)  # ... but always ties with itself
    return higher.double() + tied.double() / 2


def per_sample_ranking_metrics(
    ranks: Tensor | np.ndarray, ks: Sequence[int] = (5, 10, 20)
) -> dict[str, Tensor]:
    """Per-sample metrics of one target from its 0-based rank.

    For each ``K`` in ``ks``: ``hr@K`` = [rank < K] (equal to Recall@K with one target),
    ``ndcg@K`` = 1/log2(rank + 2) if rank < K else 0, ``mrr@K`` = 1/(rank + 1) if rank < K else 0;
    and the untruncated ``mrr`` = 1/(rank + 1). Fractional (``ties="average"``) ranks go through the same
    formulas.

    Args:
        ranks: ``[B]`` ranks from :func:`target_ranks` (int or float).
        ks: cut-offs.

    Returns:
        name -> ``[B]`` ``float64`` tensor, keys ordered ``hr@K, ndcg@K, mrr@K`` per K, then ``mrr``.
    """
    ks = _check_ks(ks)
    r = _as_tensor(ranks).double()
    if r.dim() != 1:
        raise ValueError(f"ranks must be [B], got shape {tuple(r.shape)}")
    if r.numel() and r.min() < 0:
        raise ValueError("ranks must be >= 0")
    ndcg = 1.0 / torch.log2(r + 2.0)
    rr = 1.0 / (r + 1.0)
    zero = torch.zeros_like(r)
    out: dict[str, Tensor] = {}
    for k in ks:  # loop over cut-offs only
        hit = r < k
        out[f"hr@{k}"] = hit.double()
        out[f"ndcg@{k}"] = torch.where(hit, ndcg, zero)
        out[f"mrr@{k}"] = torch.where(hit, rr, zero)
    out["mrr"] = rr
    return out


def ranking_metrics(
    ranks: Tensor | np.ndarray,
    ks: Sequence[int] = (5, 10, 20),
    *,
    n_items: int | None = None,
    reduction: Reduction = "mean",
) -> dict[str, float] | dict[str, Tensor]:
    """Batch ranking metrics from 0-based ranks (see :func:`per_sample_ranking_metrics`).

    Args:
        ranks: ``[B]`` ranks.
        ks: cut-offs.
        n_items: if given, the number of candidates a target was ranked among; ranks must then lie in
            ``[0, n_items - 1]`` (a ValueError otherwise, which catches a wrong exclusion or vocabulary).
        reduction: ``"mean"`` -> name -> float mean over the batch (nan for an empty batch);
            ``"sum"`` -> name -> float sum (pair with the count for :func:`summarize`);
            ``"none"`` -> name -> ``[B]`` ``float64`` tensor.
    """
    r = _as_tensor(ranks)
    if n_items is not None and r.numel() and r.max() > n_items - 1:
        raise ValueError(f"a rank exceeds n_items - 1 = {n_items - 1}")
    per = per_sample_ranking_metrics(r, ks)
    if reduction == "none":
        return per
    if reduction == "sum":
        return {k: float(v.sum()) for k, v in per.items()}
    if reduction == "mean":
        count = r.numel()
        return {k: (float(v.sum()) / count if count else float("nan")) for k, v in per.items()}
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def summarize(sums: Mapping[str, float | Tensor], count: int | Tensor) -> dict[str, float]:
    """Means from accumulated sums: ``{name: sums[name] / count}``.

    Args:
        sums: name -> sum over samples (float or 0-d tensor), e.g. per-sample metrics summed over chunks
            and all-reduced over processes.
        count: number of samples summed (int or 0-d tensor).
    """
    c = float(count)
    if c <= 0:
        raise ValueError(f"count must be positive, got {c}")
    return {k: float(v) / c for k, v in sums.items()}


def topk_with_exclusion(scores: Tensor | np.ndarray, k: int, exclude: ExcludeLike | None = None) -> Tensor:
    """Top-``k`` item ids per row, never returning the padding item 0 or an excluded item.

    Args:
        scores: ``[B, N]`` scores over all items (column 0 = padding).
        k: how many ids to return, ``1 <= k <= N``.
        exclude: bool mask ``[B, N]`` or sparse pair ``(row_idx, col_idx)`` of items to drop.

    Returns:
        ``int64`` ``[B, k]`` item ids by decreasing score. Where a row has fewer than ``k`` rankable items
        the tail is filled with 0 (padding, which never counts as a hit). Exact ties are ordered
        arbitrarily (by ``torch.topk``), and a rankable item whose score is ``-inf`` may be replaced by 0.
    """
    scores = _as_scores(scores)
    _check_scores(scores)
    b, n = scores.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    removed = _exclusion_mask(exclude, (b, n), scores.device).clone()
    removed[:, 0] = True
    masked = scores if scores.is_floating_point() else scores.double()
    masked = masked.masked_fill(removed, float("-inf"))
    idx = masked.topk(k, dim=1).indices
    return idx.masked_fill(removed.gather(1, idx), 0)


def _target_hits(topk_items: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``hits [B, K]`` bool and ``n_targets [B]`` int64 from a target mask or a padded target list."""
    b = topk_items.shape[0]
    if targets.dim() != 2 or targets.shape[0] != b:
        raise ValueError(f"targets must be [B={b}, N] bool or [B={b}, T] int, got {tuple(targets.shape)}")
    real = topk_items != 0
    if targets.dtype == torch.bool:  # mask over items [B, N]
        if topk_items.numel() and topk_items.max() >= targets.shape[1]:
            raise ValueError("topk_items hold ids beyond the width of the target mask")
        hits = targets.gather(1, topk_items) & real
        n_targets = targets[:, 1:].sum(1)
    else:  # padded id lists [B, T], 0 = pad; a repeated id counts once
        t = targets.long()
        hits = ((topk_items.unsqueeze(2) == t.unsqueeze(1)) & (t != 0).unsqueeze(1)).any(2) & real
        st = t.sort(1).values
        first = torch.ones_like(st, dtype=torch.bool)
        first[:, 1:] = st[:, 1:] != st[:, :-1]
        n_targets = ((st != 0) & first).sum(1)
    return hits, n_targets


def set_metrics(
    topk_items: Tensor | np.ndarray,
    targets: Tensor | np.ndarray,
    ks: Sequence[int] = (5, 10, 20),
) -> dict[str, Tensor]:
    """Per-sample metrics against a set of held-out targets (user-holdout protocols, e.g. ComiRec).

    For each ``K`` in ``ks``, with ``hits_i`` = [the item at position i of the top list is a target]:
    ``recall@K`` = sum_{i<K} hits_i / |targets|, ``hr@K`` = [any hit in the top K],
    ``ndcg@K`` = DCG / IDCG with DCG = sum_{i<K} hits_i / log2(i + 2) and
    IDCG = sum_{i < min(|targets|, K)} 1 / log2(i + 2).

    Args:
        topk_items: ``[B, L]`` distinct recommended ids by decreasing score, ``L >= max(ks)``; 0 = empty
            slot (never a hit). See :func:`topk_with_exclusion`.
        targets: either a bool mask ``[B, N]`` over item ids (column 0 ignored) or a padded ``int`` list
            ``[B, T]`` with 0 = pad. A repeated id counts once: the targets are a set, as the ComiRec paper
            defines them (its code divides by the list length, repeats included; see
            :func:`~behaviorseq.metrics.comirec_official.comirec_official_metrics`). Every row needs at
            least one target.
        ks: cut-offs.

    Returns:
        name -> ``[B]`` ``float64``: ``recall@K, hr@K, ndcg@K`` per K.
    """
    ks = _check_ks(ks)
    top = _as_tensor(topk_items).long()
    if top.dim() != 2:
        raise ValueError(f"topk_items must be [B, L], got shape {tuple(top.shape)}")
    if max(ks) > top.shape[1]:
        raise ValueError(f"max(ks)={max(ks)} exceeds the {top.shape[1]} recommended items per row")
    hits, n_targets = _target_hits(top, _as_tensor(targets, top.device))
    if n_targets.numel() and n_targets.min() < 1:
        raise ValueError("every row needs at least one target (drop users with an empty holdout)")
    kmax = max(ks)
    disc = 1.0 / torch.log2(torch.arange(kmax, device=top.device, dtype=torch.float64) + 2.0)
    cum_disc = disc.cumsum(0)
    hits_d = hits[:, :kmax].double()
    nt = n_targets.double()
    out: dict[str, Tensor] = {}
    for k in ks:  # loop over cut-offs only
        h = hits_d[:, :k]
        n_hit = h.sum(1)
        out[f"recall@{k}"] = n_hit / nt
        out[f"hr@{k}"] = (n_hit > 0).double()
        # IDCG over min(|targets|, K) positions. ComiRec's official code sums it over the hits instead
        # (issue #25); its two variants are metrics.comirec_official_metrics.
        idcg = cum_disc[n_targets.clamp(max=k) - 1]
        out[f"ndcg@{k}"] = (h * disc[:k]).sum(1) / idcg
    return out


def set_target_ranks(scores: Tensor | np.ndarray, targets: Tensor | np.ndarray, ties: Ties = "pessimistic") -> Tensor:
    """0-based rank of every target of a set ``[B, T]`` (0 = pad) under ``scores`` ``[B, N]`` (excluded items at
    -inf; column 0 never counts), with ties resolved as :func:`target_ranks` does for one target: of the other
    items scoring exactly a target's score, ``"pessimistic"`` puts all non-targets ahead, ``"optimistic"`` none,
    ``"average"`` half; targets tied with each other take consecutive ranks (in list order). Repeated target ids
    count once. Returns float64 ``[B, T]`` (``inf`` at padding and repeats)."""
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    scores = _as_tensor(scores).double()
    _check_scores(scores)
    targets = _as_tensor(targets, scores.device).long()
    s = scores.clone()
    s[:, 0] = -torch.inf  # padding is never an item
    st = s.gather(1, targets)  # [B, T]
    valid = targets > 0
    earlier_same = (targets.unsqueeze(2) == targets.unsqueeze(1)).tril(-1).any(2)  # a repeat of an earlier id
    valid &= ~earlier_same
    asc = torch.sort(s, dim=1).values  # ascending: counts by binary search
    greater = s.shape[1] - torch.searchsorted(asc, st, right=True)  # items strictly above the target
    tied = torch.searchsorted(asc, st, right=True) - torch.searchsorted(asc, st, right=False)  # incl. itself
    same = (st.unsqueeze(2) == st.unsqueeze(1)) & valid.unsqueeze(1) & valid.unsqueeze(2)  # [B, T, T]
    tied_targets = same.sum(2)  # tied targets, itself included
    before = same.tril(-1).sum(2)  # tied targets earlier in the list
    others = (tied - tied_targets).double()  # tied non-targets
    ahead = {"pessimistic": others, "optimistic": torch.zeros_like(others), "average": others / 2}[ties]
    rank = greater.double() + ahead + before.double()
    return torch.where(valid, rank, torch.full_like(rank, torch.inf))


def set_metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (5, 10, 20)) -> dict[str, Tensor]:
    """:func:`set_metrics` from per-target ranks ``[B, T]`` (:func:`set_target_ranks`; ``inf`` = not a target):
    ``recall@K`` = #(ranks < K) / |targets|, ``hr@K``, and ``ndcg@K`` with 1 / log2(rank + 2) per hit over
    IDCG of min(|targets|, K) positions. With untied scores it equals ``set_metrics`` on the top-K list."""
    ks = _check_ks(ks)
    n_targets = torch.isfinite(ranks).sum(1)
    if n_targets.numel() and n_targets.min() < 1:
        raise ValueError("every row needs at least one target (drop users with an empty holdout)")
    cum_disc = (1.0 / torch.log2(torch.arange(max(ks), dtype=torch.float64, device=ranks.device) + 2.0)).cumsum(0)
    out: dict[str, Tensor] = {}
    for k in ks:  # loop over cut-offs only
        hit = ranks < k
        n_hit = hit.sum(1).double()
        out[f"recall@{k}"] = n_hit / n_targets.double()
        out[f"hr@{k}"] = (n_hit > 0).double()
        dcg = torch.where(hit, 1.0 / torch.log2(ranks.clamp(max=k) + 2.0), torch.zeros_like(ranks)).sum(1)
        out[f"ndcg@{k}"] = dcg / cum_disc[n_targets.clamp(max=k) - 1]
    return out
