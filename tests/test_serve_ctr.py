"""Serving a trained CTR model from its run folder: raw ids in, the evaluator's probabilities out; and the
JSON endpoints of CTR and event-stream runs."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from behaviorseq.serve import Ranker, load_run
from behaviorseq.serve.http import make_server
from behaviorseq.train import run_experiment
from behaviorseq.train.run import load_run_config
from behaviorseq.train.run_ctr import prepare_ctr

PLANTED = {"n_users": 40, "n_items": 80, "n_categories": 8, "min_len": 20, "max_len": 70, "n_interests": 2,
           "samples_per_user": 6}
TRAIN = {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 32, "threads": 1, "device": "cpu",
         "early_stop_metric": "auc", "seed": 0}


def _run(tmp_path, model: str, **args) -> tuple:
    cfg = {"model": model, "model_args": {"max_len": 50, "embedding_dim": 4, **args},
           "data": {"dataset": "synthetic-long-ctr", "ctr": PLANTED}, "train": TRAIN}
    run_experiment(cfg, tmp_path / model)
    return tmp_path / model, prepare_ctr(load_run_config(tmp_path / model))[0]


@pytest.mark.parametrize("model,args", [("din", {}), ("sim", {}), ("eta", {}), ("twin", {"top_k": 8}),
                                        ("dare", {"top_k": 8}), ("sdim", {})])
def test_served_probabilities_are_the_evaluated_ones(tmp_path, monkeypatch, model, args):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    run, data = _run(tmp_path, model, **args)
    ranker = Ranker.from_run(run)
    assert ranker.model.training is False
    torch.manual_seed(0)
    with torch.no_grad():  # two steps of training leave the scores nearly flat: spread them so that a wrong
        for p in ranker.model.parameters():  # candidate, field or history position would show
            p.normal_(0.0, 0.15)
    _, net, task = prepare_ctr(load_run_config(run))
    net.load_state_dict(ranker.model.state_dict())
    idx, logit = task.predict(net, "test")
    raw = data.raw_item_ids().to_numpy()
    got = [ranker.score(raw[data.events["item"][data.offsets[data.user[i]]:data.hist_end[i]] - 1].tolist(),
                        [int(raw[data.target[i] - 1])]).probs[0] for i in idx]
    want = 1.0 / (1.0 + np.exp(-logit))
    assert np.std(want) > 1e-3  # spread 1000 times the tolerance below: a wrong input would show
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # one user's candidates scored together equal each scored alone; unknown ids are reported, not used
    u = int(data.user[idx[0]])
    hist = raw[data.events["item"][data.offsets[u]:data.offsets[u + 1]] - 1].tolist()
    cands = [int(x) for x in raw[:12]]
    together = ranker.score(hist + [10**9], cands + [-5])
    alone = [ranker.score(hist, [c]).probs[0] for c in cands]
    assert together.probs[:-1] == pytest.approx(alone, rel=1e-5) and together.probs[-1] is None
    assert together.unknown_history == [10**9] and together.unknown_candidates == [-5]
    with pytest.raises(ValueError, match="n must be"):
        ranker.rank(hist, cands, n=0)
    assert ranker.rank(hist, cands, n=np.int64(2)).items == ranker.rank(hist, cands, n=2).items
    ranked = ranker.rank(hist, cands + [-5], n=5)
    assert ranked.probs == sorted(together.probs[:-1], reverse=True)[:5] and -5 not in ranked.items
    monkeypatch.setattr("behaviorseq.serve.ranker.CHUNK", 5)  # the repeated path in chunks: 5 + 5 + 2
    ranker.use_split = False  # the training path gives the same probabilities
    assert ranker.score(hist, cands).probs == pytest.approx(together.probs[:-1], abs=1e-6)
    ranker.use_split = True
    empty = ranker.score([], cands[:3])  # no known history: the models read all padding
    assert all(0.0 < p < 1.0 for p in empty.probs)


def test_ranker_maps_raw_ids_and_refuses_other_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    run, data = _run(tmp_path, "din")
    ranker = Ranker.from_run(run)
    names = [f"item-{k}" for k in range(1, len(ranker.ids) + 1)]  # a string vocabulary over the same items
    fields = {k: v[1:] for k, v in ranker.fields.items()}
    named = Ranker(ranker.model, names, fields)
    a = ranker.score([3, 5, 7], [1, 2, 9])
    b = named.score(["item-3", "item-5", "item-7"], ["item-1", "item-2", "item-9", 9])
    assert b.probs[:3] == pytest.approx(a.probs) and b.unknown_candidates == [9]  # 9 is not "item-9"
    for h, c in [("35", [1]), ([3], "12"), ([3], 1)]:  # a string's characters were read as ids one by one
        with pytest.raises(ValueError, match="not a list of raw ids"):
            ranker.score(h, c)
    with pytest.raises(ValueError, match="category"):
        Ranker(ranker.model, names, {"year": fields["category"]})
    with pytest.raises(ValueError, match="rows"):
        Ranker(ranker.model, names[:-1], fields)
    from behaviorseq.cli import main

    assert main(["score", str(run), "--candidates", "1", "-n", "2"]) == 2  # -n without --rank

    assert main(["score", str(run), "--history", "3,5,7", "--candidates", "1,2,9,zz", "--rank", "-n", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items"] == ranker.rank([3, 5, 7], [1, 2, 9], 2).items and out["unknown_candidates"] == ["zz"]
    assert main(["recommend", str(run), "--history", "1"]) == 2  # a CTR run has no top-N over the catalogue
    assert "Recommender serves next-item" in capsys.readouterr().err
    import pyarrow.parquet as pq

    items = pq.read_table(run / "items.parquet")
    pq.write_table(items.drop_columns(["category"]), run / "items.parquet")  # written without its fields
    assert main(["score", str(run), "--candidates", "1"]) == 2
    assert "no item field 'category'" in capsys.readouterr().err
    (run / "items.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="items.parquet"):
        Ranker.from_run(run)


def _post(url: str, body) -> tuple[int, object]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _serving(served):
    server = make_server(served, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_score_endpoint_answers_as_the_python_api(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    run, _ = _run(tmp_path, "dare", top_k=8)
    ranker = load_run(run)
    assert isinstance(ranker, Ranker)
    server, url = _serving(ranker)
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            health = json.loads(r.read())
        assert health["task"] == "ctr" and health["items"] == len(ranker.ids)
        code, one = _post(url + "/score", {"history": [3, 5, 7], "candidates": [1, 2, 999]})
        ref = ranker.score([3, 5, 7], [1, 2, 999])
        assert code == 200 and one["probs"][:2] == pytest.approx(ref.probs[:2]) and one["probs"][2] is None
        code, many = _post(url + "/score", {"requests": [{"history": [3], "candidates": [1, 2, 4]},
                                                         {"candidates": [4]}], "rank": True, "n": 2})
        assert code == 200 and len(many) == 2 and len(many[0]["items"]) == 2
        assert many[0]["items"] == ranker.rank([3], [1, 2, 4], 2).items
        for bad, why in [({"history": [1]}, "candidates"), ({"candidates": [1], "k": 2}, "unknown keys"),
                         ({"candidates": [True]}, "integers"), ({"candidates": [1], "n": 0}, "'n'"),
                         ({"requests": [{"candidates": [1]}], "history": [1]}, "not both"),
                         ({"requests": [{"candidates": [[1]]}]}, "request 0"), ({"requests": [5]}, "request 0"),
                         ({"candidates": [1], "n": 2}, "rank"), (b"[" * 100_000 + b"]" * 100_000, "recursion"),
                         ({"candidates": list(range(100_001))}, "over 100000 candidates"),
                         ({"requests": [{"candidates": [1]}] * 10_001}, "over 10000 requests")]:
            code, err = _post(url + "/score", bad)
            assert code == 400 and why in err["error"], (bad, err)
        assert _post(url + "/recommend", {"history": [1]})[0] == 404
        for method, path, code in [("GET", "/score", 405), ("PUT", "/score", 405), ("POST", "/health", 405),
                                   ("DELETE", "/nothing", 404)]:
            req = urllib.request.Request(url + path, data=b"{}" if method != "GET" else None, method=method)
            try:
                urllib.request.urlopen(req, timeout=10)
                raise AssertionError((method, path))
            except urllib.error.HTTPError as e:
                assert e.code == code and "error" in json.loads(e.read()), (method, path)
                assert code == 404 or e.headers["Allow"] in ("GET, HEAD", "POST")
    finally:
        server.shutdown()
        server.server_close()


def test_predict_endpoint_answers_as_the_python_api(tmp_path, monkeypatch):
    from test_tpp_run import _cfg

    from behaviorseq.serve import EventPredictor

    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    run_experiment(_cfg("nhp", epochs=1), tmp_path / "run")
    pred = load_run(tmp_path / "run")
    assert isinstance(pred, EventPredictor)
    server, url = _serving(pred)
    seq = ([0.0, 0.5, 1.25, 2.0], [0, 1, 1, 2])
    try:
        code, one = _post(url + "/predict", {"times": seq[0], "types": seq[1], "seed": 3})
        ref = pred.predict([seq], seed=3)[0]
        assert code == 200 and one == {"dtime": pytest.approx(ref.dtime), "type": ref.type,
                                       "unaccepted": pytest.approx(ref.unaccepted)}
        code, many = _post(url + "/predict", {"sequences": [{"times": seq[0], "types": seq[1]}] * 2, "seed": 3})
        assert code == 200 and many[0] == many[1] == one
        for bad, why in [({"times": [0.0, 1.0], "types": [0, 1.5]}, "integers"),
                         ({"times": [1.0, 0.5], "types": [0, 1]}, "non-decreasing"),
                         ({"times": [0.0], "types": [99]}, "types in"), ({"times": [0.0], "types": [0], "seed": -1}, "seed"),
                         ({"times": [0.0, 1e39], "types": [0, 1]}, "float32"), ({"sequences": [5]}, "sequence 0"),
                         ({"sequences": [{"times": [0.0], "types": [0]}] * 10_001}, "over 10000 sequences"),
                         ({"sequences": [{"times": [0.0] * 600_000, "types": [0] * 600_000}] * 2}, "over 1000000 events")]:
            code, err = _post(url + "/predict", bad)
            assert code == 400 and why in err["error"], (bad, err)
    finally:
        server.shutdown()
        server.server_close()
