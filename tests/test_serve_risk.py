"""Serving a trained default-risk model from its run folder: new users' payments in, the evaluator's
probabilities out; and its JSON endpoint."""

from __future__ import annotations

import json
import re
import threading
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch
from test_risk_run import _write_tables

from behaviorseq.serve import RiskScorer, load_run
from behaviorseq.serve.http import make_server
from behaviorseq.train import run_experiment
from behaviorseq.train.run import load_run_config
from behaviorseq.train.run_risk import prepare_risk

LABEL_DATE = "2024-06-29"  # the generator's label day (180 days after 2024-01-01), for training and serving


@pytest.mark.parametrize("model", ["lbsf", "chunked_transformer"])
def test_scored_new_users_get_the_evaluators_probabilities(tmp_path, monkeypatch, model):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    _, pay, lab = _write_tables(tmp_path, n_users=60)
    cfg = {"model": model, "model_args": {"d": 16}, "data": {"dataset": str(tmp_path), "payments": {"label_date": LABEL_DATE},
                                                             "risk": {"window_days": 180, "n_top": 4, "max_per_merchant": 6}},
           "train": {"epochs": 1, "batch_size": 16, "early_stop_metric": "auc", "threads": 1, "seed": 0}}
    run_experiment(cfg, tmp_path / "run")
    scorer = load_run(tmp_path / "run")
    assert isinstance(scorer, RiskScorer)
    torch.manual_seed(0)
    with torch.no_grad():  # one epoch leaves the logits nearly flat: spread them so a wrong input would show
        for p in scorer.model.parameters():
            p.normal_(0.0, 0.3)
    data, net, task = prepare_risk(load_run_config(tmp_path / "run"))
    net.load_state_dict(scorer.model.state_dict())  # the training tables' n-grams, the same weights
    rows = task.indices("test")
    net.eval()
    with torch.no_grad():
        want = torch.sigmoid(net.score({k: v for k, v in task.batch(rows).items() if k != "label"}).double()).numpy()
    test_users = [data.user_names[r] for r in rows]
    new = pay[pay.user.isin(test_users)]  # only the users to score, their merchants renumbered from scratch
    got = scorer.score(new, label_date=LABEL_DATE)
    assert got.users == sorted(test_users), (got.users[:3], sorted(test_users)[:3])
    assert np.std(want) > 1e-3
    np.testing.assert_allclose(got.probs, want[np.argsort(test_users)], rtol=0, atol=1e-6)
    assert all(n > 0 for n in got.payments_used)
    renamed = new.assign(merchant=new.merchant + " (new branch)")  # merchants the training never saw still count
    assert not np.allclose(scorer.score(renamed, label_date=LABEL_DATE).probs, got.probs)
    (tmp_path / "new.csv").write_text(new.to_csv(index=False))
    assert scorer.score(tmp_path / "new.csv", label_date=LABEL_DATE).probs == pytest.approx(got.probs, abs=1e-9)
    alone = scorer.score(new[new.user == test_users[0]], label_date=LABEL_DATE)  # whoever else is in the request
    assert alone.probs[0] == pytest.approx(dict(zip(got.users, got.probs))[test_users[0]], abs=1e-6)
    with pytest.raises(ValueError, match="observation date"):
        scorer.score(new, label_date=None)
    # one date per user (a dict, as labels.csv's date column): each user's window ends at their own date
    early = {test_users[0]: "2024-03-01", test_users[1]: LABEL_DATE}
    per = scorer.score(new, label_date=early)
    assert per.users == sorted(early)
    first = scorer.score(new[(new.user == test_users[0]) & (pd.to_datetime(new.time) < "2024-03-01")],
                         label_date="2024-03-01")
    assert dict(zip(per.users, per.probs))[test_users[0]] == pytest.approx(first.probs[0], abs=1e-6)
    assert dict(zip(per.users, per.probs))[test_users[1]] == pytest.approx(dict(zip(got.users, got.probs))[test_users[1]],
                                                                          abs=1e-6)
    with pytest.raises(ValueError, match="no payment before their date"):  # a typo'd user is not scored as empty
        scorer.score(new, label_date={**early, "nobody": LABEL_DATE})
    with pytest.raises(ValueError, match="at or after the label date"):  # digits are a number of seconds, not a year
        scorer.score(new, label_date="20240629")
    import json as _json

    metrics = tmp_path / "run" / "metrics.json"
    m = _json.loads(metrics.read_text())
    del m["protocol"]["time_origin"]  # a run trained before the weekday origin
    metrics.write_text(_json.dumps(m))
    with pytest.raises(ValueError, match="weekday fix"):
        RiskScorer.from_run(tmp_path / "run")


def test_risk_endpoint_and_command(tmp_path, monkeypatch, capsys):
    from behaviorseq.cli import main

    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    _, pay, _ = _write_tables(tmp_path, n_users=40)
    cfg = {"model": "flat_gru", "model_args": {"d": 8}, "data": {"dataset": str(tmp_path), "payments": {"label_date": LABEL_DATE}},
           "train": {"epochs": 1, "early_stop_metric": "auc", "threads": 1}}
    run_experiment(cfg, tmp_path / "run")
    scorer = RiskScorer.from_run(tmp_path / "run")
    some = pay[pay.user.isin(["u001", "u007"])]
    ref = scorer.score(some, label_date=LABEL_DATE)
    # user ids come back as sent: "007" stays "007" (it came back as 7, and "007" beside "7" as two 7s)
    renamed = scorer.score(some.assign(user=some.user.map({"u001": "007", "u007": "7"})), label_date=LABEL_DATE)
    assert sorted(renamed.users) == ["007", "7"]
    assert dict(zip(renamed.users, renamed.probs))["007"] == pytest.approx(ref.probs[ref.users.index("u001")], abs=1e-9)
    assert scorer.score(some.assign(user=some.user.map({"u001": "12", "u007": "7"})), LABEL_DATE).users == [7, 12]
    server = make_server(scorer, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/risk"
    try:
        body = {"payments": json.loads(some.to_json(orient="records")), "label_date": LABEL_DATE}
        with urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(body).encode(), method="POST"), timeout=10) as r:
            out = json.loads(r.read())
        assert out["users"] == ["u001", "u007"] and out["probs"] == pytest.approx(ref.probs, abs=1e-9)
        for bad_body, why in [({"payments": [{"user": "x"}], "label_date": LABEL_DATE}, "no column for the time"),
                          ({"payments": body["payments"]}, "observation date"),
                          ({"payments": [{**body["payments"][0], "amount": "12.5"}] + body["payments"][1:],
                            "label_date": LABEL_DATE}, "different types"),
                          ({"payments": body["payments"], "label_date": {"u001": LABEL_DATE, "u007": 1719619200}},
                           "all ISO dates or all numbers"),
                          ({"payments": body["payments"], "label_date": float("nan")}, "finite number"),
                          ({"payments": [{**body["payments"][0], "merchant": {"a": 1}}], "label_date": LABEL_DATE},
                           "payment 0, field 'merchant': a payment's fields are numbers or text")]:
            bad = urllib.request.Request(url, data=json.dumps(bad_body).encode(), method="POST")
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(bad, timeout=10)
            assert e.value.code == 400 and why in json.loads(e.value.read())["error"], why
    finally:
        server.shutdown()
        server.server_close()
    some.to_csv(tmp_path / "some.csv", index=False)
    capsys.readouterr()
    assert main(["score", str(tmp_path / "run"), "--payments", str(tmp_path / "some.csv"), "--label-date", LABEL_DATE]) == 0
    assert json.loads(capsys.readouterr().out)["probs"] == pytest.approx(ref.probs, abs=1e-9)
    # one date per user from a table (the labels table's user and date columns), through the command
    pd.DataFrame({"user": ["u007", "u001"], "date": ["2024-03-01", LABEL_DATE]}).to_csv(tmp_path / "dates.csv", index=False)
    dates = scorer.read_label_dates(tmp_path / "dates.csv")
    assert dates == {"u007": "2024-03-01", "u001": LABEL_DATE}
    per = scorer.score(some, label_date=dates)
    assert per.probs[0] == pytest.approx(ref.probs[0], abs=1e-9) and per.probs[1] != pytest.approx(ref.probs[1], abs=1e-9)
    assert main(["score", str(tmp_path / "run"), "--payments", str(tmp_path / "some.csv"),
                 "--label-dates", str(tmp_path / "dates.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["probs"] == pytest.approx(per.probs, abs=1e-9)
    assert main(["score", str(tmp_path / "run"), "--payments", str(tmp_path / "some.csv"), "--label-date", LABEL_DATE,
                 "--label-dates", str(tmp_path / "dates.csv")]) == 2
    (tmp_path / "na.csv").write_text("user,date\nNA,2024-03-01\n")  # "NA" is an id, as in the training tables
    assert scorer.read_label_dates(tmp_path / "na.csv") == {"NA": "2024-03-01"}
    pd.DataFrame({"user": ["u007"], "date": ["2024-03-01"]}).to_csv(tmp_path / "dates.tsv", sep="\t", index=False)
    assert scorer.read_label_dates(tmp_path / "dates.tsv") == {"u007": "2024-03-01"}  # .tsv: tabs, as the tables
    for bad, why in ((pd.DataFrame({"user": ["u001"], "when": [LABEL_DATE]}), "no column for the date"),
                     (pd.DataFrame({"user": ["u001", "u001"], "date": [LABEL_DATE, "2024-03-01"]}), "line 3"),
                     (pd.DataFrame({"user": ["u001", "u007"], "date": [LABEL_DATE, None]}), "line 3"),
                     (pd.DataFrame({"user": [], "date": []}), "no rows"),
                     (pd.DataFrame({"user": ["u001", "u007"], "date": [LABEL_DATE, "2024-13-45"]}), "line 3"),
                     (pd.DataFrame({"user": ["u001", "u007"], "date": [1719619200, "soon"]}), "line 3")):
        bad.to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(ValueError, match=re.escape(why)):
            scorer.read_label_dates(tmp_path / "bad.csv")
    # pandas skips whitespace-only lines as blank: the line named is still the file's
    for name, text, line in (("bad.csv", f"user,date\nu001,{LABEL_DATE}\n  \t \n\nu007,soon\n", 5),
                             ("bad.csv", f"user,date\nu001,{LABEL_DATE}\n,\nu007,soon\n", 3),  # a row, empty fields
                             ("bad.csv", 'user,date\n"  ",\nu007,soon\n', 2),  # a quoted id, no date
                             ("bad.tsv", f"user\tdate\nu001\t{LABEL_DATE}\n\t\nu007\tsoon\n", 3)):  # tab: a row
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"line {line}\\b"):
            scorer.read_label_dates(tmp_path / name)
    pd.DataFrame({"user": ["u001", "u007"], "date": [LABEL_DATE, None]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="row 2"):  # Parquet rows count from 1
        scorer.read_label_dates(tmp_path / "bad.parquet")
