"""Dataset registry: well-known names resolved under a data folder, and paths to a user's own files.

Nothing is ever downloaded. A registered dataset that is absent gives a message saying where to get it
and which path to pass. The data folder is the ``root`` argument if given, else ``$BEHAVIORSEQ_DATA`` if
set, else ``./data`` then ``../shared/data`` (the layout of this project's machines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from behaviorseq.config import ConfigError
from behaviorseq.data.events import EventTable
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.preprocess import Step, run, step_from_dict
from behaviorseq.data.store import SequenceStore, cached_store


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: str  # recbole | seqtext | movielens | taobao
    path: str  # relative to the data folder
    where: str  # where a user gets it
    exclude_history: bool = True  # default history masking in full-ranking evaluation
    note: str = ""
    steps: tuple = field(default_factory=tuple)  # default preprocessing for training, as step dicts


_SEQREC = ("the S3-Rec preprocessed files (Amazon 2014 5-core, LastFM), e.g. the 'data' folder of the "
           "S3-Rec or SRA-CL repositories: NAME.txt and NAME_item2attributes.json")
REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("ml-100k", "recbole", "ml-100k", "RecBole atomic files of MovieLens 100K (ml-100k.inter, "
                ".item, .user) from RecBole's dataset collection, or the raw GroupLens ml-100k.zip (u.data)"),
    DatasetSpec("beauty", "seqtext", "seqrec/Beauty.txt", _SEQREC),
    DatasetSpec("toys", "seqtext", "seqrec/Toys_and_Games.txt", _SEQREC),
    DatasetSpec("lastfm", "seqtext", "seqrec/LastFM.txt", _SEQREC),
    DatasetSpec("ml-1m", "movielens", "ml-1m", "GroupLens ml-1m.zip (ratings.dat, movies.dat), unzipped"),
    DatasetSpec("ml-10m", "movielens", "ml-10M100K", "GroupLens ml-10m.zip (ratings.dat, movies.dat)"),
    DatasetSpec("ml-20m", "movielens", "ml-20m", "GroupLens ml-20m.zip (ratings.csv, movies.csv)"),
    DatasetSpec("ml-25m", "movielens", "ml-25m", "GroupLens ml-25m.zip (ratings.csv, movies.csv)"),
    DatasetSpec("taobao", "taobao", "taobao/UserBehavior.csv", "Tianchi dataset 649 'User Behavior Data "
                "from Taobao' (UserBehavior.csv, 100M events, about 3.5 GB)"),
    DatasetSpec("amazon-books", "recbole", "amazon-books", "RecBole atomic files of Amazon Books "
                "(Amazon_Books.inter) from RecBole's dataset collection"),
]}


class DatasetNotFound(FileNotFoundError):
    pass


def data_roots(root: str | Path | None = None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    env = os.environ.get("BEHAVIORSEQ_DATA")
    return [Path(env)] if env else [Path("data"), Path("../shared/data")]


def resolve(name_or_path: str | Path, root: str | Path | None = None) -> tuple[str, Path, DatasetSpec | None]:
    """(format, path, spec). A registered name is looked up under the data roots; anything else is
    taken as a path, its format guessed from the file names."""
    key = str(name_or_path).lower()
    if key in REGISTRY:
        spec = REGISTRY[key]
        tried = [r / spec.path for r in data_roots(root)]
        for p in tried:
            if p.exists():
                return spec.format, p, spec
        raise DatasetNotFound(
            f"dataset {spec.name!r} not found; looked in: {', '.join(str(p) for p in tried)}.\n"
            f"Get it from {spec.where}, put it at <data folder>/{spec.path} and pass --data-root "
            f"(or set BEHAVIORSEQ_DATA), or pass the path itself. Nothing is downloaded.")
    p = Path(name_or_path)
    if not p.exists():
        raise DatasetNotFound(f"{name_or_path!s} is neither a registered dataset ({', '.join(REGISTRY)}) "
                              f"nor an existing path")
    return guess_format(p), p, None


def guess_format(p: Path) -> str:
    names = {c.name for c in p.iterdir()} if p.is_dir() else {p.name}
    if any(n.endswith(".inter") for n in names):
        return "recbole"
    if names & {"u.data", "ratings.dat", "ratings.csv"}:
        return "movielens"
    if "UserBehavior.csv" in names:
        return "taobao"
    suffixes = [x.lower() for x in p.suffixes]
    if len(suffixes) > 1 and suffixes[-1] in COMPRESSED:  # events.csv.gz: what read_table reads compressed
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if p.is_file() and suffix == ".txt" and len(p.suffixes) == 1:
        return "seqtext"
    if p.is_file() and suffix in TABLE_SUFFIXES:
        return "table"
    raise DataFormatError(p, None, None, "cannot tell the format: expected a CSV / TSV / Parquet file (.csv, .tsv, "
                          ".dat, .parquet, .pq, .parq; compressed .gz / .bz2 / .zst / .lz4), a "
                          "'user item item ...' .txt file, or a folder of RecBole .inter files, MovieLens "
                          "ratings or Taobao's UserBehavior.csv (or read it with behaviorseq.data.loaders)")


TABLE_SUFFIXES = (".csv", ".tsv", ".dat", ".parquet", ".pq", ".parq")
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")


def load_events(name_or_path: str | Path, root: str | Path | None = None, **kwargs) -> EventTable:
    """Read a dataset into an EventTable (no preprocessing)."""
    from behaviorseq.data import loaders

    fmt, path, spec = resolve(name_or_path, root)
    reader = {"recbole": loaders.read_recbole, "seqtext": loaders.read_seqtext, "movielens": loaders.read_movielens,
              "taobao": loaders.read_taobao, "table": loaders.read_table}[fmt]
    table = reader(path, **kwargs)
    if spec is not None:
        table.name = spec.name
    return table


READ_ARGS = {"columns": dict, "delimiter": str, "format": str, "kinds": dict, "skip_bad_rows": bool, "drop": list}


def check_read_args(read_args: dict[str, Any] | None) -> dict[str, Any]:
    """The table reader's arguments from a config (data.columns, data.read), checked; unset ones dropped."""
    out = {k: v for k, v in (read_args or {}).items() if v not in (None, {})}
    for k, v in out.items():
        if k not in READ_ARGS:
            raise ConfigError(f"data.read.{k}: unknown reader argument; valid ones are {sorted(READ_ARGS)}")
        if not isinstance(v, READ_ARGS[k]):
            raise ConfigError(f"data.read.{k}: expected a {READ_ARGS[k].__name__}, got {v!r}")
    if len(out.get("delimiter", ",")) != 1:
        raise ConfigError(f"data.read.delimiter must be one character, got {out['delimiter']!r}")
    if out.get("format", "csv") not in ("csv", "parquet"):
        raise ConfigError(f"data.read.format must be 'csv' or 'parquet', got {out['format']!r}")
    return out


def source_files(path: str | Path, fmt: str) -> list[str]:
    """The files a data set is read from (what its cache entry is keyed by)."""
    p = Path(path)
    files = sorted(str(f) for f in (p.iterdir() if p.is_dir() else [p]) if f.is_file())
    if p.is_dir():
        return files
    from behaviorseq.data.loaders.movielens import side_files

    # the side files its reader reads beside it are sources too (one added or removed later makes a new entry)
    side = {"seqtext": [p.stem + "_item2attributes.json"],
            "recbole": [p.name[: -len(".inter")] + x for x in (".item", ".user")] if p.name.endswith(".inter") else [],
            "movielens": side_files(p.name)}.get(fmt, [])
    return files + [str(p.with_name(n)) for n in side if p.with_name(n).is_file()]


def open_dataset(name_or_path: str | Path, steps: list[Step | dict] | None = None, *, root: str | Path | None = None,
                 cache_dir: str | Path | None = None, cache: bool = True, refresh: bool = False,
                 read_args: dict[str, Any] | None = None) -> SequenceStore:
    """Load, preprocess and store a dataset, through the cache keyed by its files, the steps and
    ``read_args`` (the table reader's arguments for a file of your own: ``columns``, ``delimiter``, ...)."""
    steps = [step_from_dict(s) if isinstance(s, dict) else s for s in (steps or [])]
    fmt, path, spec = resolve(name_or_path, root)
    name = spec.name if spec else Path(path).stem
    read_args = check_read_args(read_args)
    if read_args and fmt != "table":
        if spec is not None or not Path(path).is_file():
            raise ConfigError(f"{path}: reader arguments {sorted(read_args)} (data.columns / data.read) are for "
                              f"table files (CSV, TSV, Parquet); this one is read by the {fmt!r} reader")
        fmt = "table"  # one's own file named like a built-in format (ratings.csv, events.txt): read as a table

    def build() -> SequenceStore:
        from behaviorseq.data.loaders import read_table

        table = read_table(path, **read_args) if fmt == "table" else load_events(path, root)
        if table.events.num_rows == 0:
            raise DataFormatError(path, None, None, "no events (an empty file, or a header only)")
        store = SequenceStore.build(run(table, steps), name=name)
        if store.num_events == 0:
            raise DataFormatError(path, None, None, f"no events left after the preprocessing steps "
                                  f"{[s.to_dict() for s in steps]}")
        store.meta["dataset"] = {"name": name, "format": fmt, "path": str(path),
                                 "exclude_history_default": spec.exclude_history if spec else True}
        return store

    if not cache:
        return build()
    files = source_files(path, fmt)
    config = {"dataset": name, "format": fmt, "steps": [s.to_dict() for s in steps]}
    if read_args:
        config["read"] = read_args
    return cached_store(files, config, build, cache_dir, refresh)


def stats(store: SequenceStore) -> dict:
    """The numbers ``behaviorseq data stats`` prints."""
    st = dict(store.meta["stats"])
    span = None
    if st.get("time_min") is not None:
        span = st["time_max"] - st["time_min"]
    return {"dataset": store.meta.get("name"), "users": st["users"], "items": st["items"], "events": st["events"],
            "density": st["events"] / max(1, st["users"] * st["items"]),
            "time_min": st["time_min"], "time_max": st["time_max"], "time_span": span,
            "sequence_length": st["sequence_length"], "cardinality": st["cardinality"],
            "preprocess": store.meta.get("preprocess"), "sources": store.meta.get("sources"),
            "timestamp": (store.meta.get("load_report") or {}).get("timestamp", "from the data")}
