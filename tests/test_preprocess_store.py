"""Preprocessing steps and the SequenceStore: encoding, k-core, dedup, truncation, CSR, cache."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import make_events

from behaviorseq.data import preprocess as P
from behaviorseq.data.events import EventTable
from behaviorseq.data.schema import Schema
from behaviorseq.data.store import SequenceStore, cached_store
from behaviorseq.data.synthetic import SeqRecConfig, generate_seqrec


def test_ids_are_contiguous_from_one_sorted_by_raw_value_and_map_back():
    t = make_events(["u9", "u1", "u1", "u5"], [30, 10, 20, 10], [1, 2, 1, 7])
    prep = P.run(t)
    store = SequenceStore.build(prep)
    assert store.num_users == 3 and store.num_items == 3
    assert store.raw_users([1, 2, 3]) == ["u1", "u5", "u9"]
    # u1's events sorted by time: item 20 (t=1), item 10 (t=2)
    assert store.raw_items(store.sequence(1)) == [20, 10]
    assert list(store.offsets) == [0, 0, 2, 3, 4]
    assert store.lengths[0] == 0  # the padding user


def test_time_sort_is_stable_for_ties():
    t = make_events(["a"] * 4, [4, 3, 2, 1], [5, 5, 5, 1])
    store = SequenceStore.build(P.run(t))
    assert store.raw_items(store.sequence(1)) == [1, 4, 3, 2]


def test_iterative_k_core_reaches_a_fixed_point():
    rng = np.random.default_rng(0)
    n = 5000
    u, i = rng.integers(0, 300, n), (rng.zipf(1.6, n) % 400)
    t = make_events(u.tolist(), i.tolist(), np.arange(n).tolist())
    prep = P.run(t, [P.KCore(5, 5)])
    du, di = np.bincount(prep.user)[1:], np.bincount(prep.item)[1:]
    assert du.min() >= 5 and di.min() >= 5
    # a brute-force reference loop
    pairs = list(zip(u.tolist(), i.tolist()))
    while True:
        cu, ci = {}, {}
        for a, b in pairs:
            cu[a] = cu.get(a, 0) + 1
            ci[b] = ci.get(b, 0) + 1
        new = [(a, b) for a, b in pairs if cu[a] >= 5 and ci[b] >= 5]
        if len(new) == len(pairs):
            break
        pairs = new
    assert len(pairs) == len(prep.item)
    assert prep.record[-1]["events"] == len(pairs) and prep.record[-1]["step"] == "k_core"


def test_dedup_modes():
    t = make_events(["a", "a", "a", "a"], [1, 2, 1, 1], [3, 1, 2, 2])
    first = P.run(t, [P.Dedup("first")])
    assert first.events["timestamp"].to_pylist() == [1, 2]  # item 2 @1, item 1 @2
    last = P.run(t, [P.Dedup("last")])
    assert sorted(last.events["timestamp"].to_pylist()) == [1, 3]
    exact = P.run(t, [P.Dedup("exact")])
    assert len(exact.item) == 3


def test_threshold_label_and_truncate():
    t = make_events(["a"] * 5 + ["b"] * 2, [1, 2, 3, 4, 5, 1, 2], [1, 2, 3, 4, 5, 1, 2],
                    rating=[5.0, 1.0, 4.0, 4.0, 2.0, 5.0, 3.0])
    kept = P.run(t, [P.Threshold("rating", ">=", 4)])
    assert len(kept.item) == 4
    lab = P.run(t, [P.Label("rating", ">=", 4)])
    assert lab.events["label"].to_pylist() == [1, 0, 1, 1, 0, 1, 0]
    tr = P.run(t, [P.Truncate(2)])
    assert tr.events["timestamp"].to_pylist() == [4, 5, 1, 2]  # the most recent two of each user


def test_steps_round_trip_through_dicts_and_reject_unknown():
    steps = [P.Dedup("last"), P.KCore(3, 2), P.Threshold("rating", ">", 3.5), P.Truncate(50)]
    again = [P.step_from_dict(json.loads(json.dumps(s.to_dict()))) for s in steps]
    assert again == steps
    with pytest.raises(ValueError, match="valid steps"):
        P.step_from_dict({"step": "kcore"})
    with pytest.raises(ValueError, match="bad arguments"):
        P.step_from_dict({"step": "k_core", "users": 3})


def test_store_round_trip_mmap_with_fields_and_side_tables(tmp_path):
    ev = pa.table({"user": [1, 1, 2, 2, 2], "item": ["x", "y", "y", "z", "x"], "timestamp": [1, 2, 1, 2, 3],
                   "behavior": ["pv", "buy", "pv", None, "cart"], "amount": [1.5, 2.0, None, 4.0, 5.0]})
    items = pa.table({"item": ["z", "x", "w"], "genre": ["g2", "g1", "g3"], "tags": [[7], [5, 6], []],
                      "title": ["Zed", "Ex", "Wu"]})
    t = EventTable(ev, Schema.of(user="categorical", item="categorical", timestamp="timestamp",
                                 behavior="categorical", amount="numeric"),
                   items=items, item_schema=Schema.of(item="categorical", genre="categorical",
                                                      tags="categorical_list", title="text"))
    store = SequenceStore.build(P.run(t))
    path = store.save(tmp_path / "s")
    back = SequenceStore.load(path)
    assert isinstance(back.item, np.memmap)
    np.testing.assert_array_equal(back.item, store.item)
    beh = back.events["behavior"]
    assert beh.decode(beh.data) == ["pv", "buy", "pv", None, "cart"]
    assert np.isnan(back.events["amount"].data[2])
    # item ids: x=1, y=2, z=3 ; y has no row in the item table -> 0 / empty / null
    g = back.items["genre"]
    assert g.decode(g.data) == [None, "g1", None, "g2"]
    tags = back.items["tags"]
    assert tags.offsets.tolist() == [0, 0, 2, 2, 3]
    assert tags.decode(tags.data) == [5, 6, 7]
    assert back.items["title"].data.to_pylist() == [None, "Ex", None, "Zed"]
    assert back.meta["stats"]["events"] == 5 and back.meta["preprocess"][0]["step"] == "load"


def test_save_is_atomic_and_leaves_no_partial_entry(tmp_path, monkeypatch):
    table, _ = generate_seqrec(SeqRecConfig(n_users=50, n_items=40, n_topics=4, seed=1))
    store = SequenceStore.build(P.run(table))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError):
        store.save(tmp_path / "entry")
    assert not (tmp_path / "entry").exists()
    assert list(tmp_path.iterdir()) == []


def test_cache_is_keyed_by_source_and_config(tmp_path):
    src = tmp_path / "data.txt"
    src.write_text("x")
    calls = []
    table, _ = generate_seqrec(SeqRecConfig(n_users=30, n_items=20, n_topics=2, seed=2))

    def build():
        calls.append(1)
        return SequenceStore.build(P.run(table))

    a = cached_store([src], {"steps": []}, build, tmp_path / "c")
    b = cached_store([src], {"steps": []}, build, tmp_path / "c")
    assert len(calls) == 1 and a.path == b.path
    cached_store([src], {"steps": [{"step": "k_core"}]}, build, tmp_path / "c")
    assert len(calls) == 2
    src.write_text("changed")
    cached_store([src], {"steps": []}, build, tmp_path / "c")
    assert len(calls) == 3


def test_a_failed_refresh_keeps_the_cached_store(tmp_path):
    src = tmp_path / "data.txt"
    src.write_text("x")
    table, _ = generate_seqrec(SeqRecConfig(n_users=30, n_items=20, n_topics=2, seed=2))
    first = cached_store([src], {"steps": []}, lambda: SequenceStore.build(P.run(table)), tmp_path / "c")

    def broken():
        raise ValueError("row 7: bad timestamp")

    with pytest.raises(ValueError, match="row 7"):
        cached_store([src], {"steps": []}, broken, tmp_path / "c", refresh=True)
    kept = cached_store([src], {"steps": []}, broken, tmp_path / "c")  # loads: no build
    assert np.array_equal(kept.offsets, first.offsets)
    again = cached_store([src], {"steps": []}, lambda: SequenceStore.build(P.run(table)), tmp_path / "c", refresh=True)
    assert again.path == first.path and [p.name for p in (tmp_path / "c").iterdir()] == [first.path.name]


def test_a_broken_entry_without_meta_is_rebuilt(tmp_path):
    src = tmp_path / "data.txt"
    src.write_text("x")
    table, _ = generate_seqrec(SeqRecConfig(n_users=30, n_items=20, n_topics=2, seed=2))
    first = cached_store([src], {"steps": []}, lambda: SequenceStore.build(P.run(table)), tmp_path / "c")
    (first.path / "meta.json").unlink()  # e.g. deleted by hand, or a copy interrupted
    again = cached_store([src], {"steps": []}, lambda: SequenceStore.build(P.run(table)), tmp_path / "c")
    assert again.path == first.path and again.num_users == 30


def test_an_entry_another_process_finished_meanwhile_is_kept_not_swapped(tmp_path):
    src = tmp_path / "data.txt"
    src.write_text("x")
    table, _ = generate_seqrec(SeqRecConfig(n_users=30, n_items=20, n_topics=2, seed=2))
    other, _ = generate_seqrec(SeqRecConfig(n_users=40, n_items=20, n_topics=2, seed=3))

    def slow_build():  # while this builds, another process finishes the same entry
        cached_store([src], {"steps": []}, lambda: SequenceStore.build(P.run(table)), tmp_path / "c")
        return SequenceStore.build(P.run(other))

    got = cached_store([src], {"steps": []}, slow_build, tmp_path / "c")
    assert got.num_users == 30  # the finished entry stays (readers may have it open); ours is dropped
    assert [p.name for p in (tmp_path / "c").iterdir()] == [got.path.name]


def test_added_label_column_reaches_the_store():
    t = make_events(["a", "a", "b"], [1, 2, 1], [1, 2, 3], rating=[5.0, 2.0, 4.0])
    store = SequenceStore.build(P.run(t, [P.Label("rating", ">=", 4), P.Threshold("rating", ">", 1)]))
    assert store.events["label"].data.tolist() == [1, 0, 1]


def test_two_refreshes_of_one_entry_at_once_both_end_with_a_whole_entry(tmp_path, monkeypatch):
    from behaviorseq.data import store as S

    src = tmp_path / "data.txt"
    src.write_text("x")
    small, _ = generate_seqrec(SeqRecConfig(n_users=30, n_items=20, n_topics=2, seed=2))
    other, _ = generate_seqrec(SeqRecConfig(n_users=40, n_items=20, n_topics=2, seed=3))
    first = cached_store([src], {"steps": []}, lambda: SequenceStore.build(P.run(small)), tmp_path / "c")
    entry = first.path

    def while_another_swaps():  # the other process has moved the entry aside and not yet put its own in
        os.rename(entry, tmp_path / "held")
        return SequenceStore.build(P.run(small))

    ours = cached_store([src], {"steps": []}, while_another_swaps, tmp_path / "c", refresh=True)
    assert ours.path == entry and ours.num_users == 30  # was FileNotFoundError
    real = os.rename

    def another_lands_first(a, b):  # between our two renames, the other process's rebuild takes the place
        if Path(a).name == "new":
            SequenceStore.build(P.run(other)).save(b)
        return real(a, b)

    monkeypatch.setattr(S.os, "rename", another_lands_first)
    got = cached_store([src], {"steps": []}, lambda: SequenceStore.build(P.run(small)), tmp_path / "c", refresh=True)
    assert got.path == entry and got.num_users == 40  # theirs, loaded: was an OSError and a .swap- folder left
    assert [p.name for p in (tmp_path / "c").iterdir()] == [entry.name]


def test_a_side_table_repeating_a_key_keeps_its_last_row_in_every_column():
    events = make_events(["u"] * 4, ["a", "b", "c", "d"], [1, 2, 3, 4])
    items = pa.table({"item": ["a", "b", "a", "c", "d"],
                      "genre": pa.array([["g1"], ["g3"], ["g2", "g4"], ["g7"], ["g8"]]), "year": [2000, 2001, 2002, 2003, 2004]})
    et = EventTable(events.events, events.schema, items=items,
                    item_schema=Schema.of(item="categorical", genre="categorical_list", year="numeric"), name="toy")
    with pytest.warns(UserWarning, match="1 row\\(s\\) repeat a key"):
        store = SequenceStore.build(P.run(et))
    raw = store.events["item"].vocab.to_pylist()  # [None, a, b, c, d]
    g = store.items["genre"]
    genres = {raw[i]: g.vocab.take(pa.array(np.asarray(g.data)[g.offsets[i]:g.offsets[i + 1]])).to_pylist()
              for i in range(1, 5)}
    assert genres == {"a": ["g2", "g4"], "b": ["g3"], "c": ["g7"], "d": ["g8"]}  # b, c, d were shifted
    assert dict(zip(raw[1:], np.asarray(store.items["year"].data)[1:].tolist())) == {"a": 2002, "b": 2001, "c": 2003,
                                                                                     "d": 2004}


def test_int32_times_spanning_more_than_2_31_sort_in_time_order():
    t = np.array([2_000_000_000, -2_000_000_000, 0], dtype=np.int32)
    assert P.user_time_order(np.zeros(3, dtype=np.int64), t).tolist() == [1, 2, 0]  # t - tmin wrapped in int32
