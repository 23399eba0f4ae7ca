"""SequenceStore: all users' sequences in one CSR layout, saved as memory-mappable files.

Layout (row ``u`` holds encoded user ``u``; row 0 is the padding user and is always empty)::

    offsets                int64 [num_users + 2]   events of user u are offsets[u]:offsets[u + 1]
    event fields           one array per field, [num_events], sorted by (user, time):
                           item (int64 ids 1..num_items), timestamp, and every other event field
    item / user features   dense arrays indexed by item / user id (0 = padding / unknown)

Categorical values are numbered 1..n with 0 for null/padding and their vocabularies kept, so every id
maps back to its raw value. List-valued fields are CSR pairs (offsets, values); text stays Arrow.
Saving writes a temporary folder and renames it, so a cache entry is either complete or absent.
Training code takes index views of this store (``data.splits``) and never copies a sequence per sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from behaviorseq import __version__
from behaviorseq.data.preprocess import Prepared, sorted_vocab
from behaviorseq.data.schema import ITEM, TIME, USER, Kind, Schema
from behaviorseq.utils import array_fingerprint, sync_folder

# Part of every cache key: raise it whenever a loader or a preprocessing step changes what it produces for the
# same files, or stores saved by older code would be loaded as if current.
FORMAT_VERSION = 4  # 2: CSV id columns read as text (leading zeros kept); 3: load report says when times are positions;
# 4: ids parsed exactly (never through float64), non-finite times bad rows, ISO times of any year, a side table
# repeating a key keeps its last row in every column


@dataclass
class Column:
    """One stored field: ``data`` dense [rows], or ``offsets``+``data`` for lists, or Arrow text."""

    kind: Kind
    data: np.ndarray | pa.Array
    offsets: np.ndarray | None = None
    vocab: pa.Array | None = None  # raw value of code k at index k; index 0 is null

    def decode(self, codes: np.ndarray) -> list:
        if self.vocab is None:
            raise ValueError("this field has no vocabulary (not categorical)")
        return self.vocab.take(pa.array(np.asarray(codes, dtype=np.int64))).to_pylist()


def encode_column(col: pa.ChunkedArray | pa.Array, kind: Kind, rows: np.ndarray | None = None,
                  n_rows: int | None = None) -> Column:
    """Encode one Arrow column by kind. With ``rows``, scatter value j to row ``rows[j]`` of a dense
    array of ``n_rows`` (used to align item/user side tables to their ids); ``rows[j] < 0`` drops j."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if rows is not None:
        ok = rows >= 0
        arr, rows = arr.filter(pa.array(ok)), rows[ok]
    if kind.is_list:
        lens = pc.list_value_length(arr).fill_null(0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(arr)
        inner = Kind.CATEGORICAL if kind == Kind.CATEGORICAL_LIST else Kind.NUMERIC
        values = encode_column(flat, inner)
        if rows is None:
            offsets = np.zeros(len(lens) + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            return Column(kind, values.data, offsets, values.vocab)
        # Reorder the lists into row order: a gather over an index array, no per-row Python.
        row_lens = np.zeros(n_rows, dtype=np.int64)
        row_lens[rows] = lens
        offsets = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(row_lens, out=offsets[1:])
        src_start = np.cumsum(lens) - lens
        order = np.argsort(rows, kind="stable")
        take = np.repeat(src_start[order], lens[order]) + ragged_arange(lens[order])
        return Column(kind, np.asarray(values.data)[take], offsets, values.vocab)
    if kind == Kind.TEXT:
        arr = arr.cast(pa.large_string())
        if rows is None:
            return Column(kind, arr)
        idx = np.full(n_rows, -1, dtype=np.int64)
        idx[rows] = np.arange(len(rows))
        return Column(kind, arr.take(pa.array(idx, mask=idx < 0)))
    if kind == Kind.CATEGORICAL:
        valid = arr.drop_null()
        enc = pc.dictionary_encode(valid)
        vocab, rank = sorted_vocab(enc.dictionary)
        codes_valid = rank[enc.indices.to_numpy(zero_copy_only=False)] + 1
        codes = np.zeros(len(arr), dtype=np.int32)
        codes[~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = codes_valid
        vocab = pa.concat_arrays([pa.nulls(1, vocab.type), vocab])
        if rows is None:
            return Column(kind, codes, vocab=vocab)
        dense = np.zeros(n_rows, dtype=np.int32)
        dense[rows] = codes
        return Column(kind, dense, vocab=vocab)
    # numeric / timestamp: integers stay int64 (exact times), other numbers float32; nulls -> NaN.
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    is_int = pa.types.is_integer(arr.type) and arr.null_count == 0
    dtype = (np.int64 if is_int else np.float64) if kind == Kind.TIMESTAMP else np.float32
    values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(dtype) if not is_int \
        else arr.to_numpy().astype(dtype)
    if rows is None:
        return Column(kind, values)
    dense = np.full(n_rows, np.nan if np.issubdtype(dtype, np.floating) else 0, dtype=dtype)
    dense[rows] = values
    return Column(kind, dense)


def ragged_arange(lens: np.ndarray) -> np.ndarray:
    """[0..l0-1, 0..l1-1, ...] without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    return np.arange(total, dtype=np.int64) - starts


def _length_stats(lengths: np.ndarray) -> dict:
    if len(lengths) == 0:
        return {}
    q = np.percentile(lengths, [0, 5, 25, 50, 75, 90, 95, 99, 100])
    keys = ["min", "p5", "p25", "p50", "p75", "p90", "p95", "p99", "max"]
    return {**{k: float(v) for k, v in zip(keys, q)}, "mean": float(lengths.mean())}


@dataclass
class SequenceStore:
    offsets: np.ndarray
    events: dict[str, Column]
    items: dict[str, Column] = field(default_factory=dict)
    users: dict[str, Column] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    # ---- shape -------------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return len(self.offsets) - 2

    @property
    def num_items(self) -> int:
        return len(self.events[ITEM].vocab) - 1

    @property
    def num_events(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        """[num_users + 1] events per user row (row 0, the padding user, has 0)."""
        return np.diff(self.offsets)

    @property
    def item(self) -> np.ndarray:
        return self.events[ITEM].data

    @property
    def timestamp(self) -> np.ndarray:
        return self.events[TIME].data

    def fingerprint(self) -> str:
        """A hash of what the sequences are (offsets, item ids, times): equal stores, equal fingerprints.
        Results record it, so a run is never re-evaluated on other data of the same size."""
        return array_fingerprint(self.offsets, self.events[ITEM].data, self.events[TIME].data)

    def sequence(self, user: int, name: str = ITEM) -> np.ndarray:
        return self.events[name].data[self.offsets[user]:self.offsets[user + 1]]

    def event_user(self) -> np.ndarray:
        """[num_events] user id of each event (materialised on demand; 8 bytes per event)."""
        return np.repeat(np.arange(len(self.offsets) - 1), self.lengths)

    def raw_items(self, ids: np.ndarray) -> list:
        return self.events[ITEM].decode(ids)

    def raw_users(self, ids: np.ndarray) -> list:
        return self.users[USER].decode(ids) if USER in self.users else self.events[USER].decode(ids)

    # ---- build -------------------------------------------------------------------------------
    @classmethod
    def build(cls, prep: Prepared, name: str | None = None) -> SequenceStore:
        src = prep.source
        n_users, n_items = len(prep.user_vocab) - 1, len(prep.item_vocab) - 1
        offsets = np.zeros(n_users + 2, dtype=np.int64)
        np.cumsum(np.bincount(prep.user, minlength=n_users + 1), out=offsets[1:])
        events: dict[str, Column] = {
            ITEM: Column(Kind.CATEGORICAL, prep.item, vocab=prep.item_vocab),
            USER: Column(Kind.CATEGORICAL, np.zeros(0, dtype=np.int64), vocab=prep.user_vocab),  # ids via offsets
        }
        for f in src.schema.fields:
            if f.name in (USER, ITEM) or f.name not in prep.events.column_names:
                continue
            events[f.name] = encode_column(prep.events[f.name], f.kind)
        items = cls._side(src.items, src.item_schema, ITEM, prep.item_vocab)
        users = cls._side(src.users, src.user_schema, USER, prep.user_vocab)
        store = cls(offsets, events, items, users)
        lengths = store.lengths[1:]
        t = events[TIME].data
        store.meta = {
            "format": FORMAT_VERSION,
            "code_version": __version__,
            "name": name or src.name,
            "sources": list(src.sources),
            "schema": src.schema.to_dict(),
            "item_schema": src.item_schema.to_dict() if src.item_schema else None,
            "user_schema": src.user_schema.to_dict() if src.user_schema else None,
            "preprocess": prep.record,
            "load_report": src.report,
            "stats": {
                "users": n_users,
                "items": n_items,
                "events": int(len(prep.item)),
                "time_min": float(t.min()) if len(t) else None,
                "time_max": float(t.max()) if len(t) else None,
                "sequence_length": _length_stats(lengths),
                "cardinality": {
                    f"{scope}.{k}": len(c.vocab) - 1
                    for scope, cols in (("event", events), ("item", items), ("user", users))
                    for k, c in cols.items() if c.vocab is not None
                },
            },
        }
        return store

    @staticmethod
    def _side(table: pa.Table | None, schema: Schema | None, key: str, vocab: pa.Array) -> dict[str, Column]:
        if table is None or schema is None:
            return {}
        keys = table[key].combine_chunks()
        if keys.type != vocab.type:
            keys = keys.cast(vocab.type)
        pos = pc.index_in(keys, value_set=vocab.slice(1)).fill_null(-1).to_numpy().astype(np.int64)
        rows = np.where(pos >= 0, pos + 1, -1)
        n = len(vocab)
        # a key the side table repeats: its last row wins, in every column (list columns were misaligned for every
        # row after a repeat; scalar ones kept the last)
        _, last_rev = np.unique(rows[::-1], return_index=True)
        keep = np.zeros(len(rows), dtype=bool)
        keep[len(rows) - 1 - last_rev] = True
        repeated = (rows >= 0) & ~keep
        if repeated.any():
            warnings.warn(f"{key} side table: {int(repeated.sum()):,} row(s) repeat a key seen again later (first: "
                          f"{keys[int(np.flatnonzero(repeated)[0])].as_py()!r}); the last row of each key is kept",
                          stacklevel=3)
            rows = np.where(repeated, -1, rows)
        return {f.name: encode_column(table[f.name], f.kind, rows, n) for f in schema.fields if f.name != key}

    # ---- save / load -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write to ``path`` atomically (temp folder + rename); an existing complete store is kept."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            np.save(tmp / "offsets.npy", np.asarray(self.offsets))
            layout = {}
            for scope, cols in (("event", self.events), ("item", self.items), ("user", self.users)):
                for name, c in cols.items():
                    stem = f"{scope}.{name}"
                    if isinstance(c.data, pa.Array):
                        _write_arrow(tmp / f"{stem}.arrow", c.data)
                    else:
                        np.save(tmp / f"{stem}.npy", np.asarray(c.data))
                    if c.offsets is not None:
                        np.save(tmp / f"{stem}.offsets.npy", np.asarray(c.offsets))
                    if c.vocab is not None:
                        _write_arrow(tmp / f"{stem}.vocab.arrow", c.vocab)
                    layout[stem] = {"kind": c.kind.value, "text": isinstance(c.data, pa.Array),
                                    "list": c.offsets is not None, "vocab": c.vocab is not None}
            meta = {**self.meta, "layout": layout}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            sync_folder(tmp)
            try:
                os.rename(tmp, path)
            except OSError:
                if not (path / "meta.json").exists():  # a half-written target cannot exist: we rename whole
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # someone else finished the same entry first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> SequenceStore:
        path = Path(path)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{path} is not a sequence store (no meta.json)")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: store format {meta.get('format')} but this code reads {FORMAT_VERSION}")
        mode = "r" if mmap else None
        scopes: dict[str, dict[str, Column]] = {"event": {}, "item": {}, "user": {}}
        for stem, lay in meta.pop("layout").items():
            scope, name = stem.split(".", 1)
            data = _read_arrow(path / f"{stem}.arrow") if lay["text"] else np.load(path / f"{stem}.npy", mmap_mode=mode)
            offsets = np.load(path / f"{stem}.offsets.npy", mmap_mode=mode) if lay["list"] else None
            vocab = _read_arrow(path / f"{stem}.vocab.arrow") if lay["vocab"] else None
            scopes[scope][name] = Column(Kind(lay["kind"]), data, offsets, vocab)
        offsets = np.load(path / "offsets.npy", mmap_mode=mode)
        return cls(offsets, scopes["event"], scopes["item"], scopes["user"], meta, path)


def _write_arrow(path: Path, arr: pa.Array) -> None:
    table = pa.table({"v": arr})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def _read_arrow(path: Path) -> pa.Array:
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()["v"].combine_chunks()


# ---- cache ---------------------------------------------------------------------------------------
def file_fingerprint(path: str | Path, sample: int = 1 << 20) -> dict:
    """Identity of a source file: path, size, mtime, inode and change time, and a hash of its first and last MiB.
    The change time (ctime) moves with every write and cannot be set back, so a file edited in place and given
    its old mtime again (``cp -p``, ``rsync -t``, ``touch -d``) still gets a new entry."""
    p = Path(path).resolve()
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(sample))
        if st.st_size > sample:
            fh.seek(max(sample, st.st_size - sample))
            h.update(fh.read(sample))
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "sample_sha256": h.hexdigest()}


def cache_key(sources: list[str | Path], config: dict) -> str:
    payload = {"format": FORMAT_VERSION, "sources": [file_fingerprint(s) for s in sources], "config": config}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    return Path(os.environ.get("BEHAVIORSEQ_CACHE", Path.home() / ".cache" / "behaviorseq"))


def cached_store(sources: list[str | Path], config: dict, build: Callable[[], SequenceStore],
                 cache_dir: str | Path | None = None, refresh: bool = False) -> SequenceStore:
    """Load the store for (sources, config) from the cache, or build and save it atomically. ``refresh``
    rebuilds it; the old entry is replaced only once the new one is whole (a failed rebuild keeps it)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / cache_key(sources, config)
    if (entry / "meta.json").exists() and not refresh:
        return SequenceStore.load(entry)
    store = build()
    store.meta["cache_config"] = config
    # Swap a refreshed entry, or a broken one (no meta.json: a finished save always has it, the rename is atomic);
    # write beside it, then swap (back again if the swap fails)
    if entry.exists() and (refresh or not (entry / "meta.json").exists()):
        entry.parent.mkdir(parents=True, exist_ok=True)
        side = Path(tempfile.mkdtemp(prefix=f".{entry.name}.swap-", dir=entry.parent))
        try:
            new, old = store.save(side / "new"), side / "old"
            try:
                os.rename(entry, old)
            except FileNotFoundError:  # another process is swapping the same entry: ours goes in if the place is free
                pass
        except BaseException:
            shutil.rmtree(side, ignore_errors=True)
            raise
        try:
            os.rename(new, entry)
        except OSError:
            if (entry / "meta.json").exists():  # another process's rebuild landed first: it is as new as ours
                shutil.rmtree(side, ignore_errors=True)
                return SequenceStore.load(entry)
            if old.exists():
                os.rename(old, entry)  # if even this fails, the old store stays in the side folder, not deleted
            shutil.rmtree(side, ignore_errors=True)
            raise
        shutil.rmtree(side, ignore_errors=True)
    else:  # a fresh entry; one another process finished meanwhile is kept (save)
        store.save(entry)
    return SequenceStore.load(entry)
