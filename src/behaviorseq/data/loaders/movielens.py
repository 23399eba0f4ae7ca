"""MovieLens ratings in their original GroupLens layouts, detected by file name.

- ml-100k: ``u.data`` tab-separated ``user item rating timestamp``, no header; ``u.item``
  pipe-separated latin-1 ``id|title|release date|video release date|IMDb URL|19 genre flags``;
  ``u.user`` ``id|age|gender|occupation|zip``.
- ml-1m / ml-10m: ``ratings.dat`` ``user::item::rating::timestamp``; ``movies.dat``
  ``id::title::Genre|Genre``; ml-1m ``users.dat`` ``id::gender::age::occupation::zip``.
- ml-20m, ml-25m, ml-32m, ml-latest: ``ratings.csv`` with header ``userId,movieId,rating,timestamp``;
  ``movies.csv`` ``movieId,title,genres`` (quoted titles).

Events: ``user``, ``item`` (int64 ids), ``timestamp`` (int64 Unix seconds), ``rating`` (float64).
Items table (when the movies file is there): ``item``, ``title`` (text, as found, with its year),
``year`` (numeric, from the title's trailing "(YYYY)", null when absent), ``genres``
(categorical_list of genre names; "(no genres listed)" -> []). Users table (100K, 1M): ``user``,
``age`` (numeric; 1M uses age-group codes), ``gender``, ``occupation`` (1M: integer code), ``zip``.
Side files are read as UTF-8 when they are valid UTF-8, else latin-1.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from behaviorseq.data.events import EventTable
from behaviorseq.data.loaders._csv import BadRows, ColumnSpec, build_lists, first_line, read_delimited, to_np
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.schema import ITEM, TIME, USER, Kind, Schema

# the 19 genre flags at the end of a u.item line, in order
GENRES_100K = tuple(
    "unknown|Action|Adventure|Animation|Children's|Comedy|Crime|Documentary|Drama|Fantasy|Film-Noir|Horror|"
    "Musical|Mystery|Romance|Sci-Fi|Thriller|War|Western".split("|")
)
_RATINGS = [
    ColumnSpec(USER, pa.int64()),
    ColumnSpec(ITEM, pa.int64()),
    ColumnSpec("rating", pa.float64()),
    ColumnSpec(TIME, pa.int64()),
]
# ratings file -> (format label, delimiter, header lines, items file, users file)
_LAYOUTS = {
    "u.data": ("ml-100k", "\t", 0, "u.item", "u.user"),
    "ratings.dat": ("ml-1m/10m", "::", 0, "movies.dat", "users.dat"),
    "ratings.csv": ("ml-20m+", ",", 1, "movies.csv", None),
}
_EVENT_SCHEMA = Schema.of(
    **{USER: Kind.CATEGORICAL, ITEM: Kind.CATEGORICAL, TIME: Kind.TIMESTAMP, "rating": Kind.NUMERIC}
)
_ITEM_SCHEMA = Schema.of(
    **{ITEM: Kind.CATEGORICAL, "title": Kind.TEXT, "year": Kind.NUMERIC, "genres": Kind.CATEGORICAL_LIST}
)
_USER_SCHEMA = Schema.of(
    **{
        USER: Kind.CATEGORICAL,
        "age": Kind.NUMERIC,
        "gender": Kind.CATEGORICAL,
        "occupation": Kind.CATEGORICAL,
        "zip": Kind.CATEGORICAL,
    }
)


def side_files(ratings_name: str) -> list[str]:
    """The movies / users files read beside a ratings file of this name, when present."""
    return [n for n in _LAYOUTS.get(ratings_name, (None,) * 5)[3:] if n]


def read_movielens(path: str | PathLike, *, skip_bad_rows: bool = False) -> EventTable:
    """Read a MovieLens folder (or its ratings file), with movies and users tables when present.

    Malformed rows raise ``DataFormatError`` (file, line, field) unless ``skip_bad_rows``.
    """
    p = Path(path)
    if p.is_dir():
        found = [p / f for f in _LAYOUTS if (p / f).is_file()]
        if not found:
            raise FileNotFoundError(f"{p}: no MovieLens ratings file (expected one of {', '.join(_LAYOUTS)})")
        ratings = found[0]
    elif p.is_file():
        if p.name not in _LAYOUTS:
            raise ValueError(
                f"{p.name}: not a MovieLens ratings file (expected one of {', '.join(_LAYOUTS)})"
            )
        ratings = p
    else:
        raise FileNotFoundError(f"no MovieLens data at {p}")
    label, delim, header, items_name, users_name = _LAYOUTS[ratings.name]
    bad = BadRows(skip_bad_rows)
    if header:
        _check_header(ratings, "userId,movieId,rating,timestamp")
    events = read_delimited(ratings, _RATINGS, delimiter=delim, skip_rows=header, bad=bad)
    events = events.select([USER, ITEM, TIME, "rating"])
    sources = [str(ratings)]

    items = users = None
    f = ratings.with_name(items_name)
    if f.is_file():
        items = {"u.item": _items_100k, "movies.dat": _items_dat, "movies.csv": _items_csv}[items_name](
            f, bad
        )
        sources.append(str(f))
    if users_name and (f := ratings.with_name(users_name)).is_file():
        users = _users(f, bad)
        sources.append(str(f))
    name = ratings.parent.name or label
    report = bad.finish({"format": label}, f"read_movielens({name})")
    return EventTable(
        events,
        _EVENT_SCHEMA,
        items,
        _ITEM_SCHEMA if items is not None else None,
        users,
        _USER_SCHEMA if users is not None else None,
        sources=sources,
        name=name,
        report=report,
    )


def _check_header(path: Path, expected: str) -> None:
    got = first_line(path).replace('"', "").strip()
    if got.lower() != expected.lower():
        raise DataFormatError(path, 1, None, f"expected the header {expected!r}, found {got!r} (a table of your "
                              "own with this name is read as one once its columns are named: --column user=... in "
                              "data stats, data.columns.user=... in a run)")


def _encoding(path: Path) -> str:
    """These side files are small: decode the whole file once to choose UTF-8 or latin-1."""
    try:
        path.read_bytes().decode("utf-8")
        return "utf8"
    except UnicodeDecodeError:
        return "latin1"


def _year(title: pa.ChunkedArray) -> pa.ChunkedArray:
    m = pc.extract_regex(title, r"\((?P<year>[0-9]{4})\)\s*$")
    return pc.cast(pc.struct_field(m, [0]), pa.int64())


def _items(item, title, genres: pa.Array) -> pa.Table:
    return pa.table({ITEM: item, "title": title, "year": _year(title), "genres": genres})


def _items_100k(path: Path, bad: BadRows) -> pa.Table:
    specs = [ColumnSpec(ITEM, pa.int64()), ColumnSpec("title", pa.string(), required=False)]
    specs += [ColumnSpec(c, pa.string(), required=False) for c in ("release_date", "video_date", "url")]
    specs += [ColumnSpec(f"g{i}", pa.int64()) for i in range(len(GENRES_100K))]
    t = read_delimited(path, specs, delimiter="|", encoding=_encoding(path), bad=bad)
    flags = np.column_stack([to_np(t[f"g{i}"]) for i in range(len(GENRES_100K))]) if t.num_rows else None
    if flags is None:
        genres = pa.array([], pa.list_(pa.string()))
    else:
        rows, cols = np.nonzero(flags)  # row-major: grouped by row, genres in file order
        genres = build_lists(
            t.num_rows, rows, pa.array(np.asarray(GENRES_100K, dtype=object)[cols], pa.string())
        )
    return _items(t[ITEM], t["title"], genres)


def _genre_lists(genres: pa.ChunkedArray) -> pa.Array:
    """ "Action|Comedy" -> ["Action", "Comedy"]; "(no genres listed)" and "" -> []."""
    parts = pc.split_pattern(genres.combine_chunks() if isinstance(genres, pa.ChunkedArray) else genres, "|")
    flat = pc.list_flatten(parts)
    parents = to_np(pc.list_parent_indices(parts)).astype(np.int64)
    keep = pc.and_(pc.not_equal(flat, ""), pc.not_equal(flat, "(no genres listed)"))
    km = to_np(keep).astype(bool)
    return build_lists(len(genres), parents[km], flat.filter(keep))


def _items_dat(path: Path, bad: BadRows) -> pa.Table:
    specs = [
        ColumnSpec(ITEM, pa.int64()),
        ColumnSpec("title", pa.string()),
        ColumnSpec("genres", pa.string(), required=False),
    ]
    t = read_delimited(path, specs, delimiter="::", encoding=_encoding(path), bad=bad)
    return _items(t[ITEM], t["title"], _genre_lists(t["genres"]))


def _items_csv(path: Path, bad: BadRows) -> pa.Table:
    _check_header(path, "movieId,title,genres")
    specs = [
        ColumnSpec(ITEM, pa.int64()),
        ColumnSpec("title", pa.string()),
        ColumnSpec("genres", pa.string(), required=False),
    ]
    t = read_delimited(
        path, specs, delimiter=",", skip_rows=1, quoted=True, encoding=_encoding(path), bad=bad
    )
    return _items(t[ITEM], t["title"], _genre_lists(t["genres"]))


def _users(path: Path, bad: BadRows) -> pa.Table:
    if path.name == "u.user":
        specs = [
            ColumnSpec(USER, pa.int64()),
            ColumnSpec("age", pa.int64()),
            ColumnSpec("gender", pa.string()),
            ColumnSpec("occupation", pa.string()),
            ColumnSpec("zip", pa.string(), required=False),
        ]
        t = read_delimited(path, specs, delimiter="|", encoding=_encoding(path), bad=bad)
    else:  # users.dat
        specs = [
            ColumnSpec(USER, pa.int64()),
            ColumnSpec("gender", pa.string()),
            ColumnSpec("age", pa.int64()),
            ColumnSpec("occupation", pa.int64()),
            ColumnSpec("zip", pa.string(), required=False),
        ]
        t = read_delimited(path, specs, delimiter="::", encoding=_encoding(path), bad=bad)
    return t.select(_USER_SCHEMA.names)
