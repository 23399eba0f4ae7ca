"""RecBole atomic files.

Format: ``NAME.inter`` (events) with optional ``NAME.item`` and ``NAME.user`` side tables, all
tab-separated, no quoting, first line a typed header of ``name:type`` cells::

    user_id:token   item_id:token   rating:float    timestamp:float
    196             242             3               881250949

Types: ``token`` (string id), ``token_seq`` (space-separated tokens), ``float``, ``float_seq``
(space-separated numbers); they map to kinds through ``schema.RECBOLE_TYPES``, the sequences to Arrow
list columns. ``user_id`` -> ``user``, ``item_id`` -> ``item``, ``timestamp`` -> ``timestamp``. Tokens,
including user and item ids, stay strings as found. ``timestamp`` is read as a number (whole-number
floats become int64); without one, the timestamp is the event's position among its user's rows (int64,
0, 1, ...) in file order.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import pyarrow as pa

from behaviorseq.data.events import EventTable
from behaviorseq.data.loaders._csv import (
    BadRows,
    ColumnSpec,
    first_line,
    integral_to_int64,
    positions_within,
    read_delimited,
)
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.schema import ITEM, RECBOLE_TYPES, TIME, USER, Field, Kind, Schema

_ARROW = {
    "token": pa.string(),
    "token_seq": pa.list_(pa.string()),
    "float": pa.float64(),
    "float_seq": pa.list_(pa.float64()),
}


def read_recbole(path: str | PathLike, *, skip_bad_rows: bool = False) -> EventTable:
    """Read a RecBole dataset: a folder holding ``NAME.inter`` (+ ``.item``, ``.user``) or the ``.inter`` file.

    In a folder, ``FOLDER_NAME.inter`` is used, else the only ``.inter`` file there. Raises
    ``DataFormatError`` (file, line, field) on a malformed row unless ``skip_bad_rows``, which drops such
    rows and records them in ``report``.
    """
    inter, name = _resolve(Path(path))
    bad = BadRows(skip_bad_rows)
    events, kinds = _read_atomic(inter, {"user_id": USER, "item_id": ITEM, "timestamp": TIME}, bad)
    if USER not in kinds or ITEM not in kinds:
        raise DataFormatError(inter, 1, None, "the header needs user_id and item_id fields")
    if TIME in kinds:
        events = events.set_column(events.column_names.index(TIME), TIME, integral_to_int64(events[TIME]))
    else:
        events = events.append_column(TIME, positions_within(events[USER]))
    kinds[USER], kinds[ITEM], kinds[TIME] = Kind.CATEGORICAL, Kind.CATEGORICAL, Kind.TIMESTAMP
    order = [USER, ITEM, TIME] + [n for n in events.column_names if n not in (USER, ITEM, TIME)]
    events = events.select(order)
    sources = [str(inter)]

    side: dict[str, tuple[pa.Table | None, Schema | None]] = {}
    for ext, key in (("item", ITEM), ("user", USER)):
        f = inter.with_name(f"{name}.{ext}")
        if not f.is_file():
            side[ext] = (None, None)
            continue
        table, k = _read_atomic(f, {f"{key}_id": key}, bad)
        if key not in k:
            raise DataFormatError(f, 1, None, f"the header needs a {key}_id field")
        k[key] = Kind.CATEGORICAL
        order_s = [key] + [n for n in table.column_names if n != key]
        side[ext] = (table.select(order_s), Schema(tuple(Field(n, k[n]) for n in order_s)))
        sources.append(str(f))

    report = bad.finish({}, f"read_recbole({name})")
    return EventTable(
        events,
        Schema(tuple(Field(n, kinds[n]) for n in order)),
        *side["item"],
        *side["user"],
        sources=sources,
        name=name,
        report=report,
    )


def _resolve(p: Path) -> tuple[Path, str]:
    if p.is_dir():
        preferred = p / f"{p.name}.inter"
        found = sorted(p.glob("*.inter"))
        if preferred.is_file():
            inter = preferred
        elif len(found) == 1:
            inter = found[0]
        else:
            what = f"several: {[f.name for f in found]}" if found else "none"
            raise FileNotFoundError(f"{p}: expected {p.name}.inter or a single .inter file, found {what}")
    elif p.is_file():
        inter = p
    else:
        raise FileNotFoundError(f"no RecBole file or folder at {p}")
    name = inter.name[: -len(".inter")] if inter.name.endswith(".inter") else inter.stem
    return inter, name


def _read_atomic(path: Path, roles: dict[str, str], bad: BadRows) -> tuple[pa.Table, dict[str, Kind]]:
    """One atomic file -> (table with role columns renamed, kind of each column)."""
    header = first_line(path)
    if not header.strip():
        raise DataFormatError(path, 1, None, "empty file: expected a header of name:type fields")
    specs, kinds = [], {}
    for cell in header.split("\t"):
        src, sep, typ = cell.strip().rpartition(":")
        if not sep or typ not in RECBOLE_TYPES:
            raise DataFormatError(
                path, 1, cell, f"header fields must be name:type with type one of {', '.join(RECBOLE_TYPES)}"
            )
        name = roles.get(src, src)
        if name in kinds:
            raise DataFormatError(path, 1, name, "duplicate field in header")
        if name == TIME and TIME in roles.values():
            if typ.endswith("_seq"):
                raise DataFormatError(path, 1, cell, "timestamp must be a single number")
            specs.append(ColumnSpec(name, pa.float64()))  # a clock, whatever its declared type
        else:
            specs.append(ColumnSpec(name, _ARROW[typ], required=name in roles.values()))
        kinds[name] = RECBOLE_TYPES[typ]
    table = read_delimited(path, specs, delimiter="\t", skip_rows=1, bad=bad)
    return table, kinds
