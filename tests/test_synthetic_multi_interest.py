"""Tests of the synthetic multi-interest generator (ComiRec's planted task) and its ground truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from behaviorseq.data.events import EventTable
from behaviorseq.data.schema import Kind
from behaviorseq.data.synthetic.multi_interest import (
    MultiInterestConfig,
    MultiInterestTruth,
    generate_multi_interest,
)

SMALL = MultiInterestConfig(n_users=400, n_topics=12, items_per_topic=30, min_topics=2, max_topics=4,
                            min_len=10, max_len=30, seed=5)


def _cfg(**kw) -> MultiInterestConfig:
    return MultiInterestConfig(**{**SMALL.to_dict(), **kw})


# --- reproducibility, shapes, kinds ---------------------------------------------------------------------------


def test_same_seed_same_data_and_different_seed_differs() -> None:
    a, ta = generate_multi_interest(SMALL)
    b, tb = generate_multi_interest(SMALL)
    assert a.events.equals(b.events) and a.items.equals(b.items)
    assert np.array_equal(ta.user_topics, tb.user_topics) and np.array_equal(ta.topic_items, tb.topic_items)
    c, tc = generate_multi_interest(_cfg(seed=6))
    assert not a.events.equals(c.events)
    assert not np.array_equal(ta.user_topics, tc.user_topics)


def test_shapes_dtypes_and_kinds() -> None:
    table, truth = generate_multi_interest(SMALL)
    assert isinstance(table, EventTable) and isinstance(truth, MultiInterestTruth)
    assert table.name == "synthetic-multi-interest"
    assert table.events.column_names == ["user", "item", "timestamp", "category"]
    assert all(table.events.schema.field(c).type == pa.int64() for c in table.events.column_names)
    assert table.field_kinds() == {"user": Kind.CATEGORICAL, "item": Kind.CATEGORICAL,
                                   "timestamp": Kind.TIMESTAMP, "category": Kind.CATEGORICAL}
    assert table.items.column_names == ["item", "category"]
    assert {f.name: f.kind for f in table.item_schema.fields} == {"item": Kind.CATEGORICAL,
                                                                  "category": Kind.CATEGORICAL}
    assert table.items["item"].to_pylist() == list(range(1, SMALL.n_items + 1))
    assert np.array_equal(table.items["category"].to_numpy(), truth.item_topic[1:])
    users = table.column("user")
    assert np.array_equal(np.unique(users), np.arange(1, SMALL.n_users + 1)) and np.all(np.diff(users) >= 0)
    lengths = np.bincount(users)[1:]
    assert lengths.min() >= SMALL.min_len and lengths.max() <= SMALL.max_len
    assert lengths.min() < lengths.max()
    assert truth.n_items == SMALL.n_items == 12 * 30 and truth.n_topics == 12 and truth.n_users == 400
    assert truth.topic_items.shape == (12, 30) and truth.item_topic[0] == -1
    assert np.array_equal(np.sort(truth.topic_items.ravel()), np.arange(1, SMALL.n_items + 1))  # a partition
    assert np.array_equal(truth.topic_of(truth.topic_items), np.repeat(np.arange(12)[:, None], 30, axis=1))
    assert table.report["config"]["seed"] == SMALL.seed


def test_timestamps_strictly_increasing_per_user() -> None:
    table, _ = generate_multi_interest(SMALL)
    users, ts = table.column("user"), table.column("timestamp")
    same = users[1:] == users[:-1]
    assert np.all(np.diff(ts)[same] > 0)
    first = np.flatnonzero(np.append(True, ~same))
    assert ts[first].min() >= SMALL.start_time and ts[first].max() < SMALL.start_time + SMALL.start_spread


def test_unshuffled_topics_are_contiguous_blocks() -> None:
    _, truth = generate_multi_interest(_cfg(shuffle_items=False))
    assert np.array_equal(truth.topic_items, np.arange(1, SMALL.n_items + 1).reshape(12, 30))


# --- the planted structure ------------------------------------------------------------------------------------


def test_events_stay_inside_each_users_topic_set() -> None:
    table, truth = generate_multi_interest(SMALL)
    users, items, cats = table.column("user"), table.column("item"), table.column("category")
    assert np.array_equal(cats, truth.topic_of(items))  # the event's topic is its item's category
    k = truth.n_user_topics[1:]
    assert k.min() == SMALL.min_topics and k.max() == SMALL.max_topics
    for u in range(1, SMALL.n_users + 1):
        topics = truth.user_topic_set(u)
        assert len(topics) == truth.n_user_topics[u] == len(np.unique(topics))
        assert np.isin(cats[users == u], topics).all()
    mask = truth.topic_mask(users)
    assert mask.shape == (len(users), 12) and mask[np.arange(len(users)), cats].all()
    assert np.array_equal(mask.sum(axis=1), truth.n_user_topics[users])


def test_topic_sets_are_uniform_subsets() -> None:
    # 4 topics, 2 per user: each of the 6 pairs should hold about 1/6 of the users.
    _, truth = generate_multi_interest(_cfg(n_users=6000, n_topics=4, min_topics=2, max_topics=2,
                                            min_len=1, max_len=1))
    pairs = np.sort(truth.user_topics[1:], axis=1) @ np.array([4, 1])
    counts = np.unique(pairs, return_counts=True)[1]
    assert len(counts) == 6 and np.abs(counts / 6000 - 1 / 6).max() < 0.02
    # variable sizes: k uniform in [1, 3]; a uniform prefix makes every topic equally likely per size
    _, truth = generate_multi_interest(_cfg(n_users=6000, n_topics=5, min_topics=1, max_topics=3,
                                            min_len=1, max_len=1))
    k = truth.n_user_topics[1:]
    assert np.abs(np.bincount(k, minlength=4)[1:] / 6000 - 1 / 3).max() < 0.03
    single = truth.user_topics[1:][k == 1, 0]
    assert np.abs(np.bincount(single, minlength=5) / len(single) - 0.2).max() < 0.04


def test_topic_choice_is_uniform_within_the_set_and_items_follow_zipf() -> None:
    cfg = _cfg(n_users=1500, zipf=1.0, min_len=40, max_len=40)
    table, truth = generate_multi_interest(cfg)
    users, items, cats = table.column("user"), table.column("item"), table.column("category")
    # share of a user's events in each of its topics: 1 / k_u on average
    k = truth.n_user_topics[users]
    slot = np.argmax(truth.user_topics[users] == cats[:, None], axis=1)
    for kk in (2, 3, 4):
        share = np.bincount(slot[k == kk], minlength=kk)[:kk] / (k == kk).sum()
        assert np.abs(share - 1 / kk).max() < 0.02, (kk, share)
    # within a topic, the rank distribution is Zipf(1)
    rank = np.argmax(truth.topic_items[cats] == items[:, None], axis=1)
    freq = np.bincount(rank, minlength=cfg.items_per_topic) / len(rank)
    assert 0.5 * np.abs(freq - cfg.rank_probs()).sum() < 0.02
    assert np.allclose(truth.item_prob[truth.topic_items[0]], cfg.rank_probs())
    # zipf = 0 is uniform
    table0, truth0 = generate_multi_interest(_cfg(n_users=1500, zipf=0.0, min_len=40, max_len=40))
    it0, c0 = table0.column("item"), table0.column("category")
    rank0 = np.argmax(truth0.topic_items[c0] == it0[:, None], axis=1)
    assert np.abs(np.bincount(rank0, minlength=30) / len(rank0) - 1 / 30).max() < 0.01


def test_oracle_distribution_and_expected_recall() -> None:
    table, truth = generate_multi_interest(_cfg(n_users=2000, min_len=40, max_len=40))
    users, items = table.column("user"), table.column("item")
    p = truth.next_item_probs(np.arange(1, 2001))
    assert p.shape == (2000, SMALL.n_items + 1) and np.allclose(p.sum(axis=1), 1.0) and np.all(p[:, 0] == 0)
    assert np.all((p[:, 1:] > 0) == truth.topic_mask(np.arange(1, 2001))[:, truth.item_topic[1:]])
    # the expected per-event recall of the oracle top-n matches the generated events
    for n in (5, 20):
        top = truth.bayes_topk(np.arange(1, 2001), n)
        assert top.shape == (2000, n)
        hit = (top[users - 1] == items[:, None]).any(axis=1)
        observed = np.bincount(users, weights=hit)[1:].mean() / 40
        assert observed == pytest.approx(truth.expected_bayes_recall(n), abs=0.01)
    # closed form for uniform items: n / (items_per_topic * k_u), averaged over users
    _, flat = generate_multi_interest(_cfg(zipf=0.0))
    k = flat.n_user_topics[1:]
    assert flat.expected_bayes_recall(12) == pytest.approx(np.mean(12 / (30 * k)))
    assert flat.expected_bayes_recall(12, users=[1, 2]) == pytest.approx(np.mean(12 / (30 * k[:2])))
    assert flat.expected_bayes_recall(10_000) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [
    {"n_users": 0}, {"n_topics": 0}, {"items_per_topic": 0}, {"min_topics": 0}, {"max_topics": 13},
    {"min_topics": 3, "max_topics": 2}, {"min_len": 0}, {"min_len": 5, "max_len": 4}, {"zipf": -1.0},
    {"zipf": float("nan")}, {"mean_gap": 0.0}, {"seed": -1}, {"shuffle_items": 1}, {"n_users": 2.0},
    {"start_spread": 0},
])
def test_config_is_validated(bad) -> None:
    with pytest.raises(ValueError):
        _cfg(**bad)


def test_truth_checks_ids() -> None:
    _, truth = generate_multi_interest(SMALL)
    with pytest.raises(ValueError, match="item ids"):
        truth.topic_of([0])
    with pytest.raises(ValueError, match="user ids"):
        truth.topic_mask([SMALL.n_users + 1])
    with pytest.raises(ValueError, match="n must be"):
        truth.bayes_topk([1], 0)
