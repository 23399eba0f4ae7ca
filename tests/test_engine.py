"""The engine: config strictness, a full run folder, exact resume after a kill, DDP evaluation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from behaviorseq.config import ConfigError
from behaviorseq.data.synthetic import SeqRecConfig, generate_seqrec
from behaviorseq.train import RunConfig, compare_runs, evaluate_run, run_experiment
from behaviorseq.train.run import prepare, resolve_config


def write_seqtext(path: Path, n_users=150, n_items=60, seed=0) -> Path:
    table, _ = generate_seqrec(SeqRecConfig(n_users=n_users, n_items=n_items, n_topics=4, stay=0.9,
                                            min_len=6, max_len=20, seed=seed))
    u, i = table.column("user"), table.column("item")
    lines = {}
    for a, b in zip(u.tolist(), i.tolist()):  # tiny test file; fine to loop here
        lines.setdefault(a, []).append(str(b))
    path.write_text("".join(f"{a} {' '.join(v)}\n" for a, v in lines.items()))
    return path


def small_config(data: Path, model="sasrec", **train) -> dict:
    margs = {"sasrec": {"hidden_size": 16, "num_heads": 1, "max_len": 20, "loss": "ce", "dropout": 0.2},
             "gru4rec": {"embedding_size": 16, "hidden_size": 16, "max_len": 20},
             "bert4rec": {"hidden_size": 16, "num_heads": 1, "max_len": 20}}[model]
    return {"model": model, "model_config": margs, "data": {"dataset": str(data)},
            "train": {"epochs": 3, "batch_size": 32, "seed": 3, "threads": 1, **train},
            "eval": {"ks": [5, 10]}}


@pytest.fixture
def data(tmp_path):
    return write_seqtext(tmp_path / "synthetic.txt")


def test_configs_reject_unknown_keys_with_the_valid_ones():
    with pytest.raises(ConfigError, match="valid keys are .*batch_size"):
        RunConfig.from_dict({"train": {"batchsize": 3}})
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_config({"model": "sasrec", "model_config": {"hidden": 3}})
    with pytest.raises(ConfigError, match="registered models"):
        resolve_config({"model": "sasrek"})


def test_overrides_read_leading_zeros_as_decimal_and_name_a_value_given_keys():
    from behaviorseq.config import parse_overrides

    assert parse_overrides(["train.seed=010", "a=-007", "b=0"]) == {"train": {"seed": 10}, "a": -7, "b": 0}  # not octal
    with pytest.raises(ConfigError, match="model was given a value"):  # was a TypeError
        parse_overrides(["model=sasrec", "model.dropout=0.5"])


def test_settings_of_another_task_are_refused_not_ignored():
    auc = {"train": {"early_stop_metric": "auc"}}
    with pytest.raises(ConfigError, match=r"eval.negatives=100, data.split='temporal'.*never reads them|"
                                          r"data.split='temporal', .*eval.negatives=100.*never reads them"):
        resolve_config({"model": "din", "eval": {"negatives": 100}, "data": {"split": "temporal"}, **auc})
    with pytest.raises(ConfigError, match=r"data.tpp=.*the retrieval task never reads it"):
        resolve_config({"model": "sasrec", "data": {"tpp": {"num_types": 9}}})
    resolve_config({"model": "din", "eval": {"batch_size": 64}, **auc})  # what CTR reads is accepted


def test_overrides_read_scientific_notation_as_numbers():
    from behaviorseq.config import parse_overrides

    ov = parse_overrides(["train.lr=1e-3", "train.epochs=1e3", "a=2.5e2", "b=x1e3", "c=[1,2]"])
    assert ov == {"train": {"lr": 0.001, "epochs": 1000}, "a": 250.0, "b": "x1e3", "c": [1, 2]}


def test_cli_reports_bad_settings_and_missing_data_on_stderr(tmp_path, capsys):
    from behaviorseq.cli import main

    assert main(["train", "--model", "sasrec", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["train", "--model", "sasrec", "--out", str(tmp_path / "r"), "train.batchsize=3"]) == 2
    assert "valid keys are" in capsys.readouterr().err


def test_a_users_csv_with_its_own_column_names_trains_from_the_cli(data, tmp_path, capsys):
    from behaviorseq.cli import main

    rows = [line.split() for line in data.read_text().splitlines()]
    csv = tmp_path / "clicks.csv"  # the seqtext users as (uid, sku, ts) rows, columns in another order
    csv.write_text("sku;ts;uid\n" + "".join(f"i{it};{t};u{r[0]}\n" for r in rows for t, it in enumerate(r[1:])))
    out = tmp_path / "run"
    args = ["train", "--model", "sasrec", "--data", str(csv), "train.epochs=1", "model.max_len=20",
            "--out", str(out), "data.columns.user=uid", "data.columns.item=sku", "data.columns.timestamp=ts",
            "data.read.delimiter=;"]  # overrides on both sides of an option
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"]["dataset_stats_after_preprocessing"]["users"] == len(rows)
    assert m["protocol"]["dataset_stats_after_preprocessing"]["events"] == sum(len(r) - 1 for r in rows)
    capsys.readouterr()
    assert main(["train", "--model", "sasrec", "--data", str(csv), "--out", str(tmp_path / "r2")]) == 2
    assert "data.columns.user" in capsys.readouterr().err  # the error says how to map the column
    bad = tmp_path / "bad.csv"  # a malformed row, skipped on request: said in the run's protocol and output
    bad.write_text(csv.read_text() + "i1;notatime;u1\n")
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):  # said once, when the file is read
        assert main(["train", "--model", "mostpop", "--data", str(bad), "--out", str(tmp_path / "run_bad"),
                     "data.columns.user=uid", "data.columns.item=sku", "data.columns.timestamp=ts",
                     "data.read.delimiter=;", "data.read.skip_bad_rows=true"]) == 0
    skipped = json.loads((tmp_path / "run_bad" / "metrics.json").read_text())["protocol"]["skipped_bad_rows"]
    assert skipped["count"] == 1 and skipped["first"][0]["field"] == "ts"
    assert "1 malformed rows were skipped" in capsys.readouterr().out
    assert main(["data", "stats", str(csv), "--column", "user=uid", "--column", "item=sku",
                 "--column", "timestamp=ts", "--no-cache"]) == 2  # ";" is not the default delimiter
    capsys.readouterr()
    (tmp_path / "rb").mkdir()  # a RecBole folder takes no reader arguments; a file of one's own does,
    (tmp_path / "rb" / "x.inter").write_text("user_id:token\titem_id:token\n")  # whatever its name
    with pytest.raises(ConfigError, match="table files"):
        prepare(resolve_config({**small_config(data), "data": {"dataset": str(tmp_path / "rb"),
                                                               "columns": {"user": "a"}}}))
    with pytest.raises(ConfigError, match="unknown reader argument"):
        prepare(resolve_config({**small_config(data), "data": {"dataset": str(csv), "read": {"delim": ";"}}}))
    own = tmp_path / "ratings.csv"  # MovieLens' file name, our own columns
    own.write_text(csv.read_text())
    assert main(["data", "stats", str(own), "--column", "user=uid", "--column", "item=sku", "--column",
                 "timestamp=ts", "--delimiter", ";", "--no-cache"]) == 0
    assert f"users        {len(rows)}" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="retrieval task"):
        resolve_config({"model": "dare", "data": {"columns": {"user": "a"}}, "train": {"early_stop_metric": "auc"}})


def test_run_folder_has_everything_and_the_protocol(data, tmp_path):
    res = run_experiment(small_config(data), tmp_path / "run")
    run = tmp_path / "run"
    for f in ("config.yaml", "log.jsonl", "metrics.json", "curves.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / f).exists(), f
    m = json.loads((run / "metrics.json").read_text())
    p = m["protocol"]
    assert p["ranking"] == "full" and p["exclude_history"] is True and p["split"]["split"] == "leave_one_out"
    assert p["dataset_stats_after_preprocessing"]["users"] == 150 and p["ks"] == [5, 10]
    assert m["test"]["n"] == 150 and 0 <= m["test"]["ndcg@10"] <= m["test"]["hr@10"] <= 1
    assert len([x for x in (run / "log.jsonl").read_text().splitlines() if x]) == 3
    again = evaluate_run(run)
    assert again["test"] == pytest.approx(res["test"])
    sampled = evaluate_run(run, overrides={"eval": {"negatives": 20}})
    assert sampled["protocol"]["ranking"] == "sampled-20-uniform"
    assert sampled["test"]["hr@10"] >= res["test"]["hr@10"]  # 20 negatives are easier than all items
    table, rows = compare_runs([run, run], out=tmp_path / "cmp.png")
    assert "hr@10" in table and (tmp_path / "cmp.png").exists() and len(rows) == 2


def test_same_seed_same_metrics(data, tmp_path):
    a = run_experiment(small_config(data, epochs=2), tmp_path / "a")
    b = run_experiment(small_config(data, epochs=2), tmp_path / "b")
    assert a["test"] == b["test"]


def _cli_train(cfg: dict, out: Path, env: dict, resume=False) -> subprocess.CompletedProcess:
    cfg_file = out.parent / f"{out.name}.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "behaviorseq.cli", "train", "--model", cfg["model"], "--config", str(cfg_file),
           "--out", str(out)] + (["--resume"] if resume else [])
    return subprocess.run(cmd, env={**os.environ, "BEHAVIORSEQ_PROGRESS": "0", **env}, capture_output=True, text=True)


@pytest.mark.parametrize("model", ["sasrec", "bert4rec"])
def test_resume_after_kill_gives_the_same_final_metrics(data, tmp_path, model):
    cfg = small_config(data, model, epochs=3, checkpoint_every_steps=2)
    full = _cli_train(cfg, tmp_path / "full", {})
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _cli_train(cfg, tmp_path / "killed", {"BEHAVIORSEQ_KILL_AT_STEP": "7"})  # mid-epoch 2, after ckpt 6
    assert killed.returncode != 0 and not (tmp_path / "killed" / "metrics.json").exists()
    resumed = _cli_train(cfg, tmp_path / "killed", {}, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert a["test"] == b["test"] and a["valid"] == b["valid"] and a["best_epoch"] == b["best_epoch"]
    la = [json.loads(x)["train_loss"] for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train_loss"] for x in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert la == lb


def test_a_used_folder_is_refused_or_replaced_never_mixed(data, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    out = tmp_path / "run"
    run_experiment(small_config(data, epochs=2), out)
    before = {f: (out / f).read_bytes() for f in ("config.yaml", "metrics.json", "checkpoints/best.pt")}
    with pytest.raises(ConfigError, match="already holds a run"):
        run_experiment(small_config(data, epochs=2, lr=0.01), out)
    assert all((out / f).read_bytes() == b for f, b in before.items())  # untouched
    with pytest.raises(ConfigError, match="early_stop_metric 'ndcg@10'"):  # checked before anything is deleted
        run_experiment({**small_config(data), "eval": {"ks": [20]}}, out, overwrite=True)
    from behaviorseq.data.datasets import DatasetNotFound

    with pytest.raises(DatasetNotFound):  # and so is the data
        run_experiment(small_config(tmp_path / "missing.txt"), out, overwrite=True)
    if not torch.cuda.is_available():  # a device that is not there: refused before the old run is deleted
        with pytest.raises(ConfigError, match="train.device=cuda"):
            run_experiment(small_config(data, epochs=2, device="cuda"), out, overwrite=True)
    with pytest.raises(ConfigError, match="early_stop_metric 'recall@10'"):  # leave-one-out reports no recall@K
        run_experiment(small_config(data, epochs=2, early_stop_metric="recall@10"), out, overwrite=True)
    assert all((out / f).read_bytes() == b for f, b in before.items())
    # a run that ends before its first evaluation: no best.pt and no metrics of the old run
    res = run_experiment(small_config(data, epochs=2, eval_every=5, time_limit_s=0.0), out, overwrite=True)
    assert res["best_epoch"] == -1 and not (out / "checkpoints" / "best.pt").exists()
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == -1


def test_evaluate_refuses_changed_data_and_compare_flags_other_protocols(data, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    own = tmp_path / "own.txt"
    own.write_text(data.read_text())
    run_experiment(small_config(own, epochs=1), tmp_path / "a")
    run_experiment({**small_config(own, epochs=1), "eval": {"ks": [5, 10], "ties": "optimistic"}}, tmp_path / "b")
    table, rows = compare_runs([tmp_path / "a", tmp_path / "b"])
    assert "WARNING: these runs differ in ties;" in table  # the same data and ranking, other ties
    assert "WARNING" not in compare_runs([tmp_path / "a", tmp_path / "a"])[0]
    sampled = evaluate_run(tmp_path / "a", overrides=["eval.negatives=20", "eval.seed=7"])  # key=value strings
    assert sampled["protocol"]["negatives_seed"] == 7 and sampled["protocol"]["ranking"] == "sampled-20-uniform"
    full = evaluate_run(tmp_path / "a")
    kept = [json.loads(f.read_text()) for f in (tmp_path / "a" / "evaluations").iterdir()]
    assert sorted(json.dumps(k["overrides"], sort_keys=True) for k in kept) == sorted(  # both protocols kept
        [json.dumps({"eval": {"negatives": 20, "seed": 7}}, sort_keys=True), "{}"])
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text())["test"] == full["test"]  # the latest
    other_ks = evaluate_run(tmp_path / "a", overrides=["eval.ks=[20,50]"])  # early stopping's ndcg@10 is not needed
    assert "hr@50" in other_ks["test"]
    monkeypatch.chdir(tmp_path)  # a run started with a relative path (older CLIs stored it so) resumes
    cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    cfg["data"]["dataset"] = "own.txt"
    (tmp_path / "a" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_experiment(small_config(own.resolve(), epochs=1), tmp_path / "a", resume=True)
    lines = data.read_text().splitlines()  # the same users, items and events; two events swap places
    a, *rest = lines[0].split()
    j = next(i for i in range(1, len(rest)) if rest[i] != rest[0])
    rest[0], rest[j] = rest[j], rest[0]
    own.write_text("\n".join([" ".join([a, *rest])] + lines[1:]) + "\n")
    with pytest.raises(ConfigError, match="fingerprint"):
        evaluate_run(tmp_path / "a")
    with pytest.raises(ConfigError, match="its data changed since the run started"):  # it went on silently
        run_experiment(small_config(own.resolve(), epochs=2), tmp_path / "a", resume=True)
    own.write_text(data.read_text() + "99999 1 2 3 4 5\n")  # a user more
    with pytest.raises(ConfigError, match="changed since it was trained"):
        evaluate_run(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        evaluate_run(tmp_path / "nothing")


def test_resume_refuses_changed_settings_but_not_where_it_runs(data, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    out = tmp_path / "run"
    run_experiment(small_config(data, epochs=1), out)
    with pytest.raises(ConfigError, match=r"train.lr: 0.001 -> 0.01"):
        run_experiment(small_config(data, epochs=1, lr=0.01), out, resume=True)
    run_experiment(small_config(data, epochs=2, threads=2, time_limit_s=100.0), out, resume=True)  # allowed
    # the model's default spelled out is the same setting (SASRec trains on each user's last window)
    run_experiment(small_config(data, epochs=2, train_windows="last"), out, resume=True)
    with pytest.raises(ConfigError, match="train.train_windows: 'last' -> 'all'"):
        run_experiment(small_config(data, epochs=2, train_windows="all"), out, resume=True)


def test_resume_check_sees_filled_dicts_added_keys_and_schedules(tmp_path):
    import yaml

    from behaviorseq.train.run import check_resume_config

    def saved(cfg: dict, drop: str | None = None) -> None:
        d = resolve_config(cfg).to_dict()
        if drop:  # a key the code did not have when the run started
            d["model_args"].pop(drop)
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(d))

    base = {"model": "sasrec", "data": {"dataset": "x"}}
    saved(base)
    with pytest.raises(ConfigError, match="data.split_args"):  # {} -> {"seed": 5}
        check_resume_config(tmp_path, resolve_config({**base, "data": {"dataset": "x", "split_args": {"seed": 5}}}))
    check_resume_config(tmp_path, resolve_config({**base, "data": {"dataset": "x", "data_root": "/elsewhere"}}))
    sr = {"model": "sracl", "data": {"dataset": "x"}}
    saved(sr, drop="item_ties")  # started before item_ties: it used "topk"
    with pytest.raises(ConfigError, match="item_ties: 'topk' -> 'random'"):
        check_resume_config(tmp_path, resolve_config(sr))
    check_resume_config(tmp_path, resolve_config({**sr, "model_config": {"item_ties": "topk"}}))
    saved({**sr, "model_config": {"item_ties": "random"}}, drop="prefix_ties")  # started before prefix_ties
    with pytest.raises(ConfigError, match="prefix_ties: 'topk' -> 'random'"):
        check_resume_config(tmp_path, resolve_config(sr))
    check_resume_config(tmp_path, resolve_config({**sr, "model_config": {"prefix_ties": "topk"}}))
    # eval.exclude_history unset is the data set's stated default, spelled out the same setting
    from behaviorseq.data.datasets import REGISTRY

    for name, spec in [("x", None), *[(k, v) for k, v in REGISTRY.items() if k in ("lastfm", "beauty")]]:
        ex = spec.exclude_history if spec is not None else True
        dflt = {"model": "sasrec", "data": {"dataset": name}}
        saved(dflt)
        check_resume_config(tmp_path, resolve_config({**dflt, "eval": {"exclude_history": ex}}))
        with pytest.raises(ConfigError, match="eval.exclude_history"):
            check_resume_config(tmp_path, resolve_config({**dflt, "eval": {"exclude_history": not ex}}))
        saved({**dflt, "eval": {"exclude_history": ex}})
        check_resume_config(tmp_path, resolve_config(dflt))
    sched = {**base, "train": {"scheduler": "warmup_linear", "epochs": 10}}
    saved(sched)
    with pytest.raises(ConfigError, match="train.epochs"):
        check_resume_config(tmp_path, resolve_config({**base, "train": {"scheduler": "warmup_linear", "epochs": 20}}))


def test_a_config_files_model_config_merges_with_cli_overrides(data, tmp_path):
    from behaviorseq.cli_train import build_config

    f = tmp_path / "c.yaml"
    f.write_text("model_config:\n  hidden_size: 48\n")
    cfg = resolve_config(build_config("sasrec", None, str(f), ["model.num_heads=1", "model.hidden_size=32"]))
    assert cfg.model_args["hidden_size"] == 32 and cfg.model_args["num_heads"] == 1
    assert cfg.model_args["dropout"] == 0.5 and cfg.model_args["loss"] == "ce"  # the packaged sasrec.yaml stays
    with pytest.raises(ConfigError, match="not both"):
        RunConfig.from_dict({"model_config": {"a": 1}, "model_args": {"b": 2}})


def _ddp_eval_worker(rank: int, world: int, init: str, cfg: dict, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    store, split, model, task = prepare(resolve_config(cfg))
    res = {r: task.evaluate(model, r, torch.device("cpu"), rank, world) for r in ("valid", "test")}
    if rank == 0:
        Path(out).write_text(json.dumps(res))
    torch.distributed.destroy_process_group()


def test_distributed_evaluation_equals_one_process(data, tmp_path):
    cfg = small_config(data)
    store, split, model, task = prepare(resolve_config(cfg))
    single = {r: task.evaluate(model, r, torch.device("cpu")) for r in ("valid", "test")}
    out = tmp_path / "ddp.json"
    torch.multiprocessing.spawn(_ddp_eval_worker, args=(2, f"file://{tmp_path / 'pg'}", cfg, str(out)), nprocs=2)
    multi = json.loads(out.read_text())
    for r in ("valid", "test"):
        assert multi[r]["n"] == single[r]["n"]
        for k in single[r]:
            assert multi[r][k] == pytest.approx(single[r][k], rel=1e-12, abs=1e-12)


def test_ddp_training_under_torchrun_style_env(data, tmp_path):
    """Two gloo processes train three epochs together: they agree on the weights afterwards, metrics.json
    reports the final best weights (a single-process re-evaluation of best.pt gives the same numbers), and a
    warm-up + linear schedule reaches 0 at the end (its length counts each rank's own steps)."""
    cfg = small_config(data, epochs=3, scheduler="warmup_linear", warmup_steps=2, patience=5)
    out = tmp_path / "ddp_run"
    torch.multiprocessing.spawn(_ddp_train_worker, args=(2, f"file://{tmp_path / 'pg2'}", cfg, str(out)), nprocs=2)
    w0 = torch.load(out / "w0.pt")
    w1 = torch.load(out / "w1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    m = json.loads((out / "metrics.json").read_text())
    again = evaluate_run(out)
    assert m["valid"] == pytest.approx(again["valid"]) and m["test"] == pytest.approx(again["test"])
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def _ddp_train_worker(rank: int, world: int, init: str, cfg: dict, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    from behaviorseq.train import run as run_mod

    run_experiment(cfg, out)
    store, split, model, task = run_mod.prepare(resolve_config(cfg))
    model.load_state_dict(torch.load(Path(out) / "checkpoints" / "best.pt"))
    torch.distributed.barrier()
    torch.save(model.state_dict(), Path(out) / f"w{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_resume_after_a_kill_mid_epoch_is_exact(data, tmp_path):
    """Two gloo ranks killed together after a mid-epoch checkpoint, then resumed: the result is the
    uninterrupted run's. Rank 1 used to redo its last step (a collective mismatch), and every rank restored rank
    0's RNG states (dropout draws differ by rank)."""
    # small batches: their widths (the longest sequence of each) differ, and so do the ranks' dropout draws
    cfg = small_config(data, epochs=2, checkpoint_every_steps=3, batch_size=4)
    full, cut = tmp_path / "full", tmp_path / "cut"
    spawn = torch.multiprocessing.spawn
    spawn(_ddp_resume_worker, args=(2, f"file://{tmp_path / 'pg_a'}", cfg, str(full), -1, False), nprocs=2)
    with pytest.raises(Exception, match="signal|SIGKILL|exit"):  # both ranks die at their 4th step
        spawn(_ddp_resume_worker, args=(2, f"file://{tmp_path / 'pg_b'}", cfg, str(cut), 4, False), nprocs=2)
    ck = torch.load(cut / "checkpoints" / "last.pt", weights_only=False)
    assert ck["state"]["global_step"] == 3 and ck["state"]["step_in_epoch"] % 2 == 0  # a round of both ranks
    assert len(ck["rng_ranks"]) == 2
    assert not torch.equal(ck["rng_ranks"][0]["torch"], ck["rng_ranks"][1]["torch"])  # what the resume must tell apart
    spawn(_ddp_resume_worker, args=(2, f"file://{tmp_path / 'pg_c'}", cfg, str(cut), -1, True), nprocs=2)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (full, cut))
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    la, lb = ([json.loads(x)["train_loss"] for x in (d / "log.jsonl").read_text().splitlines()] for d in (full, cut))
    assert la == lb


def _ddp_resume_worker(rank: int, world: int, init: str, cfg: dict, out: str, kill_at: int, resume: bool) -> None:
    from datetime import timedelta

    from behaviorseq.train import trainer

    os.environ["BEHAVIORSEQ_PROGRESS"] = "0"
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                                         timeout=timedelta(seconds=120))  # a mismatch fails, never hangs the suite
    trainer._KILL_AT_STEP = kill_at
    run_experiment(cfg, out, resume=resume)
    torch.distributed.destroy_process_group()


def test_planted_data_sasrec_learns_beyond_popularity(tmp_path):
    """On topic-persistent synthetic users SASRec must beat the popularity ranker by a margin."""
    data = write_seqtext(tmp_path / "s.txt", n_users=400, n_items=80, seed=1)
    res = run_experiment(small_config(data, epochs=15, lr=0.01), tmp_path / "r")
    store, split, _, _ = prepare(resolve_config(small_config(data)))
    counts = np.bincount(np.asarray(store.item)[split.roles == 0], minlength=store.num_items + 1)
    from behaviorseq.metrics import per_sample_ranking_metrics, target_ranks

    tgt = torch.from_numpy(np.asarray(store.item)[split.test.target_start])
    pop = torch.from_numpy(counts.astype(np.float32)).expand(len(tgt), -1).clone()
    pop_hr = float(per_sample_ranking_metrics(target_ranks(pop, tgt), [10])["hr@10"].mean())
    assert res["test"]["hr@10"] > pop_hr + 0.1, (res["test"]["hr@10"], pop_hr)


def test_a_time_limited_run_resumes_to_the_uninterrupted_result(data, tmp_path):
    """time_limit_s stops after the running epoch, with a result; --resume (with a later or no limit) goes on
    from there, and ends where one uninterrupted run ends (same losses, same metrics)."""
    full = run_experiment(small_config(data, epochs=3), tmp_path / "full")
    cut = run_experiment(small_config(data, epochs=3, time_limit_s=0.0), tmp_path / "cut")
    log = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["stopped_by_time_limit"] and "test" in cut
    again = run_experiment(small_config(data, epochs=3), tmp_path / "cut", resume=True)
    la = [json.loads(x)["train_loss"] for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train_loss"] for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert la == lb and len(lb) == 3
    assert again["test"] == full["test"] and again["best_epoch"] == full["best_epoch"]


def test_a_dataframe_trains_like_its_csv_and_the_run_keeps_it(tmp_path):
    import pandas as pd

    from behaviorseq.train import evaluate_run

    table, _ = generate_seqrec(SeqRecConfig(n_users=120, n_items=50, n_topics=4, min_len=6, max_len=16, seed=4))
    df = table.events.to_pandas().rename(columns={"user": "uid", "item": "sku", "timestamp": "ts"})
    df.to_csv(tmp_path / "clicks.csv", index=False)
    cfg = small_config(tmp_path / "clicks.csv", epochs=2)
    cfg["data"]["columns"] = {"user": "uid", "item": "sku", "timestamp": "ts"}
    from_file = run_experiment(cfg, tmp_path / "file")
    from_frame = run_experiment({**cfg, "data": {"columns": cfg["data"]["columns"]}}, tmp_path / "frame", data=df)
    assert from_frame["test"] == pytest.approx(from_file["test"])
    kept = list((tmp_path / "frame").glob("events-*.parquet"))
    assert len(kept) == 1 and pd.read_parquet(kept[0]).equals(df)
    again = evaluate_run(tmp_path / "frame", roles=("test",))  # re-reads the kept table, not the caller's frame
    assert again["test"]["hr@10"] == pytest.approx(from_frame["test"]["hr@10"])
    with pytest.raises(ConfigError, match="data.dataset"):  # other data on --resume: refused by the config check
        run_experiment({**cfg, "data": {"columns": cfg["data"]["columns"]}}, tmp_path / "frame", resume=True,
                       data=df.iloc[:-5])
    with pytest.raises(ConfigError, match="already holds a run"):  # a used folder: the refused table is not left
        run_experiment({**cfg, "data": {"columns": cfg["data"]["columns"]}}, tmp_path / "frame", data=df.iloc[:-5])
    assert list((tmp_path / "frame").glob("events-*.parquet")) == kept
    run_experiment({**cfg, "data": {"columns": cfg["data"]["columns"]}}, tmp_path / "frame", overwrite=True,
                   data=df.iloc[:-5])
    assert len(list((tmp_path / "frame").glob("events-*.parquet"))) == 1 and not kept[0].exists()
    # retrained from its own config (the CLI's --config runs/x/config.yaml --overwrite): its table stays
    import shutil

    import yaml

    own = yaml.safe_load((tmp_path / "frame" / "config.yaml").read_text())
    run_experiment(own, tmp_path / "frame", overwrite=True)
    assert Path(own["data"]["dataset"]).exists()
    shutil.move(tmp_path / "frame", tmp_path / "moved")  # a moved folder reads its own kept table
    assert evaluate_run(tmp_path / "moved", roles=("test",))["test"]["n"] > 0
    with pytest.raises(ConfigError, match="tpp metric"):  # a refused start leaves no folder behind
        run_experiment({"model": "nhp"}, tmp_path / "fresh", data=df)
    assert not (tmp_path / "fresh").exists()


def test_a_resume_that_replaces_the_best_weights_drops_their_old_re_evaluations(data, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    run_experiment(small_config(data, epochs=1), tmp_path / "r")
    evaluate_run(tmp_path / "r", overrides=["eval.negatives=20"])
    run_experiment(small_config(data, epochs=1), tmp_path / "r", resume=True)  # nothing more to train: kept
    assert (tmp_path / "r" / "evaluation.json").exists()
    best = (tmp_path / "r" / "checkpoints" / "best.pt").read_bytes()
    with pytest.warns(UserWarning, match="removed evaluation.json, evaluations"):
        run_experiment(small_config(data, epochs=4), tmp_path / "r", resume=True)
    assert (tmp_path / "r" / "checkpoints" / "best.pt").read_bytes() != best
    assert not (tmp_path / "r" / "evaluation.json").exists() and not (tmp_path / "r" / "evaluations").exists()


def test_compare_flags_event_stream_runs_predicted_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    base = {"model": "hawkes_exp", "data": {"dataset": "synthetic-hawkes", "tpp": {"n_seqs": 40, "max_events": 20}},
            "train": {"epochs": 1, "threads": 1, "early_stop_metric": "loglik"}}
    run_experiment(base, tmp_path / "a")
    other = {**base, "data": {**base["data"], "tpp": {**base["data"]["tpp"], "task": {"thinning_samples": 3}}}}
    run_experiment(other, tmp_path / "b")
    assert "differ in ranking" in compare_runs([tmp_path / "a", tmp_path / "b"])[0]
    assert "WARNING" not in compare_runs([tmp_path / "a", tmp_path / "a"])[0]


def test_build_config_is_case_blind_follows_the_dataset_however_given_and_merges_model_keys(tmp_path):
    from behaviorseq.train.packaged import build_config

    ref = build_config("sasrec", "ml-100k")
    assert build_config("SASRec", "ml-100k") == ref  # packaged YAMLs were skipped for another spelling
    via = build_config("sasrec", None, None, ["data.dataset=ml-100k"])  # sasrec_ml-100k.yaml applies here too
    assert via["train"]["train_windows"] == ref["train"]["train_windows"] and via["model_args"] == ref["model_args"]
    both = build_config("sasrec", "ml-100k", None, ["model_args.loss=bce", "model.dropout=0.1"])
    assert both["model_args"]["loss"] == "bce" and both["model_args"]["dropout"] == 0.1  # model.* dropped model_args.*
    (tmp_path / "other.yaml").write_text("model: bert4rec\n")
    with pytest.raises(ConfigError, match="names model 'bert4rec', the command --model 'sasrec'"):
        build_config("sasrec", "ml-100k", str(tmp_path / "other.yaml"))
    (tmp_path / "empty.yaml").write_text("data:  # nothing yet\ntrain:\n  seed: 010\n")
    with pytest.raises(ConfigError, match="empty.yaml: data must be a section"):  # it wiped the packaged data
        build_config("lbsf", None, str(tmp_path / "empty.yaml"))
    (tmp_path / "nums.yaml").write_text("train:\n  seed: 010\n  epochs: 1e2\n  lr: 1e-3\n")
    t = build_config("sasrec", "ml-100k", str(tmp_path / "nums.yaml"))["train"]
    assert (t["seed"], t["epochs"], t["lr"]) == (10, 100.0, 0.001)  # octal 8 and the string '1e-3' before
    (tmp_path / "bad.yaml").write_text("train: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        build_config("sasrec", "ml-100k", str(tmp_path / "bad.yaml"))


def test_evaluate_takes_eval_settings_only(data, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    run_experiment(small_config(data, epochs=1), tmp_path / "r")
    for bad in (["train.lr=0.5"], ["train.seed=7"], ["model.hidden_size=8"], ["data.split=temporal"]):
        with pytest.raises(ConfigError, match="evaluate takes eval.\\* settings"):  # no-ops, or a wrong protocol
            evaluate_run(tmp_path / "r", overrides=bad)
    assert "hr@10" in evaluate_run(tmp_path / "r", overrides=["eval.ties=optimistic", "train.threads=1"])["test"]
