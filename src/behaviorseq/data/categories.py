"""One category per item, for Diversity@N and ComiRec's controllable aggregation.

Which attribute is "the category" is a stated choice per dataset (recorded with every result):
- ml-100k: the first genre of the item's ``class`` list (the issue's choice; genres are listed in
  the alphabetical order of the original u.item flags, so "first" means alphabetically first).
- Beauty / Toys_and_Games / LastFM (S3-Rec ``item2attributes.json``): the item's LAST attribute id.
  The ids are anonymised, but the lists read as [brand, category path from root to leaf] (a brand may be
  missing: 4,609 Beauty items start with a category): the first ids (443 distinct on Beauty, 659 on Toys)
  seldom occur elsewhere in any list (8 / 1 of them do), while the last ids (195 / 333 distinct) often
  occur mid-list in other items (42 / 90), as parent categories do. So the last id is taken as the
  item's deepest category. LastFM's lists are repeated tags, not a path: its "last" is the last tag.
  These leaf categories are fine (195 / 333 values): Diversity@50 is already about 0.94 for ComiRec
  before any diversification. ``pick="coarsest"`` gives a top-level category instead (below).
- Taobao and the synthetic sets: their own ``category`` column.
Items without the attribute get category 0 (a category of their own kind, "unknown").

``pick="coarsest"`` (for path-like attribute lists): among the item's ids other than its brand (a first id
that never occurs at a later position of any list; until session 25 the first id was skipped always, which
put the items without a brand one level too deep), the one carried by the most items, ignoring ids that
more than half of all items carry (a root such as Toys' "Toys & Games"). An ancestor is carried by at least
as many items as its descendants, so this is the highest level of the path below the root. Ties go to the
smaller id; an item with no qualifying id gets 0.
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


def item_categories(store: SequenceStore, column: str | None = None, pick: str | None = None) -> tuple[np.ndarray, dict]:
    """(category code per item id [num_items + 1] int64, a record of the choice).

    ``column`` / ``pick`` default to the dataset's entry in :data:`DEFAULTS`, else ``category`` / ``first`` (a
    ``pick`` given is kept: ``pick="coarsest"`` returned the default ``last`` before)."""
    name = str(store.meta.get("name", "")).lower()
    default_column, default_pick = DEFAULTS.get(name, ("category", "first"))
    if column is None:
        column = default_column
        if column not in store.items and column == "class" and "genres" in store.items:
            column = "genres"  # ml-100k read from GroupLens' own u.data / u.item names the genres so
    pick = pick or default_pick
    if column not in store.items:
        if column in store.events:  # an event field (Taobao's log carries the category per event)
            cate = np.zeros(store.num_items + 1, dtype=np.int64)
            cate[np.asarray(store.item)] = np.asarray(store.events[column].data).astype(np.int64)  # last wins
            return cate, {"column": column, "pick": "event field", "distinct": int(len(np.unique(cate[1:])))}
        raise KeyError(f"column {column!r} is neither an item nor an event field of {name!r}; item fields: "
                       f"{sorted(store.items)}, event fields: {sorted(store.events)}")
    if pick not in ("first", "last", "coarsest"):
        raise ValueError(f"pick must be 'first', 'last' or 'coarsest', got {pick!r}")
    col = store.items[column]
    data = np.asarray(col.data).astype(np.int64)
    if col.offsets is None:
        cate = data
    elif pick == "coarsest":
        cate = _coarsest(data, np.asarray(col.offsets, dtype=np.int64))
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


def _coarsest(data: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Per row of a ragged id list: the id after the first that most rows carry, ignoring ids carried by
    more than half of the rows; 0 where no id qualifies. Vectorised over all rows."""
    n_rows = len(off) - 1
    row = np.repeat(np.arange(n_rows), np.diff(off))
    if not len(data):
        return np.zeros(n_rows, np.int64)
    pairs = np.unique(np.stack([row, data], 1), axis=0)  # an id counted once per row
    carried = np.bincount(pairs[:, 1], minlength=int(data.max()) + 1)
    pos = np.arange(len(data)) - off[row]  # place in its own list
    later = np.zeros(int(data.max()) + 1, dtype=bool)
    later[data[pos > 0]] = True  # ids seen after the first place somewhere: categories, not brands
    brand = (pos == 0) & ~later[data]
    ok = ~brand & (carried[data] <= n_rows / 2)
    r, d = row[ok], data[ok]
    order = np.lexsort((d, -carried[d], r))  # per row: most carried first, then the smaller id
    r, d = r[order], d[order]
    first = np.r_[True, r[1:] != r[:-1]]
    cate = np.zeros(n_rows, np.int64)
    cate[r[first]] = d[first]
    return cate
