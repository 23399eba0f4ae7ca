"""Payment views kept as their real payments only, densified per batch of users.

A folded view (``folding.fold_by_merchant``: [users, S, Lm] per field) or a flat one (``folding.last_n``:
[users, N]) is mostly padding when users pay less than the budget: at 10 payments per user and a budget of 90 a
dense view held ~430 bytes per payment (815 MiB for 2M payments, 40 GiB for 100M). ``PackedView`` keeps each
real position once (CSR by user: its cell in the user's block and the field values, float32 where the model
reads float32) plus the small per-user arrays (folded: slot statistics, slot merchants, slot mask), and
``take(users)`` rebuilds the dense block of a batch. ``pack_view`` folds users in chunks, so the dense view
of all users never exists. ``to_tensors(view.take(u))`` equals ``to_tensors(dense)[u]`` bit for bit (a test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from behaviorseq.data.folding import Flat, Folded
from behaviorseq.data.store import ragged_arange


@dataclass(frozen=True, eq=False)
class PackedView:
    """``offsets`` [U + 1] into the packed positions; ``cell`` [P] each position's flat index in its user's
    block (slot * Lm + pos, or pos); ``fields`` name -> [P]; ``per_user`` name -> [U, ...]; ``shape`` the
    block shape ((S, Lm) folded, (N,) flat)."""

    offsets: np.ndarray
    cell: np.ndarray
    fields: dict
    per_user: dict
    shape: tuple
    n_top: int | None
    window_days: float

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def folded(self) -> bool:
        return len(self.shape) == 2

    def take(self, users) -> Folded | Flat:
        """The dense view of ``users`` (in that order), as the dense view's rows."""
        users = np.asarray(users, dtype=np.int64)
        start = self.offsets[users]
        n = self.offsets[users + 1] - start
        src = np.repeat(start, n) + ragged_arange(n)  # packed positions of the batch, user by user
        row = np.repeat(np.arange(len(users)), n)
        size = int(np.prod(self.shape))
        flat_at = row * size + self.cell[src]
        fields = {}
        for k, v in self.fields.items():
            out = np.zeros(len(users) * size, dtype=np.int64 if v.dtype.kind in "iu" else v.dtype)
            out[flat_at] = v[src]
            fields[k] = out.reshape(len(users), *self.shape)
        mask = np.zeros(len(users) * size, dtype=bool)
        mask[flat_at] = True
        mask = mask.reshape(len(users), *self.shape)
        if not self.folded:
            return Flat(fields=fields, mask=mask, window_days=self.window_days)
        p = {k: v[users] for k, v in self.per_user.items()}
        p["slot_merchant"] = p["slot_merchant"].astype(np.int64)
        return Folded(fields=fields, txn_mask=mask, merchant_mask=p["merchant_mask"], slot_merchant=p["slot_merchant"],
                      stats=p["stats"], n_top=int(self.n_top), window_days=self.window_days)


def _small_int(v: np.ndarray) -> type:
    lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
    for t in (np.int8, np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return t
    return np.int64


def pack(view: Folded | Flat) -> PackedView:
    """A dense view's real positions (reals as float32, which is what ``to_tensors`` gives the models)."""
    folded = isinstance(view, Folded)
    mask = view.txn_mask if folded else view.mask
    U, shape = mask.shape[0], mask.shape[1:]
    size = int(np.prod(shape))
    flat = mask.reshape(U, size)
    row, cell = np.nonzero(flat)  # row-major: grouped by user, cells ascending
    offsets = np.r_[0, np.cumsum(np.bincount(row, minlength=U))].astype(np.int64)
    fields = {}
    for k, v in view.fields.items():
        v = v.reshape(U, size)[row, cell]
        fields[k] = v.astype(np.float32) if v.dtype.kind == "f" else v.astype(_small_int(v))  # int64 again in take
    per_user = ({"merchant_mask": view.merchant_mask, "slot_merchant": view.slot_merchant.astype(_small_int(view.slot_merchant)),
                 "stats": view.stats.astype(np.float32)} if folded else {})
    return PackedView(offsets, cell.astype(np.int32), fields, per_user, tuple(shape),
                      view.n_top if folded else None, view.window_days)


def concat(parts: list[PackedView]) -> PackedView:
    first = parts[0]
    sizes = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, sizes)])
    cat = lambda name, d: {k: np.concatenate([getattr(p, name)[k] for p in parts]) for k in d}  # noqa: E731
    return PackedView(offsets, np.concatenate([p.cell for p in parts]), cat("fields", first.fields),
                      cat("per_user", first.per_user), first.shape, first.n_top, first.window_days)


def pack_view(make: Callable[..., Folded | Flat], data, chunk_users: int = 16384, **args) -> PackedView:
    """``pack(make(data, **args))`` without the dense view of every user: ``make`` (``fold_by_merchant`` or
    ``last_n``) runs on ``chunk_users`` users at a time. ``data``: a ``PaymentData`` sorted by (user, time)."""
    user = np.asarray(data.user)
    if len(user) and (user[0] < 0 or user[-1] >= data.n_users or (np.diff(user) < 0).any()):
        raise ValueError(f"pack_view: payments must be sorted by user, with users in [0, {data.n_users})")
    users = np.arange(0, data.n_users + chunk_users, chunk_users).clip(max=data.n_users)  # chunk bounds
    bounds = np.searchsorted(user, users)
    label_day = np.asarray(data.label_day, dtype=np.float64)

    def part(u0: int, u1: int, p0: int, p1: int) -> PackedView:
        return pack(make(n_users=u1 - u0, user=user[p0:p1] - u0, time=data.time[p0:p1], merchant=data.merchant[p0:p1],
                         amount=data.amount[p0:p1], description=data.description[p0:p1],
                         label_day=label_day if label_day.ndim == 0 else label_day[u0:u1], **args))

    parts = [part(0, 0, 0, 0)]  # an empty part first: zero users still give a view of the right shape
    for u0, u1, p0, p1 in zip(users[:-1], users[1:], bounds[:-1], bounds[1:]):
        if u1 > u0:
            parts.append(part(int(u0), int(u1), int(p0), int(p1)))
    return concat(parts)
