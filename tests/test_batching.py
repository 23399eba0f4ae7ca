"""Batches: truncation, padding sides, shifted targets, fields, negative samplers, loader resume."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import make_events

from behaviorseq.data import preprocess as P
from behaviorseq.data.batching import SeqBatcher, batch_indices, epoch_loader, window_index
from behaviorseq.data.sampling import InteractionSet, PopularitySampler, UniformSampler, item_counts
from behaviorseq.data.splits import leave_one_out, user_holdout
from behaviorseq.data.store import SequenceStore
from behaviorseq.data.synthetic import SeqRecConfig, generate_seqrec


@pytest.fixture
def store():
    # user a: items 1..6 ; user b: items 7..10
    t = make_events(["a"] * 6 + ["b"] * 4, list(range(1, 11)), list(range(10)),
                    behavior=["pv", "buy", "pv", "pv", "cart", "pv", "pv", "buy", "pv", "pv"])
    return SequenceStore.build(P.run(t))


def test_window_index_left_and_right():
    idx, valid = window_index(np.array([0, 10]), np.array([5, 12]), 3, "left")
    assert idx.tolist() == [[2, 3, 4], [0, 10, 11]] and valid.tolist() == [[1, 1, 1], [0, 1, 1]]
    idx, valid = window_index(np.array([0, 10]), np.array([5, 12]), 3, "right")
    assert idx.tolist() == [[2, 3, 4], [10, 11, 0]] and valid.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_loo_batches_truncate_to_the_most_recent_and_shift_targets(store):
    sp = leave_one_out(store)
    tr = SeqBatcher(store, sp.train, max_len=3, fields=("behavior",)).batch(np.arange(len(sp.train)))
    # user a trains on items 1..4: inputs [1,2,3] -> targets [2,3,4]; last 3 kept
    assert tr["item"].tolist() == [[1, 2, 3], [0, 0, 7]]  # user b trains on 7 -> 8
    assert tr["target"].tolist() == [[2, 3, 4], [0, 0, 8]]
    assert tr["length"].tolist() == [3, 1]
    beh = store.events["behavior"]
    assert beh.decode(tr["behavior"][0].numpy()) == ["pv", "buy", "pv"]
    te = SeqBatcher(store, sp.test, max_len=4, padding="right").batch(np.arange(len(sp.test)))
    assert te["item"].tolist() == [[2, 3, 4, 5], [7, 8, 9, 0]] and te["target"].tolist() == [6, 10]
    rows, items = SeqBatcher(store, sp.test, 2).history(np.arange(2))
    assert rows.tolist() == [0, 0, 0, 0, 0, 1, 1, 1] and items.tolist() == [1, 2, 3, 4, 5, 7, 8, 9]


def test_holdout_batches_give_target_sets():
    table, _ = generate_seqrec(SeqRecConfig(n_users=40, n_items=30, n_topics=3, min_len=6, max_len=12, seed=3))
    store = SequenceStore.build(P.run(table))
    sp = user_holdout(store, seed=0)
    b = SeqBatcher(store, sp.test, max_len=50).batch(np.arange(len(sp.test)))
    n_t = sp.test.target_end - sp.test.target_start
    assert b["targets"].shape == (len(sp.test), n_t.max())
    assert ((b["targets"] > 0).sum(1).numpy() == n_t).all()


def test_negatives_never_equal_the_positive_and_are_uniform():
    s = UniformSampler(5)
    rng = np.random.default_rng(0)
    pos = np.full(200000, 3)
    neg = s.sample(pos, 1, rng)[:, 0]
    assert not (neg == 3).any() and neg.min() == 1 and neg.max() == 5
    freq = np.bincount(neg, minlength=6)[[1, 2, 4, 5]] / len(neg)
    np.testing.assert_allclose(freq, 0.25, atol=0.005)
    pos0 = s.sample(np.zeros(1000, dtype=int), 2, rng)
    assert pos0.min() >= 1 and pos0.max() <= 5


def test_popularity_sampler_follows_counts_and_skips_positive():
    counts = np.array([0, 1, 2, 7, 0])
    s = PopularitySampler(counts)
    neg = s.sample(np.full(100000, 3), 1, np.random.default_rng(1))[:, 0]
    assert not (neg == 3).any() and not (neg == 4).any()
    # with item 3 excluded, 1 and 2 keep their 1:2 ratio
    np.testing.assert_allclose((neg == 2).mean(), 2 / 3, atol=0.01)


def test_history_exclusion(store):
    ex = InteractionSet(store)
    s = UniformSampler(store.num_items, exclude=ex)
    neg = s.sample(np.full(5000, 1), 1, np.random.default_rng(2), users=np.full(5000, 1))
    assert set(np.unique(neg).tolist()) == {7, 8, 9, 10}  # user a saw items 1..6
    assert ex.contains(np.array([1, 2, 2]), np.array([6, 6, 9])).tolist() == [True, False, True]


def test_training_batches_with_negatives_and_resumable_loader(store):
    sp = leave_one_out(store)
    sampler = UniformSampler(store.num_items)
    b = SeqBatcher(store, sp.train, max_len=4, sampler=sampler)
    full = [x for x in epoch_loader(b, 1, shuffle=True, seed=7, epoch=3)]
    resumed = [x for x in epoch_loader(b, 1, shuffle=True, seed=7, epoch=3, start_step=1)]
    assert len(full) == 2 and len(resumed) == 1
    for k in ("item", "target", "negative"):
        assert torch.equal(full[1][k], resumed[0][k])
    neg, tgt = full[0]["negative"], full[0]["target"]
    assert neg.shape == tgt.shape and not ((neg == tgt) & (tgt > 0)).any() and (neg[tgt == 0] == 0).all()
    assert item_counts(store).tolist() == [0] + [1] * 10


def test_batch_indices_cover_each_sample_once():
    bs = batch_indices(103, 10, shuffle=True, seed=1, epoch=0)
    assert sorted(np.concatenate(bs).tolist()) == list(range(103))
    assert len(batch_indices(103, 10, True, 1, 0, drop_last=True)) == 10
    assert not np.array_equal(np.concatenate(bs), np.concatenate(batch_indices(103, 10, True, 1, 1)))


def test_unknown_batch_field_names_the_field(store):
    with pytest.raises(KeyError, match="category"):
        SeqBatcher(store, leave_one_out(store).train, 5, fields=("category",))


def test_a_list_field_is_refused_as_a_batch_field_and_popularity_never_draws_unseen_items():
    from behaviorseq.data.events import EventTable
    from behaviorseq.data.schema import Schema

    base = make_events(["u"] * 3, [1, 2, 3], [1, 2, 3])
    tags = base.events.append_column("tags", pa.array([["a", "b", "c"], ["d"], ["e"]]))
    store = SequenceStore.build(P.run(EventTable(tags, Schema.of(user="categorical", item="categorical",
                                                                 timestamp="timestamp", tags="categorical_list"))))
    with pytest.raises(ValueError, match=r"\['tags'\] are list or text fields"):  # they were gathered misaligned
        SeqBatcher(store, leave_one_out(store).train, 5, fields=["tags"])
    counts = np.array([0, 5, 0, 3])  # item 2 never trained on
    for alpha in (0.0, 0.75, 1.0):
        s = PopularitySampler(counts, alpha=alpha)
        draws = s._draw(np.zeros(20_000, dtype=np.int64), np.random.default_rng(0))
        freq = np.bincount(draws, minlength=4) / len(draws)
        assert freq[0] == 0 and freq[2] == 0, (alpha, freq)  # alpha = 0: 0**0 put padding's mass on item 1
        want = np.where(counts > 0, counts.astype(float), 0) ** alpha * (counts > 0)
        assert np.allclose(freq[[1, 3]], (want / want.sum())[[1, 3]], atol=0.015), (alpha, freq)
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        PopularitySampler(counts, alpha=-1.0)
