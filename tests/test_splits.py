"""Split views: property tests that no event is in two roles and no target leaks into training."""

import numpy as np
import pytest
from conftest import make_events
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorseq.data import preprocess as P
from behaviorseq.data.splits import TEST, TRAIN, VALID, leave_one_out, rolling_windows, temporal, user_holdout
from behaviorseq.data.store import SequenceStore


@st.composite
def stores(draw):
    n_users = draw(st.integers(1, 12))
    lens = draw(st.lists(st.integers(1, 15), min_size=n_users, max_size=n_users))
    users = np.repeat(np.arange(n_users), lens)
    n = len(users)
    items = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    return SequenceStore.build(P.run(make_events(users.tolist(), items, times)))


def ranges(start, end):
    if len(start) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b) for a, b in zip(start, end)])


def check(store, split):
    roles = split.roles
    assert roles.shape == (store.num_events,)
    eu = store.event_user()
    role_of = {"train": TRAIN, "valid": VALID, "test": TEST}
    for v in (split.train, split.valid, split.test):
        # each range belongs to one user
        assert np.all(eu[v.input_start[v.input_end > v.input_start]] == v.user[v.input_end > v.input_start])
        assert np.all(v.input_start <= v.input_end) and np.all(v.target_start < v.target_end)
        assert np.all(eu[v.target_end - 1] == v.user)
        tgt = ranges(v.target_start, v.target_end)
        assert np.all(roles[tgt] == role_of[v.role]), v.role
    # no validation or test event inside any training input or training target
    train_in = ranges(split.train.input_start, split.train.input_end)
    train_tg = ranges(split.train.target_start, split.train.target_end)
    assert np.all(roles[train_in] == TRAIN) and np.all(roles[train_tg] == TRAIN)
    # validation and test targets never overlap
    va = set(ranges(split.valid.target_start, split.valid.target_end).tolist())
    te = set(ranges(split.test.target_start, split.test.target_end).tolist())
    assert not va & te
    # every event has exactly one role (an int8 array can only hold one; check it holds a valid one)
    inside = roles >= 0
    assert np.all(np.isin(roles[inside], [TRAIN, VALID, TEST]))
    # shifted training views: targets are the inputs one step ahead
    t = split.train
    assert np.all(t.target_start == t.input_start + 1) and np.all(t.target_end == t.input_end + 1)


@settings(max_examples=60, deadline=None)
@given(stores())
def test_leave_one_out_properties(store):
    sp = leave_one_out(store)
    check(store, sp)
    assert np.all(sp.roles >= 0)
    n = store.lengths[sp.test.user]
    assert np.all(sp.test.target_start == store.offsets[sp.test.user + 1] - 1)
    assert np.all(sp.valid.target_start == store.offsets[sp.valid.user + 1] - 2)
    assert np.all(n >= 3)
    # test input sees the validation target; validation input does not see the test target
    assert np.all(sp.test.input_end == sp.valid.target_end)


@settings(max_examples=60, deadline=None)
@given(stores(), st.floats(0.05, 0.4), st.floats(0.05, 0.4))
def test_temporal_properties(store, vf, tf):
    sp = temporal(store, vf, tf)
    check(store, sp)
    t = np.asarray(store.timestamp)
    tv, tt = sp.params["t_valid"], sp.params["t_test"]
    assert np.all(t[sp.roles == TRAIN] < tv) and np.all(t[sp.roles == TEST] >= tt)
    # test histories only hold events before the test cutoff... or test events earlier in time
    hist = ranges(sp.test.input_start, sp.test.input_end)
    assert np.all(np.isin(sp.roles[hist], [TRAIN, VALID, TEST]))
    # every validation event with a history is one sample
    eu = store.event_user()
    starts = store.offsets[eu]
    predictable = (sp.roles == VALID) & (np.arange(store.num_events) > starts)
    assert len(sp.valid) == predictable.sum()


@settings(max_examples=60, deadline=None)
@given(stores(), st.integers(0, 5))
def test_user_holdout_properties(store, seed):
    sp = user_holdout(store, seed=seed)
    check(store, sp)
    users = [set(v.user.tolist()) for v in (sp.train, sp.valid, sp.test)]
    assert not users[1] & users[2] and not users[0] & users[1] and not users[0] & users[2]
    for v in (sp.valid, sp.test):  # held-out input = first 80% (at least one event), targets the rest
        n = store.lengths[v.user]
        k = v.input_end - v.input_start
        assert np.all(k == np.clip((n * 0.8).astype(int), 1, n - 1))
        assert np.all(v.target_end == store.offsets[v.user + 1])


@settings(max_examples=30, deadline=None)
@given(stores(), st.integers(1, 4))
def test_rolling_windows_cover_the_stream_once(store, k):
    t = np.asarray(store.timestamp)
    if t.min() == t.max():
        return
    windows = rolling_windows(store, k)
    covered = np.zeros(store.num_events, dtype=int)
    for w in windows:
        check(store, w)
        covered += w.roles >= 0
    assert np.all(covered == 1)


def test_leave_one_out_on_a_hand_case():
    store = SequenceStore.build(P.run(make_events(["a"] * 5 + ["b"] * 2, [1, 2, 3, 4, 5, 6, 7], list(range(7)))))
    sp = leave_one_out(store)
    assert sp.roles.tolist() == [0, 0, 0, 1, 2, 0, 0]
    assert (sp.test.input_start[0], sp.test.input_end[0], sp.test.target_start[0]) == (0, 4, 4)
    assert len(sp.train) == 2 and sp.describe()["samples"] == {"train": 2, "valid": 1, "test": 1}


def test_temporal_rejects_bad_cutoffs():
    store = SequenceStore.build(P.run(make_events(["a"] * 3, [1, 2, 3], [1, 2, 3])))
    with pytest.raises(ValueError, match="after the test cutoff"):
        temporal(store, cutoffs=(3, 2))


@settings(max_examples=40, deadline=None)
@given(stores(), st.integers(1, 6))
def test_training_windows_cover_every_target_once(store, max_len):
    tr = leave_one_out(store).train
    w = tr.windows(max_len)
    assert np.all(w.input_end - w.input_start <= max_len) and np.all(w.input_end > w.input_start)
    assert sorted(ranges(w.target_start, w.target_end).tolist()) == sorted(ranges(tr.target_start, tr.target_end).tolist())
    assert np.all(w.target_start == w.input_start + 1)


@settings(max_examples=40, deadline=None)
@given(stores())
def test_prefix_samples_are_every_training_target_with_its_whole_history(store):
    tr = leave_one_out(store).train
    p = tr.prefixes()
    assert (p.target_end - p.target_start == 1).all() and (p.target_start == p.input_end).all()
    assert sorted(p.target_start.tolist()) == sorted(ranges(tr.target_start, tr.target_end).tolist())
    first = dict(zip(tr.user.tolist(), tr.input_start.tolist()))  # each user's first training event
    assert all(first[u] == s for u, s in zip(p.user.tolist(), p.input_start.tolist()))
    assert np.array_equal(tr.prefixes().input_end, p.input_end)  # row i names the same prefix every time


@settings(max_examples=40, deadline=None)
@given(stores(), st.integers(0, 2**16))
def test_random_targets_draw_one_admissible_target_per_user(store, seed):
    tr = leave_one_out(store).train
    r = tr.random_targets(np.random.default_rng(seed), min_input=4)
    assert len(r) == len(tr) and np.array_equal(r.user, tr.user)
    n_in = r.input_end - r.input_start  # inputs before the target
    n_events = tr.target_end - tr.input_start
    assert (r.target_start == r.input_end).all() and (r.target_end == r.target_start + 1).all()
    assert (r.target_end <= tr.target_end).all()  # never a validation/test event
    assert ((n_in >= 4) | (n_events <= 4)).all() and (n_in >= 1).all()
