"""Planted "near behaviour" CTR data: the SDIM brief's synthetic benchmark (``briefs/ranking-long-sequence-
and-multitask.md`` section 2, "Synthetic benchmark"): at L = 1,024 the click depends on whether a behaviour
with cos(q, s) > 0.8 exists anywhere in the history. Expected there: SDIM ~ DIN-long > top-k search > pooling.

Unlike :mod:`.long_ctr` (DARE's set-up: a few relevant behaviours deep in the history, decoys of the same
category recent, a latent readout), nothing here depends on position, and the label is an existence test on
similarity, the regime of SDIM's argument (its hashed buckets collect the behaviours similar to the target).

Items ``1..n_items`` belong to ``n_topics`` topics of ``items_per_topic`` items each; item vectors are
``normalise(center_topic + topic_spread * g / sqrt(latent_dim))`` with unit Gaussian ``center`` and ``g``,
so items of one topic are close (cos about ``1 / (1 + topic_spread^2)``) and other topics far. Topics are
grouped into ``n_categories`` categories (the ``category`` field, ``n_topics / n_categories`` topics each):
a category search narrows the history but does not answer the question. Every user has a random set of
``round(present_fraction * n_topics)`` present topics and a history of ``L`` behaviours drawn uniformly
from their items. A sample's target is drawn uniformly from all items, and

    near = max_j cos(s_target, s_j) > threshold,   P(click) = 1 - label_noise if near else label_noise,
    (in practice "the target's topic is present", and with ~500 items per user the target's own item is in the
    history for most near samples: that flag alone gives AUC 0.84 against Bayes 0.90, planted_shortcuts.py)

so the Bayes AUC (the true probabilities ranked) is below 1 by the label noise alone. ``near`` is computed
from the vectors, not from the topics (a few cross-topic pairs pass the threshold, some same-topic pairs
do not). Samples take roles train / valid / test at random. Vectorised over events and samples; the
per-sample maximum runs over the items a user's history holds (a bool [n_users, n_items] table, so meant for
up to some 10^4 items), not over the L events.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from behaviorseq.data.ctr import TEST, TRAIN, VALID, CTRData
from behaviorseq.data.synthetic._checks import is_int, is_real

NAME = "synthetic-near-ctr"


@dataclass(frozen=True)
class NearCTRConfig:
    """Parameters of :func:`generate_near_ctr`; every value is checked on construction (``ValueError``).

    Attributes:
        n_users: number of users (history rows ``0..n_users-1``).
        n_topics: topics; item ids ``1..n_topics * items_per_topic``, topic ``t`` owns a contiguous block.
        items_per_topic: items per topic.
        n_categories: categories (the ``category`` field), each a block of ``n_topics / n_categories``
            topics; must divide ``n_topics``.
        latent_dim: dimension of the item vectors.
        topic_spread: scale of an item's offset from its topic centre, ``>= 0``.
        length: history length L of every user.
        present_fraction: share of the topics each user's history is drawn from, in (0, 1).
        threshold: the cosine a behaviour must exceed to make the target "near", in (-1, 1).
        label_noise: P(click) of a target that is not near (and 1 minus that of one that is), in [0, 0.5).
        samples_per_user: samples (target, label) per user.
        valid_fraction, test_fraction: probability of a sample being valid / test.
        seed: seed of ``numpy.random.default_rng``.
    """

    n_users: int = 4000
    n_topics: int = 200
    items_per_topic: int = 5
    n_categories: int = 20
    latent_dim: int = 16
    topic_spread: float = 0.3
    length: int = 1024
    present_fraction: float = 0.5
    threshold: float = 0.8
    label_noise: float = 0.1
    samples_per_user: int = 20
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_topics", "items_per_topic", "n_categories", "latent_dim", "length",
                     "samples_per_user", "seed"):
            v = getattr(self, name)
            if not is_int(v):
                raise ValueError(f"NearCTRConfig.{name} must be an int, got {v!r}")
            if v < (0 if name == "seed" else 1):
                raise ValueError(f"NearCTRConfig.{name} must be >= {0 if name == 'seed' else 1}, got {v}")
        for name in ("topic_spread", "present_fraction", "threshold", "label_noise", "valid_fraction",
                     "test_fraction"):
            if not is_real(getattr(self, name)):
                raise ValueError(f"NearCTRConfig.{name} must be a finite number, got {getattr(self, name)!r}")
        if self.n_topics % self.n_categories:
            raise ValueError(f"NearCTRConfig.n_categories ({self.n_categories}) must divide n_topics ({self.n_topics})")
        if self.topic_spread < 0:
            raise ValueError(f"NearCTRConfig.topic_spread must be >= 0, got {self.topic_spread}")
        if not 0.0 < self.present_fraction < 1.0 or round(self.present_fraction * self.n_topics) < 1:
            raise ValueError(f"NearCTRConfig.present_fraction must be in (0, 1) and leave at least one present "
                             f"topic, got {self.present_fraction}")
        if not -1.0 < self.threshold < 1.0:
            raise ValueError(f"NearCTRConfig.threshold must be in (-1, 1), got {self.threshold}")
        if not 0.0 <= self.label_noise < 0.5:
            raise ValueError(f"NearCTRConfig.label_noise must be in [0, 0.5), got {self.label_noise}")
        if min(self.valid_fraction, self.test_fraction) < 0 or self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("NearCTRConfig.valid_fraction and test_fraction must be >= 0 with a sum below 1")

    @property
    def n_items(self) -> int:
        return self.n_topics * self.items_per_topic

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class NearCTRTruth:
    """The planted structure of a :func:`generate_near_ctr` data set.

    Attributes:
        item_topic: int64 [n_items + 1], topic of each item (0 for padding id 0; topics are 1-based).
        item_vector: float64 [n_items + 1, latent_dim], unit item vectors (row 0 zero).
        present: bool [n_users, n_topics + 1], the topics each user's history is drawn from (column 0 False).
        max_cos: float64 [S], the largest cosine between a sample's target and its history.
        near: bool [S], ``max_cos > threshold``.
        click_prob: float64 [S], the true click probability of each sample.
        config: the generating config.
    """

    item_topic: np.ndarray
    item_vector: np.ndarray
    present: np.ndarray
    max_cos: np.ndarray
    near: np.ndarray
    click_prob: np.ndarray
    config: NearCTRConfig


def generate_near_ctr(config: NearCTRConfig) -> tuple[CTRData, NearCTRTruth]:
    """Generate the data of the module docstring: ``data.events`` holds ``item`` and ``category`` per event,
    ``data.item_fields`` holds ``category`` per item, and every sample's history is its user's whole history."""
    c = config
    rng = np.random.default_rng(c.seed)
    n_items, per, L = c.n_items, c.items_per_topic, c.length

    item_topic = np.concatenate([[0], np.repeat(np.arange(1, c.n_topics + 1), per)]).astype(np.int64)
    item_category = np.where(item_topic > 0, (item_topic - 1) // (c.n_topics // c.n_categories) + 1, 0)
    center = rng.standard_normal((c.n_topics + 1, c.latent_dim))
    center /= np.linalg.norm(center, axis=1, keepdims=True)
    vec = center[item_topic] + c.topic_spread * rng.standard_normal((n_items + 1, c.latent_dim)) / np.sqrt(c.latent_dim)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    vec[0] = 0.0

    # Present topics: the first k of a random permutation per user; history: L uniform draws from their items.
    k = int(round(c.present_fraction * c.n_topics))
    chosen = np.argsort(rng.random((c.n_users, c.n_topics)), axis=1)[:, :k] + 1  # [U, k], 1-based topics
    present = np.zeros((c.n_users, c.n_topics + 1), dtype=bool)
    present[np.arange(c.n_users)[:, None], chosen] = True
    row = np.repeat(np.arange(c.n_users, dtype=np.int64), L)
    topic = chosen[row, rng.integers(0, k, row.size)]
    item = (topic - 1) * per + rng.integers(0, per, row.size) + 1
    offsets = np.arange(c.n_users + 1, dtype=np.int64) * L

    # Which items each user's history holds (bool [U, n_items + 1]); the max cosine runs over those.
    holds = np.zeros((c.n_users, n_items + 1), dtype=bool)
    holds[row, item] = True
    n_s = c.n_users * c.samples_per_user
    s_user = np.repeat(np.arange(c.n_users, dtype=np.int64), c.samples_per_user)
    target = rng.integers(1, n_items + 1, n_s)
    max_cos = np.empty(n_s)
    for lo in range(0, n_s, 4096):  # chunks of samples keep the [chunk, n_items] cosines and mask small
        hi = min(lo + 4096, n_s)
        max_cos[lo:hi] = np.where(holds[s_user[lo:hi], 1:], vec[target[lo:hi]] @ vec[1:].T, -np.inf).max(1)
    near = max_cos > c.threshold
    prob = np.where(near, 1.0 - c.label_noise, c.label_noise)
    label = (rng.random(n_s) < prob).astype(np.int8)
    u = rng.random(n_s)
    role = np.where(u < c.test_fraction, TEST, np.where(u < c.test_fraction + c.valid_fraction, VALID, TRAIN))

    data = CTRData(offsets, {"item": item, "category": item_category[item]}, {"category": item_category}, s_user,
                   offsets[s_user + 1].copy(), target, label, role.astype(np.int8), NAME,
                   {"generator": NAME, "config": c.to_dict()})
    truth = NearCTRTruth(item_topic, vec, present, max_cos, near, prob, c)
    return data, truth
