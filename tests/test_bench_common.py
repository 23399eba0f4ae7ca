"""The per-seed keeping and merging of benchmark result tables (benchmarks/common.py)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import aggregate, finished_run, kept_records, mean_sd, pm  # noqa: E402

METRICS = ["hr@10", "ndcg@10"]


def record(seed, hr, ndcg, sources=("/a/Beauty.txt",)):
    protocol = {"dataset": "beauty", "seed": seed, "split": {"split": "leave_one_out"},
                "preprocessing": [{"step": "load", "sources": list(sources)}]}
    return {"seed": seed, "test": {"hr@10": hr, "ndcg@10": ndcg}, "best_epoch": 10 + seed,
            "seconds_per_epoch": 5.0, "protocol": protocol}


def test_aggregate_gives_mean_and_sample_std_sorted_by_seed():
    row = aggregate(("beauty", "sasrec"), [record(3, 0.3, 0.13), record(1, 0.1, 0.11), record(2, 0.2, 0.12)], METRICS)
    assert row["seeds"] == [1, 2, 3] and row["best_epochs"] == [11, 12, 13]
    assert row["hr@10"]["mean"] == pytest.approx(0.2) and row["hr@10"]["std"] == pytest.approx(0.1)
    assert [r["seed"] for r in row["per_seed"]] == [1, 2, 3] and row["per_seed"][0]["protocol"]["seed"] == 1
    assert aggregate(("beauty", "sasrec"), [record(1, 0.1, 0.11)], METRICS)["hr@10"]["std"] is None


def test_a_merge_checks_each_kept_seed_against_the_new_ones(tmp_path):
    """Each seed keeps its own protocol in the results file, so a seed merged later is checked against it."""
    f = tmp_path / "old.json"
    f.write_text(json.dumps({"results": [aggregate(("beauty", "sasrec"), [record(1, 0.1, 0.11)], METRICS)]}))
    other = record(2, 0.2, 0.12)
    other["protocol"]["split"] = {"split": "temporal"}
    with pytest.raises(SystemExit, match="different protocols"):
        aggregate(("beauty", "sasrec"), kept_records([str(f)], METRICS, ["beauty"])[("beauty", "sasrec")] + [other],
                  METRICS)


def test_mean_sd_is_the_sample_std_of_a_generator():
    mean, sd = mean_sd(x for x in (1.0, 2.0, 4.0))
    assert mean == pytest.approx(7 / 3) and sd == pytest.approx(1.527525, abs=1e-6)  # ddof = 1, not 1.247 (ddof = 0)
    mean, sd = mean_sd([0.5])
    assert mean == 0.5 and sd is None  # one value: no spread, never a fake 0
    assert pm(0.5, None) == "0.500" and pm(0.5, 0.0123, sep="+-") == "0.500+-0.012"
    with pytest.raises(ValueError):
        mean_sd([])


def test_aggregate_refuses_a_repeated_seed_and_mixed_protocols():
    with pytest.raises(SystemExit, match="seed counted twice"):
        aggregate(("beauty", "sasrec"), [record(1, 0.1, 0.1), record(1, 0.2, 0.1)], METRICS)
    other = record(2, 0.2, 0.1)
    other["protocol"]["split"] = {"split": "user_holdout"}
    with pytest.raises(SystemExit, match="different protocols"):
        aggregate(("beauty", "sasrec"), [record(1, 0.1, 0.1), other], METRICS)
    # the same file read from another folder is the same protocol
    aggregate(("beauty", "sasrec"), [record(1, 0.1, 0.1), record(2, 0.2, 0.1, ("../x/Beauty.txt",))], METRICS)
    # a field that an older run did not record is listed, not compared
    newer = record(2, 0.2, 0.1)
    newer["protocol"]["train_windows"] = "last"
    row = aggregate(("beauty", "sasrec"), [record(1, 0.1, 0.1), newer], METRICS)
    assert row["protocol_fields_not_in_every_seed"] == ["train_windows"]


def test_kept_records_round_trip_and_older_rows(tmp_path):
    row = aggregate(("beauty", "sasrec"), [record(1, 0.1, 0.11), record(2, 0.2, 0.12)], METRICS)
    legacy_one = {"dataset": "toys", "model": "sasrec", "seeds": [3], "protocol": record(3, 0, 0)["protocol"],
                  "hr@10": {"mean": 0.3, "std": None}, "ndcg@10": {"mean": 0.13, "std": None},
                  "best_epochs": [7], "seconds_per_epoch": 4.0}
    legacy_many = {**legacy_one, "dataset": "lastfm", "seeds": [1, 2]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"results": [row, legacy_one, legacy_many]}))
    kept = kept_records([str(path)], METRICS, ["beauty", "toys"])
    assert [r["seed"] for r in kept[("beauty", "sasrec")]] == [1, 2]
    assert kept[("beauty", "sasrec")][1]["protocol"]["seed"] == 2
    assert kept[("toys", "sasrec")][0]["test"] == {"hr@10": 0.3, "ndcg@10": 0.13}
    again = aggregate(("beauty", "sasrec"), kept[("beauty", "sasrec")] + [record(3, 0.3, 0.13)], METRICS)
    assert again["seeds"] == [1, 2, 3] and again["hr@10"]["mean"] == pytest.approx(0.2)
    with pytest.raises(SystemExit, match="without per-seed values"):
        kept_records([str(path)], METRICS, ["lastfm"])


def test_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    import yaml

    from behaviorseq.cli_train import build_config
    from behaviorseq.train.run import resolve_config

    cfg = build_config("sasrec", "beauty", None, ["train.seed=2", "train.threads=1"])
    assert finished_run(tmp_path, cfg) is None  # nothing there yet
    stored = resolve_config(cfg).to_dict()
    del stored["train"]["patience"]  # a setting newer than the stored run is not compared
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"hr@10": 0.1}, "environment": {"device": "cuda:0"}}))
    assert finished_run(tmp_path, cfg)["test"]["hr@10"] == 0.1
    amp = build_config("sasrec", "beauty", None, ["train.seed=2", "train.amp=true"])
    with pytest.raises(SystemExit, match="train.amp: False there, True here"):  # it matters on a GPU
        finished_run(tmp_path, amp)
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"hr@10": 0.1}, "environment": {"device": "cpu"}}))
    assert finished_run(tmp_path, amp) is not None  # and does nothing on a CPU
    # paths and thread counts change nothing that is computed
    other_paths = build_config("sasrec", "beauty", None, ["train.seed=2", "train.threads=2", "data.data_root=/x"])
    assert finished_run(tmp_path, other_paths) is not None
    for override, named in (("train.seed=3", "train.seed: 2 there, 3 here"),
                            ("model.dropout=0.2", "model_args.dropout: 0.5 there, 0.2 here")):
        with pytest.raises(SystemExit, match=named):
            finished_run(tmp_path, build_config("sasrec", "beauty", None, ["train.seed=2", override]))
    # aggregating only (no config): the run is taken as it was made
    assert finished_run(tmp_path, None)["test"]["hr@10"] == 0.1
