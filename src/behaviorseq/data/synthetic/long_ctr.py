"""Planted long-sequence CTR data (DARE brief 1.7): the click depends on a few behaviours buried deep in
a long history among distractors, and the generator returns their positions as ground truth.

Items ``1..n_items`` each have a category (``1..n_categories``, every category non-empty) and a latent
vector ``z_i`` in ``R^latent_dim``: uniform on the sphere, then centred within its category and scaled
to a mean squared norm of 1. Centring means neither the target's category nor, on average over users,
the target item alone predicts the click: only the history does. Every user has a history of
``L_u`` behaviours (``min_len <= L_u <= max_len``) and ``n_interests`` distinct interest categories.
The history is split into a *deep* part, its oldest ``floor(deep_fraction * L_u)`` positions, and a
*recent* part. For each interest category ``c`` the generator plants

* ``n_relevant`` behaviours of category ``c`` at random positions of the deep part (the relevant ones),
* ``n_decoys`` behaviours of category ``c`` at random positions of the recent part (same category, but
  too recent to count: only attention that uses position can tell them apart),

and fills every other position with distractors: items of categories outside the user's interests.
Items of a category are drawn uniformly. A sample is a target item of one of the user's interest
categories ``c`` and a label drawn with

    P(click) = sigmoid(signal_scale * <z_target, mean of z_j over the relevant behaviours of c> + bias)

so a model has to find the deep same-category behaviours (search / attention) and read their latent
vectors (representation). A shortcut exists: targets come from the same small categories as the relevant
behaviours, and the target's own item is among them for 44% of samples (PLANTED, L = 200), so counting copies of
the target's id in the deep half reaches AUC 0.70 against Bayes 0.83 (``benchmarks/planted_shortcuts.py``). Samples share their user's whole history (history end = the last event)
and take roles train / valid / test at random with the given fractions. Everything is vectorised over
events and samples and reproducible from ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from behaviorseq.data.ctr import TEST, TRAIN, VALID, CTRData
from behaviorseq.data.store import ragged_arange
from behaviorseq.data.synthetic._checks import is_int, is_real

NAME = "synthetic-long-ctr"


@dataclass(frozen=True)
class LongCTRConfig:
    """Parameters of :func:`generate_long_ctr`; every value is checked on construction (``ValueError``).

    Attributes:
        n_users: number of users (history rows ``0..n_users-1``).
        n_items: number of items, ids ``1..n_items``; at least ``n_categories``.
        n_categories: number of categories, ids ``1..n_categories``; more than ``n_interests``.
        latent_dim: dimension of the items' latent vectors.
        min_len, max_len: history lengths are uniform integers in ``[min_len, max_len]``.
        n_interests: interest categories per user (targets come from these).
        n_relevant: planted relevant behaviours per interest category, all in the deep part.
        n_decoys: same-category behaviours per interest category in the recent part (not relevant).
        deep_fraction: the oldest ``floor(deep_fraction * L)`` positions form the deep part, in (0, 1).
        signal_scale: multiplies the latent dot product in the click logit, ``>= 0``.
        bias: the click logit's offset.
        samples_per_user: samples (target, label) per user.
        valid_fraction, test_fraction: probability of a sample being valid / test.
        seed: seed of ``numpy.random.default_rng``.
    """

    n_users: int = 2000
    n_items: int = 1000
    n_categories: int = 50
    latent_dim: int = 8
    min_len: int = 200
    max_len: int = 200
    n_interests: int = 4
    n_relevant: int = 5
    n_decoys: int = 2
    deep_fraction: float = 0.5
    signal_scale: float = 8.0
    bias: float = 0.0
    samples_per_user: int = 20
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        ints = ("n_users", "n_items", "n_categories", "latent_dim", "min_len", "max_len", "n_interests",
                "n_relevant", "n_decoys", "samples_per_user", "seed")
        for name in ints:
            v = getattr(self, name)
            if not is_int(v):
                raise ValueError(f"LongCTRConfig.{name} must be an int, got {v!r}")
            if v < (0 if name in ("n_decoys", "seed") else 1):
                raise ValueError(f"LongCTRConfig.{name} must be >= {0 if name in ('n_decoys', 'seed') else 1}, got {v}")
        for name in ("deep_fraction", "signal_scale", "bias", "valid_fraction", "test_fraction"):
            if not is_real(getattr(self, name)):
                raise ValueError(f"LongCTRConfig.{name} must be a finite number, got {getattr(self, name)!r}")
        if self.n_items < 2 * self.n_categories:  # latents are centred per category: a category of one item has a
            # zero latent (a constant click probability), and all of them made every probability NaN
            raise ValueError(f"LongCTRConfig.n_items ({self.n_items}) must be >= 2 x n_categories ({self.n_categories})")
        if self.n_categories <= self.n_interests:
            raise ValueError(f"LongCTRConfig.n_categories ({self.n_categories}) must exceed n_interests "
                             f"({self.n_interests}) so that distractor categories exist")
        if self.max_len < self.min_len:
            raise ValueError(f"LongCTRConfig.max_len ({self.max_len}) must be >= min_len ({self.min_len})")
        if not 0.0 < self.deep_fraction < 1.0:
            raise ValueError(f"LongCTRConfig.deep_fraction must be in (0, 1), got {self.deep_fraction}")
        deep = math.floor(self.deep_fraction * self.min_len)
        if deep < self.n_interests * self.n_relevant:
            raise ValueError(f"LongCTRConfig: the deep part of the shortest history ({deep} positions) cannot hold "
                             f"n_interests * n_relevant = {self.n_interests * self.n_relevant} planted behaviours")
        if self.min_len - deep < self.n_interests * self.n_decoys:
            raise ValueError(f"LongCTRConfig: the recent part of the shortest history ({self.min_len - deep} "
                             f"positions) cannot hold n_interests * n_decoys = {self.n_interests * self.n_decoys}")
        if self.signal_scale < 0:
            raise ValueError(f"LongCTRConfig.signal_scale must be >= 0, got {self.signal_scale}")
        if min(self.valid_fraction, self.test_fraction) < 0 or self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("LongCTRConfig.valid_fraction and test_fraction must be >= 0 with a sum below 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class LongCTRTruth:
    """The planted structure of a :func:`generate_long_ctr` data set.

    Attributes:
        item_category: int64 [n_items + 1], category of each item (0 for padding id 0).
        item_latent: float64 [n_items + 1, latent_dim], latent vectors, zero mean per category (row 0 zero).
        interests: int64 [n_users, n_interests], each user's interest categories, sorted.
        relevant_index: int64 [n_users, n_interests, n_relevant], history indices (0 = oldest) of the
            relevant behaviours of each interest, sorted.
        decoy_index: int64 [n_users, n_interests, n_decoys], history indices of the recent decoys.
        sample_interest: int64 [S], which interest (column of ``interests``) each sample's target is from.
        click_prob: float64 [S], the true click probability of each sample.
        config: the generating config.
    """

    item_category: np.ndarray
    item_latent: np.ndarray
    interests: np.ndarray
    relevant_index: np.ndarray
    decoy_index: np.ndarray
    sample_interest: np.ndarray
    click_prob: np.ndarray
    config: LongCTRConfig

    def relevant_positions(self, data: CTRData, samples: np.ndarray) -> np.ndarray:
        """History indices (0 = oldest) of each sample's relevant behaviours: int64 [n, n_relevant]."""
        samples = np.asarray(samples, dtype=np.int64)
        return self.relevant_index[data.user[samples], self.sample_interest[samples]]

    def relevant_columns(self, data: CTRData, samples: np.ndarray, width: int) -> np.ndarray:
        """Columns of each sample's relevant behaviours in a left-padded batch of ``width`` columns whose
        last column is the latest history event (as :class:`CTRBatcher` builds it); -1 where a
        relevant behaviour lies outside the window. int64 [n, n_relevant]."""
        samples = np.asarray(samples, dtype=np.int64)
        hist_len = data.hist_end[samples] - data.offsets[data.user[samples]]
        col = width - (hist_len[:, None] - self.relevant_positions(data, samples))
        return np.where(col >= 0, col, -1)


def generate_long_ctr(config: LongCTRConfig) -> tuple[CTRData, LongCTRTruth]:
    """Generate the planted long-sequence CTR data of the module docstring.

    Returns ``(data, truth)``: ``data.events`` holds ``item`` and ``category`` per event, ``data.item_fields``
    holds ``category`` per item, and every sample's history is its user's whole history.
    """
    c = config
    rng = np.random.default_rng(c.seed)
    n_cat, n_int = c.n_categories, c.n_interests

    # Items: every category non-empty, the rest uniform; latent vectors uniform on the sphere.
    cats = np.concatenate([np.arange(1, n_cat + 1), rng.integers(1, n_cat + 1, c.n_items - n_cat)])
    item_category = np.concatenate([[0], rng.permutation(cats)]).astype(np.int64)
    latent = rng.standard_normal((c.n_items + 1, c.latent_dim))
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)
    latent[0] = 0.0
    cat_count = np.bincount(item_category[1:], minlength=n_cat + 1)
    cat_sum = np.zeros((n_cat + 1, c.latent_dim))
    np.add.at(cat_sum, item_category[1:], latent[1:])
    latent[1:] -= (cat_sum / np.maximum(cat_count, 1)[:, None])[item_category[1:]]  # zero mean per category
    latent /= np.sqrt(np.mean(np.sum(latent[1:] ** 2, axis=1)))  # mean squared norm 1
    by_cat = np.argsort(item_category[1:], kind="stable") + 1  # item ids grouped by category
    cat_start = np.cumsum(cat_count) - cat_count

    def draw_items(categories: np.ndarray) -> np.ndarray:
        u = rng.random(len(categories))
        return by_cat[cat_start[categories] + (u * cat_count[categories]).astype(np.int64)]

    # Users: lengths, interests (distinct, sorted), and the events' places.
    lens = rng.integers(c.min_len, c.max_len + 1, c.n_users, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    interests = np.sort(np.argsort(rng.random((c.n_users, n_cat)), axis=1)[:, :n_int] + 1, axis=1)
    row = np.repeat(np.arange(c.n_users, dtype=np.int64), lens)
    pos = ragged_arange(lens)  # history index, 0 = oldest
    deep = pos < np.floor(c.deep_fraction * lens).astype(np.int64)[row]

    # A random rank of every event within its (user, part) region: the first ranks are the planted ones.
    region = 2 * row + deep
    order = np.lexsort((rng.random(len(row)), region))
    reg_sorted = region[order]
    first = np.flatnonzero(np.r_[True, reg_sorted[1:] != reg_sorted[:-1]])
    run = np.diff(np.r_[first, len(order)])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(first, run)
    relevant = deep & (rank < n_int * c.n_relevant)
    decoy = ~deep & (rank < n_int * c.n_decoys)
    slot = np.where(relevant, rank // c.n_relevant, rank // max(c.n_decoys, 1))
    planted = relevant | decoy

    category = np.empty(len(row), dtype=np.int64)
    category[planted] = interests[row[planted], slot[planted]]
    # Distractors: the r-th category outside the sorted interest set is r + #{j : s_j - j <= r} (0-based).
    dist = np.flatnonzero(~planted)
    r = rng.integers(0, n_cat - n_int, len(dist))
    shifted = interests[row[dist]] - 1 - np.arange(n_int)
    category[dist] = r + (shifted <= r[:, None]).sum(1) + 1
    item = draw_items(category)

    def planted_index(mask: np.ndarray, per: int) -> np.ndarray:
        out = np.zeros((c.n_users, n_int, per), dtype=np.int64)
        out[row[mask], slot[mask], rank[mask] % max(per, 1)] = pos[mask]
        return np.sort(out, axis=2)

    relevant_index = planted_index(relevant, c.n_relevant)
    decoy_index = planted_index(decoy, c.n_decoys)
    rel_items = item[offsets[:-1, None, None] + relevant_index]  # [U, I, R]
    interest_mean = latent[rel_items].mean(axis=2)  # [U, I, latent_dim]

    # Samples: a target from one interest category, its label from the planted logit.
    n_s = c.n_users * c.samples_per_user
    s_user = np.repeat(np.arange(c.n_users, dtype=np.int64), c.samples_per_user)
    s_int = rng.integers(0, n_int, n_s)
    target = draw_items(interests[s_user, s_int])
    logit = c.signal_scale * np.einsum("sd,sd->s", latent[target], interest_mean[s_user, s_int]) + c.bias
    prob = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(n_s) < prob).astype(np.int8)
    u = rng.random(n_s)
    role = np.where(u < c.test_fraction, TEST, np.where(u < c.test_fraction + c.valid_fraction, VALID, TRAIN))

    data = CTRData(offsets, {"item": item, "category": category}, {"category": item_category}, s_user,
                   offsets[s_user + 1].copy(), target, label, role.astype(np.int8), NAME,
                   {"generator": NAME, "config": c.to_dict()})
    truth = LongCTRTruth(item_category, latent, interests, relevant_index, decoy_index, s_int, prob, c)
    return data, truth
