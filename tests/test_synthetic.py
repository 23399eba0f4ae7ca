"""Tests of the synthetic sequential-recommendation generator and its ground truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorseq.data.events import EventTable
from behaviorseq.data.schema import Kind
from behaviorseq.data.synthetic import SeqRecConfig, SeqRecTruth, generate_seqrec

SMALL = SeqRecConfig(n_users=300, n_items=60, n_topics=4, min_len=3, max_len=20, seed=7)


def _pairs(table: EventTable) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive (previous item, next item) pairs within each user's sequence."""
    users, items = table.column("user"), table.column("item")
    same = users[1:] == users[:-1]
    return items[:-1][same], items[1:][same]


def _last_pairs(table: EventTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user: (second-to-last item, last item, mask of all events but the last)."""
    users, items = table.column("user"), table.column("item")
    is_last = np.append(users[1:] != users[:-1], True)
    last_idx = np.flatnonzero(is_last)
    return items[last_idx - 1], items[last_idx], ~is_last


# --- reproducibility, shapes, kinds ---------------------------------------------------------------------------


def test_same_seed_same_data_and_different_seed_differs() -> None:
    a, ta = generate_seqrec(SMALL)
    b, tb = generate_seqrec(SMALL)
    assert a.events.equals(b.events) and a.items.equals(b.items)
    assert np.array_equal(ta.item_topic, tb.item_topic) and np.array_equal(ta.item_prob, tb.item_prob)
    c, tc = generate_seqrec(SeqRecConfig(**{**SMALL.to_dict(), "seed": 8}))
    assert not a.events.equals(c.events)
    assert not np.array_equal(ta.item_topic, tc.item_topic)


def test_shapes_dtypes_and_kinds() -> None:
    table, truth = generate_seqrec(SMALL)
    assert isinstance(table, EventTable) and isinstance(truth, SeqRecTruth)
    assert table.name == "synthetic-seqrec"
    assert table.events.column_names == ["user", "item", "timestamp", "topic"]
    assert all(table.events.schema.field(c).type == pa.int64() for c in table.events.column_names)
    assert table.field_kinds() == {"user": Kind.CATEGORICAL, "item": Kind.CATEGORICAL,
                                   "timestamp": Kind.TIMESTAMP, "topic": Kind.CATEGORICAL}
    assert table.items is not None and table.item_schema is not None
    assert table.items.column_names == ["item", "topic"]
    assert {f.name: f.kind for f in table.item_schema.fields} == {"item": Kind.CATEGORICAL, "topic": Kind.CATEGORICAL}
    assert table.items["item"].to_pylist() == list(range(1, SMALL.n_items + 1))
    assert np.array_equal(table.items["topic"].to_numpy(), truth.item_topic[1:])
    users = table.column("user")
    assert np.array_equal(np.unique(users), np.arange(1, SMALL.n_users + 1))
    assert np.all(np.diff(users) >= 0)  # sorted by user
    lengths = np.bincount(users)[1:]
    assert lengths.min() >= SMALL.min_len and lengths.max() <= SMALL.max_len
    items = table.column("item")
    assert items.min() >= 1 and items.max() <= SMALL.n_items
    assert truth.n_items == SMALL.n_items and truth.n_topics == SMALL.n_topics
    assert truth.item_topic.shape == (SMALL.n_items + 1,) and truth.item_topic[0] == -1
    assert truth.topic_item_probs().shape == (SMALL.n_topics, SMALL.n_items + 1)
    assert np.allclose(truth.topic_item_probs().sum(axis=1), 1.0)
    assert table.report["config"]["seed"] == SMALL.seed


def test_timestamps_strictly_increasing_per_user() -> None:
    table, _ = generate_seqrec(SMALL)
    users, ts = table.column("user"), table.column("timestamp")
    same = users[1:] == users[:-1]
    assert np.all(np.diff(ts)[same] > 0)
    first = np.flatnonzero(np.append(True, ~same))
    assert ts[first].min() >= SMALL.start_time and ts[first].max() < SMALL.start_time + SMALL.start_spread


def test_items_lie_in_their_topics_cluster_and_clusters_partition_items() -> None:
    table, truth = generate_seqrec(SMALL)
    assert np.array_equal(truth.item_topic[table.column("item")], table.column("topic"))
    members = np.concatenate(truth.topic_items)
    assert np.array_equal(np.sort(members), np.arange(1, SMALL.n_items + 1))
    assert {len(m) for m in truth.topic_items} == {SMALL.n_items // SMALL.n_topics}
    for t, m in enumerate(truth.topic_items):
        assert np.all(truth.item_topic[m] == t)
        q = truth.item_prob[m]  # Zipf within the topic, in rank order
        assert np.allclose(q / q[0], np.arange(1, len(m) + 1) ** -SMALL.zipf)


def test_unshuffled_clusters_are_contiguous_blocks() -> None:
    _, truth = generate_seqrec(SeqRecConfig(n_items=10, n_topics=3, shuffle_items=False, n_users=5))
    assert [m.tolist() for m in truth.topic_items] == [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10]]


def test_geometric_lengths_respect_the_range() -> None:
    cfg = SeqRecConfig(n_users=2000, min_len=4, max_len=30, length_dist="geometric", mean_len=10.0, seed=1)
    table, _ = generate_seqrec(cfg)
    lengths = np.bincount(table.column("user"))[1:]
    assert lengths.min() >= 4 and lengths.max() <= 30
    assert 8.0 < lengths.mean() < 11.0  # uncapped mean 10, slightly lowered by the cap


# --- the ground truth ----------------------------------------------------------------------------------------


def test_next_item_probs_closed_form_for_uniform_switching() -> None:
    _, truth = generate_seqrec(SMALL)
    last = np.array([truth.topic_items[0][0], truth.topic_items[2][-1]])
    p = truth.next_item_probs(last)
    assert p.shape == (2, SMALL.n_items + 1) and np.all(p[:, 0] == 0) and np.allclose(p.sum(axis=1), 1.0)
    q = truth.topic_item_probs()
    z = truth.topic_of(last)
    for b in range(2):
        other = (1 - SMALL.stay) / (SMALL.n_topics - 1) * q.sum(axis=0)
        expected = np.where(truth.item_topic == z[b], SMALL.stay * q[z[b]], other)
        expected[0] = 0
        assert np.allclose(p[b], expected)
    with pytest.raises(ValueError, match="1.."):
        truth.next_item_probs(np.array([0]))
    assert truth.bayes_hr(SMALL.n_items) == pytest.approx(1.0)
    assert truth.bayes_ndcg(1) == pytest.approx(truth.bayes_hr(1))
    assert np.allclose(truth.stationary_topic_probs(), 1 / SMALL.n_topics)
    assert truth.stationary_item_probs().sum() == pytest.approx(1.0)


def test_empirical_next_item_frequencies_match_next_item_probs() -> None:
    cfg = SeqRecConfig(n_users=4000, n_items=24, n_topics=3, stay=0.7, zipf=1.2, min_len=10, max_len=30, seed=3)
    table, truth = generate_seqrec(cfg)
    prev, nxt = _pairs(table)
    z = truth.topic_of(prev)
    counts = np.zeros((cfg.n_topics, cfg.n_items + 1))
    np.add.at(counts, (z, nxt), 1)
    expected = counts.sum(axis=1, keepdims=True) * truth.next_item_probs(
        np.array([m[0] for m in truth.topic_items]))
    keep = expected > 0
    keep[:, 0] = False
    chi2 = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    df = int(keep.sum()) - cfg.n_topics
    assert chi2 < df + 6 * np.sqrt(2 * df), (chi2, df)


def test_empirical_topic_transitions_follow_a_switch_matrix() -> None:
    switch = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]  # a cycle 0 -> 1 -> 2 -> 0
    cfg = SeqRecConfig(n_users=2000, n_items=30, n_topics=3, stay=0.5, switch_matrix=switch,
                       start_topic_probs=[1, 0, 0], min_len=10, max_len=10, seed=2)
    table, truth = generate_seqrec(cfg)
    assert np.allclose(truth.transition, [[0.5, 0.5, 0], [0, 0.5, 0.5], [0.5, 0, 0.5]])
    users, topics = table.column("user"), table.column("topic")
    first = np.append(True, users[1:] != users[:-1])
    assert np.all(topics[first] == 0)
    same = ~first[1:]
    trans = np.zeros((3, 3))
    np.add.at(trans, (topics[:-1][same], topics[1:][same]), 1)
    assert np.all(trans[truth.transition == 0] == 0)
    assert np.allclose(trans / trans.sum(axis=1, keepdims=True), truth.transition, atol=0.03)
    pi = truth.stationary_topic_probs()
    assert np.allclose(pi @ truth.transition, pi) and np.allclose(pi, 1 / 3)


def test_empirical_bayes_hr_and_ndcg_match_their_expectation() -> None:
    cfg = SeqRecConfig(n_users=3000, n_items=200, n_topics=8, stay=0.8, zipf=1.0, min_len=5, max_len=15, seed=11)
    table, truth = generate_seqrec(cfg)
    prev, nxt = _pairs(table)
    for k in (1, 10):
        top = truth.bayes_topk(prev, k)
        hit = top == nxt[:, None]
        hr = hit.any(axis=1).mean()
        ndcg = (hit / np.log2(np.arange(2, k + 2))).sum(axis=1).mean()
        p = np.take_along_axis(truth.next_item_probs(prev), top, axis=1)
        per_hr = p.sum(axis=1)  # conditional hit probability of each pair; the hits form martingale differences
        se = np.sqrt((per_hr * (1 - per_hr)).sum()) / len(prev)
        assert abs(hr - truth.bayes_hr(k, prev)) < 4 * se, (k, hr, truth.bayes_hr(k, prev), se)
        assert abs(ndcg - truth.bayes_ndcg(k, prev)) < 4 * se
        assert truth.bayes_hr(k, prev) == pytest.approx(per_hr.mean())
        # uniform start is the stationary law here, so every position's topic is uniform
        assert abs(truth.bayes_hr(k) - truth.bayes_hr(k, prev)) < 0.01


def test_bayes_beats_popularity() -> None:
    cfg = SeqRecConfig(n_users=3000, n_items=200, n_topics=8, stay=0.8, min_len=5, max_len=15, seed=5)
    table, truth = generate_seqrec(cfg)
    prev, target, train = _last_pairs(table)
    k = 10
    pop = np.bincount(table.column("item")[train], minlength=cfg.n_items + 1)[1:]
    pop_top = np.argsort(-pop, kind="stable")[:k] + 1
    pop_hr = np.isin(target, pop_top).mean()
    bayes_hr = (truth.bayes_topk(prev, k) == target[:, None]).any(axis=1).mean()
    assert bayes_hr > pop_hr + 0.1
    # and in expectation, exactly: the popularity ranker's expected HR is at most the Bayes one
    expected_pop = truth.next_item_probs(prev)[:, pop_top].sum(axis=1).mean()
    assert expected_pop <= truth.bayes_hr(k, prev) + 1e-12


@settings(max_examples=25, deadline=None)
@given(n_topics=st.integers(1, 5), extra=st.integers(0, 20), stay=st.floats(0, 1), zipf=st.floats(0, 3),
       min_len=st.integers(1, 6), span=st.integers(0, 6), seed=st.integers(0, 2**31))
def test_invariants_hold_for_random_configs(n_topics: int, extra: int, stay: float, zipf: float, min_len: int,
                                            span: int, seed: int) -> None:
    stay = 1.0 if n_topics == 1 else stay
    cfg = SeqRecConfig(n_users=20, n_items=n_topics + extra, n_topics=n_topics, stay=stay, zipf=zipf,
                       min_len=min_len, max_len=min_len + span, seed=seed)
    table, truth = generate_seqrec(cfg)
    users, items, topics = table.column("user"), table.column("item"), table.column("topic")
    lengths = np.bincount(users)[1:]
    assert len(lengths) == cfg.n_users and lengths.min() >= cfg.min_len and lengths.max() <= cfg.max_len
    assert np.array_equal(truth.item_topic[items], topics)
    same = users[1:] == users[:-1]
    assert np.all(np.diff(table.column("timestamp"))[same] > 0)
    if stay == 1.0:
        assert np.all(topics[1:][same] == topics[:-1][same])
    p = truth.next_item_probs(items[:5])
    assert np.allclose(p.sum(axis=1), 1.0)
    assert 0 < truth.bayes_ndcg(3) <= truth.bayes_hr(3) <= truth.bayes_hr(4) <= 1 + 1e-12


# --- validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_users": 0}, "n_users"),
    ({"n_items": 3, "n_topics": 4}, "n_items"),
    ({"n_topics": 0}, "n_topics"),
    ({"n_topics": 1}, "stay=1.0"),
    ({"stay": 1.5}, "stay"),
    ({"zipf": -1.0}, "zipf"),
    ({"zipf": float("nan")}, "zipf"),
    ({"min_len": 0}, "min_len"),
    ({"min_len": 10, "max_len": 5}, "max_len"),
    ({"length_dist": "poisson"}, "length_dist"),
    ({"mean_len": 10.0}, "mean_len"),
    ({"length_dist": "geometric", "mean_len": 2.0}, "mean_len"),
    ({"mean_gap": 0.0}, "mean_gap"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"n_users": True}, "n_users"),
    ({"n_topics": 2, "start_topic_probs": [1.0]}, "start_topic_probs"),
    ({"n_topics": 2, "start_topic_probs": [-1.0, 2.0]}, "start_topic_probs"),
    ({"n_topics": 2, "switch_matrix": [[1, 1], [1, 0]]}, "diagonal"),
    ({"n_topics": 3, "switch_matrix": [[0, 1, 0], [0, 0, 0], [1, 0, 0]]}, "rows \\[1\\]"),
    ({"n_topics": 2, "switch_matrix": [[0, 1]]}, "2 x 2"),
])
def test_invalid_configs_are_rejected_with_the_field_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SeqRecConfig(**kwargs)


def test_k_must_be_positive() -> None:
    _, truth = generate_seqrec(SMALL)
    with pytest.raises(ValueError, match="k must be"):
        truth.bayes_hr(0)


def test_generators_refuse_settings_that_would_give_no_or_undefined_data():
    from behaviorseq.data.synthetic.hawkes import HawkesParams, random_hawkes_params, simulate_hawkes
    from behaviorseq.data.synthetic.long_ctr import LongCTRConfig

    empty = simulate_hawkes(HawkesParams([1e-6], [[0.5]], 1.0), 3, t_end=1e-3)  # no event at all: IndexError before
    assert len(empty.seqs.time) == 0
    with pytest.raises(ValueError, match="max_events must be >= 1"):  # 0 gave one event a sequence
        simulate_hawkes(HawkesParams([1.0], [[0.5]], 1.0), 3, max_events=0)
    with pytest.raises(ValueError, match="branching must lie in"):  # a non-stationary process, silently
        random_hawkes_params(2, branching=1.2)
    with pytest.raises(ValueError, match="must be >= 2 x n_categories"):  # one item a category: NaN probabilities
        LongCTRConfig(n_items=5, n_categories=5, n_interests=2)
