"""One category per item, for Diversity@N and ComiRec's controllable aggregation.

Which attribute is "the category" is a stated choice per dataset (recorded with every result):
- ml-100k: the first genre of the item's ``class`` list (the issue's choice; genres are listed in
  the alphabetical order of the original u.item flags, so "first" means alphabetically first).
- Beauty / Toys_and_Games / LastFM (S3-Rec ``item2attributes.json``): the item's LAST attribute id.
  The ids are anonymised, but the lists read as [brand, category path from root to leaf]: the first
  ids (443 distinct on Beauty, 657 on Toys) almost never occur elsewhere in any list (6 / 0 of them
  do), while the last ids (195 / 333 distinct) often occur mid-list in other items (42 / 90), as
  parent categories do. So the last id is taken as the item's deepest category.
- Taobao and the synthetic sets: their own ``category`` column.
Items without the attribute get category 0 (a category of their own kind, "unknown").
"""

from __future__ import annotations

import numpy as np

from behaviorseq.data.store import SequenceStore

DEFAULTS = {  # dataset name -> (item column, which element of a list-valued column)
    "ml-100k": ("class", "first"),
    "beauty": ("attributes", "last"),
    "toys": ("attributes", "last"),
    "lastfm": ("attributes", "last"),
}


def item_categories(store: SequenceStore, column: str | None = None, pick: str = "first") -> tuple[np.ndarray, dict]:
    """(category code per item id [num_items + 1] int64, a record of the choice).

    ``column`` defaults to the dataset's entry in :data:`DEFAULTS`, else ``category``."""
    name = str(store.meta.get("name", "")).lower()
    if column is None:
        column, pick = DEFAULTS.get(name, ("category", "first"))
    if column not in store.items:
        if column in store.events:  # an event field (Taobao's log carries the category per event)
            cate = np.zeros(store.num_items + 1, dtype=np.int64)
            cate[np.asarray(store.item)] = np.asarray(store.events[column].data).astype(np.int64)  # last wins
            return cate, {"column": column, "pick": "event field", "distinct": int(len(np.unique(cate[1:])))}
        raise KeyError(f"column {column!r} is neither an item nor an event field of {name!r}; item fields: "
                       f"{sorted(store.items)}, event fields: {sorted(store.events)}")
    if pick not in ("first", "last"):
        raise ValueError(f"pick must be 'first' or 'last', got {pick!r}")
    col = store.items[column]
    data = np.asarray(col.data).astype(np.int64)
    if col.offsets is None:
        cate = data
    else:
        off = np.asarray(col.offsets, dtype=np.int64)
        n = np.diff(off)
        at = off[:-1] if pick == "first" else off[1:] - 1
        cate = np.where(n > 0, data[np.clip(at, 0, max(len(data) - 1, 0))], 0) if len(data) else np.zeros(len(n), np.int64)
    if len(cate) != store.num_items + 1:
        raise ValueError(f"item column {column!r} has {len(cate)} rows, expected num_items + 1 = {store.num_items + 1}")
    record = {"column": column, "pick": pick if col.offsets is not None else "value",
              "distinct": int(len(np.unique(cate[1:])))}
    return cate, record
