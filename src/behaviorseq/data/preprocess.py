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
from behaviorseq.data.schema import ITEM, TIME, USER


@dataclass
class Frame:
    """Working state of preprocessing: the events plus dense codes of users and items (0-based)."""

    table: pa.Table
    ucode: np.ndarray  # [n] int64, dense code of the raw user id
    icode: np.ndarray  # [n] int64
    n_ucodes: int
    n_icodes: int

    def filter(self, keep: np.ndarray) -> Frame:
        if keep.all():
            return self
        return Frame(self.table.filter(pa.array(keep)), self.ucode[keep], self.icode[keep], self.n_ucodes, self.n_icodes)

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
        if self.field not in f.table.column_names:
            raise KeyError(f"threshold: no field {self.field!r}; fields are {f.table.column_names}")
        mask = _OPS[self.op](f.table[self.field], self.value).fill_null(False)
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
        lab = _OPS[self.op](f.table[self.field], self.value).fill_null(False).cast(pa.int8())
        t = f.table.append_column(self.name, lab) if self.name not in f.table.column_names else \
            f.table.set_column(f.table.column_names.index(self.name), self.name, lab)
        return Frame(t, f.ucode, f.icode, f.n_ucodes, f.n_icodes)


@dataclass
class Dedup(Step):
    """Drop repeated events. ``keep``: "first"/"last" (per user-item pair, by time) or "exact"
    (only rows identical in user, item and timestamp)."""

    keep: str = "first"
    kind: ClassVar[str] = "dedup"

    def apply(self, f: Frame) -> Frame:
        if self.keep not in ("first", "last", "exact"):
            raise ValueError(f"dedup keep must be 'first', 'last' or 'exact', got {self.keep!r}")
        order = _time_order(f)
        key = f.ucode[order] * np.int64(f.n_icodes) + f.icode[order]
        if self.keep == "exact":
            t = _time_values(f)[order]
            same = np.zeros(len(order), dtype=bool)
            same[1:] = (key[1:] == key[:-1]) & (t[1:] == t[:-1])
            drop = order[same]
        else:
            # Stable sort of the time-ordered keys groups each pair with its events still in time order.
            o2 = np.argsort(key, kind="stable")
            k2 = key[o2]
            dup = np.zeros(len(o2), dtype=bool)
            if self.keep == "first":
                dup[1:] = k2[1:] == k2[:-1]
            else:
                dup[:-1] = k2[:-1] == k2[1:]
            drop = order[o2[dup]]
        keep = np.ones(len(order), dtype=bool)
        keep[drop] = False
        return f.filter(keep)


@dataclass
class KCore(Step):
    """Iterative k-core: repeat until every user has >= ``user`` events and every item >= ``item``."""

    user: int = 5
    item: int = 5
    max_rounds: int = 1000
    kind: ClassVar[str] = "k_core"

    def apply(self, f: Frame) -> Frame:
        keep = np.ones(len(f.ucode), dtype=bool)
        for _ in range(self.max_rounds):
            du = np.bincount(f.ucode[keep], minlength=f.n_ucodes)
            di = np.bincount(f.icode[keep], minlength=f.n_icodes)
            new = keep & (du[f.ucode] >= self.user) & (di[f.icode] >= self.item)
            if new.sum() == keep.sum():
                break
            keep = new
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


def _time_values(f: Frame) -> np.ndarray:
    return f.table[TIME].to_numpy()


def _time_order(f: Frame) -> np.ndarray:
    """Stable order by (user code, timestamp); ties keep the source order."""
    t = _time_values(f)
    return np.lexsort((t, f.ucode)) if len(t) else np.zeros(0, dtype=np.int64)


def dense_codes(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Hash-encode a column: returns (codes [n] int64, unique values in first-seen order)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError(f"id column has {arr.null_count} null values")
    enc = pc.dictionary_encode(arr)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), enc.dictionary


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
    f = Frame(table.events, ucode, icode, len(uvals), len(ivals))
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

    t = f.table[TIME].to_numpy()
    order = np.lexsort((t, user)) if len(t) else np.zeros(0, dtype=np.int64)
    events = f.table.take(pa.array(order))
    null = pa.nulls(1, uvocab.type)
    return Prepared(
        events=events,
        user=user[order],
        item=item[order],
        user_vocab=pa.concat_arrays([null, uvocab]),
        item_vocab=pa.concat_arrays([pa.nulls(1, ivocab.type), ivocab]),
        source=table,
        record=record,
    )
