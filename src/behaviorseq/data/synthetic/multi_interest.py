"""Synthetic multi-interest data: users who mix a few latent topics, the planted task of ComiRec's tests.

ComiRec (Cen et al., KDD 2020, arXiv 2005.09347) argues that one user vector cannot cover several interests.
This generator plants exactly that structure (brief section 1.5, "Synthetic task"): ``n_topics`` disjoint
categories of ``items_per_topic`` items each (defaults 50 x 200); every user holds a set of ``k_u`` distinct
topics, ``k_u`` uniform in ``[min_topics, max_topics]`` (default 2-4), the set uniform among sets of that size;
each event picks a topic uniformly from the user's own set, independently of the past, then an item from
that topic. Within a topic the item of rank ``r`` (1-based) has probability ``q(r) ∝ r ** -zipf`` (``zipf = 0``
is uniform); every topic has the same size and law, so an item's category is its topic.
Not in the paper: the paper has no synthetic experiment; this is the brief's test task.

Given the topic set, a user's events are i.i.d. with ``p_u(j) = q(rank(j)) / k_u`` for ``j`` in the user's
topics and 0 elsewhere; :class:`MultiInterestTruth` gives that oracle distribution, its top-n and its expected
recall. Timestamps are a per-user start plus cumulative integer gaps of at least one, as in ``seqrec``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from behaviorseq.data.events import EventTable
from behaviorseq.data.synthetic._checks import is_int, is_real
from behaviorseq.data.synthetic._timeline import topic_event_table, user_clocks

CATEGORY = "category"
NAME = "synthetic-multi-interest"

__all__ = ["CATEGORY", "NAME", "MultiInterestConfig", "MultiInterestTruth", "generate_multi_interest"]


@dataclass(frozen=True)
class MultiInterestConfig:
    """Parameters of :func:`generate_multi_interest`; every value is checked on construction (``ValueError``).

    Attributes:
        n_users: number of users; user ids are ``1..n_users``.
        n_topics: number of disjoint item categories (topics), ``>= 1``.
        items_per_topic: items per topic, ``>= 1``; item ids are ``1..n_topics * items_per_topic``.
        min_topics: fewest topics a user holds, ``>= 1``.
        max_topics: most topics a user holds, in ``[min_topics, n_topics]``; ``k_u`` is uniform in between.
        min_len: shortest sequence, ``>= 1``.
        max_len: longest sequence, ``>= min_len``; lengths are uniform integers in ``[min_len, max_len]``.
        zipf: Zipf exponent of item popularity within a topic, ``>= 0``; ``0`` is uniform.
        shuffle_items: assign item ids to topics and ranks at random (seeded); if ``False`` topic ``t`` holds the
            contiguous block ``t * items_per_topic + 1 ..`` in rank order (smallest id most popular).
        start_time: earliest first timestamp (integer clock, e.g. Unix seconds).
        start_spread: first timestamps are uniform integers in ``[start_time, start_time + start_spread)``.
        mean_gap: gaps between a user's consecutive events are ``1 + floor(Exponential(mean_gap))``.
        seed: seed of ``numpy.random.default_rng``; the same config gives the same data.
    """

    n_users: int = 1000
    n_topics: int = 50
    items_per_topic: int = 200
    min_topics: int = 2
    max_topics: int = 4
    min_len: int = 20
    max_len: int = 60
    zipf: float = 1.0
    shuffle_items: bool = True
    start_time: int = 1_600_000_000
    start_spread: int = 30 * 86_400
    mean_gap: float = 3_600.0
    seed: int = 0

    def __post_init__(self) -> None:
        ints = ("n_users", "n_topics", "items_per_topic", "min_topics", "max_topics", "min_len", "max_len",
                "start_time", "start_spread", "seed")
        for name in ints:
            if not is_int(getattr(self, name)):
                raise ValueError(f"MultiInterestConfig.{name} must be an int, got {getattr(self, name)!r}")
        for name in ("zipf", "mean_gap"):
            if not is_real(getattr(self, name)):
                raise ValueError(f"MultiInterestConfig.{name} must be a finite number, got {getattr(self, name)!r}")
        for name in ("n_users", "n_topics", "items_per_topic", "min_topics", "min_len", "start_spread"):
            if getattr(self, name) < 1:
                raise ValueError(f"MultiInterestConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.min_topics <= self.max_topics <= self.n_topics:
            raise ValueError(f"MultiInterestConfig needs min_topics <= max_topics <= n_topics, got "
                             f"{self.min_topics}, {self.max_topics}, {self.n_topics}")
        if self.max_len < self.min_len:
            raise ValueError(f"MultiInterestConfig.max_len ({self.max_len}) must be >= min_len ({self.min_len})")
        if self.zipf < 0:
            raise ValueError(f"MultiInterestConfig.zipf must be >= 0, got {self.zipf}")
        if self.mean_gap <= 0:
            raise ValueError(f"MultiInterestConfig.mean_gap must be > 0, got {self.mean_gap}")
        if self.seed < 0:
            raise ValueError(f"MultiInterestConfig.seed must be >= 0, got {self.seed}")
        if not isinstance(self.shuffle_items, bool):
            raise ValueError(f"MultiInterestConfig.shuffle_items must be a bool, got {self.shuffle_items!r}")

    @property
    def n_items(self) -> int:
        return self.n_topics * self.items_per_topic

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the config."""
        return asdict(self)

    def rank_probs(self) -> np.ndarray:
        """Within-topic item distribution by rank, float64 [items_per_topic] (the same for every topic)."""
        q = np.arange(1, self.items_per_topic + 1, dtype=np.float64) ** -float(self.zipf)
        return q / q.sum()


@dataclass(frozen=True, eq=False)
class MultiInterestTruth:
    """The planted structure behind a :func:`generate_multi_interest` data set and the oracle that knows it.

    Attributes:
        item_topic: int64 [n_items + 1], the topic (= category) of each item id; entry 0 is unused and holds -1.
        item_prob: float64 [n_items + 1], the item's probability within its own topic (entry 0 is 0).
        topic_items: int64 [n_topics, items_per_topic], each topic's item ids in rank order (most popular first).
        user_topics: int64 [n_users + 1, max_topics], each user's topic set in the first ``n_user_topics[u]``
            columns (in no particular order), -1 after; row 0 (no user) is all -1.
        n_user_topics: int64 [n_users + 1], ``k_u``; entry 0 is 0.
        config: the config that produced the data.
    """

    item_topic: np.ndarray
    item_prob: np.ndarray
    topic_items: np.ndarray
    user_topics: np.ndarray
    n_user_topics: np.ndarray
    config: MultiInterestConfig

    @property
    def n_items(self) -> int:
        return len(self.item_topic) - 1

    @property
    def n_topics(self) -> int:
        return self.topic_items.shape[0]

    @property
    def n_users(self) -> int:
        return len(self.n_user_topics) - 1

    def topic_of(self, items: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Topics (int64, same shape, at least 1-d) of the given item ids; ids must lie in ``1..n_items``."""
        a = self._ids(items, self.n_items, "item")
        return self.item_topic[a]

    def user_topic_set(self, user: int) -> np.ndarray:
        """One user's topic set, sorted int64 [k_u]."""
        u = int(self._ids(user, self.n_users, "user")[0])
        return np.sort(self.user_topics[u, : self.n_user_topics[u]])

    def topic_mask(self, users: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Bool [B, n_topics]: ``out[b, t]`` = topic ``t`` is in user ``users[b]``'s set."""
        u = self._ids(users, self.n_users, "user").reshape(-1)
        out = np.zeros((len(u), self.n_topics + 1), dtype=bool)  # column n_topics catches the -1 padding
        out[np.arange(len(u))[:, None], self.user_topics[u]] = True
        return out[:, : self.n_topics]

    def next_item_probs(self, users: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Oracle event distribution ``p_u(j) = item_prob[j] / k_u`` on the user's topics: float64 [B, n_items + 1].

        Column 0 is zero and every row sums to one. It does not depend on the history: given the topic set,
        events are i.i.d.
        """
        u = self._ids(users, self.n_users, "user").reshape(-1)
        mask = self.topic_mask(u)
        out = np.zeros((len(u), self.n_items + 1))
        out[:, 1:] = mask[:, self.item_topic[1:]] * self.item_prob[1:] / self.n_user_topics[u][:, None]
        return out

    def bayes_topk(self, users: np.ndarray | Sequence[int] | int, n: int) -> np.ndarray:
        """Item ids [B, min(n, n_items)] ranked by :meth:`next_item_probs`, best first (ties: smaller id first).

        The realised recall of this oracle on held-out sets is ``set_metrics(bayes_topk(users, n), targets)``.
        """
        n = min(self._check_n(n), self.n_items)
        p = self.next_item_probs(users)[:, 1:]
        return np.argsort(-p, axis=1, kind="stable")[:, :n] + 1

    def expected_bayes_recall(self, n: int, users: np.ndarray | Sequence[int] | int | None = None) -> float:
        """Expected per-event recall@n of the oracle top-n: the mean over users of the top-n mass of ``p_u``.

        This is the expected share of a user's future events (counted with repetition) that fall in the oracle's
        top-n, the best any ranker can do in expectation. Set recall (distinct held-out items, ComiRec's
        protocol) is close to it but not equal; measure it with :meth:`bayes_topk` on the actual split.
        Averaged over ``users`` if given, else over all users.
        """
        n = self._check_n(n)
        k = self.n_user_topics[1:] if users is None else self.n_user_topics[self._ids(users, self.n_users, "user")]
        # p_u is k_u copies of the same per-topic law scaled by 1/k_u: its top-n mass is the top-n of the
        # sorted law repeated k times, divided by k.
        q = np.sort(self.item_prob[self.topic_items[0]])[::-1]
        mass = np.array([np.repeat(q, kk)[:n].sum() / kk if kk else 0.0 for kk in range(k.max() + 1)])
        return float(mass[k].mean())

    @staticmethod
    def _ids(x: np.ndarray | Sequence[int] | int, hi: int, what: str) -> np.ndarray:
        a = np.atleast_1d(np.asarray(x))
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{what} ids must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        if a.size and (a.min() < 1 or a.max() > hi):
            raise ValueError(f"{what} ids must lie in 1..{hi}, got range [{a.min()}, {a.max()}]")
        return a

    @staticmethod
    def _check_n(n: int) -> int:
        if not is_int(n) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        return int(n)


def _user_topic_sets(config: MultiInterestConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random topic sets, [n_users, max_topics] (-1 after k_u) and k_u [n_users]; memory O(n_users * k)."""
    u, t, kmax = config.n_users, config.n_topics, config.max_topics
    # Floyd's algorithm, vectorised over users: a uniform kmax-subset of range(t) in kmax steps.
    chosen = np.empty((u, kmax), dtype=np.int64)
    for i, j in enumerate(range(t - kmax, t)):
        cand = rng.integers(0, j + 1, size=u)
        dup = (chosen[:, :i] == cand[:, None]).any(axis=1)
        chosen[:, i] = np.where(dup, j, cand)
    # Shuffle each row so that any prefix is a uniform subset, then keep the first k_u.
    chosen = np.take_along_axis(chosen, np.argsort(rng.random((u, kmax)), axis=1), axis=1)
    k = rng.integers(config.min_topics, kmax + 1, size=u, dtype=np.int64)
    chosen[np.arange(kmax)[None, :] >= k[:, None]] = -1
    return chosen, k


def generate_multi_interest(config: MultiInterestConfig) -> tuple[EventTable, MultiInterestTruth]:
    """Generate multi-topic user sequences; see the module docstring for the model.

    Returns the data and its ground truth. ``events`` has one row per event, sorted by user then timestamp,
    with int64 columns ``user`` (1..n_users), ``item`` (1..n_items), ``timestamp`` (strictly increasing per user)
    and ``category`` (the item's topic, 0..n_topics-1). ``items`` lists every item with its ``category``, the
    item attribute ComiRec's controllable aggregation and Diversity@N use. Fully vectorised: no Python loop
    over users or events (only over the ``max_topics`` steps of the topic-set draw).
    """
    rng = np.random.default_rng(config.seed)
    n_topics, per, n_items = config.n_topics, config.items_per_topic, config.n_items

    ids = rng.permutation(np.arange(1, n_items + 1)) if config.shuffle_items else np.arange(1, n_items + 1)
    topic_items = ids.astype(np.int64).reshape(n_topics, per)  # row t: topic t's items in rank order
    q = config.rank_probs()
    item_topic = np.full(n_items + 1, -1, dtype=np.int64)
    item_topic[topic_items] = np.arange(n_topics)[:, None]
    item_prob = np.zeros(n_items + 1)
    item_prob[topic_items] = q[None, :]

    chosen, k = _user_topic_sets(config, rng)
    pad = np.full((1, config.max_topics), -1, dtype=np.int64)
    truth = MultiInterestTruth(item_topic, item_prob, topic_items, np.concatenate([pad, chosen]),
                               np.concatenate([[0], k]), config)

    lengths = rng.integers(config.min_len, config.max_len + 1, size=config.n_users, dtype=np.int64)
    total = int(lengths.sum())
    owner = np.repeat(np.arange(config.n_users), lengths)  # 0-based user of each event
    slot = np.floor(rng.random(total) * k[owner]).astype(np.int64)  # uniform over the user's k_u topics
    slot = np.minimum(slot, k[owner] - 1)  # guard against rounding up to k_u
    topics = chosen[owner, slot]
    if config.zipf == 0:
        ranks = rng.integers(0, per, size=total)
    else:
        cdf = np.cumsum(q)
        ranks = np.minimum(np.searchsorted(cdf, rng.random(total) * cdf[-1], side="right"), per - 1)
    items = topic_items[topics, ranks]

    timestamps = user_clocks(lengths, config.mean_gap, config.start_time, config.start_spread, rng)

    table = topic_event_table(owner + 1, items, timestamps, topics, item_topic, CATEGORY, NAME, config.to_dict())
    return table, truth
