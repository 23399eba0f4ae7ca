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
