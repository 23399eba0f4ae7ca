"""Temporal point process data in EasyTPP's two layouts, from local files (nothing is downloaded).

- ``read_easytpp_pickle``: the Gatech / NHP pickle used by EasyTPP (``train.pkl``, ``dev.pkl``, ``test.pkl``):
  a dict with ``dim_process`` (the number of event types) and one split key (``train``, ``dev`` or
  ``test``) holding a list of sequences, each a list of event dicts with ``time_since_start``,
  ``time_since_last_event`` and ``type_event`` (other keys, e.g. ``idx_event``, are ignored).
  Pickles run code when loaded: read only files you trust.
- ``read_easytpp_hf``: EasyTPP's Hugging Face layout (``easytpp/*`` data sets), one row per sequence with
  list columns ``time_since_start``, ``time_since_last_event``, ``type_event`` and an int ``dim_process``
  (``seq_len`` is checked when present), as a local ``.json`` (a JSON array of rows), ``.jsonl`` /
  ``.json`` lines, or ``.parquet`` file.

Both return ``EventSequences`` with times from ``time_since_start`` (EasyTPP's model inputs use
``time_since_last_event`` as the inter-event time, not ``time_since_last_same_event`` as its docs say) and
raise ``DataFormatError`` naming the file, the sequence (pickle, 1-based) or row (HF, 1-based) and the
field. With ``check_dtime``, ``time_since_last_event`` must equal the difference of consecutive
``time_since_start`` values (after the first event) up to ``dtime_tol``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from behaviorseq.data.eventseq import EventSequences
from behaviorseq.data.loaders.errors import DataFormatError

FIELDS = ("time_since_start", "time_since_last_event", "type_event")
SPLITS = ("train", "dev", "test")


def read_easytpp_pickle(path: str | Path, split: str | None = None, check_dtime: bool = True,
                        dtime_tol: float = 1e-4) -> EventSequences:
    """One split of a Gatech/EasyTPP pickle; ``split`` defaults to the only split key in the file."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            data = pickle.load(fh, encoding="latin-1")  # the original files are Python 2 pickles
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as e:
            raise DataFormatError(path, None, None, f"not a readable pickle ({type(e).__name__}: {e}); expected an "
                                  "EasyTPP / Gatech pickle: a dict with 'dim_process' and a split") from None
    if not isinstance(data, dict):
        raise DataFormatError(path, None, None, f"expected a dict with 'dim_process' and a split, got {type(data).__name__}")
    if "dim_process" not in data:
        raise DataFormatError(path, None, "dim_process", f"missing; keys are {sorted(map(str, data))}")
    present = [s for s in SPLITS if s in data]
    if split is None:
        if len(present) != 1:
            raise DataFormatError(path, None, None, f"holds splits {present}; a folder of train / dev / test files needs one split per file "
                                  "(or call read_easytpp_pickle(path, split=...))")
        split = present[0]
    if split not in data:
        raise DataFormatError(path, None, split, f"split not in the file; it holds {present}")
    seqs = data[split]
    if not isinstance(seqs, list):
        raise DataFormatError(path, None, split, f"expected a list of sequences, got {type(seqs).__name__}")
    cols: dict[str, list] = {f: [] for f in FIELDS}
    lens = np.zeros(len(seqs), dtype=np.int64)
    for n, seq in enumerate(seqs):
        if not isinstance(seq, list):
            raise DataFormatError(path, n + 1, None, f"expected a list of event dicts, got {type(seq).__name__}",
                                  unit="sequence")
        lens[n] = len(seq)
        for i, ev in enumerate(seq):
            for f in FIELDS:
                try:
                    cols[f].append(ev[f])
                except (KeyError, TypeError):
                    raise DataFormatError(path, n + 1, f, f"event {i + 1} has no such field", unit="sequence") from None
    arrays = {}
    for f in FIELDS:
        try:
            arrays[f] = np.asarray(cols[f], dtype=np.float64)
        except (TypeError, ValueError):
            bad = next(j for j, v in enumerate(cols[f]) if not _is_number(v))
            n, i = _locate(lens, bad)
            raise DataFormatError(path, n + 1, f, f"event {i + 1}: not a number: {cols[f][bad]!r}", unit="sequence") from None
    return _build(path, lens, arrays, _dim(path, data["dim_process"]), "sequence", check_dtime, dtime_tol,
                  {"format": "easytpp_pickle", "split": split})


def read_easytpp_hf(path: str | Path, check_dtime: bool = True, dtime_tol: float = 1e-4) -> EventSequences:
    """A local file in EasyTPP's Hugging Face column layout (one row per sequence)."""
    path = Path(path)
    table = _read_table(path)
    missing = [f for f in (*FIELDS, "dim_process") if f not in table.column_names]
    if missing:
        raise DataFormatError(path, None, missing[0], f"missing column; columns are {table.column_names}", unit="row")
    dims = table.column("dim_process").to_pylist()
    if not dims:
        raise DataFormatError(path, None, None, "the file has no rows", unit="row")
    for r, d in enumerate(dims):
        if d != dims[0]:
            raise DataFormatError(path, r + 1, "dim_process", f"{d!r} differs from row 1's {dims[0]!r}", unit="row")
    arrays, lens = {}, None
    for f in FIELDS:
        col = table.column(f).combine_chunks()
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
            raise DataFormatError(path, None, f, f"expected a list per row, got {col.type}", unit="row")
        if col.null_count:
            raise DataFormatError(path, int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]) + 1, f,
                                  "null instead of a list", unit="row")
        n = pc.list_value_length(col).to_numpy().astype(np.int64)
        if lens is not None and np.any(n != lens):
            r = int(np.flatnonzero(n != lens)[0])
            raise DataFormatError(path, r + 1, f, f"{n[r]} values but {FIELDS[0]} has {lens[r]}", unit="row")
        lens = n
        flat = pc.list_flatten(col)
        if flat.null_count:
            j = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
            r, i = _locate(lens, j)
            raise DataFormatError(path, r + 1, f, f"event {i + 1} is null", unit="row")
        try:
            arrays[f] = flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataFormatError(path, None, f, f"values are not numbers ({flat.type}): {e}", unit="row") from None
    if "seq_len" in table.column_names:
        sl = np.asarray(table.column("seq_len").to_pylist(), dtype=object)
        bad = np.flatnonzero(sl != lens)
        if len(bad):
            r = int(bad[0])
            raise DataFormatError(path, r + 1, "seq_len", f"{sl[r]!r} but the row has {lens[r]} events", unit="row")
    return _build(path, lens, arrays, _dim(path, dims[0]), "row", check_dtime, dtime_tol, {"format": "easytpp_hf"})


def _read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if suffix not in (".json", ".jsonl"):
        raise DataFormatError(path, None, None, "expected a .json, .jsonl or .parquet file", unit="row")
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):  # a JSON array of rows
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataFormatError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None
        if not all(isinstance(r, dict) for r in rows):
            r = next(i for i, x in enumerate(rows) if not isinstance(x, dict))
            raise DataFormatError(path, r + 1, None, "a row is not a JSON object", unit="row")
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataFormatError(path, None, None, f"rows do not form a table: {e}", unit="row") from None
    import pyarrow.json as pj

    try:
        return pj.read_json(path)
    except pa.ArrowInvalid as e:
        raise DataFormatError(path, None, None, f"invalid JSON lines: {e}") from None


def _build(path: Path, lens: np.ndarray, a: dict[str, np.ndarray], num_types: int, unit: str, check_dtime: bool,
           tol: float, meta: dict) -> EventSequences:
    offsets = np.concatenate([[0], np.cumsum(lens)])
    t, dt, k = a["time_since_start"], a["time_since_last_event"], a["type_event"]

    def fail(j: int, field: str, why: str):
        n, i = _locate(lens, j)
        raise DataFormatError(path, n + 1, field, f"event {i + 1}: {why}", unit=unit)

    for f, v in (("time_since_start", t), ("time_since_last_event", dt)):
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            fail(int(bad[0]), f, f"not finite: {v[bad[0]]}")
    bad = np.flatnonzero((k != np.round(k)) | (k < 0) | (k >= num_types))
    if len(bad):
        fail(int(bad[0]), "type_event", f"{k[bad[0]]} is not an integer in 0..{num_types - 1} (dim_process {num_types})")
    later = np.ones(len(t), dtype=bool)
    later[offsets[:-1][lens > 0]] = False  # not a sequence's first event
    gap = np.diff(t, prepend=0.0)
    bad = np.flatnonzero(later & (gap < 0))
    if len(bad):
        fail(int(bad[0]), "time_since_start", f"{t[bad[0]]} is before the previous event's {t[bad[0] - 1]}")
    if check_dtime:
        bad = np.flatnonzero(later & (np.abs(gap - dt) > tol * np.maximum(1.0, np.abs(t))))
        if len(bad):
            j = int(bad[0])
            fail(j, "time_since_last_event", f"{dt[j]} but time_since_start moved by {gap[j]} (check_dtime=False skips this)")
    return EventSequences(offsets, t, k.astype(np.int64), num_types, {**meta, "source": str(path)})


def _dim(path: Path, d) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise DataFormatError(path, None, "dim_process", f"expected a positive integer, got {d!r}")
    return int(d)


def _locate(lens: np.ndarray, j: int) -> tuple[int, int]:
    """Flat event index -> (sequence, position), both 0-based."""
    ends = np.cumsum(lens)
    n = int(np.searchsorted(ends, j, side="right"))
    return n, j - int(ends[n] - lens[n])


def _is_number(v) -> bool:
    try:
        float(v)
        return not isinstance(v, (str, bytes))
    except (TypeError, ValueError):
        return False
