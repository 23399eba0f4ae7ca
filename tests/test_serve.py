"""Serving a trained next-item model from its run folder alone: raw ids in and out, the evaluator's ranking."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine import small_config, write_seqtext

from behaviorseq.data.datasets import open_dataset
from behaviorseq.serve import Recommender
from behaviorseq.train import evaluate_run, run_experiment


@pytest.mark.parametrize("model", ["sasrec", "gru4rec", "bert4rec"])
def test_served_top_n_gives_the_evaluated_test_hit_rate(tmp_path, monkeypatch, model):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    data = write_seqtext(tmp_path / "d.txt")
    run_experiment(small_config(data, model, epochs=2), tmp_path / "run")
    data.rename(tmp_path / "moved.txt")  # serving needs the run folder only
    rec = Recommender.from_run(tmp_path / "run")
    assert rec.model.training is False
    store = open_dataset(tmp_path / "moved.txt", cache=False)
    raw = [store.raw_items(store.sequence(u)) for u in range(1, store.num_users + 1)]  # users 1..n
    # leave-one-out test: the input is every event before the last. The evaluator never removes the target
    # (these users repeat items), so compare with seen items left in, against that evaluation
    out = rec.recommend([r[:-1] for r in raw], n=10, exclude_seen=False)
    hits = {k: np.mean([r[-1] in o.items[:k] for r, o in zip(raw, out)]) for k in (5, 10)}
    (tmp_path / "moved.txt").rename(data)
    m = evaluate_run(tmp_path / "run", roles=("test",), overrides=["eval.exclude_history=false"])["test"]
    assert hits[5] == pytest.approx(m["hr@5"], abs=1e-9) and hits[10] == pytest.approx(m["hr@10"], abs=1e-9)
    assert 0 < hits[10] < 1
    seen = rec.recommend([r[:-1] for r in raw], n=10)
    assert all(not set(o.items) & set(r[:-1]) for r, o in zip(raw, seen))  # by default nothing the user had
    # one request or many: the same answer; raw ids the model never saw are reported, not used
    one = rec.recommend([raw[3][:-1] + ["never-seen"]], n=10, exclude_seen=False)[0]
    assert one.items == out[3].items and one.unknown == ["never-seen"]
    assert one.scores == pytest.approx(out[3].scores, abs=1e-5)


def test_empty_or_unknown_histories_get_popular_items_and_mostpop_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    data = write_seqtext(tmp_path / "d.txt")
    run_experiment(small_config(data, "sasrec", epochs=1), tmp_path / "sas")
    rec = Recommender.from_run(tmp_path / "sas")
    empty, unknown = rec.recommend([[], ["x", "y"]], n=5)
    order = np.argsort(-rec.counts[1:], kind="stable")
    assert empty.popular_fallback and unknown.popular_fallback and unknown.unknown == ["x", "y"]
    assert sorted(rec.counts[rec.lookup(empty.items)]) == sorted(rec.counts[1:][order[:5]])
    cfg = small_config(data, "sasrec")
    run_experiment({"model": "mostpop", "data": cfg["data"], "eval": cfg["eval"]}, tmp_path / "pop")
    pop = Recommender.from_run(tmp_path / "pop")
    got = pop.recommend([[empty.items[0]]], n=3)[0]  # the most popular item is seen: the next three
    assert empty.items[0] not in got.items and got.scores == sorted(got.scores, reverse=True)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        Recommender.from_run(tmp_path / "nothing")


def test_recommend_command_reads_ids_as_the_data_wrote_them(tmp_path, monkeypatch, capsys):
    import json

    from behaviorseq.cli import main

    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    data = write_seqtext(tmp_path / "d.txt")  # integer item ids
    run_experiment(small_config(data, "sasrec", epochs=1), tmp_path / "run")
    capsys.readouterr()
    assert main(["recommend", str(tmp_path / "run"), "--history", "3,5,7", "--history", "9,zz", "-n", "4"]) == 0
    a, b = json.loads(capsys.readouterr().out)
    rec = Recommender.from_run(tmp_path / "run")
    assert a["items"] == rec.recommend([[3, 5, 7]], n=4)[0].items and b["unknown"] == ["zz"]
    assert main(["recommend", str(tmp_path / "none"), "--history", "1"]) == 2
    assert main(["recommend", str(tmp_path / "run"), "--history", "3, 5, 7", "-n", "4"]) == 0  # spaces as typed
    assert json.loads(capsys.readouterr().out)["items"] == a["items"]
    assert main(["recommend", str(tmp_path / "run"), "--history", "3", "-n", "-1"]) == 2  # was a traceback
    assert "n must be an integer >= 1" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "run"), "--history", "3"]) == 2
    assert "a retrieval run, which scores no candidates" in capsys.readouterr().err
    # the Python API refuses a string or a bare id where one user's list of ids belongs (it read "12" as 1 and 2)
    for bad, n, why in [(["12", "58"], 3, "history 0 is '12', not a list"), ([12, 58], 3, "history 0 is 12"),
                        ([[3]], 0, "n must be"), ([[3]], 2.5, "n must be"), ([[3]], True, "n must be")]:
        with pytest.raises(ValueError, match=why):
            rec.recommend(bad, n=n)


def test_http_endpoint_answers_as_the_python_api_and_refuses_bad_requests(tmp_path, monkeypatch, capsys):
    import json
    import socket
    import threading
    import urllib.error
    import urllib.request

    from behaviorseq.serve import http
    from behaviorseq.serve.http import make_server

    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    monkeypatch.setattr(http, "TIMEOUT", 1)
    data = write_seqtext(tmp_path / "d.txt")
    run_experiment(small_config(data, "sasrec", epochs=1), tmp_path / "run")
    rec = Recommender.from_run(tmp_path / "run")
    server = make_server(rec, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body) -> tuple[int, object]:
        req = urllib.request.Request(url + "/recommend", data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            assert json.loads(r.read())["items"] == len(rec.raw)
        code, one = post({"history": [3, 5, 7], "n": 4})
        ref = rec.recommend([[3, 5, 7]], n=4)[0]
        assert code == 200 and one["items"] == ref.items and one["scores"] == pytest.approx(ref.scores, abs=1e-6)
        code, many = post({"histories": [[3, 5, 7], ["zz"]], "n": 4, "exclude_seen": False})
        assert code == 200 and len(many) == 2 and many[1]["unknown"] == ["zz"] and many[1]["popular_fallback"]
        for bad, why in [({"history": [1], "n": 0}, "'n'"), ({"n": 3}, "exactly one"), ({"history": 5}, "list"),
                         ({"history": [1], "k": 3}, "unknown keys"), ({"history": [[100]]}, "raw item ids are integers"),
                         ({"history": [1, True]}, "raw item ids are integers"), ({"history": [2**70]}, "64-bit")]:
            code, err = post(bad)
            assert code == 400 and why in err["error"], (bad, err)
        assert post({"history": [3, 2**64 - 1]})[1]["unknown"] == [2**64 - 1]  # unsigned 64-bit: the vocabulary decides
        with urllib.request.urlopen(url + "/health?verbose=1", timeout=10) as r:  # a query string is not the path
            assert r.status == 200
        host, port = server.server_address[:2]
        for gone, printed in [(BrokenPipeError(), ""), (ConnectionResetError(), ""), (KeyError("bug"), "KeyError")]:
            try:  # a client that went away is not reported as a server error; anything else still is
                raise gone
            except Exception:
                server.handle_error(None, ("127.0.0.1", 0))
            err = capsys.readouterr().err
            assert printed in err if printed else err == "", (gone, err)
        with socket.create_connection((host, port), timeout=10) as sock:  # HEAD: GET's headers, no body
            sock.sendall(b"HEAD /health HTTP/1.0\r\n\r\n")
            got = b""
            while chunk := sock.recv(4096):
                got += chunk
            assert got.startswith(b"HTTP/1.0 200") and got.endswith(b"\r\n\r\n") and b"Content-Length: " in got
        for head, code in [(b"Transfer-Encoding: chunked\r\n", 411), (b"Content-Length: 50\r\n", 408)]:
            with socket.create_connection((host, port), timeout=10) as sock:  # no length / a body that never comes
                sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n{\"history\"")
                assert sock.recv(4096).split(b" ")[1] == str(code).encode()
    finally:
        server.shutdown()
        server.server_close()


def test_each_history_gets_its_own_list_and_ids_match_only_their_own_type(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    data = write_seqtext(tmp_path / "d.txt")
    run_experiment(small_config(data, "sasrec", epochs=1), tmp_path / "run")
    rec = Recommender.from_run(tmp_path / "run")
    everything = rec.raw.tolist()
    almost, alone = rec.recommend([everything[:-2], [3, 5]], n=10)
    assert len(almost.items) == 2 and len(alone.items) == 10  # one user's history does not cut another's list
    assert rec.recommend([everything], n=5)[0].items == []
    three = rec.lookup([3])[0]  # an integer and its decimal string are one id (JSON cannot tell the loader's type)
    assert rec.lookup([3, "3", True, np.int64(3), "03", " 3"]).tolist() == [three, three, 0, three, 0, 0]
    strings = Recommender(rec.model, [str(x) for x in everything], rec.counts[1:])  # a string vocabulary
    assert strings.lookup([3, "3", np.int64(3)]).tolist() == [strings.lookup(["3"])[0]] * 3


def test_raw_ids_of_every_integer_width_and_strings():
    from behaviorseq.serve.ids import RawIds

    u = RawIds(np.array([2**63 + 5, 3, 2**64 - 1], dtype=np.uint64))  # unsigned 64-bit ids above 2**63
    assert u.lookup([3, 2**63 + 5, 2**64 - 1, -1, 2**64, "3"]).tolist() == [2, 1, 3, 0, 0, 2]
    i = RawIds(np.array([5, -3, 2**62]))
    assert i.lookup([5, -3, 2**62, 2**63, True, np.int64(5), np.uint64(5)]).tolist() == [1, 2, 3, 0, 0, 1, 1]
    assert i.lookup(["--3", "²", "-3", "5 "]).tolist() == [0, 0, 2, 0]  # odd text is unknown, not an error
    s = RawIds(np.array(["a", "b", "ç"], dtype=object))  # as parquet's to_numpy gives strings
    assert s.lookup(["ç", "a", 1, None, "x" * 100_000]).tolist() == [3, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="integers or strings"):
        RawIds(np.array([1.5, 2.0]))
