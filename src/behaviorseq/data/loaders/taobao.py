"""Taobao user behavior (Alibaba Tianchi ``UserBehavior.csv``, about 100M rows).

Format: comma-separated, no header, five columns::

    user_id,item_id,category_id,behavior_type,timestamp
    1,2268318,2520377,pv,1511544070

Events: ``user``, ``item``, ``category`` (int64 ids, categorical), ``behavior`` (string, one of pv, cart,
fav, buy; anything else is a bad row), ``timestamp`` (int64 Unix seconds, kept as found: the raw file
has a few out-of-range times, left to the filters).
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import pyarrow as pa

from behaviorseq.data.events import EventTable
from behaviorseq.data.loaders._csv import BadRows, ColumnSpec, first_line, read_delimited
from behaviorseq.data.schema import ITEM, TIME, USER, Kind, Schema

BEHAVIORS = ("pv", "cart", "fav", "buy")
_SPECS = [
    ColumnSpec(USER, pa.int64()),
    ColumnSpec(ITEM, pa.int64()),
    ColumnSpec("category", pa.int64()),
    ColumnSpec("behavior", pa.string(), allowed=BEHAVIORS),
    ColumnSpec(TIME, pa.int64()),
]


def read_taobao(path: str | PathLike, *, skip_bad_rows: bool = False) -> EventTable:
    """Read ``UserBehavior.csv`` (or a folder holding it; ``.gz`` etc. are decompressed on the fly).

    A header line, if present (first field not a number), is skipped. Malformed rows raise
    ``DataFormatError`` (file, line, field) unless ``skip_bad_rows``.
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("UserBehavior.csv*"))
        if not found:
            raise FileNotFoundError(f"{p}: no UserBehavior.csv in this folder")
        p = found[0]
    elif not p.is_file():
        raise FileNotFoundError(f"no Taobao file at {p}")
    header = 1 if re.match(r"^\s*[A-Za-z_]", first_line(p)) else 0
    bad = BadRows(skip_bad_rows)
    events = read_delimited(p, _SPECS, delimiter=",", skip_rows=header, bad=bad)
    schema = Schema.of(
        **{
            USER: Kind.CATEGORICAL,
            ITEM: Kind.CATEGORICAL,
            "category": Kind.CATEGORICAL,
            "behavior": Kind.CATEGORICAL,
            TIME: Kind.TIMESTAMP,
        }
    )
    events = events.select([USER, ITEM, TIME, "category", "behavior"])
    schema = schema.select([USER, ITEM, TIME, "category", "behavior"])
    report = bad.finish({}, "read_taobao")
    return EventTable(events, schema, sources=[str(p)], name="taobao", report=report)
