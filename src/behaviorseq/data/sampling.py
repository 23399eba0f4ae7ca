"""Negative samplers over items 1..n_items. Vectorised; each never returns the positive it is given.

Both take a ``numpy.random.Generator`` per call, so a trainer can derive it from (seed, epoch, step)
and resume to the exact same negatives. ``sample_rows`` is the evaluation form: each row's negatives are
a function of (seed, row key) alone, through a counter-based hash, so they do not depend on how rows are
chunked into batches or split over ranks.
"""

from __future__ import annotations

import numpy as np

from behaviorseq.data.store import SequenceStore


class InteractionSet:
    """Membership test for (user, item) pairs of a store: sorted int64 keys + ``searchsorted``."""

    def __init__(self, store: SequenceStore, events: np.ndarray | None = None):
        """``events``: flat event indices to include (e.g. the training events); default all."""
        self.n = np.int64(store.num_items + 1)
        users, items = store.event_user(), np.asarray(store.item)
        if events is not None:
            users, items = users[events], items[events]
        self.keys = np.unique(users.astype(np.int64) * self.n + items.astype(np.int64))

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        q = np.asarray(users, dtype=np.int64) * self.n + np.asarray(items, dtype=np.int64)
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == q


def repeats(x: np.ndarray) -> np.ndarray:
    """Bool [..., n]: True at every occurrence of a value after its first in the same row (last axis)."""
    order = np.argsort(x, axis=-1, kind="stable")
    s = np.take_along_axis(x, order, -1)
    dup = np.zeros(x.shape, dtype=bool)
    dup[..., 1:] = s[..., 1:] == s[..., :-1]
    out = np.empty_like(dup)
    np.put_along_axis(out, order, dup, -1)
    return out


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele et al. 2014) on uint64 arrays; wraps modulo 2**64."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def counter_uniform(seed: int, keys: np.ndarray, cols: np.ndarray, rnd: int) -> np.ndarray:
    """Float64 in [0, 1) per element, a deterministic function of (seed, key, column, round) only."""
    with np.errstate(over="ignore"):
        h = _mix64(np.full(np.shape(keys), np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))
        h = _mix64(h + np.asarray(keys).astype(np.uint64))
        h = _mix64(h + (np.uint64(rnd) << np.uint64(32)) + np.asarray(cols).astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class UniformSampler:
    """Uniform over the items other than the positive (exactly: draws among n_items - 1 ids)."""

    name = "uniform"

    def __init__(self, n_items: int, exclude: InteractionSet | None = None, max_rounds: int = 100):
        if n_items < 2:
            raise ValueError("negative sampling needs at least 2 items")
        self.n_items, self.exclude, self.max_rounds = n_items, exclude, max_rounds

    def _draw(self, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        has_pos = pos > 0
        r = rng.integers(1, self.n_items + 1 - has_pos.astype(np.int64), size=pos.shape)  # [1, n-1] or [1, n]
        return np.where(has_pos & (r >= pos), r + 1, r)

    def _from_uniform(self, pos: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``_draw`` with the variates given: never the positive."""
        has_pos = pos > 0
        m = self.n_items - has_pos.astype(np.int64)
        r = np.minimum((u * m).astype(np.int64), m - 1) + 1  # [1, m]
        return np.where(has_pos & (r >= pos), r + 1, r)

    def _reject(self, neg: np.ndarray, rep: np.ndarray, users, distinct: bool, redraw) -> np.ndarray:
        """Redraw (``redraw(bad, round)``, values for ``neg[bad]``) until no draw is the positive, an item the
        user interacted with (``exclude`` and ``users``) or, with ``distinct``, a repeat in its row."""
        check = self.exclude is not None and users is not None
        if distinct and rep.shape[-1] > self.n_items - 1:
            raise ValueError(f"cannot draw {rep.shape[-1]} distinct negatives from {self.n_items} items")
        u = np.broadcast_to(np.asarray(users)[..., None], rep.shape) if check else None
        for rnd in range(1, self.max_rounds + 1):
            bad = neg == rep
            if check:
                bad |= self.exclude.contains(u, neg)
            if distinct:
                bad |= repeats(neg)
            if not bad.any():
                return neg
            neg[bad] = redraw(bad, rnd)
        raise RuntimeError(f"negative sampler ({self.name}): after {self.max_rounds} rounds some draws still hit the "
                           "positive (it holds nearly all the probability mass), an item the user interacted with "
                           "(nearly every item), or a repeat (too few items left to draw the negatives distinct)")

    def sample(self, pos: np.ndarray, n: int, rng: np.random.Generator,
               users: np.ndarray | None = None, distinct: bool = False) -> np.ndarray:
        """pos [...]: positive ids (0 = none). Returns [..., n] negatives != pos (and, with ``exclude``
        and ``users`` [...], never an item the user interacted with). ``distinct``: the n negatives of a
        row are different items (sampled evaluation's "100 negatives": 101 distinct candidates); training
        negatives are independent draws."""
        pos = np.asarray(pos, dtype=np.int64)
        rep = np.broadcast_to(pos[..., None], pos.shape + (n,))
        neg = self._draw(rep, rng)
        if not ((self.exclude is not None and users is not None) or distinct):
            return neg
        return self._reject(neg, rep, users, distinct, lambda bad, rnd: self._draw(rep[bad], rng))

    def sample_rows(self, pos: np.ndarray, n: int, seed: int, rows: np.ndarray,
                    users: np.ndarray | None = None, distinct: bool = False) -> np.ndarray:
        """``sample`` for pos [B] where row b's negatives depend only on (seed, rows[b], pos[b], users[b]):
        the same rows give the same negatives in any batch, order or rank. Rejected draws (the positive,
        an excluded item, a repeat) are redrawn with the next round's variates."""
        pos = np.asarray(pos, dtype=np.int64)
        rep = np.broadcast_to(pos[:, None], (len(pos), n))
        keys = np.broadcast_to(np.asarray(rows, dtype=np.int64)[:, None], rep.shape)
        cols = np.broadcast_to(np.arange(n, dtype=np.int64), rep.shape)
        neg = self._from_uniform(rep, counter_uniform(seed, keys, cols, 0))
        return self._reject(neg, rep, users, distinct, lambda bad, rnd: self._from_uniform(
            rep[bad], counter_uniform(seed, keys[bad], cols[bad], rnd)))


class PopularitySampler(UniformSampler):
    """Items drawn with probability proportional to count**alpha (word2vec uses alpha = 0.75)."""

    name = "popularity"

    def __init__(self, counts: np.ndarray, alpha: float = 1.0, exclude: InteractionSet | None = None,
                 max_rounds: int = 100):
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"popularity sampler: alpha must be a number >= 0, got {alpha}")
        counts = np.asarray(counts, dtype=np.float64).copy()
        counts[0] = 0.0
        super().__init__(len(counts) - 1, exclude, max_rounds)
        w = np.where(counts > 0, counts, 1.0) ** alpha * (counts > 0)  # never padding or an unseen item (0**0 = 1)
        if w.sum() <= 0:
            raise ValueError("popularity sampler: all item counts are zero")
        self.cdf = np.cumsum(w) / w.sum()
        self.alpha = alpha

    def _draw(self, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.searchsorted(self.cdf, rng.random(pos.shape), side="right").clip(1, self.n_items)
        for _ in range(self.max_rounds):  # resample the draws that hit the positive
            hit = out == pos
            if not hit.any():
                return out
            out[hit] = np.searchsorted(self.cdf, rng.random(int(hit.sum())), side="right").clip(1, self.n_items)
        raise RuntimeError("popularity sampler: the positive holds nearly all the probability mass")

    def _from_uniform(self, pos: np.ndarray, u: np.ndarray) -> np.ndarray:
        """May return the positive: ``sample_rows`` redraws those with its next round."""
        return np.searchsorted(self.cdf, u, side="right").clip(1, self.n_items)


def item_counts(store: SequenceStore, events: np.ndarray | None = None) -> np.ndarray:
    """[num_items + 1] event counts per item (over ``events`` indices, e.g. the training events)."""
    items = np.asarray(store.item) if events is None else np.asarray(store.item)[events]
    return np.bincount(items, minlength=store.num_items + 1)


def make_sampler(name: str, store: SequenceStore, train_events: np.ndarray | None = None,
                 exclude_history: bool = False, alpha: float = 1.0) -> UniformSampler:
    exclude = InteractionSet(store) if exclude_history else None
    if name == "uniform":
        return UniformSampler(store.num_items, exclude)
    if name == "popularity":
        return PopularitySampler(item_counts(store, train_events), alpha, exclude)
    raise ValueError(f"unknown negative sampler {name!r}; valid: ['uniform', 'popularity']")
