"""EasyTPP pickle and Hugging Face layouts: round trips and errors that name the file, sequence/row and field."""

import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from behaviorseq.data.loaders import DataFormatError, read_easytpp_hf, read_easytpp_pickle

SEQS = [([0.0, 0.5, 1.75], [1, 0, 2]), ([0.3, 0.4], [2, 2])]


def gatech(seqs=SEQS, split="train", dim=3):
    return {"dim_process": dim, split: [[{"time_since_start": t, "time_since_last_event": t - (ts[i - 1] if i else 0),
                                          "type_event": k, "idx_event": i + 1}
                                         for i, (t, k) in enumerate(zip(ts, ks))] for ts, ks in seqs]}


def hf_rows(seqs=SEQS, dim=3):
    return [{"seq_idx": n, "seq_len": len(ts), "dim_process": dim, "time_since_start": ts,
             "time_since_last_event": [t - (ts[i - 1] if i else 0) for i, t in enumerate(ts)], "type_event": ks}
            for n, (ts, ks) in enumerate(seqs)]


def write_pickle(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return path


def check(seqs):
    assert len(seqs) == 2 and seqs.num_types == 3
    np.testing.assert_allclose(seqs.time, [0.0, 0.5, 1.75, 0.3, 0.4])
    assert seqs.type.tolist() == [1, 0, 2, 2, 2]
    np.testing.assert_allclose(seqs.dtime(), [0, 0.5, 1.25, 0, 0.1])


def test_pickle_round_trip_and_split_choice(tmp_path):
    check(read_easytpp_pickle(write_pickle(tmp_path / "train.pkl", gatech())))
    both = {**gatech(), "dev": gatech(split="dev")["dev"]}
    path = write_pickle(tmp_path / "both.pkl", both)
    with pytest.raises(DataFormatError, match=r"both.pkl: holds splits \['train', 'dev'\]"):
        read_easytpp_pickle(path)
    assert read_easytpp_pickle(path, split="dev").meta["split"] == "dev"


@pytest.mark.parametrize("kind", ["json", "jsonl", "parquet"])
def test_hf_layout_round_trip(tmp_path, kind):
    rows = hf_rows()
    path = tmp_path / f"train.{kind}"
    if kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    check(read_easytpp_hf(path))


def test_pickle_errors_name_file_sequence_and_field(tmp_path):
    bad = gatech()
    del bad["train"][1][1]["type_event"]
    with pytest.raises(DataFormatError, match=r"bad.pkl, sequence 2, field 'type_event': event 2 has no such field"):
        read_easytpp_pickle(write_pickle(tmp_path / "bad.pkl", bad))
    bad = gatech()
    bad["train"][0][2]["type_event"] = 3
    with pytest.raises(DataFormatError, match=r"sequence 1, field 'type_event': event 3: 3.0 is not an integer in 0..2"):
        read_easytpp_pickle(write_pickle(tmp_path / "bad.pkl", bad))
    bad = gatech()
    bad["train"][0][2]["time_since_start"] = 0.1
    with pytest.raises(DataFormatError, match=r"sequence 1, field 'time_since_start': event 3: 0.1 is before"):
        read_easytpp_pickle(write_pickle(tmp_path / "bad.pkl", bad), check_dtime=False)
    bad = gatech()
    bad["train"][1][1]["time_since_last_event"] = 5.0
    with pytest.raises(DataFormatError, match=r"sequence 2, field 'time_since_last_event': event 2: 5.0 but"):
        read_easytpp_pickle(write_pickle(tmp_path / "bad.pkl", bad))
    assert len(read_easytpp_pickle(tmp_path / "bad.pkl", check_dtime=False)) == 2
    with pytest.raises(DataFormatError, match="field 'dim_process': missing"):
        read_easytpp_pickle(write_pickle(tmp_path / "bad.pkl", {"train": []}))


def test_hf_errors_name_file_row_and_field(tmp_path):
    rows = hf_rows()
    rows[1]["type_event"] = [2]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"rows.json, row 2, field 'type_event': 1 values but"):
        read_easytpp_hf(path)
    rows = hf_rows()
    rows[1]["seq_len"] = 5
    path.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"row 2, field 'seq_len': 5 but the row has 2 events"):
        read_easytpp_hf(path)
    rows = hf_rows()
    rows[0]["dim_process"] = 4
    path.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"row 2, field 'dim_process': 3 differs from row 1's 4"):
        read_easytpp_hf(path)
    rows = hf_rows()
    del rows[0]["type_event"], rows[1]["type_event"]
    path.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match="field 'type_event': missing column"):
        read_easytpp_hf(path)
    rows = hf_rows()
    rows[0]["time_since_start"][1] = float("nan")
    path.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"row 1, field 'time_since_start': event 2: not finite"):
        read_easytpp_hf(path)
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(DataFormatError, match="expected a .json, .jsonl or .parquet file"):
        read_easytpp_hf(tmp_path / "x.csv")
