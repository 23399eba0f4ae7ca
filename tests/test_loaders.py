"""Loaders: each format on small well-formed files, malformed rows (file, line, field), skip_bad_rows and
its report, sources left untouched, column mapping, in-memory inputs, and the shared real datasets."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behaviorseq.data.loaders import (
    DataFormatError,
    read_movielens,
    read_recbole,
    read_seqtext,
    read_table,
    read_taobao,
)
from behaviorseq.data.schema import Kind


def shared_data() -> Path:
    env = os.environ.get("BEHAVIORSEQ_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def kinds(et, table: str = "events") -> dict[str, str]:
    schema = {"events": et.schema, "items": et.item_schema, "users": et.user_schema}[table]
    return {f.name: f.kind.value for f in schema.fields}


def raises_at(file: str, line: int | None, field: str | None, match: str = ""):
    """Context manager: DataFormatError naming file, line and field (in attributes and message)."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(DataFormatError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            err = self.info.value
            msg = str(err)
            assert msg.startswith(file), msg
            assert Path(err.file).name == file
            assert err.line == line, msg
            assert err.field == field, msg
            if line is not None:
                assert f"line {line}" in msg or f"row {line}" in msg
            if field is not None:
                assert f"field {field!r}" in msg
            assert match in msg, msg
            return handled

    return _Check()


def skipped(fn, *args, **kwargs):
    """Call a loader with skip_bad_rows=True; return (table, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        et = fn(*args, skip_bad_rows=True, **kwargs)
    return et, [str(w.message) for w in caught]


# ----------------------------------------------------------------------------------------------------------
# RecBole

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\ttags:token_seq\tvec:float_seq\n"
    "u1\ti1\t4\t100\ta b\t0.5 1\n"
    "u1\ti2\t3.5\t101\t\t\n"
    "u2\ti1\t5\t99\tc\t2\n"
)


@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    d = tmp_path / "toy"
    write(d / "toy.inter", INTER)
    write(
        d / "toy.item", "item_id:token\ttitle:token_seq\tyear:float\ni1\tThe Movie\t1999\ni2\tOther\t2001\n"
    )
    write(d / "toy.user", "user_id:token\tage:float\tgender:token\nu1\t30\tF\nu2\t41\tM\n")
    return d


def test_recbole_folder(recbole_dir: Path):
    et = read_recbole(recbole_dir)
    assert et.name == "toy" and et.num_events == 3 and et.num_users == 2 and et.num_items == 2
    assert et.events.column_names == ["user", "item", "timestamp", "rating", "tags", "vec"]
    assert kinds(et) == {
        "user": "categorical",
        "item": "categorical",
        "timestamp": "timestamp",
        "rating": "numeric",
        "tags": "categorical_list",
        "vec": "numeric_list",
    }
    ev = et.events.to_pydict()
    assert ev["user"] == ["u1", "u1", "u2"] and et.events["user"].type == pa.string()
    # whole-number float timestamps become int64
    assert ev["timestamp"] == [100, 101, 99] and et.events["timestamp"].type == pa.int64()
    assert ev["rating"] == [4.0, 3.5, 5.0]
    assert ev["tags"] == [["a", "b"], [], ["c"]]
    assert ev["vec"] == [[0.5, 1.0], [], [2.0]]
    assert et.items.to_pydict() == {
        "item": ["i1", "i2"],
        "title": [["The", "Movie"], ["Other"]],
        "year": [1999.0, 2001.0],
    }
    assert kinds(et, "items") == {"item": "categorical", "title": "categorical_list", "year": "numeric"}
    assert (
        et.users.column_names == ["user", "age", "gender"] and kinds(et, "users")["gender"] == "categorical"
    )
    assert [Path(s).name for s in et.sources] == ["toy.inter", "toy.item", "toy.user"]
    assert et.report == {"skipped_rows": 0, "bad_rows": []}


def test_recbole_inter_file_without_timestamp_uses_positions(tmp_path: Path):
    f = write(tmp_path / "x.inter", "user_id:token\titem_id:token\na\t1\nb\t2\na\t3\na\t1\nb\t5\n")
    et = read_recbole(f)
    assert et.items is None and et.users is None
    assert et.events["timestamp"].to_pylist() == [0, 0, 1, 2, 1]
    assert et.events["item"].to_pylist() == ["1", "2", "3", "1", "5"]


def test_recbole_malformed_rows(tmp_path: Path):
    f = write(tmp_path / "d" / "d.inter", INTER.replace("3.5", "abc"))
    with raises_at("d.inter", 3, "rating", "invalid number 'abc'"):
        read_recbole(f)
    write(f, INTER.replace("u2\ti1\t5", "u2\ti1"))  # a field short on line 4
    with raises_at("d.inter", 4, None, "expected 6 fields, found 5"):
        read_recbole(f)
    write(f, INTER.replace("0.5 1", "0.5 x"))
    with raises_at("d.inter", 2, "vec", "invalid number 'x' in list"):
        read_recbole(f)
    write(f, INTER.replace("u2\t", "\t"))
    with raises_at("d.inter", 4, "user", "missing value"):
        read_recbole(f)


def test_recbole_skip_bad_rows(tmp_path: Path):
    text = INTER.replace("3.5", "abc") + "\nu3\ti9\t1\t5\tz\t1\n"  # bad line 3, blank line 5, good line 6
    f = write(tmp_path / "d.inter", text)
    et, warned = skipped(read_recbole, f)
    assert et.num_events == 3 and et.events["user"].to_pylist() == ["u1", "u2", "u3"]
    assert et.report["skipped_rows"] == 1
    assert et.report["bad_rows"] == [
        {"file": str(f), "line": 3, "field": "rating", "reason": "invalid number 'abc'"}
    ]
    assert len(warned) == 1 and "skipped 1 malformed row" in warned[0]


def test_recbole_bad_header(tmp_path: Path):
    f = write(tmp_path / "h.inter", "user_id:token\titem_id:int\n1\t2\n")
    with raises_at("h.inter", 1, "item_id:int", "name:type"):
        read_recbole(f)
    f = write(tmp_path / "h2.inter", "user_id:token\tx:float\n1\t2\n")
    with pytest.raises(DataFormatError, match="user_id and item_id"):
        read_recbole(f)


# ----------------------------------------------------------------------------------------------------------
# one-user-per-line sequences


def test_seqtext_with_sibling_attributes(tmp_path: Path):
    f = write(tmp_path / "Toy.txt", "1 10 11 12\n2 11\n3 12 10\n")
    write(tmp_path / "Toy_item2attributes.json", '{"10": [1, 2], "11": [2], "12": []}')
    et = read_seqtext(f)
    assert et.name == "Toy" and (et.num_users, et.num_items, et.num_events) == (3, 3, 6)
    assert et.events.to_pydict() == {
        "user": [1, 1, 1, 2, 3, 3],
        "item": [10, 11, 12, 11, 12, 10],
        "timestamp": [0, 1, 2, 0, 0, 1],
    }
    assert et.events["user"].type == pa.int64() and et.events["timestamp"].type == pa.int64()
    assert kinds(et) == {"user": "categorical", "item": "categorical", "timestamp": "timestamp"}
    assert et.items.to_pydict() == {"item": [10, 11, 12], "attributes": [[1, 2], [2], []]}
    assert kinds(et, "items") == {"item": "categorical", "attributes": "categorical_list"}
    assert [Path(s).name for s in et.sources] == ["Toy.txt", "Toy_item2attributes.json"]
    assert read_seqtext(f, attributes=False).items is None


def test_seqtext_whitespace_blank_lines_and_crlf(tmp_path: Path):
    f = write(tmp_path / "w.txt", "1  10\t11 \r\n\n   \n2 12\r\n3\n")
    et = read_seqtext(f)
    assert et.events.to_pydict() == {"user": [1, 1, 2], "item": [10, 11, 12], "timestamp": [0, 1, 0]}
    assert et.items is None  # no sibling attribute file; user 3 has no items, hence no events


def test_seqtext_malformed(tmp_path: Path):
    f = write(tmp_path / "Beauty.txt", "1 1 2\n\n2 3 x1 4\n3 5\n")
    with raises_at("Beauty.txt", 3, "item", "invalid integer 'x1'") as info:
        read_seqtext(f)
    assert str(info.value) == "Beauty.txt, line 3, field 'item': invalid integer 'x1'"
    write(f, "1 1 2\nu2 3\n")
    with raises_at("Beauty.txt", 2, "user", "invalid integer 'u2'"):
        read_seqtext(f)
    write(f, "1 1 2\n2 3 x1 4\nz 5\n4 6\n")
    et, warned = skipped(read_seqtext, f)
    assert et.events["user"].to_pylist() == [1, 1, 4]
    assert et.report["skipped_rows"] == 2
    assert [(r["line"], r["field"]) for r in et.report["bad_rows"]] == [(2, "item"), (3, "user")]
    assert "skipped 2 malformed row" in warned[0]


def test_seqtext_user_on_two_lines_is_an_error(tmp_path: Path):
    f = write(tmp_path / "Beauty.txt", "1 10 11 12\n2 20 21\n\n1 13 14\n")
    with raises_at("Beauty.txt", 4, "user", "user 1 already has line 1"):
        read_seqtext(f)


def test_seqtext_bad_attributes(tmp_path: Path):
    f = write(tmp_path / "a.txt", "1 2 3\n")
    bad = write(tmp_path / "attrs.json", '{"x": [1]}')
    with raises_at("attrs.json", None, "item", "invalid integer 'x'"):
        read_seqtext(f, attributes=bad)
    write(bad, '{"2": ["a"]}')
    with raises_at("attrs.json", None, "attributes"):
        read_seqtext(f, attributes=bad)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(0, 10**12), min_size=1, max_size=8), min_size=1, max_size=20,
                unique_by=lambda s: s[0]))  # one line per user
def test_seqtext_roundtrip(tmp_path: Path, seqs: list[list[int]]):
    f = write(tmp_path / "p.txt", "".join(" ".join(map(str, s)) + "\n" for s in seqs))
    ev = read_seqtext(f).events.to_pydict()
    assert ev["user"] == [s[0] for s in seqs for _ in s[1:]]
    assert ev["item"] == [i for s in seqs for i in s[1:]]
    assert ev["timestamp"] == [k for s in seqs for k in range(len(s) - 1)]


# ----------------------------------------------------------------------------------------------------------
# MovieLens

FLAGS = {"Action": 1, "Comedy": 5, "unknown": 0}


def flags(*names: str) -> str:
    v = ["0"] * 19
    for n in names:
        v[FLAGS[n]] = "1"
    return "|".join(v)


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    d = tmp_path / "ml-100k"
    write(d / "u.data", "1\t10\t4\t881250949\n1\t20\t3\t881250950\n2\t10\t5\t881250951\n")
    write(
        d / "u.item",
        f"10|Café Society (1995)|01-Jan-1995||http://x|{flags('Action', 'Comedy')}\n"
        f"20|unknown||||{flags('unknown')}\n",
        encoding="latin-1",
    )
    write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return d


def test_movielens_100k(ml100k: Path):
    et = read_movielens(ml100k)
    assert et.report["format"] == "ml-100k" and et.name == "ml-100k"
    assert et.events.to_pydict() == {
        "user": [1, 1, 2],
        "item": [10, 20, 10],
        "timestamp": [881250949, 881250950, 881250951],
        "rating": [4.0, 3.0, 5.0],
    }
    assert kinds(et) == {
        "user": "categorical",
        "item": "categorical",
        "timestamp": "timestamp",
        "rating": "numeric",
    }
    assert et.items.to_pydict() == {
        "item": [10, 20],
        "title": ["Café Society (1995)", "unknown"],
        "year": [1995, None],
        "genres": [["Action", "Comedy"], ["unknown"]],
    }
    assert kinds(et, "items") == {
        "item": "categorical",
        "title": "text",
        "year": "numeric",
        "genres": "categorical_list",
    }
    assert et.users.to_pydict()["occupation"] == ["technician", "other"]
    assert read_movielens(ml100k / "u.data").num_events == 3  # the ratings file itself


def test_movielens_1m_dat(tmp_path: Path):
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", "1::10::4::978300760\n1::20::3.5::978300761\n2::10::5::978300762\n")
    write(
        d / "movies.dat",
        "10::Café (1995)::Comedy|Drama\n20::X: The Movie (2000)::Action\n",
        encoding="latin-1",
    )
    write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    et = read_movielens(d)
    assert et.report["format"] == "ml-1m/10m"
    assert et.events["rating"].to_pylist() == [4.0, 3.5, 5.0]
    assert et.items.to_pydict() == {
        "item": [10, 20],
        "title": ["Café (1995)", "X: The Movie (2000)"],
        "year": [1995, 2000],
        "genres": [["Comedy", "Drama"], ["Action"]],
    }
    assert et.users.to_pydict() == {
        "user": [1, 2],
        "age": [1, 56],
        "gender": ["F", "M"],
        "occupation": [10, 16],
        "zip": ["48067", "70072"],
    }


def test_movielens_csv(tmp_path: Path):
    d = tmp_path / "ml-25m"
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,978300760\n2,20,3.5,978300761\n")
    write(
        d / "movies.csv",
        'movieId,title,genres\n10,"American President, The (1995)",Comedy|Romance\n'
        "20,Nothing (2019),(no genres listed)\n",
    )
    et = read_movielens(d)
    assert et.report["format"] == "ml-20m+" and et.users is None
    assert et.events.to_pydict()["item"] == [10, 20]
    assert et.items.to_pydict() == {
        "item": [10, 20],
        "title": ["American President, The (1995)", "Nothing (2019)"],
        "year": [1995, 2019],
        "genres": [["Comedy", "Romance"], []],
    }


def test_movielens_malformed(tmp_path: Path):
    d = tmp_path / "ml-1m"
    f = write(d / "ratings.dat", "1::10::4::978300760\n1::20::3.5\n2::x::5::978300762\n")
    with raises_at("ratings.dat", 2, None, "expected 4 fields, found 3"):
        read_movielens(d)
    et, warned = skipped(read_movielens, f)
    assert et.num_events == 1 and et.report["skipped_rows"] == 2
    assert [(r["line"], r["field"]) for r in et.report["bad_rows"]] == [(2, None), (3, "item")]
    d = tmp_path / "ml-20m"
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,978300760\n\n2,20,good,978300761\n")
    with raises_at("ratings.csv", 4, "rating", "invalid number 'good'"):  # header and blank line counted
        read_movielens(d)
    write(d / "ratings.csv", "user,movie,rating,timestamp\n1,10,4.0,978300760\n")
    with raises_at("ratings.csv", 1, None, "expected the header"):
        read_movielens(d)
    with pytest.raises(ValueError, match="not a MovieLens ratings file"):
        read_movielens(write(tmp_path / "other.csv", "a\n"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=":a\n", max_size=60), st.integers(1, 7))
def test_multichar_delimiter_stream_matches_replace(tmp_path: Path, text: str, block: int):
    from behaviorseq.data.loaders._csv import _Replacing

    f = write(tmp_path / "s.dat", text)
    out = b""
    with _Replacing(str(f), b"::", b"\x1f") as src:
        while chunk := src.read(block + 1):
            assert len(chunk) <= block + 1
            out += chunk
    assert out == text.encode().replace(b"::", b"\x1f")


# ----------------------------------------------------------------------------------------------------------
# Taobao

TAOBAO = (
    "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n2,2576651,149192,cart,1511572885\n"
)


def test_taobao(tmp_path: Path):
    et = read_taobao(write(tmp_path / "UserBehavior.csv", TAOBAO))
    assert et.events.column_names == ["user", "item", "timestamp", "category", "behavior"]
    assert kinds(et) == {
        "user": "categorical",
        "item": "categorical",
        "timestamp": "timestamp",
        "category": "categorical",
        "behavior": "categorical",
    }
    assert et.events["behavior"].to_pylist() == ["pv", "buy", "cart"]
    assert et.events["behavior"].type == pa.string() and et.events["item"].type == pa.int64()
    assert read_taobao(tmp_path).num_events == 3  # the folder holding it
    header = write(
        tmp_path / "h" / "UserBehavior.csv", "user_id,item_id,category_id,behavior_type,timestamp\n" + TAOBAO
    )
    assert read_taobao(header).num_events == 3


def test_taobao_malformed(tmp_path: Path):
    f = write(tmp_path / "UserBehavior.csv", TAOBAO + "3,1,1,click,1511572886\n")
    with raises_at("UserBehavior.csv", 4, "behavior", "unexpected value 'click'"):
        read_taobao(f)
    write(f, TAOBAO + "3,1,1,pv\n")
    with raises_at("UserBehavior.csv", 4, None, "expected 5 fields, found 4"):
        read_taobao(f)
    write(f, TAOBAO.replace("1511561733", "15115x"))
    with raises_at("UserBehavior.csv", 2, "timestamp", "invalid integer '15115x'"):
        read_taobao(f)
    write(f, "\n" + TAOBAO + "3,1,1,click,1\n\n4,1,1,pv\n5,5,5,fav,5\n")
    et, warned = skipped(read_taobao, f)
    assert et.events["user"].to_pylist() == [1, 1, 2, 5]
    assert [(r["line"], r["field"]) for r in et.report["bad_rows"]] == [(5, "behavior"), (7, None)]
    assert "skipped 2 malformed row" in warned[0]


def test_taobao_compressed(tmp_path: Path):
    import gzip

    f = tmp_path / "UserBehavior.csv.gz"
    f.write_bytes(gzip.compress(TAOBAO.encode()))
    assert read_taobao(f).num_events == 3
    f.write_bytes(gzip.compress((TAOBAO + "1,2,3,zap,4\n").encode()))
    with raises_at("UserBehavior.csv.gz", 4, "behavior"):
        read_taobao(f)


def test_bad_row_found_in_a_large_file(tmp_path: Path):
    n = 300_000
    rng = np.random.default_rng(0)
    body = pa.table(
        {
            "u": rng.integers(0, 1000, n),
            "i": rng.integers(0, 5000, n),
            "c": rng.integers(0, 50, n),
            "b": np.array(["pv", "cart", "fav", "buy"])[rng.integers(0, 4, n)],
            "t": np.arange(n) + 1.5e9,
        }
    )
    import pyarrow.csv as pv

    f = tmp_path / "UserBehavior.csv"
    pv.write_csv(
        body.set_column(4, "t", body["t"].cast(pa.int64())),
        f,
        write_options=pv.WriteOptions(include_header=False, quoting_style="none"),
    )
    assert read_taobao(f).num_events == n
    lines = f.read_bytes().split(b"\n")
    lines[250_000] = lines[250_000].replace(b",", b";", 1)
    f.write_bytes(b"\n".join(lines))
    with raises_at("UserBehavior.csv", 250_001, None, "expected 5 fields, found 4"):
        read_taobao(f)


# ----------------------------------------------------------------------------------------------------------
# any table

CSV = (
    "uid,sku,ts,price,desc,zip,tags\n"
    "1,a,2020-01-02 03:04:05,1.5,hello,007,x y\n"
    "2,b,2020-01-03T00:00:00Z,2,world,010,\n"
    "2,a,2020-01-03T01:00:00+01:00,3,again,010,z\n"
)
MAPPING = {"user": "uid", "item": "sku", "timestamp": "ts"}


def test_table_csv_mapping_kinds_and_iso_times(tmp_path: Path):
    f = write(tmp_path / "shop.csv", CSV)
    et = read_table(f, MAPPING, kinds={"desc": "text", "zip": "categorical", "tags": "categorical_list"})
    assert et.name == "shop" and et.sources == [str(f)]
    assert et.events.column_names == ["user", "item", "timestamp", "price", "desc", "zip", "tags"]
    assert kinds(et) == {
        "user": "categorical",
        "item": "categorical",
        "timestamp": "timestamp",
        "price": "numeric",
        "desc": "text",
        "zip": "categorical",
        "tags": "categorical_list",
    }
    ev = et.events.to_pydict()
    assert ev["timestamp"] == [1577934245, 1578009600, 1578009600]  # int64 seconds, naive = UTC
    assert et.events["timestamp"].type == pa.int64()
    assert ev["zip"] == ["007", "010", "010"]  # declared categorical: read as strings
    assert ev["tags"] == [["x", "y"], [], ["z"]]
    default = read_table(f, MAPPING)
    assert kinds(default)["desc"] == "categorical" and default.events["zip"].to_pylist() == [7, 10, 10]


def test_table_column_mapping_errors(tmp_path: Path):
    f = write(tmp_path / "shop.csv", CSV)
    with raises_at("shop.csv", None, "userid", "available columns: ['uid', 'sku', 'ts'"):
        read_table(f, {"user": "userid", "item": "sku"})
    with pytest.raises(DataFormatError, match="needed for 'user'.*available columns"):
        read_table(f)
    with pytest.raises(ValueError, match="roles"):
        read_table(f, {"buyer": "uid"})
    with raises_at("shop.csv", None, "nope", "kinds names a column"):
        read_table(f, MAPPING, kinds={"nope": "text"})
    with pytest.raises(ValueError, match="is the 'user' role"):
        read_table(f, MAPPING, kinds={"uid": "numeric"})


def test_table_csv_malformed(tmp_path: Path):
    text = "user,item,timestamp,r\n1,2,3,4\n\n1,2\n1,2,3,x\n,2,3,4\n1,2,zz,4\n5,6,7,8\n"
    f = write(tmp_path / "e.csv", text)
    with raises_at("e.csv", 4, None, "expected 4 fields, found 2"):
        read_table(f, kinds={"r": "numeric"})
    et, warned = skipped(read_table, f, kinds={"r": "numeric"})
    assert et.events.to_pydict() == {"user": [1, 5], "item": [2, 6], "timestamp": [3, 7], "r": [4, 8]}
    assert [(r["line"], r["field"]) for r in et.report["bad_rows"]] == [
        (4, None),
        (5, "r"),
        (6, "user"),
        (7, "timestamp"),
    ]
    # well-formed columns but a bad value: found after the fast read, line numbers still exact
    write(f, "user,item,timestamp,r\n1,2,3,4\n\n1,2,4.5,x\n")
    with raises_at("e.csv", 4, "r", "invalid number 'x'"):
        read_table(f, kinds={"r": "numeric"})
    write(f, "user,item,timestamp\n1,2,2020-01-01\n1,2,2020-13-45\n")
    with raises_at("e.csv", 3, "timestamp", "invalid timestamp '2020-13-45'"):
        read_table(f)


def test_table_without_timestamp_and_tsv(tmp_path: Path):
    f = write(tmp_path / "e.tsv", "user\titem\nb\t1\na\t2\nb\t3\n")
    et = read_table(f)
    assert et.events["timestamp"].to_pylist() == [0, 0, 1] and kinds(et)["timestamp"] == "timestamp"


def test_table_pandas(tmp_path: Path):
    df = pd.DataFrame(
        {
            "uid": [1, 2, 2],
            "sku": ["a", "b", "c"],
            "when": pd.to_datetime(["2020-01-01 00:00:00", "2020-01-02 00:00:01", "2020-01-03 00:00:00"]),
            "cat": pd.Categorical(["x", "y", "x"]),
            "l": [[1, 2], [3], []],
            "v": [[0.5], [], [1.0]],
            "flag": [True, False, True],
        }
    )
    et = read_table(df, {"user": "uid", "item": "sku", "timestamp": "when"}, name="pd")
    assert et.name == "pd" and et.sources == []
    assert et.events["timestamp"].to_pylist() == [1577836800, 1577923201, 1578009600]
    assert kinds(et) == {
        "user": "categorical",
        "item": "categorical",
        "timestamp": "timestamp",
        "cat": "categorical",
        "l": "categorical_list",
        "v": "numeric_list",
        "flag": "numeric",
    }
    assert et.events["cat"].to_pylist() == ["x", "y", "x"] and et.events["cat"].type == pa.string()
    bad = pd.DataFrame({"user": [1.0, None, 3.0], "item": [1, 2, 3], "timestamp": [1, 2, 3]})
    with raises_at("<pandas.DataFrame>", 2, "user", "missing value"):
        read_table(bad)
    et, _ = skipped(read_table, bad)
    assert et.events["user"].to_pylist() == [1, 3] and et.events["user"].type == pa.int64()
    assert et.report["bad_rows"][0]["line"] == 2


def test_table_polars(tmp_path: Path):
    pl = pytest.importorskip("polars")
    import datetime as dt

    df = pl.DataFrame(
        {
            "user": ["u1", "u2"],
            "item": [1, 2],
            "timestamp": [dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)],
            "f": [[1.0], [2.0, 3.0]],
            "c": pl.Series(["a", "b"], dtype=pl.Categorical),
        }
    )
    et = read_table(df)
    assert et.events["timestamp"].to_pylist() == [1577836800, 1577923200]
    assert et.events["user"].type == pa.string() and et.events["c"].to_pylist() == ["a", "b"]
    assert kinds(et)["f"] == "numeric_list" and kinds(et)["c"] == "categorical"


def test_table_parquet_and_arrow(tmp_path: Path):
    t = pa.table(
        {
            "user": [1, 2, 3],
            "item": [1, 2, 3],
            "timestamp": pa.array([1, 2, 3], pa.timestamp("ms")),
            "d": pa.array([0, 1, 2], pa.date32()),
        }
    )
    f = tmp_path / "e.parquet"
    pq.write_table(t, f)
    et = read_table(f)
    assert et.events["timestamp"].to_pylist() == [0, 0, 0]  # milliseconds floored to seconds
    assert et.events["d"].to_pylist() == [0, 86400, 172800] and kinds(et)["d"] == "timestamp"
    assert read_table(t).num_events == 3 and read_table(t.to_batches()[0]).num_events == 3
    pq.write_table(pa.table({"user": [1, None, 3], "item": [1, 2, 3]}), f)
    with raises_at("e.parquet", 2, "user", "missing value") as info:
        read_table(f)
    assert "row 2" in str(info.value)
    with pytest.raises(ValueError, match="format="):
        read_table(write(tmp_path / "e.bin", "x"))


# ----------------------------------------------------------------------------------------------------------
# reading never changes the source


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["recbole", "seqtext", "movielens", "taobao", "table"])
def test_sources_unchanged(tmp_path: Path, fmt: str):
    d = tmp_path / fmt
    if fmt == "recbole":
        write(d / "r.inter", INTER + "bad\tline\n")
        call = lambda **kw: read_recbole(d, **kw)  # noqa: E731
    elif fmt == "seqtext":
        write(d / "s.txt", "1 2 3\n2 x\n")
        write(d / "s_item2attributes.json", '{"2": [1]}')
        call = lambda **kw: read_seqtext(d / "s.txt", **kw)  # noqa: E731
    elif fmt == "movielens":
        write(d / "ratings.dat", "1::2::3::4\n1::2\n")
        write(d / "movies.dat", "2::A (1999)::Drama\n")
        call = lambda **kw: read_movielens(d, **kw)  # noqa: E731
    elif fmt == "taobao":
        write(d / "UserBehavior.csv", TAOBAO + "1,2,3,zap,4\n")
        call = lambda **kw: read_taobao(d, **kw)  # noqa: E731
    else:
        write(d / "e.csv", CSV + "9,9\n")
        call = lambda **kw: read_table(d / "e.csv", MAPPING, **kw)  # noqa: E731
    before = _state(tmp_path)
    with pytest.raises(DataFormatError):
        call()
    et, _ = skipped(call)
    assert et.report["skipped_rows"] == 1
    assert _state(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------
# the shared real datasets


@pytest.fixture
def data_dir() -> Path:
    root = shared_data()
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set BEHAVIORSEQ_DATA)")
    return root


@pytest.mark.parametrize(
    "name,users,items,events",
    [
        ("Beauty", 22_363, 12_101, 198_502),
        ("Toys_and_Games", 19_412, 11_924, 167_597),
        ("LastFM", 1_090, 3_646, 52_551),
    ],
)
def test_real_seqrec(data_dir: Path, name: str, users: int, items: int, events: int):
    f = data_dir / "seqrec" / f"{name}.txt"
    if not f.exists():
        pytest.skip(f"{f} not found")
    et = read_seqtext(f)
    assert (et.num_users, et.num_items, et.num_events) == (users, items, events)
    assert et.items is not None and et.item_schema.kind("attributes") is Kind.CATEGORICAL_LIST
    assert et.report["skipped_rows"] == 0
    # timestamps are positions: 0 .. n-1 within each user
    ts = et.events["timestamp"].to_numpy()
    first = np.r_[True, et.events["user"].to_numpy()[1:] != et.events["user"].to_numpy()[:-1]]
    assert (ts[first] == 0).all() and (np.diff(ts)[~first[1:]] == 1).all()


def test_real_ml100k_recbole(data_dir: Path):
    d = data_dir / "ml-100k"
    if not (d / "ml-100k.inter").exists():
        pytest.skip(f"{d} not found")
    et = read_recbole(d)
    assert (et.num_users, et.num_items, et.num_events) == (943, 1_682, 100_000)
    assert et.items.num_rows == 1_682 and et.users.num_rows == 943
    assert et.events["timestamp"].type == pa.int64() and et.events["user"].type == pa.string()
    assert sorted(set(et.events["rating"].to_pylist())) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert et.item_schema.kind("movie_title") is Kind.CATEGORICAL_LIST
    assert et.items.slice(0, 1).to_pylist()[0]["class"] == ["Animation", "Children's", "Comedy"]


def test_csv_ids_keep_every_spelling_apart_and_numbers_as_before(tmp_path: Path):
    from behaviorseq.data import preprocess as P

    def ids(text: str, **kw) -> tuple[list, list]:
        (tmp_path / "x.csv").write_text("user,item,timestamp\n" + text)
        ev = read_table(tmp_path / "x.csv", **kw).events
        return ev.column("user").to_pylist(), ev.column("item").to_pylist()

    # spellings of one number stay distinct ids (they were merged: 007 = 7, 1e3 = 1000)
    assert ids("007,0012,1\n7,12,2\na,1e3,3\na,1000,4\n") == (["007", "7", "a", "a"], ["0012", "12", "1e3", "1000"])
    # plain integers, whole floats (pandas' int column with gaps), 19-digit ids: numbers, as before
    assert ids("3,10.0,1\n3,9.0,2\n1234567890123456789,2.0,3\n") == ([3, 3, 1234567890123456789], [10, 9, 2])
    # so numbering is numeric (9 before 10), not textual
    (tmp_path / "n.csv").write_text("user,item,timestamp\n1,10,1\n1,9,2\n2,100,3\n")
    prep = P.run(read_table(tmp_path / "n.csv"))
    assert prep.item_vocab.to_pylist() == [None, 9, 10, 100]  # 0: padding
    # other floats and text are ids as they are written
    assert ids("u,12.5,1\nu,inf,2\n")[1] == ["12.5", "inf"]
    # the reader's null tokens are missing values in id columns too, never an id "NA"
    with pytest.raises(DataFormatError, match="line 3, field 'item': missing value"):
        ids("1,10,1\n1,NA,2\n2,3,3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ids("1,10,1\n1,null,2\n2,3,3\n", skip_bad_rows=True) == ([1, 2], [10, 3])


def test_a_table_without_timestamps_says_its_times_are_row_positions(tmp_path: Path):
    (tmp_path / "x.csv").write_text("user,item\na,1\na,2\nb,3\n")
    et = read_table(tmp_path / "x.csv")
    assert et.events.column("timestamp").to_pylist() == [0, 1, 0] and "row order" in et.report["timestamp"]
    (tmp_path / "y.csv").write_text("user,item,timestamp\na,1,5\n")
    assert "timestamp" not in read_table(tmp_path / "y.csv").report
