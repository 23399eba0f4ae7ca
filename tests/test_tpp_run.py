"""Event-stream models through the engine (train.run_tpp): simulated Hawkes data or a folder of EasyTPP files,
run folders and metrics from ``run_experiment`` / ``behaviorseq train``."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from behaviorseq.cli import main as cli_main
from behaviorseq.config import ConfigError
from behaviorseq.train import run_experiment
from behaviorseq.train.run import resolve_config
from behaviorseq.train.run_tpp import TPPDataConfig, read_easytpp_folder, synthetic_hawkes

SMALL = {"num_types": 3, "n_seqs": 400, "max_events": 40, "seed": 1}


def _cfg(model: str, **train) -> dict:
    return {"model": model, "data": {"dataset": "synthetic-hawkes", "tpp": {**SMALL, "task": {"eval_batch_size": 128}}},
            "train": {"epochs": 4, "batch_size": 32, "lr": 0.01, "early_stop_metric": "loglik", "patience": 4,
                      "threads": 1, "seed": 0, **train}}


def _poisson_loglik(seqs) -> float:
    """Per event, of a homogeneous Poisson process per type with the rates fitted on these sequences (what a
    model that learned nothing about the history can reach; events after each sequence's first, as the task)."""
    span = sum(float(seqs.time[seqs.offsets[i + 1] - 1] - seqs.time[seqs.offsets[i]]) for i in range(len(seqs)))
    first = np.zeros(len(seqs.type), dtype=bool)
    first[seqs.offsets[:-1]] = True
    k = seqs.type[~first]
    rates = np.bincount(k, minlength=seqs.num_types) / span
    return float((np.log(rates[k]).sum() - rates.sum() * span) / k.size)


def test_tpp_models_resolve_to_the_tpp_task_and_bad_configs_are_refused():
    assert resolve_config(_cfg("nhp")).task == "tpp"
    assert resolve_config(_cfg("hawkes_exp")).task == "tpp"
    with pytest.raises(ConfigError, match="does not fit model 'thp'"):
        resolve_config({**_cfg("thp"), "task": "ctr"})
    with pytest.raises(ConfigError, match="not a tpp metric"):
        resolve_config({**_cfg("nhp"), "train": {"early_stop_metric": "auc"}})
    with pytest.raises(ConfigError, match="unknown model .nhpp."):
        resolve_config({"model": "nhpp"})


def test_nhp_learns_simulated_hawkes_through_the_engine(tmp_path):
    res = run_experiment(_cfg("nhp"), tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["protocol"]["task"] == "temporal_point_process" and {"loglik", "rmse", "acc"} <= set(m["test"])
    test = synthetic_hawkes(TPPDataConfig(**SMALL))[0]["test"]
    assert res["test"]["loglik"] > _poisson_loglik(test) + 0.05, (res["test"], _poisson_loglik(test))
    from behaviorseq.train import compare_runs

    assert "| loglik | rmse | acc |" in compare_runs([tmp_path / "run"])[0]
    truth = m["protocol"]["reference"]["true_model_loglik"]["test"]  # the physical limit, within MC noise
    assert res["test"]["loglik"] < truth + 0.02 and truth > _poisson_loglik(test)


def test_easytpp_folder_through_the_cli(tmp_path, capsys):
    roles = synthetic_hawkes(TPPDataConfig(**{**SMALL, "n_seqs": 120}))[0]
    for role, stem in (("train", "train"), ("valid", "dev"), ("test", "test")):
        s = roles[role]
        seqs = [[{"time_since_start": float(s.time[j]), "type_event": int(s.type[j]),
                  "time_since_last_event": float(s.time[j] - s.time[j - 1]) if j > s.offsets[i] else 0.0}
                 for j in range(s.offsets[i], s.offsets[i + 1])] for i in range(len(s))]
        with open(tmp_path / f"{stem}.pkl", "wb") as fh:
            pickle.dump({"dim_process": 3, stem: seqs}, fh)
    back = read_easytpp_folder(tmp_path)
    np.testing.assert_allclose(back["test"].time, roles["test"].time, rtol=1e-12)
    code = cli_main(["train", "--model", "thp", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                     "train.epochs=1", "train.threads=1"])
    out = capsys.readouterr().out
    assert code == 0 and "| test |" in out and "loglik" in out
    (tmp_path / "dev.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="no dev.pkl"):
        read_easytpp_folder(tmp_path)


def test_settings_that_would_fail_after_training_are_refused_up_front(tmp_path):
    from behaviorseq.config import ConfigError
    from behaviorseq.train.run import prepare_tpp, resolve_config

    with pytest.raises(ConfigError, match="predict_roles"):  # acc is measured on test only by default
        prepare_tpp(resolve_config(_cfg("nhp", early_stop_metric="acc")))
    cfg = _cfg("thp")
    cfg["data"]["tpp"]["task"]["eval_integral"] = "exact"
    with pytest.raises(ConfigError, match="compensator"):
        prepare_tpp(resolve_config(cfg))
    empty = _cfg("nhp")
    empty["data"]["tpp"]["split"] = [0.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="training set is empty"):
        run_experiment(empty, tmp_path / "empty")


def test_event_predictor_serves_the_evaluators_thinning_from_the_run_folder(tmp_path):
    import torch

    from behaviorseq.nn.tpp import thinning_predict
    from behaviorseq.serve.events import EventPredictor
    from behaviorseq.tasks.tpp import TPPBatcher

    cfg = _cfg("nhp", epochs=1)
    run_experiment(cfg, tmp_path / "run")
    pred = EventPredictor.from_run(tmp_path / "run")
    test = synthetic_hawkes(TPPDataConfig.from_dict(cfg["data"]["tpp"]))[0]["test"]
    seqs = [(test.time[test.offsets[i]:test.offsets[i + 1]].tolist(), test.type[test.offsets[i]:test.offsets[i + 1]].tolist())
            for i in range(3)]
    got = pred.predict(seqs[:1], seed=7)[0]
    batch = TPPBatcher(test, None).batch(np.array([0]))  # the evaluator's batch of that sequence
    dt, k, _ = thinning_predict(pred.model, pred.model.encode(batch), pred.dtime_max, *pred.thinning,
                                noise=pred.noise(7))
    n = len(seqs[0][0])
    assert got.dtime == pytest.approx(float(dt[0, n - 1]), rel=1e-5) and got.type == int(k[0, n - 1])
    many = pred.predict(seqs, seed=7)
    assert len(many) == 3 and all(0 <= e.type < 3 and 0 < e.dtime <= pred.dtime_max for e in many)
    for other in (many[0], pred.predict(seqs[::-1], seed=7)[2]):  # whatever else the request holds
        assert other.type == got.type and other.dtime == pytest.approx(got.dtime, rel=1e-5)
    pred.positions = 8  # requests split into padded blocks of at most 8 positions: the same answers
    for a, b in zip(pred.predict(seqs, seed=7), many):
        assert a.type == b.type and a.dtime == pytest.approx(b.dtime, rel=1e-5)
    pred.positions = 4096
    with pytest.raises(ValueError, match="noise must be two"):
        thinning_predict(pred.model, pred.model.encode(batch), pred.dtime_max, *pred.thinning,
                         noise=(torch.zeros(3, 1), torch.zeros(3, 1)))
    with pytest.raises(ValueError, match="integers"):
        pred.predict([([0.0, 1.0], [0.0, 1.5])])
    pred.max_len = 5  # chunks of 5 events: a scored event had at most 4 before it, so the latest 4 are read
    assert pred.predict(seqs[:1], seed=7)[0] == pred.predict([(seqs[0][0][-4:], seqs[0][1][-4:])], seed=7)[0]
    seen, build = [], pred.batch
    pred.batch = lambda rows: seen.append([len(t) for t, _ in rows]) or build(rows)  # what the model is given
    pred.predict(seqs[:1], seed=7)
    assert seen == [[4]] and len(seqs[0][0]) > 5
    pred.batch = build
    with pytest.raises(ValueError, match="sequence 1: needs at least one event"):
        pred.predict([seqs[0], ([], [])])
    with pytest.raises(ValueError, match="non-decreasing"):
        pred.predict([([1.0, 0.5], [0, 1])])


@pytest.mark.parametrize("model", ["thp", "attnhp", "prompttpp", "hawkes_exp"])
def test_served_prediction_at_the_last_interval_equals_thinning_at_every_interval(tmp_path, model):
    import torch

    from behaviorseq.nn.tpp import thinning_predict
    from behaviorseq.serve.events import EventPredictor

    cfg = _cfg(model, epochs=1)
    run_experiment(cfg, tmp_path / "run")
    pred = EventPredictor.from_run(tmp_path / "run")
    test = synthetic_hawkes(TPPDataConfig.from_dict(cfg["data"]["tpp"]))[0]["test"]
    seqs = [(test.time[test.offsets[i]:test.offsets[i + 1]].tolist()[:12], test.type[test.offsets[i]:test.offsets[i + 1]].tolist()[:12])
            for i in range(8)]
    got = pred.predict(seqs, seed=5)  # thinning on each sequence's last interval only (nn.tpp.state_at)
    batch = pred.batch(seqs)
    with torch.no_grad():
        dt, k, _ = thinning_predict(pred.model, pred.model.encode(batch), pred.dtime_max, *pred.thinning,
                                    noise=pred.noise(5))
    last = batch["mask"].sum(1) - 1
    rows = torch.arange(len(seqs))
    assert [e.type for e in got] == k[rows, last].tolist()
    assert [e.dtime for e in got] == pytest.approx(dt[rows, last].tolist(), rel=1e-6)


def test_split_fractions_and_chunk_length_are_checked():
    from behaviorseq.data.eventseq import EventSequences
    from behaviorseq.tasks.tpp import TPPBatcher

    seqs = EventSequences.from_lists([[0.0, 1.0, 2.0, 3.0]] * 10, [[0, 1, 0, 1]] * 10, 2)
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):  # (0.5, -0.5, 1) overlapped train / test
        seqs.split((0.5, -0.5, 1.0))
    with pytest.raises(ValueError, match="max_len must be None .whole sequences. or >= 2"):  # 1 kept one event a sequence
        TPPBatcher(seqs, 1)
