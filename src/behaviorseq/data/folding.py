"""Fold a payment table by merchant (LBSF, arXiv 2411.15056; brief section 2 "Folding"), and the flat
"last N payments" view of the same window for the no-folding baselines. Vectorised numpy throughout.

Input: a flat table sorted by (user, time) (``PaymentData`` or plain arrays). Only payments with
``label_day - window_days <= time < label_day`` are used: nothing at or after the label date leaks in.
``label_day`` is one date for all users or one per user (each user's own observation date).

Folded output (``Folded``), with ``S = M + 1`` slots per user:
    slots 0..M-1: the user's top-M merchants in the window, ranked by payment count (desc), ties by the
        latest payment time (more recent first), then merchant id (asc);
    slot M ("rest"): every other merchant's payments pooled into one chronological sub-sequence.
Inside a slot the last ``Lm`` payments are kept in chronological order, left-aligned (position 0 is the
oldest kept). Per-payment fields are [U, S, Lm]; ``dt_prev`` (days since the previous payment of the
same slot, over the whole window, -1 for the first) is computed before truncation. ``stats`` [U, S, 6]
summarises the whole slot in the window: log1p(count), log1p(sum amount), mean and std of log1p(amount),
first-seen and last-seen recency as fractions of the window (0 where the slot is empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorseq.data.store import ragged_arange

FIELDS = ("merchant", "description", "amount", "days_before", "hour", "dow", "dt_prev")
N_STATS = 6


@dataclass(frozen=True, eq=False)
class Folded:
    """Per-payment ``fields`` (name -> [U, S, Lm] arrays; int64 ids, float64 amount / days / dt),
    ``txn_mask`` bool [U, S, Lm], ``merchant_mask`` bool [U, S], ``slot_merchant`` int64 [U, S] (0 for the
    rest slot and empty slots), ``stats`` float64 [U, S, 6], ``n_top`` = M, ``window_days``."""

    fields: dict
    txn_mask: np.ndarray
    merchant_mask: np.ndarray
    slot_merchant: np.ndarray
    stats: np.ndarray
    n_top: int
    window_days: float


@dataclass(frozen=True, eq=False)
class Flat:
    """The last ``N`` payments of each user in the window: ``fields`` name -> [U, N] arrays, right-padded
    (position 0 the oldest kept), ``mask`` bool [U, N]. ``dt_prev`` is per merchant, as in :class:`Folded`."""

    fields: dict
    mask: np.ndarray
    window_days: float


def _check(n_users: int, user, time, merchant, amount, description, label_day, window_days: float):
    arrays = {"user": user, "time": time, "merchant": merchant, "amount": amount, "description": description}
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    n = arrays["user"].shape[0]
    for k, v in arrays.items():
        if v.ndim != 1 or v.shape[0] != n:
            raise ValueError(f"folding: field {k!r} must be 1-D with {n} entries, got shape {v.shape}")
    for k in ("user", "merchant", "description"):
        if arrays[k].dtype.kind not in "iu":
            raise ValueError(f"folding: field {k!r} must hold integers, got dtype {arrays[k].dtype}")
    if n and (arrays["user"].min() < 0 or arrays["user"].max() >= n_users):
        raise ValueError(f"folding: field 'user' must lie in [0, {n_users})")
    if n and arrays["merchant"].min() < 1:
        raise ValueError("folding: field 'merchant' must be >= 1 (0 is padding)")
    if not np.all(np.isfinite(arrays["time"])) or not np.all(np.isfinite(arrays["amount"])):
        raise ValueError("folding: fields 'time' and 'amount' must be finite")
    if n > 1:
        u, t = arrays["user"], arrays["time"]
        if np.any((u[1:] < u[:-1]) | ((u[1:] == u[:-1]) & (t[1:] < t[:-1]))):
            raise ValueError("folding: the table must be sorted by (user, time)")
    if not window_days > 0:
        raise ValueError(f"folding: window_days must be > 0, got {window_days}")
    ld = np.asarray(label_day, dtype=np.float64)
    if ld.ndim not in (0, 1) or (ld.ndim == 1 and ld.shape != (n_users,)) or not np.isfinite(ld).all():
        raise ValueError(f"folding: label_day must be a finite number or one per user [{n_users}], got shape {ld.shape}")
    arrays["label_day"] = np.broadcast_to(ld, (n_users,))[arrays["user"]] if n else np.zeros(0)  # per payment
    w = (arrays["time"] >= arrays["label_day"] - window_days) & (arrays["time"] < arrays["label_day"])
    return {k: v[w] for k, v in arrays.items()}


def _per_payment(a: dict) -> dict:
    t = a["time"]
    return {
        "merchant": a["merchant"].astype(np.int64), "description": a["description"].astype(np.int64),
        "amount": a["amount"].astype(np.float64), "days_before": (a["label_day"] - t).astype(np.float64),
        # from the second of the day, rounded: floor((t % 1) * 24) read 02:00:00 as 1.999... -> hour 1
        "hour": (np.round((t % 1.0) * 86400).astype(np.int64) // 3600) % 24,
        "dow": (np.floor(t).astype(np.int64) % 7),
    }


def _dt_prev(group: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Days since the previous row of the same group; rows must be sorted by (group, time). -1 for the first."""
    dt = np.full(t.shape[0], -1.0)
    if t.shape[0] > 1:
        same = group[1:] == group[:-1]
        dt[1:][same] = (t[1:] - t[:-1])[same]
    return dt


def fold_by_merchant(data=None, *, n_users: int | None = None, user=None, time=None, merchant=None,
                     amount=None, description=None, label_day: float | np.ndarray | None = None,
                     window_days: float = 180.0, n_top: int = 16, max_per_merchant: int = 16) -> Folded:
    """Fold the window ``[label_day - window_days, label_day)`` by merchant (module docstring).

    Pass a ``PaymentData`` as ``data`` or the arrays by name. Returns a :class:`Folded` with ``S =
    n_top + 1`` slots of ``max_per_merchant`` payments each.
    """
    if data is not None:
        n_users, user, time, merchant = data.n_users, data.user, data.time, data.merchant
        amount, description, label_day = data.amount, data.description, data.label_day
    if n_users is None or label_day is None:
        raise ValueError("folding: n_users and label_day are required")
    if n_top < 1 or max_per_merchant < 1:
        raise ValueError(f"folding: n_top and max_per_merchant must be >= 1, got {n_top}, {max_per_merchant}")
    a = _check(n_users, user, time, merchant, amount, description, label_day, window_days)
    M, Lm, S = n_top, max_per_merchant, n_top + 1
    u, t, m = a["user"].astype(np.int64), a["time"], a["merchant"].astype(np.int64)

    # Per (user, merchant) count and last time; rank merchants inside each user.
    key = u * (int(m.max(initial=0)) + 1) + m
    uk, first, inv, cnt = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    last_t = np.full(uk.shape[0], -np.inf)
    np.maximum.at(last_t, inv, t)
    g_user, g_merch = u[first], m[first]
    rank_order = np.lexsort((g_merch, -last_t, -cnt, g_user))  # user, count desc, latest desc, id asc
    g_sorted_user = g_user[rank_order]
    starts = np.searchsorted(g_sorted_user, g_sorted_user, side="left")
    rank = np.empty(uk.shape[0], dtype=np.int64)
    rank[rank_order] = np.arange(uk.shape[0]) - starts
    g_slot = np.minimum(rank, M)
    slot = g_slot[inv]  # [P']

    # Sort by (user, slot, time): the input is time-sorted inside users, so a stable sort on (user, slot).
    order = np.argsort(u * S + slot, kind="stable")
    u, slot = u[order], slot[order]
    pay = _per_payment({k: v[order] for k, v in a.items()})
    pay["dt_prev"] = _dt_prev(u * S + slot, a["time"][order])
    cell = u * S + slot
    n_cell = np.bincount(cell, minlength=n_users * S)
    pos_in_cell = ragged_arange(n_cell[n_cell > 0])  # rows are grouped by cell in increasing cell order
    pos = pos_in_cell - np.maximum(n_cell[cell] - Lm, 0)
    kept = pos >= 0
    fields = {}
    for k, v in pay.items():
        out = np.zeros((n_users, S, Lm), dtype=v.dtype)
        out[u[kept], slot[kept], pos[kept]] = v[kept]
        fields[k] = out
    txn_mask = np.zeros((n_users, S, Lm), dtype=bool)
    txn_mask[u[kept], slot[kept], pos[kept]] = True

    # Whole-slot statistics over the window.
    la = np.log1p(pay["amount"])
    s_cnt = n_cell.astype(np.float64)
    s_sum = np.bincount(cell, weights=pay["amount"], minlength=n_users * S)
    s_mean = np.bincount(cell, weights=la, minlength=n_users * S) / np.maximum(s_cnt, 1)
    s_sq = np.bincount(cell, weights=la * la, minlength=n_users * S) / np.maximum(s_cnt, 1)
    s_std = np.sqrt(np.maximum(s_sq - s_mean ** 2, 0.0))
    first_seen = np.zeros(n_users * S)
    last_seen = np.zeros(n_users * S)
    np.maximum.at(first_seen, cell, pay["days_before"])
    last_seen[:] = np.inf
    np.minimum.at(last_seen, cell, pay["days_before"])
    last_seen[s_cnt == 0] = 0.0
    stats = np.stack([np.log1p(s_cnt), np.log1p(s_sum), s_mean, s_std, first_seen / window_days,
                      last_seen / window_days], axis=1).reshape(n_users, S, N_STATS)
    slot_merchant = np.zeros((n_users, S), dtype=np.int64)
    top = g_slot < M
    slot_merchant[g_user[top], g_slot[top]] = g_merch[top]
    return Folded(fields=fields, txn_mask=txn_mask, merchant_mask=n_cell.reshape(n_users, S) > 0,
                  slot_merchant=slot_merchant, stats=stats, n_top=M, window_days=float(window_days))


def last_n(data=None, *, n_users: int | None = None, user=None, time=None, merchant=None, amount=None,
           description=None, label_day: float | np.ndarray | None = None, window_days: float = 180.0,
           max_len: int = 272) -> Flat:
    """The last ``max_len`` payments of each user in the window (the flat baselines' input)."""
    if data is not None:
        n_users, user, time, merchant = data.n_users, data.user, data.time, data.merchant
        amount, description, label_day = data.amount, data.description, data.label_day
    if n_users is None or label_day is None:
        raise ValueError("folding: n_users and label_day are required")
    if max_len < 1:
        raise ValueError(f"folding: max_len must be >= 1, got {max_len}")
    a = _check(n_users, user, time, merchant, amount, description, label_day, window_days)
    u = a["user"].astype(np.int64)
    pay = _per_payment(a)
    o = np.lexsort((a["time"], a["merchant"], u))  # dt_prev per (user, merchant)
    dt = np.empty(u.shape[0])
    dt[o] = _dt_prev(u[o] * (int(a["merchant"].max(initial=0)) + 1) + a["merchant"][o], a["time"][o])
    pay["dt_prev"] = dt
    n_u = np.bincount(u, minlength=n_users)
    pos = ragged_arange(n_u) - np.maximum(n_u[u] - max_len, 0)
    kept = pos >= 0
    fields = {}
    for k, v in pay.items():
        out = np.zeros((n_users, max_len), dtype=v.dtype)
        out[u[kept], pos[kept]] = v[kept]
        fields[k] = out
    mask = np.zeros((n_users, max_len), dtype=bool)
    mask[u[kept], pos[kept]] = True
    return Flat(fields=fields, mask=mask, window_days=float(window_days))
