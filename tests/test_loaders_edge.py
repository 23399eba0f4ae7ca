"""A user's own files at the edges (session 25 review): ids beyond float64's exact integers, the fallback CSV
reader typing columns as the fast one does, timestamps of any year and never NaN / inf, column types no kind
takes, a header that is not UTF-8, compressed names, values that span lines, and cache entries that follow
side files and in-place edits."""

from __future__ import annotations

import decimal
import gzip
import os
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from behaviorseq.data.datasets import guess_format, open_dataset, source_files
from behaviorseq.data.loaders import DataFormatError, read_table
from behaviorseq.data.store import cache_key

BIG = 2**53 + 1  # the first integer float64 cannot hold


def _ids(path: Path, **kw) -> tuple[list, list]:
    ev = read_table(path, **kw).events
    return ev.column("user").to_pylist(), ev.column("item").to_pylist()


def test_csv_ids_are_parsed_exactly_or_kept_as_text(tmp_path: Path):
    f = tmp_path / "x.csv"
    f.write_text(f"user,item,timestamp\n1.0,{BIG},1\n2,{BIG - 1},2\n")  # a zero fraction beside ids above 2^53
    assert _ids(f) == ([1, 2], [BIG, BIG - 1])  # were [.., 2^53, 2^53]: two items merged
    f.write_text("user,item,timestamp\n1,10000000000000000000,1\n1,5,2\n")  # a 64-bit hash id above 2^63
    assert _ids(f)[1] == ["10000000000000000000", "5"]  # was a crash naming no file
    f.write_text("user,item,timestamp\n1,4503599627370496.5,1\n1,4503599627370496,2\n")  # a real fraction
    assert _ids(f)[1] == ["4503599627370496.5", "4503599627370496"]


def test_decimal_ids_never_go_through_float64(tmp_path: Path):
    dec = pa.decimal128(20, 0)
    t = pa.table({"user": pa.array([decimal.Decimal(1), decimal.Decimal(2)], dec),
                  "item": pa.array([decimal.Decimal(BIG), decimal.Decimal(BIG - 1)], dec), "timestamp": [1, 2]})
    pq.write_table(t, tmp_path / "d.parquet")
    assert _ids(tmp_path / "d.parquet") == ([1, 2], [BIG, BIG - 1])
    huge = t.set_column(1, "item", pa.array([decimal.Decimal(10**19), decimal.Decimal(5)], dec))
    assert _ids(huge) == ([1, 2], ["10000000000000000000", "5"])
    # a non-id decimal is still a number
    priced = t.append_column("price", pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.25")], pa.decimal128(5, 2)))
    assert read_table(priced).events.column("price").to_pylist() == [1.5, 2.25]


def test_a_bad_row_does_not_change_how_other_columns_are_typed(tmp_path: Path):
    good = "user,item,timestamp,clicked,rating\n1,2,3,true,4\n1,3,4,false,NA\n2,2,5,TRUE,2.5\n"
    (tmp_path / "good.csv").write_text(good)
    (tmp_path / "bad.csv").write_text(good + "3,4\n")  # one short row: the diagnostic reader reads the file
    fast = read_table(tmp_path / "good.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = read_table(tmp_path / "bad.csv", skip_bad_rows=True)
    assert slow.report["skipped_rows"] == 1
    for c in ("clicked", "rating"):
        assert slow.schema.kind(c) is fast.schema.kind(c), c
        assert slow.events.column(c).to_pylist() == fast.events.column(c).to_pylist(), c
    assert fast.events.column("rating").to_pylist() == [4.0, None, 2.5]


def test_iso_times_of_any_year_and_never_nan_or_inf(tmp_path: Path):
    (tmp_path / "t.csv").write_text("user,item,timestamp\n1,2,1600-01-01\n1,3,2300-01-01 00:00:00\n1,4,5\n")
    # the mix of an epoch number and ISO strings goes through the string parser, which took 1677-2262 only
    assert read_table(tmp_path / "t.csv").events.column("timestamp").to_pylist() == [-11676096000, 10413792000, 5]
    (tmp_path / "n.csv").write_text("user,item,timestamp\n1,2,1.5\n1,3,inf\n1,4,2.5\n")
    with pytest.raises(DataFormatError, match=r"n.csv, line 3, field 'timestamp': non-finite timestamp"):
        read_table(tmp_path / "n.csv")
    pq.write_table(pa.table({"user": [1, 1], "item": [2, 3], "timestamp": [float("nan"), 2.0]}), tmp_path / "n.pq")
    with pytest.raises(DataFormatError, match=r"row 1, field 'timestamp': non-finite"):
        read_table(tmp_path / "n.pq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_table(tmp_path / "n.pq", skip_bad_rows=True).events.column("item").to_pylist() == [3]


def test_a_column_no_kind_takes_is_named_and_can_be_left_out(tmp_path: Path):
    t = pa.table({"user": [1, 2], "item": [3, 4], "timestamp": [5, 6],
                  "meta": pa.array([{"a": 1}, {"a": 2}]),
                  "emb": pa.array([[0.5, 1.0], [1.5, 2.0]], pa.list_(pa.float64(), 2))})
    with pytest.raises(DataFormatError, match=r"field 'meta': Arrow type struct.*drop=\[name\]"):
        read_table(t)
    with pytest.raises(DataFormatError, match=r"field 'meta': Arrow type struct.* cannot be text"):
        read_table(t, kinds={"meta": "text"})
    et = read_table(t, drop=["meta"])
    assert "meta" not in et.events.column_names
    assert et.schema.kind("emb").value == "numeric_list"  # a fixed-size list is a list
    with pytest.raises(DataFormatError, match="drop names a column that does not exist"):
        read_table(t, drop=["nope"])


def test_header_not_utf8_and_blank_first_line(tmp_path: Path):
    (tmp_path / "l.csv").write_bytes("usér,item,timestamp\n1,2,3\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"l.csv, line 1: the header is not utf8 text \(byte 0xe9"):
        read_table(tmp_path / "l.csv")
    (tmp_path / "b.csv").write_text("\nuser,item,timestamp\n1,2,3\n")
    with pytest.raises(DataFormatError, match="line 1: the first line is blank"):
        read_table(tmp_path / "b.csv")


def test_compressed_names_are_tables(tmp_path: Path):
    for name in ("e.csv.gz", "e.tsv.bz2", "e.dat", "e.parq", "E.CSV"):
        (tmp_path / name).write_bytes(b"x")
        assert guess_format(tmp_path / name) == "table", name
    (tmp_path / "e.txt").write_bytes(b"x")
    assert guess_format(tmp_path / "e.txt") == "seqtext"
    with gzip.open(tmp_path / "ev.csv.gz", "wt") as fh:
        fh.write("user,item,timestamp\n1,2,3\n1,3,4\n")
    store = open_dataset(tmp_path / "ev.csv.gz", cache=False)
    assert store.num_events == 2


def test_a_value_spanning_lines_is_reported(tmp_path: Path):
    (tmp_path / "q.csv").write_text('user,item,timestamp,desc\n1,2,3,"abc\n1,3,4,def\n2,2,5,ok"\n2,4,6,x\n')
    with pytest.warns(UserWarning, match=r"1 value\(s\) of field 'desc' span lines \(the first begins at line 2\)"):
        et = read_table(tmp_path / "q.csv")
    assert et.events.num_rows == 2  # what the file says, read as CSV: the warning is what keeps it from silence


def test_cache_follows_side_files_and_in_place_edits(tmp_path: Path):
    inter = tmp_path / "rb" / "rb.inter"
    inter.parent.mkdir()
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\t4\n")
    before = source_files(inter, "recbole")
    (tmp_path / "rb" / "rb.item").write_text("item_id:token\tgenre:token\n2\ta\n3\tb\n")
    after = source_files(inter, "recbole")
    assert after == before + [str(tmp_path / "rb" / "rb.item")]
    ml = tmp_path / "ml" / "ratings.dat"
    ml.parent.mkdir()
    ml.write_text("1::2::5::3\n")
    (ml.parent / "movies.dat").write_text("2::Toy Story (1995)::Comedy\n")
    assert source_files(ml, "movielens") == [str(ml), str(ml.parent / "movies.dat")]
    # an edit in place that keeps the size, with the old mtime put back (cp -p, rsync -t, touch -d)
    f = tmp_path / "e.csv"
    f.write_text("user,item,timestamp\n" + "".join(f"{u},{u % 7},{u}\n" for u in range(100, 200)))
    st = os.stat(f)
    key = cache_key([f], {})
    text = f.read_text()
    f.write_text(text.replace("150,3,150", "151,3,150"))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_size == st.st_size and os.stat(f).st_mtime_ns == st.st_mtime_ns
    assert cache_key([f], {}) != key


def test_data_stats_says_what_was_skipped_on_a_cache_hit_too(tmp_path: Path, capsys):
    from behaviorseq.cli import main

    (tmp_path / "e.csv").write_text("user,item,timestamp,meta\n1,2,3,a\n1,3,x,b\n2,2,5,c\n")
    args = ["data", "stats", str(tmp_path / "e.csv"), "--cache-dir", str(tmp_path / "c"), "--skip-bad-rows",
            "--drop", "meta"]
    for _ in range(2):  # built, then read from the cache (whose reader warned only when it was built)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(args) == 0
        out = capsys.readouterr().out
        assert "skipped      1 malformed row(s); first: e.csv, line 3, field 'timestamp'" in out
        assert "meta" not in out
    assert len(list((tmp_path / "c").iterdir())) == 1
