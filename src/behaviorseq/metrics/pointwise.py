"""Pointwise (CTR-style) metrics: exact ROC AUC, group AUC and log loss.

Inputs may be numpy arrays, torch tensors (moved to CPU) or sequences; everything is computed in
``float64`` with numpy and returned as a Python float. AUC is the Mann-Whitney U statistic over
average ranks, so a tied (positive, negative) pair counts 1/2 and the result is exact up to float64
rounding of the final division.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["auc", "gauc", "logloss", "per_group_auc"]

GroupWeight = Literal["samples", "positives", "uniform"]


def _np(x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(labels: object, n: int | None = None) -> np.ndarray:
    y = _np(labels).reshape(-1)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"labels have {y.shape[0]} entries, expected {n}")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be binary (0/1 or bool)")
        y = y.astype(bool)
    return y


def _scores(scores: object) -> np.ndarray:
    s = _np(scores).reshape(-1).astype(np.float64)
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _average_ranks_sorted(keys_change: np.ndarray, n: int) -> np.ndarray:
    """1-based average ranks of a sorted array whose tie runs start where ``keys_change`` is True.

    ``keys_change`` is ``[n]`` bool with ``keys_change[0] = True``. A run occupying sorted positions
    ``a..b-1`` gets rank ``(a + 1 + b) / 2`` for each member.
    """
    starts = np.flatnonzero(keys_change)
    ends = np.append(starts[1:], n)
    avg = (starts + 1 + ends) / 2.0
    return np.repeat(avg, ends - starts)


def auc(labels: object, scores: object) -> float:
    """Exact ROC AUC, ties counted 1/2 (Mann-Whitney U with average ranks).

    Args:
        labels: ``[n]`` binary labels (0/1 or bool).
        scores: ``[n]`` real scores (higher = more likely positive), no NaN.

    Returns:
        P(score_pos > score_neg) + 1/2 P(tie); ``nan`` if only one class is present (or n = 0).
    """
    s = _scores(scores)
    y = _labels(labels, s.shape[0])
    n = s.shape[0]
    n_pos = int(y.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ss = s[order]
    change = np.empty(n, dtype=bool)
    change[0] = True
    change[1:] = ss[1:] != ss[:-1]
    ranks = _average_ranks_sorted(change, n)
    u = ranks[y[order]].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def per_group_auc(
    labels: object, scores: object, groups: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group in one vectorized pass (sort by (group, score), segment sums).

    Args:
        labels: ``[n]`` binary labels.
        scores: ``[n]`` scores, no NaN.
        groups: ``[n]`` group keys (e.g. user ids); any sortable dtype.

    Returns:
        ``(group_keys [G], aucs [G] float64, n_samples [G] int64, n_pos [G] int64)`` with groups in sorted
        key order; ``aucs`` is nan for a group with a single class.
    """
    s = _scores(scores)
    n = s.shape[0]
    y = _labels(labels, n)
    g = _np(groups).reshape(-1)
    if g.shape[0] != n:
        raise ValueError(f"groups have {g.shape[0]} entries, expected {n}")
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return g[:0], np.zeros(0), empty, empty
    order = np.lexsort((s, g))  # primary key: group, secondary: score
    gs, ss, ys = g[order], s[order], y[order]
    g_change = np.empty(n, dtype=bool)
    g_change[0] = True
    g_change[1:] = gs[1:] != gs[:-1]
    run_change = g_change.copy()
    run_change[1:] |= ss[1:] != ss[:-1]
    g_starts = np.flatnonzero(g_change)
    g_sizes = np.diff(np.append(g_starts, n))
    # Global average ranks of (group, score) runs minus the group's offset = average ranks within the group.
    ranks = _average_ranks_sorted(run_change, n) - np.repeat(g_starts, g_sizes)
    n_pos = np.add.reduceat(ys.astype(np.int64), g_starts)
    n_neg = g_sizes - n_pos
    rank_sum_pos = np.add.reduceat(np.where(ys, ranks, 0.0), g_starts)
    u = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    denom = n_pos * n_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = np.where(denom > 0, u / np.where(denom > 0, denom, 1), np.nan)
    return gs[g_starts], aucs, g_sizes.astype(np.int64), n_pos.astype(np.int64)


def gauc(labels: object, scores: object, groups: object, *, weight: GroupWeight = "samples") -> float:
    """Group AUC: weighted mean of per-group AUCs over groups holding both classes.

    Args:
        labels: ``[n]`` binary labels.
        scores: ``[n]`` scores, no NaN.
        groups: ``[n]`` group keys (usually user ids).
        weight: ``"samples"`` weight = number of samples (impressions) in the group, the DIN / DARE
            definition; ``"positives"`` = number of positives; ``"uniform"`` = 1 per group.

    Returns:
        The weighted mean; ``nan`` if no group holds both classes.
    """
    if weight not in ("samples", "positives", "uniform"):
        raise ValueError(f"weight must be 'samples', 'positives' or 'uniform', got {weight!r}")
    _, aucs, n_samples, n_pos = per_group_auc(labels, scores, groups)
    ok = ~np.isnan(aucs)
    if not ok.any():
        return float("nan")
    w = {"samples": n_samples, "positives": n_pos, "uniform": np.ones_like(n_samples)}[weight][ok]
    w = w.astype(np.float64)
    return float((w * aucs[ok]).sum() / w.sum())


def logloss(labels: object, probs: object, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[eps, 1 - eps]``.

    Args:
        labels: ``[n]`` binary labels (0/1 or bool).
        probs: ``[n]`` predicted probabilities of the positive class.
        eps: clipping bound, keeps the loss finite for 0/1 predictions.

    Returns:
        ``-mean(y log p + (1 - y) log(1 - p))``; ``nan`` for n = 0.
    """
    p = _np(probs).reshape(-1).astype(np.float64)
    y = _labels(labels, p.shape[0])
    if p.shape[0] == 0:
        return float("nan")
    if np.isnan(p).any():
        raise ValueError("probs contain NaN")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.where(y, np.log(p), np.log1p(-p)).mean())
