"""``behaviorseq cluster``: HDBSCAN (``cluster.HDBSCAN``, FAISS-accelerated) on a file of vectors.

Input: a ``.npy`` array [n, d], or a CSV / Parquet table whose numeric columns are the vector (``--columns``
picks them). Output: an ``.npz`` with ``labels`` (-1 noise), ``probabilities`` and ``outlier_scores``
(GLOSH), written to a temporary file and renamed, and a summary printed (and written with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def read_vectors(path: str | Path, columns: list[str] | None = None) -> np.ndarray:
    """[n, d] float array from ``.npy``, or the numeric (or named) columns of a CSV / Parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv", ".tsv", ".parquet", ".pq"):
        raise ValueError(f"{path.name}: expected a .npy array or a .csv / .tsv / .parquet table")
    if suffix == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path.name}: not a numeric .npy array ({e})") from None
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"{path.name}: expected a non-empty 2-d array [n, d], got shape {X.shape}")
        if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise ValueError(f"{path.name}: expected real numbers, got dtype {X.dtype}")  # complex lost its imaginary part
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"{path.name}, row {r + 1}, column {c}: not a finite number ({X[r, c]}); "
                             f"{int(bad.any(1).sum())} rows have one")
        return X
    import pandas as pd

    try:
        df = pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_csv(path, sep="\t" if suffix == ".tsv"
                                                                                       else ",")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name}: cannot read it as a table ({e})") from None
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{path.name}: no column {missing[0]!r}; columns are {list(df.columns)}")
        df = df[columns]
    else:  # every column that is numbers, refusing one that is numbers but for a few cells (a typo would drop it)
        for c in df.columns:
            if df[c].dtype == object or str(df[c].dtype).startswith(("string", "str")):
                num = pd.to_numeric(df[c], errors="coerce")
                if num.notna().mean() >= 0.5:
                    r = int(np.flatnonzero(num.isna() & df[c].notna())[0])
                    raise ValueError(f"{path.name}, row {r + 1}, field {c!r}: not a number ({df[c].iloc[r]!r}); "
                                     "fix it, or name the columns to use with --columns")
        df = df.select_dtypes("number")
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_complex_dtype(df[c]):
            raise ValueError(f"{path.name}, field {c!r}: not a column of real numbers (dtype {df[c].dtype})")
    if df.shape[1] == 0:
        raise ValueError(f"{path.name}: no numeric columns to cluster")
    bad = ~np.isfinite(df.to_numpy(dtype=np.float64))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{path.name}, row {r + 1}, field {df.columns[c]!r}: not a finite number")
    return df.to_numpy(dtype=np.float64)


def cmd_cluster(args: argparse.Namespace) -> int:
    from behaviorseq.cli_train import user_error
    from behaviorseq.cluster import HDBSCAN

    out = Path(args.out)
    try:
        outputs = [out] + ([Path(args.json)] if args.json else [])
        if args.json and Path(args.json).resolve() == out.resolve():  # the summary overwrote the labels
            raise ValueError(f"--out and --json name one file ({out}): give two")
        for f in outputs:  # before the clustering, not after it
            if not f.resolve().parent.is_dir():
                raise ValueError(f"{f}: its folder {f.parent} does not exist")
            if f.is_dir():
                raise ValueError(f"{f} is a folder: give a file name")
            if f.exists() and not args.overwrite:
                raise ValueError(f"{f} exists: --overwrite replaces it, or choose another name")
        X = read_vectors(args.vectors, args.columns)
        model = HDBSCAN(min_cluster_size=args.min_cluster_size, min_samples=args.min_samples, index=args.index,
                        cluster_selection_method=args.selection, allow_single_cluster=args.allow_single_cluster,
                        partitions=args.partitions, use_gpu=args.gpu,
                        partition_overlap=min(2, args.partitions or 2))  # 1 partition: no overlap to ask for
    except (ValueError, OSError) as e:
        return user_error(e)
    t0 = time.perf_counter()
    try:
        model.fit(X)  # checks its settings first (min_cluster_size >= 2, ...)
    except ValueError as e:
        return user_error(e)
    except RuntimeError as e:
        if "use_gpu" not in str(e):
            raise
        return user_error(ValueError(str(e)))  # --gpu without a CUDA build of FAISS
    secs = time.perf_counter() - t0
    labels = model.labels_
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=np.int64)
    summary = {"input": str(args.vectors), "points": int(X.shape[0]), "dims": int(X.shape[1]),
               "clusters": int(sizes.size), "noise_share": float((labels < 0).mean()),
               "largest_clusters": sorted(sizes.tolist(), reverse=True)[:10], "seconds": round(secs, 3),
               "timings": {k: round(v, 3) for k, v in model.timings_.items()}, "knn_report": model.knn_report_,
               "params": {"min_cluster_size": args.min_cluster_size, "min_samples": model.min_samples_,
                          "index": args.index, "selection": args.selection, "mst": model.mst_mode_}}
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, labels=labels, probabilities=model.probabilities_, outlier_scores=model.outlier_scores_)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"{summary['points']:,} points x {summary['dims']} dims: {summary['clusters']} clusters, "
          f"{summary['noise_share']:.1%} noise, {secs:.1f} s -> {out}")
    if args.json:
        from behaviorseq.utils import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=2, default=str))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("cluster", help="HDBSCAN (FAISS-accelerated) on a file of vectors")
    c.add_argument("vectors", help=".npy [n, d], or a CSV / Parquet table (its numeric columns)")
    c.add_argument("--out", required=True, help="output .npz: labels, probabilities, outlier_scores")
    c.add_argument("--columns", nargs="+", default=None, help="table columns to use (default: all numeric)")
    c.add_argument("--min-cluster-size", type=int, default=25)
    c.add_argument("--min-samples", type=int, default=None, help="default: min-cluster-size (hdbscan's convention)")
    c.add_argument("--index", default="flat", choices=["flat", "ivf", "hnsw"], help="ivf for large n")
    c.add_argument("--selection", default="eom", choices=["eom", "leaf"])
    c.add_argument("--allow-single-cluster", action="store_true")
    c.add_argument("--partitions", type=int, default=None, help="partition-and-merge mode with P partitions")
    c.add_argument("--gpu", action="store_true", help="FAISS on the GPUs (faiss-gpu)")
    c.add_argument("--json", default=None, help="also write the summary here")
    c.add_argument("--overwrite", action="store_true", help="replace --out / --json files that exist")
    c.set_defaults(func=cmd_cluster)
