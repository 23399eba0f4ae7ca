"""Payment data sets for the default-risk task: the planted generator or a user's own two tables.

``open_payments(name, args, root)`` returns a :class:`~behaviorseq.data.synthetic.payments.PaymentData`:

* ``"synthetic-payments"``: ``generate_payments(PaymentsConfig(**args))`` (LBSF brief section 2);
* a folder (or ``args["payments"]`` / ``args["labels"]`` paths) with a *payments* table and a *labels* table,
  CSV or Parquet, read by :func:`read_payments`.

Payments: one row per payment with ``user``, ``time``, ``merchant`` (a name: its character n-grams are a
feature), ``amount`` (``>= 0``) and optionally ``description`` (text). ``time`` is an ISO-8601 string or
date/time column (read as seconds) or a number in ``time_unit`` (``"s"``, ``"ms"`` or ``"days"``).
Labels: one row per user with ``user``, ``label`` (0 or 1) and optionally ``role`` (``train`` / ``valid`` /
``test``); without it users are split at random by ``split`` fractions and ``seed``. ``columns`` renames
(role -> source column). The label date is one for all users, ``label_date`` (same unit as ``time``, or an
ISO string) or, by default, one day after the last payment, and a payment at or after it is an error (it would
leak the label); or each user's own, a ``date`` column of the labels (ISO or in ``time_unit``), and the
payments at or after a user's date are dropped and counted (a log goes on past each observation date).
Payments of users without a label row are dropped and counted. Errors name the file, row and field.
"""

from __future__ import annotations

import csv
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from behaviorseq.config import ConfigError, StrictConfig
from behaviorseq.data.loaders._csv import FLOAT_RE
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.loaders.tabular import read_table
from behaviorseq.data.preprocess import sorted_vocab
from behaviorseq.data.synthetic.payments import (
    NAME,
    TEST,
    TRAIN,
    VALID,
    PaymentData,
    PaymentsConfig,
    generate_payments,
)

__all__ = ["PaymentTablesConfig", "open_payments", "read_payments"]

_SECONDS = {"s": 1.0, "ms": 1e-3, "days": 86_400.0}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ].*)?")
_ROLES = {"train": TRAIN, "valid": VALID, "test": TEST}


class PaymentTablesConfig(StrictConfig):
    payments: str | None = None  # default: <folder>/payments.{csv,parquet}
    labels: str | None = None  # default: <folder>/labels.{csv,parquet}
    columns: dict[str, str] = Field(default_factory=dict)  # role -> source column
    time_unit: Literal["s", "ms", "days"] = "s"  # of numeric times (ISO / date-time columns are seconds)
    label_date: float | datetime | date | str | None = None  # None: one day after the last payment (YAML dates ok)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / valid / test, without a role column
    seed: int = 0
    delimiter: str | None = Field(None, min_length=1, max_length=1)  # of CSV files; None: "," (".tsv": tab)


def _find(folder: Path, stem: str) -> Path:
    for suffix in (".csv", ".parquet", ".tsv"):
        if (folder / f"{stem}{suffix}").exists():
            return folder / f"{stem}{suffix}"
    raise FileNotFoundError(f"payments data set {folder}: no {stem}.csv / {stem}.parquet (set '{stem}' to its path)")


def _label_day(c: PaymentTablesConfig) -> float | None:
    """The configured label date in days (the unit of ``time``), or None."""
    if c.label_date is None:
        return None
    if isinstance(c.label_date, (date, datetime)):  # YAML and the CLI's overrides parse ISO dates
        return _label_day(c.model_copy(update={"label_date": c.label_date.isoformat()}))
    if isinstance(c.label_date, str) and not _ISO_DATE.fullmatch(c.label_date.strip()):
        try:  # a number given as text (the command line): in the tables' time unit, not a year
            return _label_day(c.model_copy(update={"label_date": float(c.label_date)}))
        except ValueError:
            raise ValueError(f"payments data set: label_date {c.label_date!r} is neither an ISO-8601 date "
                             "(YYYY-MM-DD[THH:MM:SS]) nor a number") from None
    if isinstance(c.label_date, str):
        if c.time_unit != "s":
            raise ValueError("payments data set: an ISO label_date needs ISO / date-time payment times (time_unit 's')")
        try:
            secs = np.datetime64(c.label_date.replace("Z", "").replace("+00:00", ""), "s").astype(np.int64)
        except ValueError as e:
            raise ValueError(f"payments data set: label_date {c.label_date!r} is not an ISO-8601 date") from e
        return float(secs) / 86_400.0
    return float(c.label_date) * _SECONDS[c.time_unit] / 86_400.0


_PARQUET = (".parquet", ".pq", ".parq")


def _delimiter(path: Path, configured: str | None) -> str:
    return configured or ("\t" if path.suffix == ".tsv" else ",")


def _column_names(path: Path, delimiter: str | None = None) -> list[str]:
    """The header of a CSV / TSV or the schema of a Parquet file."""
    if path.suffix in _PARQUET:
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh, delimiter=_delimiter(path, delimiter)), [])


def _require(path: Path, names: list[str], cols: dict[str, str], roles: tuple[str, ...]) -> None:
    """Every role's column is in the file, or an error naming the role, its override key and the columns."""
    for role in roles:
        if cols[role] not in names:
            hint = next((f"; is the delimiter {d!r}? (data.payments.delimiter)" for d in ";\t|"
                         if len(names) == 1 and d in names[0]), f"; map it with data.payments.columns.{role}=<column>")
            raise DataFormatError(str(path), None, cols[role], f"no column for the {role} (columns are {names}){hint}")


def _time_kinds(path: Path, column: str, delimiter: str | None = None) -> tuple[bool, bool]:
    """(any date-time, any number) in the time column: a Parquet timestamp / date type, else every value of a text
    column (a string column may hold epoch numbers; a CSV column may mix both, which its reader accepts)."""
    if path.suffix in _PARQUET:
        import pyarrow.parquet as pq

        t = pq.read_schema(path).field(column).type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return False, True
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            return True, False
        col = pq.read_table(path, columns=[column])[column]
    else:
        import pyarrow.csv as pv

        try:
            col = pv.read_csv(path, parse_options=pv.ParseOptions(delimiter=_delimiter(path, delimiter)),
                              convert_options=pv.ConvertOptions(include_columns=[column],
                                                                column_types={column: pa.string()}))[column]
        except pa.ArrowInvalid:  # rows the fast reader refuses (whitespace-only lines): the row reader, which skips them
            with open(path, newline="", encoding="utf-8-sig") as fh:
                col = pa.array([row.get(column) for row in csv.DictReader(fh, delimiter=_delimiter(path, delimiter))],
                               pa.string())
    col = pc.utf8_trim_whitespace(pc.drop_null(col))
    col = col.filter(pc.not_equal(col, ""))
    num = pc.match_substring_regex(col, FLOAT_RE)
    n_num = int(pc.sum(num).as_py() or 0)
    return n_num < len(col), n_num > 0


def _check_time_unit(path: Path, column: str, time_unit: str, delimiter: str | None = None) -> bool:
    """Whether ``column`` holds ISO date-times (read as such); then ``time_unit`` must be left at seconds (ISO
    times become seconds; numbers beside them would be scaled by the unit and the date-times not)."""
    iso, num = _time_kinds(path, column, delimiter)
    if iso and time_unit != "s":
        what = "ISO date-times and numbers mixed" if num else "ISO date-times, which are read as such"
        raise DataFormatError(str(path), None, column, f"{what}; time_unit {time_unit!r} is for numeric times "
                              "only (leave it at 's', or write every time one way)")
    return iso and not num


def _strings(t: pa.Table, name: str) -> np.ndarray:
    """A column of the (small) labels table as numpy strings."""
    return np.asarray(t[name].to_numpy(zero_copy_only=False)).astype(str)


def _text(t: pa.Table, name: str) -> pa.Array:
    """A column of the payments table as Arrow strings (numpy's fixed-width strings would size every row to
    the longest value: one 2,000-character description made 50,000 rows take 1 GiB)."""
    col = t[name].combine_chunks()
    return col if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) else pc.cast(col, pa.string())


def _codes(values: pa.Array) -> tuple[list, np.ndarray]:
    """(sorted distinct values, each row's index among them), as ``np.unique(..., return_inverse=True)``."""
    enc = pc.dictionary_encode(values)
    vocab, rank = sorted_vocab(enc.dictionary)
    return vocab.to_pylist(), rank[enc.indices.to_numpy(zero_copy_only=False)]


def _csv_line(path: Path, row: int, delimiter: str | None, space_is_blank: bool = False) -> int | None:
    """The file line where data row ``row`` (0-based; blank lines are not rows, as for the CSV reader; with
    ``space_is_blank`` neither are lines of spaces and tabs, other than the delimiter, as for pandas) starts:
    quoted values may span lines. Read only when reporting an error."""
    sep = _delimiter(path, delimiter)
    space = "".join(c for c in " \t" if c != sep) + "\r\n"
    with open(path, newline="", encoding="utf-8-sig") as fh:
        raw: list[str] = []  # the physical lines of the current record

        def lines():
            for line in fh:
                raw.append(line)
                yield line

        reader = csv.reader(lines(), delimiter=sep)
        next(reader, None)  # the header
        end, k = reader.line_num, 0
        raw.clear()
        for rec in reader:
            text = "".join(raw)
            raw.clear()
            if rec and not (space_is_blank and not text.strip(space)):  # a blank line reads as []
                if k == row:
                    return end + 1
                k += 1
            end = reader.line_num
    return None


def _row_error(src: str, mask: np.ndarray, field: str, reason: str, delimiter: str | None = None,
               space_is_blank: bool = False) -> DataFormatError:
    """The first bad row, as the file's line (CSV: counting the header, blank lines and quoted line breaks) or a
    Parquet row (1-based)."""
    i = int(np.flatnonzero(mask)[0])
    path = Path(src)
    parquet = path.suffix in _PARQUET
    line = i + 1 if parquet else (_csv_line(path, i, delimiter, space_is_blank) if path.exists() else None) or i + 2
    return DataFormatError(src, line, field, reason(i) if callable(reason) else reason,
                           unit="row" if parquet else "line")


def _read_labels(labels: Path, c: PaymentTablesConfig, cols: dict, d: str | None, per_user: bool):
    """(users sorted, label, role, per-user label dates in days or None) of the labels table."""
    lsrc = str(labels)
    lkinds = {cols["user"]: "categorical", cols["label"]: "categorical"}
    if per_user:
        if c.label_date is not None:
            raise ConfigError(f"{lsrc} has a per-user '{cols['date']}' column; label_date (one date for all) "
                              "cannot be set as well")
        lkinds[cols["date"]] = "timestamp" if _check_time_unit(labels, cols["date"], c.time_unit, d) else "numeric"
    ldelim = {} if labels.suffix in _PARQUET else {"delimiter": _delimiter(labels, d)}
    lt = read_table(labels, {"user": cols["user"], "item": cols["label"]}, kinds=lkinds, **ldelim).events
    if lt.num_rows == 0:
        raise DataFormatError(lsrc, None, None, "no label rows (a header only?)")
    lab_user, lab_val = _strings(lt, "user"), _strings(lt, "item")
    ok = np.isin(lab_val, ["0", "1"])
    if not ok.all():
        raise _row_error(lsrc, ~ok, cols["label"], lambda i: f"label must be 0 or 1, got {str(lab_val[i])!r}", delimiter=d)
    users, first, counts = np.unique(lab_user, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = np.zeros(lab_user.size, dtype=bool)
        dup[np.setdiff1d(np.arange(lab_user.size), first)] = True
        raise _row_error(lsrc, dup, cols["user"], lambda i: f"user {str(lab_user[i])!r} has a second label row", delimiter=d)
    label = (lab_val == "1").astype(np.int64)[first]
    if cols["role"] in lt.column_names:
        r = _strings(lt, cols["role"])
        okr = np.isin(r, list(_ROLES))
        if not okr.all():
            raise _row_error(lsrc, ~okr, cols["role"], lambda i: f"role must be train, valid or test, got {str(r[i])!r}", delimiter=d)
        role = np.array([_ROLES[x] for x in r[first]], dtype=np.int64)
    else:
        fr = np.asarray(c.split, dtype=np.float64)
        if (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
            raise ValueError(f"payments data set: split fractions must be >= 0 and sum to 1, got {c.split}")
        draw = np.random.default_rng(c.seed).random(users.size)
        role = np.searchsorted(np.cumsum(fr)[:-1], draw, side="right").astype(np.int64)
    dates = None
    if per_user:
        ld = np.asarray(lt[cols["date"]].to_numpy(zero_copy_only=False), dtype=np.float64)
        if not np.isfinite(ld).all():
            raise _row_error(lsrc, ~np.isfinite(ld), cols["date"], "label date missing or not a number", delimiter=d)
        dates = ld[first] * _SECONDS[c.time_unit] / 86_400.0  # [n_users], in days
    return users, label, role, dates


def read_payments(payments: str | Path, labels: str | Path | None, config: PaymentTablesConfig | None = None
                  ) -> PaymentData:
    """Read the two tables (module docstring) into a ``PaymentData``: users (sorted by name), merchants and
    descriptions re-indexed, times in days since a Thursday-aligned origin (a multiple of 7 days after
    1970-01-01, so ``floor(time) % 7`` is the weekday whatever the data: served users see the training users'
    weekdays), rows sorted by (user, time). ``labels`` None: users to score, every payment's user, label 0, role
    test (``serve.RiskScorer``)."""
    c = config or PaymentTablesConfig()
    cols = {"user": "user", "time": "time", "merchant": "merchant", "amount": "amount", "description": "description",
            "label": "label", "role": "role", "date": "date", **c.columns}
    src = str(payments)
    d = c.delimiter
    names = _column_names(Path(payments), d)
    _require(Path(payments), names, cols, ("user", "time", "merchant", "amount"))
    if labels is not None:
        _require(Path(labels), _column_names(Path(labels), d), cols, ("user", "label"))
    kinds = {cols["user"]: "categorical", cols["merchant"]: "categorical", cols["amount"]: "numeric"}
    if cols["description"] in names:
        kinds[cols["description"]] = "text"
    delim = {} if Path(payments).suffix in _PARQUET else {"delimiter": _delimiter(Path(payments), d)}
    t = read_table(payments, {"user": cols["user"], "item": cols["merchant"], "timestamp": cols["time"]},
                   kinds=kinds, **delim).events
    amount = np.asarray(t[cols["amount"]].to_numpy(zero_copy_only=False), dtype=np.float64)
    bad = ~np.isfinite(amount) | (amount < 0)
    if bad.any():
        raise _row_error(src, bad, cols["amount"], lambda i: f"amount must be a finite number >= 0, got {amount[i]} "
                         "(refunds and chargebacks: drop their rows, or give their size as a positive amount with a "
                         "description that says what they are)", delimiter=d)
    desc = pc.fill_null(_text(t, cols["description"]), "") if cols["description"] in t.column_names \
        else pa.array(np.full(t.num_rows, ""))
    iso = _check_time_unit(Path(payments), cols["time"], c.time_unit, d)
    raw_t = np.asarray(t["timestamp"].to_numpy(zero_copy_only=False), dtype=np.float64)
    if not iso and c.time_unit == "s" and raw_t.size and np.nanmax(np.abs(raw_t)) > 1e11:  # after the year 5138
        raise _row_error(src, np.abs(raw_t) > 1e11, cols["time"], lambda i: f"time {raw_t[i]:.0f} read as seconds is "
                         "after the year 5000: milliseconds? set data.payments.time_unit=ms", delimiter=d)
    too_far = {"ms": (1e14, "microseconds"), "days": (1e6, "seconds")}.get(c.time_unit)  # 3,000+ years either way
    if too_far and raw_t.size and np.nanmax(np.abs(raw_t)) > too_far[0]:
        raise _row_error(src, np.abs(raw_t) > too_far[0], cols["time"], lambda i: f"time {raw_t[i]:.0f} read as "
                         f"{c.time_unit} is over 3,000 years from the origin: {too_far[1]}? set data.payments.time_unit",
                         delimiter=d)
    days = raw_t * _SECONDS[c.time_unit] / 86_400.0

    per_user = labels is not None and cols["date"] in _column_names(Path(labels), d)  # each user's own date
    if labels is None:  # users to score: every payment's user
        users = np.asarray(_codes(_text(t, "user"))[0], dtype=str)
        label, role, dates = np.zeros(users.size, np.int64), np.full(users.size, TEST, np.int64), None
    else:
        users, label, role, dates = _read_labels(Path(labels), c, cols, d, per_user)
    found = pc.index_in(_text(t, "user"), value_set=pa.array(users.tolist(), pa.string()))
    known = found.is_valid().to_numpy(zero_copy_only=False)
    uid = found.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    after = np.zeros(known.shape, dtype=bool)
    if dates is not None:  # a log goes on past each user's date: those payments are dropped (counted), never used
        label_abs = dates
        after = known & (days >= label_abs[uid])
        known &= ~after
    else:
        label_abs = _label_day(c)
        if label_abs is None:
            label_abs = float(days[known].max(initial=0.0)) + 1.0
        late = known & (days >= label_abs)
        if late.any():
            raise _row_error(src, late, cols["time"], "payment at or after the label date (it would leak the label); "
                             "set label_date or drop the row", delimiter=d)
    u, days, amount = uid[known], days[known], amount[known]
    keep = pa.array(known)
    merchant_names, m_id = _codes(_text(t, "item").filter(keep))
    descriptions, d_id = _codes(desc.filter(keep))
    # whole weeks: the hour stays time % 1 (UTC) and floor(time) % 7 the weekday (0 = Thursday, as 1970-01-01)
    origin = 7.0 * float(np.floor(days.min(initial=np.min(label_abs) - 1.0) / 7.0))
    order = np.lexsort((days, u))
    return PaymentData(user=u[order].astype(np.int64), merchant=m_id[order].astype(np.int64) + 1,
                       description=d_id[order].astype(np.int64) + 1, amount=amount[order], time=days[order] - origin,
                       label=label, role=role, merchant_names=[""] + merchant_names,
                       descriptions=[""] + descriptions, label_day=label_abs - origin,
                       report={"payments_read": int(known.size),
                               "dropped_unlabelled_user": int((~known & ~after).sum()),
                               "dropped_after_own_label_date": int(after.sum()),
                               "users": int(users.size),
                               "labelled_users_without_payments": int(users.size - np.unique(uid[known]).size),
                               "labelled_users_not_in_payments": int(users.size - np.unique(uid[known | after]).size),
                               "label_date": f"per user ('{cols['date']}' column)" if per_user
                               else "label_date" if c.label_date is not None else "last payment + 1 day",
                               "user_ids": "sorted raw ids; data.user k is the k-th"},
                       user_names=users.tolist())


def open_payments(name: str, args: dict[str, Any] | None = None, root: str | Path | None = None) -> PaymentData:
    """The data set ``name`` (module docstring); ``args`` are its typed config's fields."""
    args = dict(args or {})
    if name == NAME:
        import dataclasses

        known = {f.name for f in dataclasses.fields(PaymentsConfig)}
        if set(args) - known:
            raise ConfigError(f"data.payments: unknown keys {sorted(set(args) - known)} for the {NAME!r} generator; "
                              f"valid keys are {sorted(known)}")
        data, _ = generate_payments(PaymentsConfig(**args))
        return data
    c = PaymentTablesConfig.from_dict(args)
    folder = Path(name)
    if not folder.is_absolute() and root is not None and not folder.exists():
        folder = Path(root) / name
    if c.payments is None and not folder.is_dir():
        raise FileNotFoundError(f"payments data set {name!r}: not {NAME!r} and not a folder (looked in {folder})")
    pay = Path(c.payments) if c.payments else _find(folder, "payments")
    lab = Path(c.labels) if c.labels else _find(folder, "labels")
    return read_payments(pay, lab, c)
