"""Shared fast reader for delimited text files, with exact error locations.

Fast path: one ``pyarrow.csv`` typed, multithreaded read, then vectorized checks (missing required
values, values outside an allowed set, bad list elements); rows failing a check are located by one
cheap extra pass that maps row ordinals to physical lines (blank lines are skipped by the reader but
count in line numbers). Only when the typed read itself fails (``ArrowInvalid``: a wrong field count,
a value that does not parse) is the file read again on the diagnostic path: every field as a string,
single-threaded so that Arrow reports the ordinal of each row with a wrong field count, values then
validated with vectorized regexes (with a bisection fallback for the rare value a regex accepts but
Arrow does not). Bad rows are either reported (the first one, as a ``DataFormatError`` naming file,
1-based line counting header lines, and field) or dropped and recorded (``skip_bad_rows``).
Multi-character delimiters (MovieLens ``::``) are replaced by one unused byte while streaming, so both
paths use Arrow's parser. Nothing here writes to the source.

Line numbers of quoted CSV files (``quoted=True``) are exact unless a quoted value spans lines.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from behaviorseq.data.loaders.errors import DataFormatError

# What Arrow's own string -> number parsers accept (no surrounding spaces, no '+' on integers).
INT_RE = r"^-?[0-9]+$"
FLOAT_RE = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$|^[+-]?(?i:nan|inf|infinity)$"
ISO_RE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?$"
)
TZ_RE = r"[T ].*(?:Z|[+-][0-9]{2}:?[0-9]{2})$"
_LINE_DELIM = "\x1f"  # ASCII unit separator: never in these text formats, so each line is one field
MAX_RECORDED = 100
_BLOCK = 1 << 23  # 8 MiB blocks: fewer, larger parse tasks (and fewer Python reads when streaming)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a fixed-layout file.

    ``type`` is ``pa.int64()``, ``pa.float64()``, ``pa.string()`` or a list of string / float64 (a
    whitespace-separated list inside the field, as in RecBole ``token_seq`` / ``float_seq``).
    ``required``: an empty value is a bad row (else empty numbers become null, empty strings stay "").
    ``allowed``: the only values a string column may hold.
    """

    name: str
    type: pa.DataType
    required: bool = True
    allowed: tuple[str, ...] | None = None


@dataclass
class Issue:
    """Bad rows found by one check: their line numbers, the field and a reason (``{value}`` is filled in)."""

    lines: np.ndarray
    field: str | None
    reason: str
    values: pa.Array | pa.ChunkedArray | np.ndarray | None = None

    def at(self, lines: np.ndarray) -> Issue:
        """The same issue with ``lines`` holding row positions mapped through ``lines`` (row -> line)."""
        return Issue(lines[self.lines], self.field, self.reason, self.values)

    def describe(self, k: int) -> str:
        if self.values is None or "{value" not in self.reason:
            return self.reason
        v = self.values[k]
        return self.reason.format(value=v.as_py() if hasattr(v, "as_py") else v.item())


class BadRows:
    """Collects bad rows across the files of one load: raise on the first, or count and keep 100."""

    def __init__(self, skip: bool, limit: int = MAX_RECORDED) -> None:
        self.skip = skip
        self.limit = limit
        self.count = 0
        self.rows: list[dict] = []
        self._unit = "line"  # of the first recorded row, for the warning

    def add(self, file: str | PathLike | None, issues: Sequence[Issue], *, unit: str = "line") -> None:
        """Report the bad rows of one file; each line counts once (its first issue, in ``issues`` order)."""
        issues = [i for i in issues if len(i.lines)]
        if not issues:
            return
        lines = np.concatenate([np.asarray(i.lines, dtype=np.int64) for i in issues])
        which = np.concatenate([np.full(len(i.lines), k) for k, i in enumerate(issues)])
        pos = np.concatenate([np.arange(len(i.lines)) for i in issues])
        order = np.lexsort((which, lines))
        sl = lines[order]
        first = order[np.r_[True, sl[1:] != sl[:-1]]] if len(sl) else order
        file = None if file is None else str(file)
        if not self.skip:
            k = first[0]
            iss = issues[which[k]]
            raise DataFormatError(file, int(lines[k]), iss.field, iss.describe(pos[k]), unit=unit)
        if not self.rows:
            self._unit = unit
        self.count += len(first)
        for k in first[: max(0, self.limit - len(self.rows))]:
            iss = issues[which[k]]
            self.rows.append(
                {"file": file, "line": int(lines[k]), "field": iss.field, "reason": iss.describe(pos[k])}
            )

    def finish(self, report: dict, what: str) -> dict:
        """Write ``skipped_rows`` / ``bad_rows`` into ``report`` and warn when rows were dropped."""
        report["skipped_rows"] = self.count
        report["bad_rows"] = list(self.rows)
        if self.count:
            r = self.rows[0]
            first = str(DataFormatError(r["file"], r["line"], r["field"], r["reason"], unit=self._unit))
            warnings.warn(f"{what}: skipped {self.count:,} malformed row(s); first: {first}", stacklevel=3)
        return report


# ----------------------------------------------------------------------------------------------------------
# reading


def first_line(path: str | PathLike, encoding: str = "utf8") -> str:
    """The first line of a (possibly compressed) text file, without its line break or a UTF-8 BOM."""
    buf = b""
    with pa.input_stream(str(path), compression="detect") as f:
        while b"\n" not in buf:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        return line.decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, 1, None, f"the header is not {encoding} text (byte {line[e.start]:#04x} at "
                              f"position {e.start}); save the file as UTF-8") from None


def read_lines(path: str | PathLike, *, skip_rows: int = 0, encoding: str = "utf8") -> pa.ChunkedArray:
    """Every line after ``skip_rows`` as one string (blank lines kept as ""), so index i is line skip_rows+1+i."""
    try:
        t = pv.read_csv(
            str(path),
            read_options=pv.ReadOptions(column_names=["line"], skip_rows=skip_rows, encoding=encoding),
            parse_options=pv.ParseOptions(
                delimiter=_LINE_DELIM, quote_char=False, escape_char=False, ignore_empty_lines=False
            ),
            convert_options=pv.ConvertOptions(
                column_types={"line": pa.string()},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return pa.chunked_array([], pa.string())
        raise DataFormatError(path, None, None, f"cannot read as {encoding} text: {e}") from e
    return t["line"]


def read_strings(
    path: str,
    names: Sequence[str],
    *,
    delimiter: str,
    skip_rows: int = 0,
    quoted: bool = False,
    encoding: str = "utf8",
) -> tuple[pa.Table, np.ndarray, list[Issue]]:
    """Every field as a string: (table, physical line number of each row, issues for wrong field counts).

    Single-threaded so that Arrow numbers the rows it rejects (1-based among non-blank lines, header
    lines included); ``row_lines`` turns those ordinals into physical line numbers.
    """
    bad_rows: list[int] = []
    bad_counts: list[int] = []

    def handler(row) -> str:
        bad_rows.append(row.number)
        bad_counts.append(row.actual_columns)
        return "skip"

    def read(source, delim: str) -> pa.Table:
        return pv.read_csv(
            source,
            read_options=pv.ReadOptions(
                use_threads=False,
                column_names=list(names),
                skip_rows=skip_rows,
                encoding=encoding,
                block_size=_BLOCK,
            ),
            parse_options=pv.ParseOptions(
                delimiter=delim, quote_char='"' if quoted else False, invalid_row_handler=handler
            ),
            convert_options=pv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    try:
        if len(delimiter) == 1:
            t = read(path, delimiter)
        else:
            with _Replacing(path, delimiter.encode(encoding), _LINE_DELIM.encode()) as src:
                t = read(src, _LINE_DELIM)
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return pa.table({n: pa.array([], pa.string()) for n in names}), np.zeros(0, dtype=np.int64), []
        raise DataFormatError(path, None, None, f"cannot read as {encoding} text: {e}") from e
    lines = row_lines(path, skip_rows, encoding)
    bad_idx = np.asarray(bad_rows, dtype=np.int64) - skip_rows - 1
    total = t.num_rows + len(bad_idx)
    if len(lines) != total or (len(bad_idx) and bad_idx.min() < 0):
        # a quoted value spanning lines: line numbers are approximate from here on
        last = int(lines[-1]) if len(lines) else skip_rows
        more = last + np.arange(1, max(total - len(lines), 0) + 1, dtype=np.int64)
        lines = np.concatenate([lines, more])[:total]
        bad_idx = np.clip(bad_idx, 0, max(total - 1, 0))
    issues = []
    if len(bad_idx):
        issues.append(
            Issue(
                lines[bad_idx], None, f"expected {len(names)} fields, found {{value}}", np.asarray(bad_counts)
            )
        )
        lines = np.delete(lines, bad_idx)
    return t, lines, issues


def read_delimited(
    path: str | PathLike,
    specs: Sequence[ColumnSpec],
    *,
    delimiter: str,
    bad: BadRows,
    skip_rows: int = 0,
    quoted: bool = False,
    encoding: str = "utf8",
) -> pa.Table:
    """Read a delimited file whose columns are ``specs`` (in order), skipping ``skip_rows`` header lines.

    Returns the typed table of good rows; bad rows go to ``bad`` (which raises unless skipping).
    """
    path = str(path)
    fast = None
    try:
        if len(delimiter) == 1:
            fast = _fast_read(path, specs, delimiter, skip_rows, quoted, encoding)
        elif not quoted:
            # a multi-character delimiter becomes one unused byte while streaming, so Arrow's parser still works
            with _Replacing(path, delimiter.encode(encoding), _LINE_DELIM.encode()) as src:
                fast = _fast_read(src, specs, _LINE_DELIM, skip_rows, False, encoding)
    except pa.ArrowInvalid:
        pass
    if fast is not None:
        table, issues = check_values(fast, specs)
        if issues:  # values that parsed but fail a check: locate them without parsing again
            lines = row_lines(path, skip_rows, encoding)
            bad.add(path, [i.at(lines) for i in issues])
        return table
    strings, lineno, issues = read_strings(
        path,
        [s.name for s in specs],
        delimiter=delimiter,
        skip_rows=skip_rows,
        quoted=quoted,
        encoding=encoding,
    )
    table, more = parse_strings(strings, specs)
    bad.add(path, issues + [i.at(lineno) for i in more])
    return table


def row_lines(path: str | PathLike, skip_rows: int = 0, encoding: str = "utf8") -> np.ndarray:
    """Physical line number of each data row as Arrow's reader counts rows (blank lines skipped)."""
    lines = read_lines(path, skip_rows=skip_rows, encoding=encoding)
    if not len(lines):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(to_mask(pc.not_equal(lines, ""))) + skip_rows + 1


def _fast_read(
    source, specs: Sequence[ColumnSpec], delimiter: str, skip_rows: int, quoted: bool, encoding: str
) -> pa.Table:
    types = {s.name: (pa.string() if _is_list(s.type) else s.type) for s in specs}
    return pv.read_csv(
        source,
        read_options=pv.ReadOptions(
            column_names=list(types), skip_rows=skip_rows, encoding=encoding, block_size=_BLOCK
        ),
        parse_options=pv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False),
        convert_options=pv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )


class _Replacing(io.RawIOBase):
    """Read-only stream over a (possibly compressed) file with every ``old`` byte string replaced by ``new``.

    Replacement is left to right, as ``bytes.replace`` and ``pc.split_pattern`` do: a run of delimiter
    characters cut by a block boundary is held back so that pairs are never split.
    """

    def __init__(self, path: str, old: bytes, new: bytes) -> None:
        super().__init__()
        self._f = pa.input_stream(path, compression="detect")
        self._old, self._new, self._carry = old, new, b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = n if n and n > 0 else _BLOCK
        data = self._carry + self._f.read(max(1, want - len(self._carry)))  # never more than asked for
        self._carry = b""
        if not data:
            return b""
        if len(self._old) > 1:
            c = self._old[-1:]
            run = len(data) - len(data.rstrip(c))
            keep = run % len(self._old) if self._old == c * len(self._old) else min(run, len(self._old) - 1)
            if keep and len(data) > keep:
                data, self._carry = data[:-keep], data[-keep:]
        return data.replace(self._old, self._new)

    def readinto(self, b) -> int:
        d = self.read(len(b))
        b[: len(d)] = d
        return len(d)

    def close(self) -> None:
        self._f.close()
        super().close()


# ----------------------------------------------------------------------------------------------------------
# parsing strings


def parse_strings(t: pa.Table, specs: Sequence[ColumnSpec]) -> tuple[pa.Table, list[Issue]]:
    """String columns to the spec types, then ``check_values``; issues hold row positions in ``t``."""
    n = t.num_rows
    flagged = np.zeros(n, dtype=bool)
    issues: list[Issue] = []
    for s in specs:
        if pa.types.is_integer(s.type) or pa.types.is_floating(s.type):
            col = t[s.name]
            what = "integer" if pa.types.is_integer(s.type) else "number"
            typed, badm = parse_numbers(col, s.type)  # empty -> null, judged by check_values
            if badm.any():
                issues.append(
                    Issue(
                        np.flatnonzero(badm),
                        s.name,
                        f"invalid {what} {{value!r}}",
                        col.filter(pa.array(badm)),
                    )
                )
                flagged |= badm
            t = t.set_column(t.column_names.index(s.name), s.name, typed)
    table, more = check_values(t, specs, flagged)
    return table, issues + more


def check_values(
    t: pa.Table, specs: Sequence[ColumnSpec], flagged: np.ndarray | None = None
) -> tuple[pa.Table, list[Issue]]:
    """Missing required values, values outside ``allowed``, bad list elements (list columns are split here).

    Returns the table without the bad rows (nor those already ``flagged``) and the issues, by row position.
    """
    n = t.num_rows
    bad_any = np.zeros(n, dtype=bool) if flagged is None else flagged.copy()
    issues: list[Issue] = []

    def flag(mask: np.ndarray, field: str, reason: str, values=None) -> None:
        if mask.any():
            issues.append(Issue(np.flatnonzero(mask), field, reason, values))
            bad_any[mask] = True

    for s in specs:
        col = t[s.name]
        is_str = pa.types.is_string(col.type)
        if not n:
            pass
        elif s.required and (col.null_count or (is_str and _any(pc.equal(col, "")))):
            flag(
                to_mask(pc.is_null(col)) | (to_mask(pc.equal(col, "")) if is_str else False),
                s.name,
                "missing value",
            )
        if (
            n
            and s.allowed is not None
            and not _all(pc.or_(pc.is_in(col, pa.array(s.allowed)), pc.equal(col, "")))
        ):
            out = ~to_mask(pc.is_in(col, pa.array(s.allowed))) & ~to_mask(pc.equal(col, ""))
            shown = ", ".join(s.allowed)
            flag(
                out,
                s.name,
                f"unexpected value {{value!r}} (expected one of {shown})",
                col.filter(pa.array(out)),
            )
        if _is_list(s.type):
            lists, bad_flat, parents, tokens = split_list(col, s.type.value_type)
            if bad_flat is not None:
                # one message per row: its first bad element
                rows, first = np.unique(parents[bad_flat], return_index=True)
                vals = tokens.take(pa.array(bad_flat[first]))
                issues.append(Issue(rows, s.name, "invalid number {value!r} in list", vals))
                bad_any[rows] = True
            t = t.set_column(t.column_names.index(s.name), s.name, lists)
    if bad_any.any():
        t = t.filter(pa.array(~bad_any))
    return t, issues


def parse_numbers(
    col: pa.ChunkedArray | pa.Array, type_: pa.DataType, empty: np.ndarray | None = None
) -> tuple[pa.ChunkedArray | pa.Array, np.ndarray]:
    """Strings to numbers: (typed column with null where empty or bad, mask of bad non-empty values)."""
    n = len(col)
    if empty is None:
        empty = to_mask(pc.equal(col, "")) if n else np.zeros(0, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    if empty.any():
        col = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), col)
    try:
        return pc.cast(col, type_), bad
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    pattern = INT_RE if pa.types.is_integer(type_) else FLOAT_RE
    bad = ~to_mask(pc.match_substring_regex(col, pattern)) & ~empty
    clean = pc.if_else(pa.array(bad | empty), pa.scalar(None, pa.string()), col)
    extra = unparseable(clean, type_)  # e.g. an integer too large for int64
    if extra:
        bad[extra] = True
        clean = pc.if_else(pa.array(bad | empty), pa.scalar(None, pa.string()), col)
    return pc.cast(clean, type_), bad


def unparseable(arr, type_: pa.DataType, offset: int = 0) -> list[int]:
    """Positions whose cast fails, by bisection: cheap when (as after a regex check) there are few."""
    try:
        pc.cast(arr, type_)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(arr) == 1:
            return [offset]
        mid = len(arr) // 2
        return unparseable(arr.slice(0, mid), type_, offset) + unparseable(
            arr.slice(mid), type_, offset + mid
        )


def split_list(
    col: pa.ChunkedArray | pa.Array, value_type: pa.DataType
) -> tuple[pa.Array, np.ndarray | None, np.ndarray, pa.Array]:
    """Whitespace-separated values inside each field -> list array ("" -> []).

    Returns (lists, positions of bad tokens or None, parent row of each token, the tokens as strings).
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    parts = pc.ascii_split_whitespace(col)
    flat = pc.list_flatten(parts)
    parents = to_np(pc.list_parent_indices(parts)).astype(np.int64)
    keep = pc.not_equal(flat, "")  # leading/trailing blanks and empty fields give "" pieces
    if len(flat) and not pc.all(keep).as_py():
        km = to_mask(keep)
        flat, parents = flat.filter(keep), parents[km]
    bad_pos = None
    if pa.types.is_string(value_type):
        values = flat
    else:
        values, badm = parse_numbers(flat, value_type, np.zeros(len(flat), dtype=bool))
        if badm.any():
            bad_pos = np.flatnonzero(badm)
    return build_lists(n, parents, values), bad_pos, parents, flat


def build_lists(n: int, parents: np.ndarray, values: pa.Array) -> pa.Array:
    """A list array of ``n`` rows from flat ``values`` and the (non-decreasing) row each value belongs to."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=n), out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)


# ----------------------------------------------------------------------------------------------------------
# small vectorized helpers shared by the loaders


def positions_within(keys: pa.ChunkedArray | pa.Array) -> pa.Array:
    """For each row, how many earlier rows share its key (0, 1, 2, ... per key, in row order), as int64."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    n = len(keys)
    if n == 0:
        return pa.array([], pa.int64())
    codes = to_np(pc.dictionary_encode(keys).indices)
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    idx = np.arange(n, dtype=np.int64)
    starts = np.r_[True, sc[1:] != sc[:-1]]
    pos = idx - np.maximum.accumulate(np.where(starts, idx, 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = pos
    return pa.array(out)


def integral_to_int64(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A float column whose values are all whole numbers becomes int64 (e.g. RecBole ``timestamp:float``)."""
    if not pa.types.is_floating(col.type) or len(col) == 0 or col.null_count:
        return col
    if _all(pc.equal(pc.floor(col), col)) and _all(pc.less(pc.abs(col), 2.0**62)):
        return pc.cast(col, pa.int64())
    return col


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def to_np(arr) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr.to_numpy(zero_copy_only=False)


def to_mask(arr) -> np.ndarray:
    """Boolean Arrow array -> numpy bool, null counting as False."""
    if arr.null_count:
        arr = pc.fill_null(arr, False)
    return to_np(arr).astype(bool, copy=False)


def _all(mask) -> bool:
    return bool(pc.all(mask).as_py() is not False)


def _any(mask) -> bool:
    return bool(pc.any(mask).as_py())
