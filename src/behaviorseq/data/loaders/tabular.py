"""Any table of events: a CSV or Parquet file, a pandas or polars DataFrame, or a pyarrow Table.

``columns`` maps roles to source columns, e.g. ``{"user": "uid", "item": "sku", "timestamp": "ts"}``;
a role left out uses the source column of the same name. ``user`` and ``item`` must exist; without a
timestamp column the timestamp is the event's position among its user's rows (int64, 0, 1, ...) in
source order. Every other source column is kept under its own name, its kind inferred from its Arrow
type (string -> categorical, number or bool -> numeric, date/time -> timestamp, list of floats ->
numeric_list, other lists -> categorical_list) unless ``kinds`` (source column name -> kind) says
otherwise, e.g. ``{"ts": "timestamp", "desc": "text", "price": "numeric"}``.

Conversions:
- timestamps held as Arrow timestamp/date types or as ISO-8601 strings (``2020-01-02``,
  ``2020-01-02 03:04:05``, ``2020-01-02T03:04:05.5+01:00``) become int64 seconds since the Unix epoch
  (strings without an offset are read as UTC); numeric timestamps are kept (whole-number floats become
  int64);
- string columns declared numeric are parsed (a non-number is a bad row), string columns declared as
  a list kind are split on whitespace;
- large/view string and list types become plain ones, dictionary columns are decoded, decimals become
  float64, a float column of whole numbers declared categorical becomes int64 (Parquet and in-memory
  tables; a CSV column declared categorical is read as text, so "3.0" stays "3.0").

CSV files: header line required; types inferred by ``pyarrow.csv`` (declared categorical / text
columns are read as strings, so "007" stays "007"). The user and item columns are read as text too and
become numbers only when that merges no two spellings: "007" beside "7" stays two ids, a column of
plain integers (or of "007" alone) is integers. Line numbers in errors count the header and blank
lines and are exact unless a quoted value spans lines. For Parquet and in-memory tables errors name the
1-based row instead. Rows whose user, item or timestamp is missing are bad rows.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from behaviorseq.data.events import EventTable
from behaviorseq.data.loaders._csv import (
    FLOAT_RE,
    INT_RE,
    ISO_RE,
    TZ_RE,
    BadRows,
    Issue,
    first_line,
    integral_to_int64,
    parse_numbers,
    positions_within,
    read_strings,
    row_lines,
    split_list,
    to_mask,
    to_np,
    unparseable,
)
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.schema import ITEM, TIME, USER, Field, Kind, Schema

_ROLES = (USER, ITEM, TIME)
_CSV_SUFFIXES = {".csv", ".tsv", ".txt", ".dat"}
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
_COMPRESSED = {".gz", ".bz2", ".zst", ".lz4"}
_TS_UNIT = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def read_table(
    source: Any,
    columns: Mapping[str, str] | None = None,
    *,
    kinds: Mapping[str, Kind | str] | None = None,
    format: str | None = None,
    delimiter: str = ",",
    skip_bad_rows: bool = False,
    name: str | None = None,
    drop: Sequence[str] | None = None,
) -> EventTable:
    """Read events from a CSV / Parquet file path or a pandas / polars DataFrame or pyarrow Table.

    ``format``: "csv" or "parquet"; None guesses from the file suffix (``.tsv`` implies a tab delimiter
    when ``delimiter`` is left at ","). A missing mapped column raises ``DataFormatError`` naming it and
    listing the available columns; a malformed row raises ``DataFormatError`` (file, line or row, field)
    unless ``skip_bad_rows``, which drops it and records it in ``report``. ``drop``: source columns to leave
    out (e.g. one of a type no kind takes: a struct, binary data, a time of day).
    """
    columns = dict(columns or {})
    kinds = {k: Kind(v) for k, v in (kinds or {}).items()}
    bad = BadRows(skip_bad_rows)
    declared = set(kinds)
    # A CSV's user and item columns are read as text, so "007" and "7" (or "1e3" and "1000") stay two ids;
    # ids that are all canonical integers become int64 again (``_canonical_ids``), as they were typed before.
    loaded = _load(source, format, delimiter, kinds, {columns.get(r, r) for r in (USER, ITEM)} - declared)
    kinds = {**loaded.kinds, **kinds}
    label = loaded.label
    table = loaded.table
    if loaded.unit == "line":
        _warn_multiline(loaded)
    if drop:
        gone = [c for c in drop if c not in table.column_names]
        if gone:
            raise DataFormatError(label, None, gone[0], f"drop names a column that does not exist; available "
                                  f"columns: {table.column_names}")
        table = table.drop_columns(list(drop))
        kinds = {k: v for k, v in kinds.items() if k not in drop}
    table = _normalize_types(table, {columns.get(r, r) for r in (USER, ITEM)})
    roles = _map_roles(table, columns, kinds, label)

    n = table.num_rows
    bad_any = np.zeros(n, dtype=bool)
    issues: list[tuple[np.ndarray, str, str, Any]] = []  # (row positions, field, reason, values)

    def flag(mask: np.ndarray, field: str, reason: str, values: Any = None) -> None:
        if mask.any():
            issues.append((np.flatnonzero(mask), field, reason, values))
            bad_any[mask] = True

    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    out_kinds: dict[str, Kind] = {}
    src_to_role = {src: role for role, src in roles.items()}
    for src in table.column_names:
        role = src_to_role.get(src)
        try:
            kind = _role_kind(role, kinds.get(src), src) if role else kinds.get(src) or _infer_kind(table[src].type)
        except _NoKind as e:
            raise DataFormatError(label, None, src, str(e)) from None
        col = table[src]
        if role:
            missing = to_mask(pc.is_null(col))
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                missing |= to_mask(pc.equal(col, ""))
            if src in loaded.id_strings:
                missing |= _null_ids(col)
            flag(missing, src, "missing value")
            if src in loaded.id_strings:
                col = _canonical_ids(col)
        try:
            col = _convert(col, kind, src, flag)
        except _NoKind as e:
            raise DataFormatError(label, None, src, str(e)) from None
        if role == TIME and pa.types.is_floating(col.type):  # NaN and +-inf are no time ("1e400" reads as inf)
            inf = ~to_mask(pc.fill_null(pc.is_finite(col), True))
            flag(inf, src, "non-finite timestamp {value!r}", col.filter(pa.array(inf)))
        out[role or src] = col
        out_kinds[role or src] = kind

    events = pa.table(out)
    if bad_any.any():
        events = events.filter(pa.array(~bad_any))
    pending = list(loaded.issues)
    if issues:
        for rows, field, reason, values in issues:
            pending.append(Issue(loaded.locate(rows), field, reason, values))
    bad.add(loaded.path or label, pending, unit=loaded.unit)

    if TIME in events.column_names:
        events = events.set_column(events.column_names.index(TIME), TIME, integral_to_int64(events[TIME]))
    else:
        events = events.append_column(TIME, positions_within(events[USER]))
        out_kinds[TIME] = Kind.TIMESTAMP
    order = [USER, ITEM, TIME] + [c for c in events.column_names if c not in _ROLES]
    events = events.select(order)
    schema = Schema(tuple(Field(c, out_kinds[c]) for c in order))
    name = name or loaded.name
    report = bad.finish({}, f"read_table({name})")
    if TIME not in roles:  # no timestamp column: the row order stood in for time (above)
        report["timestamp"] = "none: the row order within each user (0, 1, 2, ...)"
    return EventTable(events, schema, sources=[loaded.path] if loaded.path else [], name=name, report=report)


def _warn_multiline(loaded: _Loaded) -> None:
    """A quoted value that spans lines is legal CSV, and also what an unmatched quote makes of the rows after
    it (they become part of one value): say where, so that lost events are never silent."""
    for c in loaded.table.column_names:
        col = loaded.table[c]
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or not len(col):
            continue
        spans = to_mask(pc.fill_null(pc.match_substring(col, "\n"), False))
        if spans.any():
            first = int(np.flatnonzero(spans)[0])
            line = int(loaded.locate(np.array([first]))[0])
            warnings.warn(f"{loaded.label}: {int(spans.sum()):,} value(s) of field {c!r} span lines (the first "
                          f"begins at line {line}): fine if quoted on purpose; an unmatched quote would make one "
                          "value of the lines after it", stacklevel=3)


# ----------------------------------------------------------------------------------------------------------
# sources


class _Loaded:
    def __init__(
        self,
        table: pa.Table,
        label: str,
        name: str,
        path: str | None,
        unit: str,
        locate: Callable[[np.ndarray], np.ndarray],
        issues: list[Issue] | None = None,
    ) -> None:
        self.table, self.label, self.name, self.path, self.unit = table, label, name, path, unit
        self.locate, self.issues = locate, issues or []
        self.kinds: dict[str, Kind] = {}  # kinds the reader inferred beyond the Arrow types
        self.id_strings: set[str] = set()  # id columns read as text for ``_canonical_ids``


# What the CSV reader takes for a missing value in a typed column; id columns read as text keep that meaning.
_NULLS = pa.array(pv.ConvertOptions().null_values)


_TRUE = pa.array(pv.ConvertOptions().true_values)
_BOOLS = pa.array(pv.ConvertOptions().true_values + pv.ConvertOptions().false_values)


def _null_ids(col: pa.ChunkedArray) -> np.ndarray:
    """Bool mask of an id column read as text: the CSV reader's null tokens ("", "NA", "null", ...)."""
    return to_mask(pc.is_in(col, value_set=_NULLS))


def _canonical_ids(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text ids -> int64 when that merges no two spellings ("007" and "7" would merge, so those stay text, every
    spelling its own id): then the column is typed, and numbered, as the CSV reader's inference typed it before
    ids were read as text. Whole numbers written with a zero fraction ("10.0", how pandas writes an int column
    with gaps) become int64 too, parsed exactly (no float64 on the way, which would change ids beyond 2^53).
    Anything else stays text: "12.5", "1e3", "inf", and integers beyond int64 (64-bit hash ids above 2^63)."""
    nulls = pa.array(_null_ids(col))
    filled = pc.unique(col.filter(pc.invert(nulls)))
    cleared = pc.if_else(nulls, pa.scalar(None, pa.string()), col)
    if len(filled) and pc.all(pc.match_substring_regex(filled, _ZERO_FRACTION)).as_py() is False:
        return col
    filled = pc.replace_substring_regex(filled, _ZERO_FRACTION, r"\1")  # "10.0" -> "10", "007" stays
    try:
        num = pc.cast(filled, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return col  # beyond int64
    if len(pc.unique(num)) != len(filled):
        return col  # two spellings of one number
    return pc.cast(pc.replace_substring_regex(cleared, _ZERO_FRACTION, r"\1"), pa.int64())


_ZERO_FRACTION = r"^([+-]?[0-9]+)(?:\.0*)?$"  # an integer, perhaps with a zero fraction: "10.0", "7.", "8"


def _rows(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64) + 1


def _load(source: Any, format: str | None, delimiter: str, kinds: dict[str, Kind],
          id_columns: set[str] = frozenset()) -> _Loaded:
    if isinstance(source, (str, PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no file at {path}")
        suffixes = [s.lower() for s in path.suffixes]
        base = (
            suffixes[-2]
            if len(suffixes) > 1 and suffixes[-1] in _COMPRESSED
            else (suffixes[-1] if suffixes else "")
        )
        stem = path.name.split(".")[0] or path.name
        fmt = (
            format or ("parquet" if base in _PARQUET_SUFFIXES else "csv" if base in _CSV_SUFFIXES else "")
        ).lower()
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return _Loaded(pq.read_table(path), str(path), stem, str(path), "row", _rows)
        if fmt == "csv":
            if base == ".tsv" and delimiter == ",":
                delimiter = "\t"
            loaded = _load_csv(path, stem, delimiter, kinds, id_columns)
            loaded.id_strings = {c for c in id_columns if c in loaded.table.column_names}
            return loaded
        raise ValueError(f"{path.name}: cannot tell the format from the name; pass format='csv' or 'parquet'")
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if isinstance(source, pa.Table):
        return _Loaded(source, "<pyarrow.Table>", "table", None, "row", _rows)
    module = type(source).__module__.split(".")[0]
    if module == "polars" and hasattr(source, "to_arrow"):
        return _Loaded(source.to_arrow(), "<polars.DataFrame>", "table", None, "row", _rows)
    if module == "pandas":
        return _Loaded(
            pa.Table.from_pandas(source, preserve_index=False),
            "<pandas.DataFrame>",
            "table",
            None,
            "row",
            _rows,
        )
    raise TypeError(
        f"read_table: unsupported source type {type(source).__name__}; pass a path, a pandas or "
        "polars DataFrame or a pyarrow Table"
    )


def _load_csv(path: Path, stem: str, delimiter: str, kinds: dict[str, Kind], id_columns: set[str]) -> _Loaded:
    header = next(csv.reader([first_line(path)], delimiter=delimiter), [])
    if not header or header == [""]:
        what = "empty file" if path.stat().st_size == 0 else "the first line is blank"
        raise DataFormatError(path, 1, None, f"{what}: expected a header line of column names")
    as_string = {c: pa.string() for c in header if kinds.get(c) in (Kind.CATEGORICAL, Kind.TEXT) or c in id_columns}
    try:
        table = pv.read_csv(
            path,
            parse_options=pv.ParseOptions(delimiter=delimiter),
            convert_options=pv.ConvertOptions(column_types=as_string),
        )
    except pa.ArrowInvalid:
        return _load_csv_diagnostic(path, stem, header, delimiter, kinds, id_columns)

    def locate(rows: np.ndarray) -> np.ndarray:
        return row_lines(path, 1)[rows]  # the reader skipped blank lines, which still count as lines

    return _Loaded(table, str(path), stem, str(path), "line", locate)


def _load_csv_diagnostic(
    path: Path, stem: str, header: list[str], delimiter: str, kinds: dict[str, Kind], id_columns: set[str]
) -> _Loaded:
    """All columns as strings with exact line numbers; undeclared columns typed by what all their values allow."""
    if len(set(header)) != len(header):
        raise DataFormatError(path, 1, None, f"duplicate column names in header {header}")
    strings, lineno, issues = read_strings(str(path), header, delimiter=delimiter, skip_rows=1, quoted=True)
    cols = {}
    inferred: dict[str, Kind] = {}
    for c in header:
        col = strings[c]
        if c in kinds or c in id_columns:  # converted (with bad rows located) by read_table
            cols[c] = col
            continue
        # typed as the fast read types it (its inference order: int64, bool, ..., float64; its null tokens such
        # as "NA" are missing values in a typed column), so a column's kind never depends on an unrelated bad row
        empty = to_mask(pc.is_in(col, value_set=_NULLS)) if len(col) else np.zeros(0, dtype=bool)
        filled = col.filter(pa.array(~empty))
        for pattern, t in ((INT_RE, pa.int64()), (None, pa.bool_()), (FLOAT_RE, pa.float64())):
            if not len(filled):
                break
            if t == pa.bool_():
                if pc.all(pc.is_in(filled, value_set=_BOOLS)).as_py():
                    col = pc.is_in(pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), col), value_set=_TRUE)
                    col = pc.if_else(pa.array(empty), pa.scalar(None, pa.bool_()), col)
                    break
                continue
            if pc.all(pc.match_substring_regex(filled, pattern)).as_py():
                typed, badm = parse_numbers(col, t, empty)
                if not badm.any():
                    col = typed
                    break
        else:
            if len(filled) and pc.all(pc.match_substring_regex(filled, ISO_RE)).as_py():
                inferred[c] = Kind.TIMESTAMP  # as the fast read would have typed it
        cols[c] = col
    loaded = _Loaded(pa.table(cols), str(path), stem, str(path), "line", lambda rows: lineno[rows], issues)
    loaded.kinds = inferred
    return loaded


# ----------------------------------------------------------------------------------------------------------
# columns


def _map_roles(
    table: pa.Table, columns: dict[str, str], kinds: dict[str, Kind], label: str
) -> dict[str, str]:
    names = table.column_names
    unknown = set(columns) - set(_ROLES)
    if unknown:
        raise ValueError(f"read_table: columns maps roles {sorted(unknown)}; roles are {list(_ROLES)}")
    if len(set(names)) != len(names):
        raise DataFormatError(label, None, None, f"duplicate column names {names}")
    roles = {}
    for role in _ROLES:
        src = columns.get(role, role)
        if src not in names:
            if role not in columns and role == TIME:
                continue
            how = (
                f"mapped to {role!r}"
                if role in columns
                else f"needed for {role!r}; map one with columns={{{role!r}: ...}}, or data.columns.{role}=... in a run"
            )
            raise DataFormatError(label, None, src, f"no such column ({how}); available columns: {names}")
        roles[role] = src
    if len(set(roles.values())) != len(roles):
        raise ValueError(f"read_table: one source column mapped to several roles: {roles}")
    for role in _ROLES:
        if role in names and roles.get(role) != role and role not in roles.values():
            raise ValueError(
                f"read_table: source column {role!r} would clash with the {role!r} role mapped to "
                f"{roles.get(role)!r}; drop or rename it first"
            )
    missing = [k for k in kinds if k not in names]
    if missing:
        raise DataFormatError(
            label, None, missing[0], f"kinds names a column that does not exist; available columns: {names}"
        )
    return roles


def _normalize_types(table: pa.Table, ids: set[str] = frozenset()) -> pa.Table:
    """View / large types to plain ones where they fit, dictionaries decoded, decimals to float64 (id columns
    ``ids``: to int64 when whole and in range, else to their exact text), nulls to string."""
    for i, f in enumerate(table.schema):
        target = _plain_type(f.type)
        value_type = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if f.name in ids and pa.types.is_decimal(value_type):
            table = table.set_column(i, f.name, _decimal_ids(table.column(i)))
            continue
        if target is not None and target != f.type:
            try:
                col = pc.cast(table.column(i), target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue  # e.g. more than 2 GiB of strings: keep the large type, which is still accepted
            table = table.set_column(i, f.name, col)
    return table


def _decimal_ids(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Decimal ids are never rounded through float64 (which merges ids above 2^53): int64 when every id is a
    whole number that fits, else each id's exact decimal text."""
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if col.type.scale <= 0:
        try:
            return pc.cast(col, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return pc.cast(col, pa.string())


def _plain_type(t: pa.DataType) -> pa.DataType | None:
    if pa.types.is_dictionary(t):
        return _plain_type(t.value_type) or t.value_type
    if pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return pa.string()
    if pa.types.is_decimal(t):
        return pa.float64()
    if pa.types.is_null(t):
        return pa.string()
    if (
        pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or getattr(pa.types, "is_list_view", lambda _: False)(t)
        or getattr(pa.types, "is_large_list_view", lambda _: False)(t)
    ):
        return pa.list_(_plain_type(t.value_type) or t.value_type)
    if pa.types.is_list(t) and _plain_type(t.value_type) not in (None, t.value_type):
        return pa.list_(_plain_type(t.value_type))
    return None


class _NoKind(TypeError):
    """A column whose Arrow type the kind asked for (or any kind) cannot take; read_table names file and field."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}; leave it out with drop=[name] (data.read.drop=[name] in a run) or declare "
                         "another kind with kinds={name: kind}")


def _infer_kind(t: pa.DataType) -> Kind:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return Kind.CATEGORICAL
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return Kind.NUMERIC
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return Kind.TIMESTAMP
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return Kind.NUMERIC_LIST if pa.types.is_floating(t.value_type) else Kind.CATEGORICAL_LIST
    raise _NoKind(f"Arrow type {t} has no kind")


def _role_kind(role: str, declared: Kind | None, src: str) -> Kind:
    kind = Kind.TIMESTAMP if role == TIME else Kind.CATEGORICAL
    if declared is not None and declared != kind:
        raise ValueError(
            f"read_table: column {src!r} is the {role!r} role, which is {kind.value}, not {declared.value}"
        )
    return kind


def _convert(col: pa.ChunkedArray, kind: Kind, src: str, flag: Callable) -> pa.ChunkedArray | pa.Array:
    """One column to the Arrow type its kind needs; values that cannot convert are flagged as bad rows."""
    t = col.type
    is_str = pa.types.is_string(t) or pa.types.is_large_string(t)
    if kind is Kind.TEXT:
        try:
            return col if is_str else pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise _NoKind(f"Arrow type {t} cannot be text") from None
    if kind is Kind.CATEGORICAL:
        if is_str or pa.types.is_integer(t):
            return col
        if pa.types.is_floating(t):
            whole = pc.equal(pc.floor(col), col)
            if pc.all(whole).as_py() is not False:
                return pc.cast(col, pa.int64())
        if pa.types.is_boolean(t):
            return pc.cast(col, pa.string())
        raise _NoKind(f"Arrow type {t} cannot be categorical: ids must be strings or whole numbers")
    if kind is Kind.NUMERIC:
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return col
        if is_str:
            return _parse_number_column(col, src, flag)
        raise _NoKind(f"Arrow type {t} cannot be numeric")
    if kind is Kind.TIMESTAMP:
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return col
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return _seconds(col)
        if is_str:
            return _parse_time_column(col, src, flag)
        raise _NoKind(f"Arrow type {t} cannot be a timestamp")
    # list kinds
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if kind is Kind.NUMERIC_LIST and not (
            pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
        ):
            raise _NoKind(f"Arrow type {t} cannot be numeric_list")
        return col
    if is_str:
        lists, bad_flat, parents, tokens = split_list(
            col, pa.float64() if kind is Kind.NUMERIC_LIST else pa.string()
        )
        if bad_flat is not None:
            rows, first = np.unique(parents[bad_flat], return_index=True)
            mask = np.zeros(len(col), dtype=bool)
            mask[rows] = True
            flag(mask, src, "invalid number {value!r} in list", tokens.take(pa.array(bad_flat[first])))
        return lists
    raise _NoKind(f"Arrow type {t} cannot be {kind.value}")


def _parse_number_column(col: pa.ChunkedArray, src: str, flag: Callable) -> pa.ChunkedArray:
    empty = to_mask(pc.or_(pc.is_null(col), pc.equal(col, ""))) if len(col) else np.zeros(0, dtype=bool)
    col = pc.fill_null(col, "")
    numbers = col.filter(pc.match_substring_regex(col, FLOAT_RE))  # int or float: judged on the valid values
    is_int = bool(len(numbers)) and pc.all(pc.match_substring_regex(numbers, INT_RE)).as_py()
    typed, badm = parse_numbers(col, pa.int64() if is_int else pa.float64(), empty)
    flag(badm, src, "invalid number {value!r}", col.filter(pa.array(badm)))
    return typed


def _parse_time_column(col: pa.ChunkedArray, src: str, flag: Callable) -> pa.ChunkedArray | pa.Array:
    """Strings to timestamps: numbers stay numbers, ISO-8601 strings become int64 seconds (naive = UTC)."""
    empty = to_mask(pc.or_(pc.is_null(col), pc.equal(col, ""))) if len(col) else np.zeros(0, dtype=bool)
    col = pc.fill_null(col, "")
    numeric = to_mask(pc.match_substring_regex(col, FLOAT_RE))
    iso = ~numeric & to_mask(pc.match_substring_regex(col, ISO_RE))
    if not iso.any():
        return _parse_number_column(col, src, flag)
    aware = iso & to_mask(pc.match_substring_regex(col, TZ_RE))
    naive = iso & ~aware
    null = pa.scalar(None, pa.string())
    parts = []
    # microseconds: nanoseconds would span only the years 1677-2262 (the CSV reader's own inference takes any year)
    for mask, t in ((naive, pa.timestamp("us")), (aware, pa.timestamp("us", "UTC"))):
        sub = pc.if_else(pa.array(mask), col, null)
        bad_pos = unparseable(sub, t)  # regex-valid but impossible dates, e.g. 2020-13-45
        if bad_pos:
            mask[bad_pos] = False
            iso[bad_pos] = False
            sub = pc.if_else(pa.array(mask), col, null)
        parts.append(pc.cast(pc.cast(sub, t), pa.int64()))
    us = pc.coalesce(*parts)
    secs = np.floor_divide(to_np(pc.fill_null(us, 0)), 10**6)
    out = pa.array(secs, mask=~iso)
    badm = ~iso & ~numeric & ~empty
    flag(
        badm,
        src,
        "invalid timestamp {value!r} (expected a number or ISO-8601 date/time)",
        col.filter(pa.array(badm)),
    )
    if numeric.any():  # a column mixing epoch numbers and ISO strings: keep both, as seconds
        nums, _ = parse_numbers(pc.if_else(pa.array(numeric), col, ""), pa.float64())
        nums = integral_to_int64(pc.fill_null(nums, 0))
        out = pc.if_else(
            pa.array(numeric),
            pc.cast(nums, pa.float64()) if nums.type != pa.int64() else nums,
            out if nums.type == pa.int64() else pc.cast(out, pa.float64()),
        )
    return out


def _seconds(col: pa.ChunkedArray) -> pa.Array:
    """Arrow timestamp / date values -> int64 seconds since the epoch (floored), nulls kept."""
    t = col.type
    if pa.types.is_date32(t):
        vals = to_np(pc.fill_null(pc.cast(pc.cast(col, pa.int32()), pa.int64()), 0)) * 86400
    else:
        per_second = 1000 if pa.types.is_date64(t) else _TS_UNIT[t.unit]
        vals = np.floor_divide(to_np(pc.fill_null(pc.cast(col, pa.int64()), 0)), per_second)
    return pa.array(vals.astype(np.int64), mask=to_mask(pc.is_null(col)) if col.null_count else None)
