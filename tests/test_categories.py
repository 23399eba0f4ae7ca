"""The category choice behind Diversity@N: ``pick="coarsest"`` on path-like attribute lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from behaviorseq.data import open_dataset
from behaviorseq.data.categories import _coarsest, item_categories


def test_coarsest_takes_the_most_carried_id_below_the_root_and_skips_the_brand():
    # [brand, root, level 1, level 2]; the root (id 9) is on every row, brand 1 is on two rows
    rows = [[1, 9, 20, 31], [2, 9, 20, 32], [1, 9, 21, 33], [3, 9, 21], [4, 40, 41], []]
    off = np.r_[0, np.cumsum([len(r) for r in rows])]
    data = np.concatenate([np.asarray(r, np.int64) for r in rows])
    # root 9 is on 4 of 6 rows (> half): ignored; 20 and 21 on 2 rows beat their leaves; row 4 ties
    # 40 / 41 (one row each): the smaller id; the empty row gets 0
    np.testing.assert_array_equal(_coarsest(data, off), [20, 20, 21, 21, 40, 0])


def test_coarsest_through_a_dataset(tmp_path: Path):
    (tmp_path / "Toy.txt").write_text("1 10 11 12\n2 11 13\n3 12 10\n")
    (tmp_path / "Toy_item2attributes.json").write_text(
        '{"10": [5, 1, 2, 3], "11": [6, 1, 2, 4], "12": [5, 1, 7], "13": [6, 1, 7, 8]}')
    store = open_dataset(str(tmp_path / "Toy.txt"), cache_dir=tmp_path / "cache")
    cate, record = item_categories(store, "attributes", "coarsest")
    assert record == {"column": "attributes", "pick": "coarsest", "distinct": 2}
    assert cate[0] == 0 and len(cate) == store.num_items + 1
    # root 1 is on every item; 2 and 7 each carry two items, the leaves one; brands 5 and 6 are skipped
    items = store.raw_items(np.arange(1, store.num_items + 1))
    got = dict(zip(items, store.items["attributes"].decode(cate[1:])))
    assert got == {10: 2, 11: 2, 12: 7, 13: 7}
    with pytest.raises(ValueError, match="'first', 'last' or 'coarsest'"):
        item_categories(store, "attributes", "middle")


def test_coarsest_keeps_a_first_id_that_is_a_category_and_a_given_pick_is_kept(tmp_path: Path):
    # the last row has no brand: its first id, 20, is a category (it sits after a brand elsewhere); skipping every
    # first id gave that row 31, a level too deep
    rows = [[1, 9, 20, 31], [2, 9, 20, 32], [1, 9, 21, 33], [3, 9, 21], [4, 40, 41], [], [20, 31]]
    off = np.r_[0, np.cumsum([len(r) for r in rows])]
    data = np.concatenate([np.asarray(r, np.int64) for r in rows])
    np.testing.assert_array_equal(_coarsest(data, off), [20, 20, 21, 21, 40, 0, 20])
    (tmp_path / "beauty.txt").write_text("1 10 11\n2 11 10\n")
    (tmp_path / "beauty_item2attributes.json").write_text('{"10": [5, 1, 2], "11": [6, 1, 3]}')
    store = open_dataset(str(tmp_path / "beauty.txt"), cache_dir=tmp_path / "cache")
    store.meta["name"] = "beauty"  # the registry's defaults: column attributes, pick last
    assert item_categories(store)[1]["pick"] == "last"
    assert item_categories(store, pick="coarsest")[1]["pick"] == "coarsest"  # it came back as "last"


def test_bfloat16_pools_and_the_ivf_seed_range():
    import torch

    from behaviorseq.index.aggregation import merge_top_n
    from behaviorseq.index.faiss_index import IndexConfig

    s = torch.tensor([[0.5, 0.25, 0.125]])
    it = torch.tensor([[3, 1, 2]])
    assert np.array_equal(np.asarray(merge_top_n(s.bfloat16(), it, 2).items), np.asarray(merge_top_n(s, it, 2).items))
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\^31\)"):  # a SWIG OverflowError at fit
        IndexConfig(kind="ivf", seed=2**31)
