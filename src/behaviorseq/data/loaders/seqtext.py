"""One-user-per-line sequence files, as distributed with S3-Rec and most later sequential-recommendation code.

Format of ``NAME.txt``: each line is ``user_id item_id item_id ...``, whitespace-separated integers,
items in time order::

    1 1 2 3 4 5
    2 6 7 8 9 10 4 11

Optional ``NAME_item2attributes.json``: ``{"item_id": [attribute_id, ...], ...}``.

Events: ``user`` and ``item`` (int64, as found), ``timestamp`` = the event's position in its line
(int64, 0 .. n-1). Items table (when attributes are given or found): ``item`` (int64) and
``attributes`` (categorical_list of int64). A line holding only a user id gives no events; blank
lines are skipped; a user on two lines is an error (naming both lines).
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from behaviorseq.data.events import EventTable
from behaviorseq.data.loaders._csv import BadRows, Issue, parse_numbers, read_lines, split_list, to_np
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.schema import ITEM, TIME, USER, Kind, Schema


def read_seqtext(
    path: str | PathLike,
    attributes: str | PathLike | bool | None = None,
    *,
    skip_bad_rows: bool = False,
) -> EventTable:
    """Read ``NAME.txt`` (+ item attributes) into an EventTable; vectorized, no per-line Python.

    ``attributes``: path of the item2attributes JSON; None looks for ``NAME_item2attributes.json`` next
    to the file; False reads none. A token that is not an integer is a bad row (the whole line), named
    by file, line and field (``user`` for the first token, else ``item``). The JSON file is checked as
    a whole: a malformed one always raises.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sequence file at {path}")
    bad = BadRows(skip_bad_rows)
    lines = read_lines(path)
    n = len(lines)
    lists, _, parents, tokens = split_list(lines, pa.string())
    offsets = to_np(lists.offsets).astype(np.int64)
    values, badm = parse_numbers(tokens, pa.int64(), np.zeros(len(tokens), dtype=bool))
    pos = np.arange(len(tokens), dtype=np.int64) - offsets[parents]  # position of each token in its line
    line_ok = np.ones(n, dtype=bool)
    if badm.any():
        where = np.flatnonzero(badm)
        is_user = pos[where] == 0
        vals = tokens.take(pa.array(where))
        issues = [
            Issue(
                parents[where][is_user] + 1, USER, "invalid integer {value!r}", vals.filter(pa.array(is_user))
            ),
            Issue(
                parents[where][~is_user] + 1,
                ITEM,
                "invalid integer {value!r}",
                vals.filter(pa.array(~is_user)),
            ),
        ]
        bad.add(path, issues)
        line_ok[parents[where]] = False
    v = to_np(pc.fill_null(values, 0))
    # one line per user: a second line would interleave with the first (positions are the timestamps)
    lines_ok = np.flatnonzero((np.diff(offsets) > 0) & line_ok)
    line_user = v[offsets[lines_ok]]
    order = np.argsort(line_user, kind="stable")
    dup = np.flatnonzero(line_user[order][1:] == line_user[order][:-1])
    if len(dup):
        first, again = lines_ok[order[dup[0]]], lines_ok[order[dup[0] + 1]]
        raise DataFormatError(path, int(again) + 1, USER, f"user {line_user[order[dup[0]]]} already has line "
                              f"{int(first) + 1}; the format holds one line per user")
    event = (pos > 0) & line_ok[parents]
    events = pa.table(
        {
            USER: pa.array(v[offsets[parents[event]]]),
            ITEM: pa.array(v[event]),
            TIME: pa.array(pos[event] - 1),
        }
    )
    schema = Schema.of(**{USER: Kind.CATEGORICAL, ITEM: Kind.CATEGORICAL, TIME: Kind.TIMESTAMP})
    name = path.stem
    sources = [str(path)]

    items = item_schema = None
    if attributes is None:
        sibling = path.with_name(f"{name}_item2attributes.json")
        attributes = sibling if sibling.is_file() else False
    if attributes is not False:
        items = _read_attributes(Path(attributes))
        item_schema = Schema.of(**{ITEM: Kind.CATEGORICAL, "attributes": Kind.CATEGORICAL_LIST})
        sources.append(str(attributes))
    report = bad.finish({}, f"read_seqtext({name})")
    report["timestamp"] = "none: the order on each user's line (0, 1, 2, ...)"
    return EventTable(events, schema, items, item_schema, sources=sources, name=name, report=report)


def _read_attributes(path: Path) -> pa.Table:
    """``{"item_id": [attribute_id, ...]}`` -> table (item int64, attributes list<int64>), in file order."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, e.lineno, None, f"invalid JSON: {e.msg}") from e
    if not isinstance(data, dict):
        raise DataFormatError(path, None, None, 'expected a JSON object {"item_id": [attribute_id, ...]}')
    keys = pa.array(list(data.keys()), pa.string())
    item, badm = parse_numbers(keys, pa.int64(), np.zeros(len(keys), dtype=bool))
    if badm.any():
        raise DataFormatError(path, None, ITEM, f"invalid integer {keys[int(np.argmax(badm))].as_py()!r}")
    try:
        attrs = pa.array(list(data.values()), pa.list_(pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
        raise DataFormatError(path, None, "attributes", f"expected lists of integer ids ({e})") from e
    return pa.table({ITEM: item, "attributes": attrs})
