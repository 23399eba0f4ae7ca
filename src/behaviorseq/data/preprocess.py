"""Composable, recorded preprocessing: thresholds, de-duplication, k-core, truncation, id encoding.

Every step is a small dataclass with ``apply(frame) -> frame`` and ``to_dict()``; ``run`` applies a
list of steps to an EventTable and records each step with the event/user/item counts after it, so the
exact preprocessing travels with every store and every result. Steps work on dense integer codes of the
raw ids (Arrow dictionary encoding, then numpy ``bincount``), never on Python objects per event.

Final ids are contiguous ints with 0 reserved for padding; raw ids are sorted (numerically for integer
ids, lexicographically for strings) before numbering, so the numbering does not depend on row order and
sources whose ids are already ``1..n`` (the seqrec files) keep them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from behaviorseq.data.events import EventTable
from behaviorseq.data.schema import ITEM, TIME, USER, Field, Kind, Schema


@dataclass
class Frame:
    """Working state of preprocessing. The source table is never copied step by step: steps filter
    ``rows`` (indices into it) and the arrays aligned with them; ``run`` takes the rows once at the end."""

    table: pa.Table  # the source events, untouched
    rows: np.ndarray  # [n] int64 surviving row indices into ``table``
    ucode: np.ndarray  # [n] int32/int64 dense code of the raw user id
    icode: np.ndarray  # [n]
    t: np.ndarray  # [n] timestamps
    n_ucodes: int
    n_icodes: int
    added: dict = field(default_factory=dict)  # new columns (e.g. a label), aligned with rows

    def filter(self, keep: np.ndarray) -> Frame:
        if keep.all():
            return self
        return Frame(self.table, self.rows[keep], self.ucode[keep], self.icode[keep], self.t[keep],
                     self.n_ucodes, self.n_icodes, {k: v[keep] for k, v in self.added.items()})

    @property
    def names(self) -> list[str]:
        return self.table.column_names + [k for k in self.added if k not in self.table.column_names]

    def column(self, name: str) -> pa.Array:
        if name in self.added:
            return pa.array(self.added[name])
        if name not in self.table.column_names:
            raise KeyError(f"no field {name!r}; fields are {self.names}")
        col = self.table[name]
        return col if len(self.rows) == self.table.num_rows else col.take(pa.array(self.rows))

    def counts(self) -> dict:
        return {
            "events": int(len(self.ucode)),
            "users": int(np.count_nonzero(np.bincount(self.ucode, minlength=self.n_ucodes))),
            "items": int(np.count_nonzero(np.bincount(self.icode, minlength=self.n_icodes))),
        }


class Step:
    kind: ClassVar[str] = ""

    def apply(self, f: Frame) -> Frame:  # pragma: no cover - interface
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"step": self.kind, **asdict(self)}


_OPS = {">=": pc.greater_equal, ">": pc.greater, "<=": pc.less_equal, "<": pc.less, "==": pc.equal, "!=": pc.not_equal}


@dataclass
class Threshold(Step):
    """Keep events whose ``field`` satisfies ``op value`` (e.g. rating >= 4). Null values are dropped."""

    field: str
    op: str
    value: float
    kind: ClassVar[str] = "threshold"

    def apply(self, f: Frame) -> Frame:
        if self.op not in _OPS:
            raise ValueError(f"threshold op must be one of {list(_OPS)}, got {self.op!r}")
        mask = _OPS[self.op](f.column(self.field), self.value).fill_null(False)
        return f.filter(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))


@dataclass
class Label(Step):
    """Add a binary ``label`` field: 1 where ``field op value`` (e.g. click = rating >= 4), else 0."""

    field: str
    op: str
    value: float
    name: str = "label"
    kind: ClassVar[str] = "label"

    def apply(self, f: Frame) -> Frame:
        lab = _OPS[self.op](f.column(self.field), self.value).fill_null(False).cast(pa.int8())
        added = {**f.added, self.name: np.asarray(lab.to_numpy(zero_copy_only=False), dtype=np.int8)}
        return Frame(f.table, f.rows, f.ucode, f.icode, f.t, f.n_ucodes, f.n_icodes, added)


@dataclass
class Dedup(Step):
    """Drop repeated events. ``keep``: "first"/"last" (per user-item pair, by time) or "exact"
    (only rows identical in user, item and timestamp)."""

    keep: str = "first"
    kind: ClassVar[str] = "dedup"

    def apply(self, f: Frame) -> Frame:
        if self.keep not in ("first", "last", "exact"):
            raise ValueError(f"dedup keep must be 'first', 'last' or 'exact', got {self.keep!r}")
        # One stable sort groups each (user, item) pair with its events in time order.
        key = f.ucode.astype(np.int64) * np.int64(f.n_icodes) + f.icode
        order = np.lexsort((f.t, key))
        k = key[order]
        dup = np.zeros(len(order), dtype=bool)
        if self.keep == "first":
            dup[1:] = k[1:] == k[:-1]
        elif self.keep == "last":
            dup[:-1] = k[:-1] == k[1:]
        else:
            ts = f.t[order]
            dup[1:] = (k[1:] == k[:-1]) & (ts[1:] == ts[:-1])
        keep = np.ones(len(order), dtype=bool)
        keep[order[dup]] = False
        return f.filter(keep)


@dataclass
class KCore(Step):
    """Iterative k-core: repeat until every user has >= ``user`` events and every item >= ``item``."""

    user: int = 5
    item: int = 5
    max_rounds: int = 1000
    kind: ClassVar[str] = "k_core"

    def apply(self, f: Frame) -> Frame:
        # Each round works on the survivors only, so later rounds get cheaper.
        u, i, idx = f.ucode, f.icode, np.arange(len(f.ucode))
        for _ in range(self.max_rounds + 1):  # + 1: the round that confirms a fixed point reached in the last
            du = np.bincount(u, minlength=f.n_ucodes)
            di = np.bincount(i, minlength=f.n_icodes)
            ok = (du[u] >= self.user) & (di[i] >= self.item)
            if ok.all():
                break
            u, i, idx = u[ok], i[ok], idx[ok]
        else:
            raise ValueError(f"k_core (user {self.user}, item {self.item}) did not reach a fixed point in "
                             f"max_rounds={self.max_rounds} rounds; raise max_rounds")
        keep = np.zeros(len(f.ucode), dtype=bool)
        keep[idx] = True
        return f.filter(keep)


@dataclass
class Truncate(Step):
    """Keep each user's most recent ``max_len`` events (by time, ties in source order)."""

    max_len: int
    kind: ClassVar[str] = "truncate"

    def apply(self, f: Frame) -> Frame:
        order = _time_order(f)
        u = f.ucode[order]
        counts = np.bincount(u, minlength=f.n_ucodes)
        ends = np.cumsum(counts)[u]  # exclusive end of each event's user block in sorted order
        from_end = ends - np.arange(len(u)) - 1
        keep = np.zeros(len(u), dtype=bool)
        keep[order] = from_end < self.max_len
        return f.filter(keep)


@dataclass
class MinLength(Step):
    """Drop users with fewer than ``min_len`` events (no effect on items; not iterative)."""

    min_len: int
    kind: ClassVar[str] = "min_length"

    def apply(self, f: Frame) -> Frame:
        du = np.bincount(f.ucode, minlength=f.n_ucodes)
        return f.filter(du[f.ucode] >= self.min_len)


STEPS: dict[str, type[Step]] = {c.kind: c for c in (Threshold, Label, Dedup, KCore, Truncate, MinLength)}


def step_from_dict(d: dict) -> Step:
    d = dict(d)
    kind = d.pop("step", None)
    if kind not in STEPS:
        raise ValueError(f"unknown preprocessing step {kind!r}; valid steps are {sorted(STEPS)}")
    try:
        return STEPS[kind](**d)
    except TypeError as e:
        raise ValueError(f"bad arguments for step {kind!r}: {e}") from None


def user_time_order(user: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Stable order by (user, timestamp); ties keep the source order. One argsort of a combined int64
    key when integer times allow it (much faster than a two-key lexsort at 100M events)."""
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(t.dtype, np.integer):
        tmin, span = int(t.min()), int(t.max()) - int(t.min()) + 1
        if span * (int(user.max()) + 1) < 2**62:
            return np.argsort(user.astype(np.int64) * span + (t.astype(np.int64) - tmin), kind="stable")  # int32 t - tmin wraps
    return np.lexsort((t, user))


def _time_order(f: Frame) -> np.ndarray:
    return user_time_order(f.ucode, f.t)


def dense_codes(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Hash-encode a column: returns (codes [n] int32, unique values in first-seen order)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError(f"id column has {arr.null_count} null values")
    enc = pc.dictionary_encode(arr)
    return enc.indices.to_numpy(zero_copy_only=False), enc.dictionary  # int32 codes: half the memory


def sorted_vocab(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Sort unique raw values; returns (sorted values, rank of each input value)."""
    order = pc.sort_indices(values).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return values.take(pa.array(order)), rank


@dataclass
class Prepared:
    """Result of ``run``: events sorted by (user, time) with ids 1..n (0 = padding), and vocabularies.

    ``user_vocab[k]`` / ``item_vocab[k]`` is the raw id of code k (index 0 is null: padding)."""

    events: pa.Table
    user: np.ndarray  # [n] int64 codes 1..n_users, sorted
    item: np.ndarray  # [n] int64 codes 1..n_items
    user_vocab: pa.Array
    item_vocab: pa.Array
    source: EventTable
    record: list[dict] = field(default_factory=list)


def run(table: EventTable, steps: list[Step] | None = None) -> Prepared:
    """Apply ``steps`` in order, then number users/items 1..n and sort events stably by (user, time)."""
    steps = list(steps or [])
    ucode, uvals = dense_codes(table.events[USER])
    icode, ivals = dense_codes(table.events[ITEM])
    t = table.events[TIME].to_numpy()
    f = Frame(table.events, np.arange(len(t)), ucode, icode, t, len(uvals), len(ivals))
    del ucode, icode
    record = [{"step": "load", "sources": list(table.sources), **f.counts()}]
    for s in steps:
        f = s.apply(f)
        record.append({**s.to_dict(), **f.counts()})

    # Compact: only ids that survived, numbered in sorted raw order, from 1.
    ukeep = np.flatnonzero(np.bincount(f.ucode, minlength=f.n_ucodes))
    ikeep = np.flatnonzero(np.bincount(f.icode, minlength=f.n_icodes))
    uvocab, urank = sorted_vocab(uvals.take(pa.array(ukeep)))
    ivocab, irank = sorted_vocab(ivals.take(pa.array(ikeep)))
    umap = np.zeros(f.n_ucodes, dtype=np.int64)
    umap[ukeep] = urank + 1
    imap = np.zeros(f.n_icodes, dtype=np.int64)
    imap[ikeep] = irank + 1
    user, item = umap[f.ucode], imap[f.icode]

    order = user_time_order(user, f.t)
    events = f.table.take(pa.array(f.rows[order]))  # the one copy of the surviving events
    for name, values in f.added.items():
        col = pa.array(values[order])
        events = (events.set_column(events.column_names.index(name), name, col) if name in events.column_names
                  else events.append_column(name, col))
    null = pa.nulls(1, uvocab.type)
    return Prepared(
        events=events,
        user=user[order],
        item=item[order],
        user_vocab=pa.concat_arrays([null, uvocab]),
        item_vocab=pa.concat_arrays([pa.nulls(1, ivocab.type), ivocab]),
        source=_without_events(table, list(f.added)),
        record=record,
    )


def _without_events(table: EventTable, added: list[str]) -> EventTable:
    """The source's schema (plus added numeric columns such as a label), side tables and provenance
    without its events, so that the raw events can be freed once ``run`` returns."""
    fields = table.schema.fields + tuple(Field(n, Kind.NUMERIC) for n in added if n not in table.schema)
    empty = pa.table({f.name: pa.array([], type=pa.int8()) if f.name in added else
                      pa.array([], type=table.events.schema.field(f.name).type) for f in fields})
    return EventTable(empty, Schema(fields), table.items, table.item_schema, table.users, table.user_schema,
                      list(table.sources), table.name, dict(table.report))
