"""Synthetic sequential-recommendation data with planted structure: topic-persistent users over item clusters.

Items ``1..n_items`` are split into ``n_topics`` disjoint clusters. Within a topic, item popularity follows a
Zipf law: the item of rank ``r`` (1-based) has probability ``q_t(j) ∝ r ** -zipf``. Every user runs a Markov
chain over topics: the first topic is drawn from ``start_topic_probs`` (uniform by default); at each later
step the user stays in the current topic with probability ``stay`` and otherwise switches to another topic,
drawn uniformly from the others or from row ``z`` of ``switch_matrix``. Each event's item is drawn from the
current topic's item distribution, independently of everything else. Timestamps are a per-user start time
plus cumulative integer gaps of at least one, so they increase strictly within a user.

Because clusters are disjoint, the last item reveals the current topic ``z`` and, by the Markov property,
nothing else in the history matters. With the topic transition matrix ``P`` (``P[z, z] = stay``,
``P[z, t] = (1 - stay) * S[z, t]``, ``S`` uniform off the diagonal unless given) the Bayes-optimal next-item
distribution is exactly ``p(next = j | last in z) = P[z, topic(j)] * q_{topic(j)}(j)``;
:class:`SeqRecTruth` returns it together with the expected HR@K / NDCG@K of the ranker that sorts by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from behaviorseq.data.events import EventTable
from behaviorseq.data.synthetic._checks import is_int, is_real
from behaviorseq.data.synthetic._timeline import topic_event_table, user_clocks

TOPIC = "topic"
NAME = "synthetic-seqrec"
LENGTH_DISTS = ("uniform", "geometric")


@dataclass(frozen=True)
class SeqRecConfig:
    """Parameters of :func:`generate_seqrec`; every value is checked on construction (``ValueError``).

    Attributes:
        n_users: number of users; user ids are ``1..n_users``.
        n_items: number of items; item ids are ``1..n_items``. Must be at least ``n_topics``.
        n_topics: number of disjoint item clusters; sizes differ by at most one.
        stay: probability of staying in the current topic at each step, in ``[0, 1]``.
        zipf: Zipf exponent of item popularity within a topic (``0`` is uniform), ``>= 0``.
        min_len: shortest sequence, ``>= 1``.
        max_len: longest sequence, ``>= min_len``.
        length_dist: ``"uniform"`` (integers in ``[min_len, max_len]``) or ``"geometric"``
            (``min_len - 1 + Geometric(p)``, capped at ``max_len``, with ``p`` set so that the uncapped mean is
            ``mean_len``).
        mean_len: uncapped mean length for ``"geometric"``, in ``[min_len, inf)``; ``None`` means
            ``(min_len + max_len) / 2``. Must be ``None`` for ``"uniform"``.
        start_topic_probs: distribution of each user's first topic (``n_topics`` non-negative weights,
            normalised); ``None`` is uniform.
        switch_matrix: ``n_topics x n_topics`` non-negative weights with a zero diagonal; row ``z`` (normalised)
            is the distribution of the new topic when a user leaves ``z``. ``None`` is uniform over the others.
        shuffle_items: assign item ids to clusters and ranks at random (seeded); if ``False`` topic ``t`` holds a
            contiguous block of ids in rank order (smallest id most popular).
        start_time: earliest first timestamp (integer clock, e.g. Unix seconds).
        start_spread: first timestamps are uniform integers in ``[start_time, start_time + start_spread)``.
        mean_gap: gaps between a user's consecutive events are ``1 + floor(Exponential(mean_gap))``.
        seed: seed of ``numpy.random.default_rng``; the same config gives the same data.
    """

    n_users: int = 1000
    n_items: int = 500
    n_topics: int = 10
    stay: float = 0.8
    zipf: float = 1.0
    min_len: int = 5
    max_len: int = 50
    length_dist: str = "uniform"
    mean_len: float | None = None
    start_topic_probs: Sequence[float] | None = None
    switch_matrix: Sequence[Sequence[float]] | None = None
    shuffle_items: bool = True
    start_time: int = 1_600_000_000
    start_spread: int = 30 * 86_400
    mean_gap: float = 3_600.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_topics", "min_len", "max_len", "start_time", "start_spread", "seed"):
            if not is_int(getattr(self, name)):
                raise ValueError(f"SeqRecConfig.{name} must be an int, got {getattr(self, name)!r}")
        for name in ("stay", "zipf", "mean_gap"):
            if not is_real(getattr(self, name)):
                raise ValueError(f"SeqRecConfig.{name} must be a finite number, got {getattr(self, name)!r}")
        if self.n_users < 1:
            raise ValueError(f"SeqRecConfig.n_users must be >= 1, got {self.n_users}")
        if self.n_topics < 1:
            raise ValueError(f"SeqRecConfig.n_topics must be >= 1, got {self.n_topics}")
        if self.n_items < self.n_topics:
            raise ValueError(f"SeqRecConfig.n_items ({self.n_items}) must be >= n_topics ({self.n_topics}) "
                             "so that every topic has at least one item")
        if not 0.0 <= self.stay <= 1.0:
            raise ValueError(f"SeqRecConfig.stay must be in [0, 1], got {self.stay}")
        if self.n_topics == 1 and self.stay != 1.0:
            raise ValueError(f"SeqRecConfig: with n_topics=1 there is no topic to switch to; set stay=1.0 "
                             f"(got stay={self.stay})")
        if self.zipf < 0:
            raise ValueError(f"SeqRecConfig.zipf must be >= 0, got {self.zipf}")
        if self.min_len < 1:
            raise ValueError(f"SeqRecConfig.min_len must be >= 1, got {self.min_len}")
        if self.max_len < self.min_len:
            raise ValueError(f"SeqRecConfig.max_len ({self.max_len}) must be >= min_len ({self.min_len})")
        if self.length_dist not in LENGTH_DISTS:
            raise ValueError(f"SeqRecConfig.length_dist must be one of {LENGTH_DISTS}, got {self.length_dist!r}")
        if self.mean_len is not None:
            if self.length_dist != "geometric":
                raise ValueError("SeqRecConfig.mean_len is only used with length_dist='geometric'")
            if not is_real(self.mean_len) or self.mean_len < self.min_len:
                raise ValueError(f"SeqRecConfig.mean_len must be a finite number >= min_len ({self.min_len}), "
                                 f"got {self.mean_len!r}")
        if self.start_spread < 1:
            raise ValueError(f"SeqRecConfig.start_spread must be >= 1, got {self.start_spread}")
        if self.mean_gap <= 0:
            raise ValueError(f"SeqRecConfig.mean_gap must be > 0, got {self.mean_gap}")
        if self.seed < 0:
            raise ValueError(f"SeqRecConfig.seed must be >= 0, got {self.seed}")
        if not isinstance(self.shuffle_items, bool):
            raise ValueError(f"SeqRecConfig.shuffle_items must be a bool, got {self.shuffle_items!r}")
        t = self.n_topics
        if self.start_topic_probs is not None:
            w = np.asarray(self.start_topic_probs, dtype=np.float64)
            if w.shape != (t,):
                raise ValueError(f"SeqRecConfig.start_topic_probs must have n_topics={t} entries, got shape {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError("SeqRecConfig.start_topic_probs must be finite, non-negative, with a positive sum")
            object.__setattr__(self, "start_topic_probs", tuple(float(x) for x in w))
        if self.switch_matrix is not None:
            s = np.asarray(self.switch_matrix, dtype=np.float64)
            if s.shape != (t, t):
                raise ValueError(f"SeqRecConfig.switch_matrix must be {t} x {t}, got shape {s.shape}")
            if not np.all(np.isfinite(s)) or np.any(s < 0):
                raise ValueError("SeqRecConfig.switch_matrix must be finite and non-negative")
            if np.any(np.diag(s) != 0):
                raise ValueError("SeqRecConfig.switch_matrix must have a zero diagonal (staying is set by `stay`)")
            if self.stay < 1.0 and np.any(s.sum(axis=1) <= 0):
                bad = np.flatnonzero(s.sum(axis=1) <= 0).tolist()
                raise ValueError(f"SeqRecConfig.switch_matrix rows {bad} are all zero, but stay < 1 needs somewhere "
                                 "to switch to")
            object.__setattr__(self, "switch_matrix", tuple(tuple(float(x) for x in row) for row in s))

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the config (tuples become lists)."""
        d = asdict(self)
        if d["start_topic_probs"] is not None:
            d["start_topic_probs"] = list(d["start_topic_probs"])
        if d["switch_matrix"] is not None:
            d["switch_matrix"] = [list(r) for r in d["switch_matrix"]]
        return d

    def transition_matrix(self) -> np.ndarray:
        """Topic transition matrix ``P`` [n_topics, n_topics]: ``stay`` on the diagonal, ``1 - stay`` spread by row."""
        t = self.n_topics
        if t == 1:
            return np.ones((1, 1))
        if self.switch_matrix is None:
            s = (np.ones((t, t)) - np.eye(t)) / (t - 1)
        else:
            s = np.asarray(self.switch_matrix, dtype=np.float64)
            sums = s.sum(axis=1, keepdims=True)
            s = np.divide(s, sums, out=np.zeros_like(s), where=sums > 0)
        return self.stay * np.eye(t) + (1.0 - self.stay) * s

    def start_probs(self) -> np.ndarray:
        """Distribution of the first topic [n_topics]."""
        if self.start_topic_probs is None:
            return np.full(self.n_topics, 1.0 / self.n_topics)
        w = np.asarray(self.start_topic_probs, dtype=np.float64)
        return w / w.sum()


@dataclass(frozen=True, eq=False)
class SeqRecTruth:
    """The planted structure behind a :func:`generate_seqrec` data set, and the Bayes-optimal next-item model.

    Attributes:
        item_topic: int64 [n_items + 1], the topic of each item id; entry 0 is unused and holds -1.
        item_prob: float64 [n_items + 1], ``q_{topic(j)}(j)``, the item's probability within its own topic
            (entry 0 is 0). Together with ``item_topic`` this is every topic's item distribution, since
            ``q_t(j) = item_prob[j]`` if ``item_topic[j] == t`` and 0 otherwise (see :meth:`topic_item_probs`).
        topic_items: per topic, the int64 item ids of its cluster in decreasing probability (rank 1 first).
        transition: float64 [n_topics, n_topics], ``P[z, t]`` = probability that the step after topic ``z`` is
            in topic ``t``.
        start: float64 [n_topics], the distribution of each user's first topic.
        stay: the configured probability of staying in a topic.
        config: the config that produced the data.
    """

    item_topic: np.ndarray
    item_prob: np.ndarray
    topic_items: tuple[np.ndarray, ...]
    transition: np.ndarray
    start: np.ndarray
    stay: float
    config: SeqRecConfig
    _per_topic: dict = field(default_factory=dict, init=False, repr=False)  # cache: k -> (hr[T], ndcg[T])

    @property
    def n_items(self) -> int:
        return len(self.item_topic) - 1

    @property
    def n_topics(self) -> int:
        return len(self.topic_items)

    def topic_of(self, items: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Topics (int64) of the given item ids; ids must lie in ``1..n_items``."""
        a = np.atleast_1d(np.asarray(items))
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"item ids must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        if a.size and (a.min() < 1 or a.max() > self.n_items):
            raise ValueError(f"item ids must lie in 1..{self.n_items}, got range [{a.min()}, {a.max()}]")
        return self.item_topic[a]

    def topic_item_probs(self) -> np.ndarray:
        """Dense float64 [n_topics, n_items + 1]: row ``t`` is the item distribution ``q_t`` (column 0 zero)."""
        out = np.zeros((self.n_topics, self.n_items + 1))
        ids = np.arange(1, self.n_items + 1)
        out[self.item_topic[1:], ids] = self.item_prob[1:]
        return out

    def _topic_next_probs(self, topics: np.ndarray) -> np.ndarray:
        out = np.zeros((len(topics), self.n_items + 1))
        out[:, 1:] = self.transition[topics][:, self.item_topic[1:]] * self.item_prob[1:]
        return out

    def next_item_probs(self, last_items: np.ndarray | Sequence[int]) -> np.ndarray:
        """Bayes-optimal next-item distribution given each history's last item: float64 [B, n_items + 1].

        ``out[b, j] = P[z, topic(j)] * q_{topic(j)}(j)`` with ``z = topic(last_items[b])``; column 0 is zero and
        every row sums to one. With uniform switching this is ``stay * q_z(j)`` inside ``z`` and
        ``(1 - stay) / (n_topics - 1) * q_{topic(j)}(j)`` outside.
        """
        return self._topic_next_probs(self.topic_of(last_items))

    def bayes_topk(self, last_items: np.ndarray | Sequence[int], k: int) -> np.ndarray:
        """Item ids [B, min(k, n_items)] ranked by :meth:`next_item_probs`, best first (ties: smaller id first)."""
        k = self._check_k(k)
        z = self.topic_of(last_items)
        uniq, inv = np.unique(z, return_inverse=True)
        rows = self._topic_next_probs(uniq)[:, 1:]
        top = np.argsort(-rows, axis=1, kind="stable")[:, :k] + 1
        return top[inv.reshape(-1)]

    def _check_k(self, k: int) -> int:
        if not is_int(k) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        return min(int(k), self.n_items)

    def _topic_metrics(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per current topic: expected HR@k and NDCG@k of the Bayes ranker, each float64 [n_topics]."""
        if k not in self._per_topic:
            discount = 1.0 / np.log2(np.arange(2, k + 2))
            hr, ndcg = np.zeros(self.n_topics), np.zeros(self.n_topics)
            for z in range(self.n_topics):
                p = self._topic_next_probs(np.array([z]))[0, 1:]
                top = -np.sort(-p)[:k] if k >= len(p) else -np.sort(np.partition(-p, k - 1)[:k])
                hr[z], ndcg[z] = top.sum(), (top * discount).sum()
            self._per_topic[k] = (hr, ndcg)
        return self._per_topic[k]

    def _average(self, per_topic: np.ndarray, last_items: np.ndarray | Sequence[int] | None) -> float:
        if last_items is None:
            return float(self.stationary_topic_probs() @ per_topic)
        z = self.topic_of(last_items)
        if z.size == 0:
            raise ValueError("last_items is empty")
        return float(per_topic[z].mean())

    def bayes_hr(self, k: int, last_items: np.ndarray | Sequence[int] | None = None) -> float:
        """Expected HR@K of the Bayes-optimal ranker: the sum of the top-k next-item probabilities.

        Averaged over ``last_items`` if given, else taken exactly under the stationary distribution of the
        current topic (:meth:`stationary_topic_probs`); the value depends on the last item only through its topic.
        """
        return self._average(self._topic_metrics(self._check_k(k))[0], last_items)

    def bayes_ndcg(self, k: int, last_items: np.ndarray | Sequence[int] | None = None) -> float:
        """Expected NDCG@K (one relevant item) of the Bayes-optimal ranker: ``sum_i p_(i) / log2(i + 2)`` over
        the top-k probabilities ``p_(0) >= p_(1) >= ...``; averaged like :meth:`bayes_hr`."""
        return self._average(self._topic_metrics(self._check_k(k))[1], last_items)

    def stationary_topic_probs(self) -> np.ndarray:
        """Stationary distribution of the topic chain, float64 [n_topics].

        Computed as the long-run limit of the (lazy) chain started from ``start``, so it is the unique
        stationary distribution whenever the chain is irreducible (e.g. uniform switching with ``stay < 1``:
        uniform) and equals ``start`` when ``stay == 1``.
        """
        m = 0.5 * (np.eye(self.n_topics) + self.transition)  # same stationary laws, aperiodic
        for _ in range(64):
            m = m @ m
            m /= m.sum(axis=1, keepdims=True)
        pi = self.start @ m
        return pi / pi.sum()

    def stationary_item_probs(self) -> np.ndarray:
        """Stationary distribution of an event's item, float64 [n_items + 1] (column 0 zero)."""
        out = self.item_prob.copy()
        out[1:] *= self.stationary_topic_probs()[self.item_topic[1:]]
        return out


def _row_sampler(rows: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Flatten several discrete distributions into one searchable array of shifted CDFs.

    Row ``r``'s CDF is shifted by ``r`` and reaches exactly ``r + 1`` at its last positive entry (and stays
    there), so ``searchsorted(cdf, r + u, side="right")`` for ``u`` in ``[0, 1)`` picks an entry of row ``r`` with
    its probability and never an entry of probability zero.
    """
    cdfs = []
    for r, p in enumerate(rows):
        c = np.cumsum(p) / p.sum()
        c[int(np.flatnonzero(p > 0)[-1]):] = 1.0
        cdfs.append(c + r)
    return np.concatenate(cdfs), np.concatenate(values)


def _draw(cdf: np.ndarray, values: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw from the distribution ``rows[i]`` of a :func:`_row_sampler` table, for every ``i``."""
    x = rows + rng.random(len(rows))
    x = np.minimum(x, np.nextafter(rows + 1.0, -np.inf))  # keep r + u < r + 1 after rounding
    return values[np.searchsorted(cdf, x, side="right")]


def _lengths(config: SeqRecConfig, rng: np.random.Generator) -> np.ndarray:
    lo, hi, n = config.min_len, config.max_len, config.n_users
    if config.length_dist == "uniform":
        return rng.integers(lo, hi + 1, size=n, dtype=np.int64)
    mean = (lo + hi) / 2 if config.mean_len is None else float(config.mean_len)
    p = 1.0 / (mean - lo + 1.0)
    return np.minimum(lo - 1 + rng.geometric(p, size=n).astype(np.int64), hi)


def generate_seqrec(config: SeqRecConfig) -> tuple[EventTable, SeqRecTruth]:
    """Generate topic-persistent user sequences over item clusters; see the module docstring for the model.

    Returns the data and its ground truth. ``events`` has one row per event, sorted by user then timestamp,
    with int64 columns ``user`` (1..n_users), ``item`` (1..n_items), ``timestamp`` (strictly increasing per user)
    and ``topic`` (the latent topic, 0..n_topics-1, that generated the event). ``items`` lists every item with
    its ``topic``. The work is vectorised over users; only the time steps are looped over.
    """
    rng = np.random.default_rng(config.seed)
    n_items, n_topics = config.n_items, config.n_topics

    # Item clusters: sizes differ by at most one; within a cluster, ids are listed in rank order.
    ids = rng.permutation(np.arange(1, n_items + 1)) if config.shuffle_items else np.arange(1, n_items + 1)
    sizes = np.full(n_topics, n_items // n_topics) + (np.arange(n_topics) < n_items % n_topics)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    topic_items = tuple(ids[bounds[t]:bounds[t + 1]].astype(np.int64) for t in range(n_topics))
    item_topic = np.full(n_items + 1, -1, dtype=np.int64)
    item_prob = np.zeros(n_items + 1)
    rank_probs = []
    for t, members in enumerate(topic_items):
        q = np.arange(1, len(members) + 1, dtype=np.float64) ** -float(config.zipf)
        q /= q.sum()
        item_topic[members], item_prob[members] = t, q
        rank_probs.append(q)
    transition, start = config.transition_matrix(), config.start_probs()
    truth = SeqRecTruth(item_topic, item_prob, topic_items, transition, start, float(config.stay), config)

    item_cdf, item_vals = _row_sampler(rank_probs, topic_items)
    topic_cdf, topic_vals = _row_sampler(list(transition), [np.arange(n_topics)] * n_topics)
    start_cdf, start_vals = _row_sampler([start], [np.arange(n_topics)])

    # Users sorted by decreasing length, so the users still active at step s are a prefix of `order`.
    lengths = _lengths(config, rng)
    order = np.argsort(-lengths, kind="stable")
    n_active = config.n_users - np.cumsum(np.bincount(lengths, minlength=config.max_len + 1))  # #users with len > s
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # position of each user's first event
    first_sorted = first[order]
    total = int(lengths.sum())
    items = np.empty(total, dtype=np.int64)
    topics = np.empty(total, dtype=np.int64)

    z = _draw(start_cdf, start_vals, np.zeros(config.n_users), rng)
    for s in range(config.max_len):
        n = int(n_active[s])
        if n == 0:
            break
        z = z[:n]
        if s > 0:
            z = _draw(topic_cdf, topic_vals, z.astype(np.float64), rng)
        pos = first_sorted[:n] + s
        topics[pos] = z
        items[pos] = _draw(item_cdf, item_vals, z.astype(np.float64), rng)

    users = np.repeat(np.arange(1, config.n_users + 1, dtype=np.int64), lengths)
    timestamps = user_clocks(lengths, config.mean_gap, config.start_time, config.start_spread, rng)

    table = topic_event_table(users, items, timestamps, topics, item_topic, TOPIC, NAME, config.to_dict())
    return table, truth
