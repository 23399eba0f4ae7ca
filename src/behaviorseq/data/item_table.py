"""``items.parquet``: what a run folder keeps about its items for serving (raw ids, training counts, item
fields). Written by ``train.run_experiment``, read by ``serve.Recommender`` / ``serve.Ranker``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from behaviorseq.utils import atomic_write_bytes

ITEMS_FILE = "items.parquet"


def write_item_table(run_dir: str | Path, raw_ids: pa.Array, train_counts: np.ndarray,
                     fields: dict[str, np.ndarray] | None = None) -> None:
    """``items.parquet`` for serving: raw ids of items 1..n (``raw_ids`` without the padding slot), their
    training counts, and per-item ``fields`` (tables [n + 1] indexed by internal id, e.g. a CTR model's item
    categories; row 0 is dropped). Written atomically."""
    cols = {"raw": raw_ids, "train_count": pa.array(np.asarray(train_counts, dtype=np.int64))}
    for k, table in (fields or {}).items():
        if k in cols:
            raise ValueError(f"item field {k!r} clashes with a column of {ITEMS_FILE}")
        cols[k] = pa.array(np.asarray(table, dtype=np.int64)[1:])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(cols), sink)
    atomic_write_bytes(Path(run_dir) / ITEMS_FILE, sink.getvalue().to_pybytes())


def read_item_table(run_dir: str | Path, made_by: str = "the run's data") -> pa.Table:
    """A run folder's ``items.parquet``; FileNotFoundError saying how to make it when it is missing."""
    path = Path(run_dir) / ITEMS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (runs made before serving existed lack it): re-run, or write it "
                                f"with serve.write_item_table from {made_by}")
    return pq.read_table(path)
