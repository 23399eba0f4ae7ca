"""The default-risk branch of the engine: a user's payment tables (data.payment_tables) and LBSF / flat models
trained by train.run_experiment (train.run_risk, tasks.default_risk.DefaultRiskTask)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from behaviorseq.cli import main as cli_main
from behaviorseq.config import ConfigError
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.payment_tables import PaymentTablesConfig, open_payments, read_payments
from behaviorseq.data.synthetic.payments import PaymentsConfig, generate_payments
from behaviorseq.train import run_experiment
from behaviorseq.train.run import resolve_config


def _write_tables(folder, n_users=40, seed=0, with_role=True):
    """A small synthetic data set written as the two user tables (string ids, ISO times)."""
    data, _ = generate_payments(PaymentsConfig(n_users=n_users, seed=seed))
    start = np.datetime64("2024-01-01T00:00:00")
    secs = np.round(data.time * 86_400).astype("timedelta64[s]")
    pay = pd.DataFrame({"user": [f"u{u:03d}" for u in data.user], "time": (start + secs).astype(str),
                        "merchant": [data.merchant_names[m] for m in data.merchant], "amount": data.amount,
                        "description": [data.descriptions[d] for d in data.description]})
    pay = pay.sample(frac=1.0, random_state=1)  # any row order
    pay.to_csv(folder / "payments.csv", index=False)
    lab = pd.DataFrame({"user": [f"u{u:03d}" for u in range(n_users)], "label": data.label})
    if with_role:
        lab["role"] = np.array(["train", "valid", "test"])[data.role]
    lab.to_csv(folder / "labels.csv", index=False)
    return data, pay, lab


def test_read_payments_matches_the_source_and_a_pandas_reference(tmp_path):
    src, pay, lab = _write_tables(tmp_path)
    label_date = str(np.datetime64("2024-01-01") + np.timedelta64(int(src.label_day), "D"))
    d = read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv", PaymentTablesConfig(label_date=label_date))
    # users sorted by name = the source ids; rows sorted by (user, time); times shifted by whole days
    assert d.n_users == src.n_users and (d.label == src.label).all() and (d.role == src.role).all()
    ref = pay.assign(u=pay.user.str[1:].astype(int), t=pd.to_datetime(pay.time)).sort_values(["u", "t"], kind="stable")
    np.testing.assert_array_equal(d.user, ref.u.to_numpy())
    np.testing.assert_allclose(d.amount, ref.amount.to_numpy())
    assert [d.merchant_names[m] for m in d.merchant] == ref.merchant.tolist()
    assert [d.descriptions[x] for x in d.description] == ref.description.fillna("").tolist()
    epoch_days = (ref.t - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy() / 86_400
    origin = 7 * np.floor(epoch_days.min() / 7)  # whole weeks after 1970-01-01 (a Thursday)
    np.testing.assert_allclose(d.time, epoch_days - origin, atol=1e-9)
    assert (np.floor(d.time).astype(int) % 7 == (ref.t.dt.day_of_week.to_numpy() - 3) % 7).all()  # the weekday
    np.testing.assert_allclose(d.time % 1.0, (ref.t.dt.hour * 3600 + ref.t.dt.minute * 60 + ref.t.dt.second) / 86_400,
                               atol=1e-9)  # the fraction of a day is still the time of day
    assert d.label_day == pytest.approx((pd.Timestamp(label_date) - pd.Timestamp("1970-01-01")).total_seconds() / 86_400
                                        - origin)


def test_read_payments_keeps_long_and_unicode_descriptions_and_numeric_ids(tmp_path):
    _, pay, lab = _write_tables(tmp_path)
    pay = pay.assign(description=pay.description.astype(object))
    pay.iloc[0, pay.columns.get_loc("description")] = "x" * 5000  # read as Arrow strings: no row is sized to it
    pay.iloc[1, pay.columns.get_loc("description")] = "Café Zürich"
    codes = {u: 10 * i for i, u in enumerate(sorted(lab.user))}  # integer user ids in both tables
    pay.assign(user=pay.user.map(codes)).to_csv(tmp_path / "payments.csv", index=False)
    lab.assign(user=lab.user.map(codes)).to_csv(tmp_path / "labels.csv", index=False)
    d = read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv")
    assert d.report["dropped_unlabelled_user"] == 0 and len(d.user) == len(pay)
    got = sorted(d.descriptions[x] for x in d.description)
    assert got == sorted(pay.description.fillna(""))
    assert d.descriptions == sorted(d.descriptions)  # sorted vocabulary, "" first


def test_bank_exports_semicolons_milliseconds_and_unmatched_labels(tmp_path):
    src, pay, lab = _write_tables(tmp_path)
    ref = read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv")
    pay.to_csv(tmp_path / "payments.csv", index=False, sep=";")
    lab.to_csv(tmp_path / "labels.csv", index=False, sep=";")
    with pytest.raises(DataFormatError, match="is the delimiter ';'"):
        read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv")
    got = read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv", PaymentTablesConfig(delimiter=";"))
    assert np.array_equal(got.user, ref.user) and np.allclose(got.time, ref.time)
    ms = pay.assign(time=pd.to_datetime(pay.time).dt.as_unit("ms").astype("int64"))  # epoch milliseconds, 13 digits
    ms.to_csv(tmp_path / "payments.csv", index=False)
    lab.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataFormatError, match="milliseconds\\? set data.payments.time_unit=ms"):
        read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv")
    got = read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv", PaymentTablesConfig(time_unit="ms"))
    assert np.allclose(got.time, ref.time, atol=1e-6)
    extra = pd.concat([lab, pd.DataFrame({"user": ["ghost"], "label": [0], "role": ["test"]})])
    extra.to_csv(tmp_path / "labels.csv", index=False)
    r = read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv", PaymentTablesConfig(time_unit="ms")).report
    assert r["labelled_users_not_in_payments"] == 1 and r["labelled_users_without_payments"] == 1


def test_errors_name_the_file_line_past_quoted_line_breaks_and_blank_lines(tmp_path):
    (tmp_path / "payments.csv").write_text('user,time,merchant,amount,description\n'
                                           'u1,2024-01-01,m,1.0,"two\nlines"\n\nu1,2024-01-02,m,-5,x\n')
    (tmp_path / "labels.csv").write_text("user,label\nu1,1\n")
    with pytest.raises(DataFormatError, match="payments.csv, line 5, field 'amount'"):
        read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv")


def test_read_payments_defaults_split_and_drops_unlabelled_users(tmp_path):
    _write_tables(tmp_path, with_role=False)
    lab = pd.read_csv(tmp_path / "labels.csv")
    lab.iloc[:-3].to_csv(tmp_path / "labels.csv", index=False)  # three users lose their label row
    d = open_payments(str(tmp_path), {"split": [0.5, 0.25, 0.25], "seed": 3})
    assert d.n_users == 37 and set(np.unique(d.role)) <= {0, 1, 2} and d.report["dropped_unlabelled_user"] > 0
    assert d.time.max() < d.label_day <= d.time.max() + 1 + 1e-9  # default: one day after the last payment
    again = open_payments(str(tmp_path), {"split": [0.5, 0.25, 0.25], "seed": 3})
    assert (again.role == d.role).all()


@pytest.mark.parametrize("edit, file, match", [
    (lambda p, lab: p.assign(amount=p.amount.where(p.index != p.index[4], -1.0)), "payments", r"line 6, field 'amount'.*refunds"),
    (lambda p, lab: p.assign(amount=p.amount.astype(object).where(p.index != p.index[2], "x")), "payments",
     r"line 4, field 'amount'"),
    (lambda p, lab: lab.assign(label=lab.label.where(lab.index != 6, 2)), "labels", r"line 8, field 'label': label must be 0 or 1"),
    (lambda p, lab: lab.assign(role=lab.role.where(lab.index != 0, "dev")), "labels", r"line 2, field 'role'"),
    (lambda p, lab: pd.concat([lab, lab.iloc[[3]]]), "labels", r"line 42, field 'user': user 'u003' has a second label"),
])
def test_bad_tables_name_file_row_and_field(tmp_path, edit, file, match):
    _, pay, lab = _write_tables(tmp_path)
    pay, lab = pay.reset_index(drop=True), lab.reset_index(drop=True)
    out = edit(pay, lab)
    out.to_csv(tmp_path / f"{file}.csv", index=False)
    with pytest.raises(DataFormatError, match=f"{file}.csv, {match}"):
        open_payments(str(tmp_path))


def test_payment_at_the_label_date_is_refused(tmp_path):
    _, pay, _ = _write_tables(tmp_path)
    last = pd.to_datetime(pay.time).max()
    with pytest.raises(DataFormatError, match="field 'time': payment at or after the label date"):
        open_payments(str(tmp_path), {"label_date": str(last.floor("D"))})
    late = str((last + pd.Timedelta(days=3)).date())
    from behaviorseq.cli_train import parse_overrides

    as_yaml = parse_overrides([f"data.payments.label_date={late}"])["data"]["payments"]  # a datetime.date
    assert open_payments(str(tmp_path), as_yaml).label_day == open_payments(str(tmp_path), {"label_date": late}).label_day
    with pytest.raises(FileNotFoundError, match="not 'synthetic-payments' and not a folder"):
        open_payments(str(tmp_path / "nowhere"))


def test_iso_times_with_a_time_unit_labels_without_payments_and_empty_labels(tmp_path):
    _write_tables(tmp_path)
    with pytest.raises(DataFormatError, match="payments.csv, field 'time': ISO date-times"):
        open_payments(str(tmp_path), {"time_unit": "days"})  # it would rescale ISO seconds as days
    lab = pd.read_csv(tmp_path / "labels.csv")
    pd.concat([lab, pd.DataFrame({"user": ["ghost"], "label": [1], "role": ["train"]})]).to_csv(
        tmp_path / "labels.csv", index=False)
    assert open_payments(str(tmp_path)).report["labelled_users_without_payments"] == 1
    lab.iloc[:0].to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataFormatError, match="labels.csv: no label rows"):
        open_payments(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown keys \\['nusers'\\]"):
        open_payments("synthetic-payments", {"nusers": 10})


def _cfg(model, tmp_path=None, **data):
    cfg = {"model": model, "model_args": {"d": 16},
           "data": {"dataset": "synthetic-payments", "payments": {"n_users": 500, "seed": 1},
                    "risk": {"window_days": 180, "n_top": 6, "max_per_merchant": 8}, **data},
           "train": {"epochs": 3, "batch_size": 32, "lr": 0.002, "optimizer": "adamw", "early_stop_metric": "auc",
                     "threads": 1, "seed": 0, "patience": 5}}
    return cfg


def test_risk_models_resolve_to_the_default_risk_task_and_bad_configs_are_refused():
    assert resolve_config(_cfg("lbsf")).task == "default_risk"
    assert resolve_config(_cfg("flat_gru")).task == "default_risk"
    with pytest.raises(ConfigError, match="does not fit model 'lbsf'"):
        resolve_config({**_cfg("lbsf"), "task": "retrieval"})
    with pytest.raises(ConfigError, match="not a default_risk metric"):
        resolve_config({**_cfg("lbsf"), "train": {"early_stop_metric": "ndcg@10"}})
    with pytest.raises(ConfigError, match="does not fit model 'sasrec'"):
        resolve_config({"model": "sasrec", "task": "default_risk"})


def test_lbsf_trains_through_the_engine_and_writes_a_run_folder(tmp_path):
    # only the long-range collapse is planted (as in test_lbsf's learning test), so a few epochs learn it
    planted = dict(n_users=600, seed=5, p_collapse=0.4, p_stop=0.0, p_escalate=0.0, recurring_prob=0.0,
                   credit_prob=0.0, label_noise=0.0, collapse_max=150.0, pillar_share=0.5, rate_per_day=0.6)
    cfg = _cfg("lbsf", payments=planted)
    cfg["model_args"].update(n_hash=256, intra_layers=0)
    cfg["train"].update(epochs=5, lr=0.003)
    res = run_experiment(cfg, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["protocol"]["task"] == "default_risk" and m["protocol"]["payment_budget"] == 7 * 8
    assert set(m["test"]) >= {"auc", "ks", "logloss", "n"} and m["test"]["n"] == (res["protocol"]["users"]["test"])
    assert res["test"]["auc"] > 0.65, res["test"]  # chance is 0.5 (about 150 test users: sd ~0.045)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    # the flat baseline reads the last N = (n_top + 1) * max_per_merchant payments
    flat = run_experiment({**_cfg("flat_transformer", payments=planted), "train": {**cfg["train"], "epochs": 1}},
                          tmp_path / "flat")
    assert flat["protocol"]["view"] == "flat: last 56 payments"
    from behaviorseq.train import compare_runs

    table, rows = compare_runs([tmp_path / "run", tmp_path / "flat"])
    assert "| auc | ks | logloss |" in table and "WARNING" not in table  # same data, window and payment budget
    assert rows[0]["auc"] == pytest.approx(res["test"]["auc"])
    run_experiment({**_cfg("flat_gru"), "train": {**cfg["train"], "epochs": 1}}, tmp_path / "other")
    assert "WARNING" in compare_runs([tmp_path / "flat", tmp_path / "other"])[0]  # other generator arguments


def test_resumed_risk_run_equals_an_uninterrupted_one(tmp_path):
    cfg = _cfg("flat_gru")
    full = run_experiment(cfg, tmp_path / "full")
    part = run_experiment({**cfg, "train": {**cfg["train"], "epochs": 1}}, tmp_path / "part")
    assert part["epochs_run"] == 1
    resumed = run_experiment(cfg, tmp_path / "part", resume=True)
    assert resumed["test"]["auc"] == pytest.approx(full["test"]["auc"], abs=1e-9)
    a = torch.load(tmp_path / "full" / "checkpoints" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_cli_trains_on_the_users_tables(tmp_path, capsys):
    (tmp_path / "tables").mkdir()
    _write_tables(tmp_path / "tables", n_users=120)
    code = cli_main(["train", "--model", "flat_gru", "--data", str(tmp_path / "tables"), "--out", str(tmp_path / "run"),
                     "train.epochs=1", "train.threads=1", "model.d=8"])
    out = capsys.readouterr().out
    assert code == 0 and "| test |" in out and "flat: last 90 payments" in out


def test_per_user_label_dates_window_each_user_at_their_own_date(tmp_path):
    from behaviorseq.data.folding import last_n

    _, pay, lab = _write_tables(tmp_path, n_users=30)
    t = pd.to_datetime(pay.time)
    # each user observed at their own date: the median of their payments (later payments exist in the log)
    own = t.groupby(pay.user).median().dt.floor("D")
    lab.assign(date=lab.user.map(own).dt.strftime("%Y-%m-%d")).to_csv(tmp_path / "labels.csv", index=False)
    d = open_payments(str(tmp_path))
    after = int((t >= pay.user.map(own)).sum())
    assert d.report["dropped_after_own_label_date"] == after > 0 and d.report["label_date"].startswith("per user")
    assert np.shape(d.label_day) == (30,) and (d.time < d.label_day[d.user]).all()  # nothing at or after
    view = last_n(d, window_days=14.0, max_len=50)  # windows end at each user's date
    for u in (0, 7, 19):
        ref = np.sort(d.time[(d.user == u) & (d.time >= d.label_day[u] - 14.0)])
        got = view.fields["days_before"][u][view.mask[u]]
        np.testing.assert_allclose(np.sort(d.label_day[u] - got), ref)
    with pytest.raises(ConfigError, match="cannot be set as well"):
        open_payments(str(tmp_path), {"label_date": "2030-01-01"})
    res = run_experiment({**_cfg("flat_gru"), "data": {"dataset": str(tmp_path), "risk": {"window_days": 30}},
                          "train": {**_cfg("flat_gru")["train"], "epochs": 1}}, tmp_path / "run")
    assert res["protocol"]["label_day"]["per_user"] and json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the labels change after training: evaluate refuses the run instead of scoring other data (as for event logs)
    from behaviorseq.train import evaluate_run

    assert evaluate_run(tmp_path / "run", roles=("test",))["test"]["auc"] == pytest.approx(res["test"]["auc"])
    lab = pd.read_csv(tmp_path / "labels.csv")
    lab.assign(label=1 - lab.label).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ConfigError, match="changed since it was trained.*fingerprint"):
        evaluate_run(tmp_path / "run", roles=("test",))


def test_the_train_command_says_what_reading_the_tables_left_out(tmp_path, capsys):
    _, _, lab = _write_tables(tmp_path, n_users=60)
    pd.concat([lab, pd.DataFrame({"user": ["ghost"], "label": [0], "role": ["test"]})]).to_csv(tmp_path / "labels.csv",
                                                                                               index=False)
    code = cli_main(["train", "--model", "flat_gru", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                     "train.epochs=1", "train.threads=1", "model.d=8"])
    out = capsys.readouterr().out
    assert code == 0 and "labelled_users_not_in_payments 1" in out and "payments read" in out


def test_a_one_class_validation_set_stops_the_run_with_a_message(tmp_path, capsys):
    (tmp_path / "tables").mkdir()
    _, _, lab = _write_tables(tmp_path / "tables", n_users=120)
    lab.assign(label=np.where(lab.role == "valid", 0, lab.label)).to_csv(tmp_path / "tables" / "labels.csv",
                                                                        index=False)
    code = cli_main(["train", "--model", "flat_gru", "--data", str(tmp_path / "tables"), "--out", str(tmp_path / "run"),
                     "train.epochs=1", "train.threads=1", "model.d=8"])
    assert code == 2 and "validation auc is nan" in capsys.readouterr().err  # AUC is undefined on one class
    assert not (tmp_path / "run" / "metrics.json").exists()  # no result made of the last weights


def test_read_payments_parquet_renamed_columns_and_numeric_days(tmp_path):
    src, pay, lab = _write_tables(tmp_path, n_users=30)
    days = (pd.to_datetime(pay.time) - pd.Timestamp("2024-01-01")).dt.total_seconds() / 86_400 + 100.0
    pay.assign(time=days).rename(columns={"user": "uid", "time": "day", "merchant": "shop", "amount": "amt"}) \
        .drop(columns=["description"]).to_parquet(tmp_path / "p.parquet", index=False)
    lab.rename(columns={"user": "uid"}).to_parquet(tmp_path / "l.parquet", index=False)
    cols = {"user": "uid", "time": "day", "merchant": "shop", "amount": "amt"}
    d = open_payments(str(tmp_path), {"payments": str(tmp_path / "p.parquet"), "labels": str(tmp_path / "l.parquet"),
                                      "columns": cols, "time_unit": "days", "label_date": 100.0 + src.label_day})
    ref = read_payments(tmp_path / "payments.csv", tmp_path / "labels.csv",
                        PaymentTablesConfig(label_date=str(np.datetime64("2024-01-01") + np.timedelta64(
                            int(round(src.label_day * 86_400)), "s"))))
    np.testing.assert_array_equal(d.user, ref.user)
    # numeric days count from their own origin (no weekday to keep): the same times before the label date
    np.testing.assert_allclose(d.label_day - d.time, ref.label_day - ref.time, atol=1e-6)
    assert d.descriptions == ["", ""]  # padding, then the one empty text
    with pytest.raises(DataFormatError, match="p.parquet, field 'amount': no column for the amount.*columns.amount="):
        open_payments(str(tmp_path), {"payments": str(tmp_path / "p.parquet"), "labels": str(tmp_path / "l.parquet"),
                                      "columns": {**cols, "amount": "amount"}, "time_unit": "days"})


def test_payment_times_on_the_hour_and_times_written_two_ways(tmp_path):
    from behaviorseq.data.folding import _per_payment
    from behaviorseq.nn.payment_fields import AttentionPool

    # every hour of two days, on the hour, as float days since the epoch: floor((t % 1) * 24) read 02:00 as 1
    t = (np.datetime64("2024-03-01") - np.datetime64("1970-01-01")).astype(float) + np.arange(48) / 24
    one = np.zeros(48)
    hours = _per_payment({"time": t, "merchant": one, "description": one, "amount": one, "label_day": t + 1})["hour"]
    assert hours.tolist() == list(range(24)) * 2
    _, pay, lab = _write_tables(tmp_path, n_users=6)
    lab.to_csv(tmp_path / "l.csv", index=False)
    mixed = pay.astype({"time": object})
    mixed.loc[mixed.index[0], "time"] = "19800.5"  # an epoch number beside ISO date-times
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(DataFormatError, match="ISO date-times and numbers mixed; time_unit 'days'"):
        read_payments(tmp_path / "mixed.csv", tmp_path / "l.csv", PaymentTablesConfig(time_unit="days"))
    since = pd.to_datetime(pay.time) - pd.Timestamp("1970-01-01")
    ms = pay.assign(time=(since // pd.Timedelta("1ms")).astype(str))  # epoch milliseconds, as text
    ms.to_parquet(tmp_path / "ms.parquet", index=False)
    with pytest.raises(DataFormatError, match="milliseconds"):  # was read as seconds: every gap x 1000
        read_payments(tmp_path / "ms.parquet", tmp_path / "l.csv")
    secs = pay.assign(time=since // pd.Timedelta("1s"))
    secs.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(DataFormatError, match="read as days is over 3,000 years"):  # seconds given as days
        read_payments(tmp_path / "s.csv", tmp_path / "l.csv", PaymentTablesConfig(time_unit="days"))
    with torch.autocast("cpu", dtype=torch.float16):  # the padding fill fits half precision (-1e9 did not)
        x = AttentionPool(4)(torch.randn(2, 3, 4), torch.tensor([[True, True, False], [True, False, False]]))
    assert torch.isfinite(x).all()


def test_a_window_longer_than_the_recency_embedding_is_refused():
    cfg = {"model": "lbsf", "data": {"dataset": "synthetic-payments", "risk": {"window_days": 365}},
           "train": {"early_stop_metric": "auc"}}
    from behaviorseq.train.run import _prepare_any

    with pytest.raises(ConfigError, match="window_days=365 exceeds model.max_days=180"):  # days 181-365 shared one
        _prepare_any(resolve_config(cfg))
