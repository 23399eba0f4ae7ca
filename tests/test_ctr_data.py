"""Tests of real data as CTR samples (``data.ctr_datasets``) and of the CTR route through runs and the CLI:
ml-100k-CTR labels, histories, item fields and splits against a pandas reference; DARE's protocol on a
tiny Taobao-layout CSV; one short training run through the API and one through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import shared_data

from behaviorseq.config import ConfigError
from behaviorseq.data.ctr import TEST, TRAIN, VALID
from behaviorseq.data.ctr_datasets import (
    ML100KCTRConfig,
    TaobaoCTRConfig,
    ml100k_ctr,
    open_ctr_dataset,
    taobao_ctr,
)
from behaviorseq.data.datasets import open_dataset
from behaviorseq.data.loaders import read_taobao

ML100K = shared_data() / "ml-100k"

# ---------------------------------------------------------------- ml-100k as CTR


def _toy_ml100k(path):
    """A RecBole ml-100k folder with same-timestamp ratings (file order must break the ties), items
    listed with several genres, and item 21 rated but absent from the item file (no genre, no year)."""
    path.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 9):
        n = int(rng.integers(12, 30))
        t = np.sort(rng.integers(0, 15, n)) * 10 + 800_000_000  # many ties
        order = rng.permutation(n)  # file order is not time order
        for k in order:
            rows.append((str(u * 7), str(int(rng.integers(1, 22))), float(rng.integers(1, 6)), int(t[k])))
    (path / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                        + "".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in rows))
    genres = ["Drama", "Comedy Romance", "Action Thriller War", "unknown"]
    items = "".join(f"{i}\tTitle {i}\t{'' if i == 5 else 1980 + i % 7}\t{genres[i % 4]}\n" for i in range(1, 21))
    (path / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                       + items)
    return path


def _slice_of_real_ml100k(path, n_rows=3000):
    if not (ML100K / "ml-100k.inter").exists():
        pytest.skip(f"ml-100k not found at {ML100K}")
    path.mkdir()
    with open(ML100K / "ml-100k.inter") as fh:
        head = [next(fh) for _ in range(n_rows + 1)]
    (path / "ml-100k.inter").write_text("".join(head))
    shutil.copy(ML100K / "ml-100k.item", path / "ml-100k.item")
    return path


def _pandas_reference(folder, min_history=1, n_valid=5, n_test=5):
    """One row per sample: raw user, raw target, label, raw history items, role, first genre, year."""
    ev = pd.read_csv(folder / "ml-100k.inter", sep="\t", dtype=str)
    ev.columns = ["user", "item", "rating", "t"]
    ev["rating"], ev["t"] = ev["rating"].astype(float), ev["t"].astype(float)
    ev = ev.sort_values(["user", "t"], kind="stable").reset_index(drop=True)  # ties keep file order
    ev["pos"] = ev.groupby("user").cumcount()
    ev["back"] = ev.groupby("user")["item"].transform("size") - ev["pos"]
    hist = {u: list(g["item"]) for u, g in ev.groupby("user")}
    ev["history"] = [tuple(hist[u][:p]) for u, p in zip(ev["user"], ev["pos"])]
    ev = ev[ev["pos"] >= min_history].copy()
    ev["label"] = (ev["rating"] >= 4).astype(int)
    ev["role"] = np.where(ev["back"] <= n_test, TEST, np.where(ev["back"] <= n_test + n_valid, VALID, TRAIN))
    it = pd.read_csv(folder / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    it.columns = ["item", "title", "year", "genres"]
    genre = dict(zip(it["item"], it["genres"].str.split(" ").str[0]))
    year = dict(zip(it["item"], it["year"]))
    ev["genre"], ev["year"] = ev["item"].map(genre).fillna("<none>"), ev["item"].map(year).fillna("<none>")
    return ev


def _decoded(store, data):
    """The same columns read back from CTRData through the store's vocabularies."""
    n = len(data.user)
    items = data.events["item"]
    user = store.raw_users(data.user + 1)
    target = store.raw_items(data.target)
    hists = [tuple(store.raw_items(items[data.offsets[u]:e])) for u, e in zip(data.user, data.hist_end)]
    genre_vocab = store.items["class"].vocab.to_pylist()
    year_vocab = store.items["release_year"].vocab.to_pylist()
    cat = data.item_fields["category"][data.target]
    yr = data.item_fields["year"][data.target]
    return pd.DataFrame({"user": user, "item": target, "label": data.label.astype(int), "history": hists,
                         "role": data.role.astype(int),
                         "genre": [genre_vocab[c] if c < len(genre_vocab) else "<none>" for c in cat],
                         "year": [year_vocab[y] if y < len(year_vocab) else "<none>" for y in yr]}, index=range(n))


@pytest.mark.parametrize("source", ["toy", "real_slice"])
def test_ml100k_ctr_matches_a_pandas_reference(tmp_path, source):
    folder = (_toy_ml100k if source == "toy" else _slice_of_real_ml100k)(tmp_path / "ml-100k")
    store = open_dataset(folder, cache=False)
    data = ml100k_ctr(store)
    got = _decoded(store, data).sort_values(["user", "history"]).reset_index(drop=True)
    ref = _pandas_reference(folder)
    ref = ref[["user", "item", "label", "history", "role", "genre", "year"]]
    ref = ref.sort_values(["user", "history"]).reset_index(drop=True)
    assert len(got) == len(ref) == store.num_events - store.num_users  # every rating but each user's first
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)
    # the event fields are the target-side tables applied to the history items
    for k in ("category", "year"):
        assert np.array_equal(data.events[k], data.item_fields[k][data.events["item"]])
    assert data.item_fields["category"][1:].min() >= 1 and data.item_fields["year"][1:].min() >= 1


def test_ml100k_ctr_gives_missing_item_fields_their_own_id(tmp_path):
    store = open_dataset(_toy_ml100k(tmp_path / "ml-100k"), cache=False)
    data = ml100k_ctr(store)
    code21 = int(np.flatnonzero(np.array(store.raw_items(np.arange(1, store.num_items + 1))) == "21")[0]) + 1
    for k in ("category", "year"):
        assert data.report[f"{k}_missing_items"] == 1
        assert data.item_fields[k][code21] == data.report[f"{k}_missing_id"] == data.vocab_size(k) - 1


def test_ml100k_ctr_temporal_split_orders_roles_by_time(tmp_path):
    store = open_dataset(_toy_ml100k(tmp_path / "ml-100k"), cache=False)
    data = ml100k_ctr(store, ML100KCTRConfig(split="temporal", valid_fraction=0.2, test_fraction=0.2))
    t = np.asarray(store.timestamp)[data.hist_end]
    tr, va, te = (t[data.role == r] for r in (TRAIN, VALID, TEST))
    assert len(tr) and len(va) and len(te)
    assert tr.max() < va.min() and va.max() < te.min()
    assert data.report["split"] == "temporal" and data.report["test_from"] == te.min()


def test_ml100k_ctr_config_is_strict_and_missing_fields_are_named(tmp_path):
    with pytest.raises(ConfigError, match="valid keys"):
        ML100KCTRConfig.from_dict({"n_tests": 3})
    folder = _toy_ml100k(tmp_path / "ml-100k")
    (folder / "ml-100k.item").unlink()
    with pytest.raises(KeyError, match="class"):
        ml100k_ctr(open_dataset(folder, cache=False))


# ---------------------------------------------------------------- Taobao through DARE's protocol

L = 20  # max_len: users need >= 30 page views


@pytest.fixture
def taobao_csv(tmp_path):
    """UserBehavior.csv layout: user,item,category,behavior,timestamp; rows shuffled (not in time order)."""
    rng = np.random.default_rng(3)
    rows = []
    n_pv = {101: 45, 102: 30, 103: 29, 104: 60, 105: 12}  # 103 and 105 have too few page views
    for u, n in n_pv.items():
        t = 1_511_000_000 + np.sort(rng.choice(100_000, n, replace=False))
        for k in range(n):
            item = int(rng.integers(1, 80))
            rows.append((u, 5000 + item, 900 + item % 7, "pv", int(t[k])))
        for k in range(int(rng.integers(3, 8))):  # other behaviours never enter the histories
            rows.append((u, 7000 + k, 999, str(rng.choice(["cart", "fav", "buy"])), int(t[0]) + 7 * k))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    p = tmp_path / "UserBehavior.csv"
    p.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    return p


def test_taobao_dare_protocol_on_a_tiny_csv(taobao_csv):
    table = read_taobao(taobao_csv)
    offsets_cfg = (3, 8)
    data = taobao_ctr(table, TaobaoCTRConfig(max_len=L, train_offsets=offsets_cfg, n_negatives=2, seed=1))

    df = pd.read_csv(taobao_csv, header=None, names=["user", "item", "cat", "beh", "t"])
    pv = df[df["beh"] == "pv"].sort_values(["user", "t"], kind="stable")
    user_ids = np.sort(pv["user"].unique())
    item_ids = np.sort(pv["item"].unique())
    seqs = {u: g["item"].to_numpy() for u, g in pv.groupby("user")}
    kept = [u for u in user_ids if len(seqs[u]) >= L + 10]
    assert kept == [101, 102, 104] and data.report["rows_kept"] == 3

    raw_user = user_ids[data.user]
    raw_target = item_ids[data.target - 1]
    items = data.events["item"]
    pos = data.label == 1
    k = 1 + 2
    assert pos.sum() * k == len(data.label) and np.array_equal(np.flatnonzero(pos), np.arange(0, len(pos), k))
    back = np.array([*offsets_cfg, 2, 1])
    roles = np.array([TRAIN] * len(offsets_cfg) + [VALID, TEST])
    for j in np.flatnonzero(pos):
        u = raw_user[j]
        seq = seqs[u]
        b = data.offsets[data.user[j] + 1] - data.hist_end[j]  # the positive is the event at -b
        hist = item_ids[items[data.offsets[data.user[j]]:data.hist_end[j]] - 1]
        assert raw_target[j] == seq[-b] and np.array_equal(hist, seq[:-b])
        negs = raw_target[j + 1:j + k]
        assert not np.isin(negs, seq).any()  # never an item of the user's (page-view) history
        assert (data.hist_end[j + 1:j + k] == data.hist_end[j]).all()  # negatives share the history
    # per user: targets at -3, -8 (train), -2 (valid), -1 (test), in that order
    for r in range(3):
        mine = np.flatnonzero(pos & (data.user == np.flatnonzero(np.isin(user_ids, kept))[r]))
        assert np.array_equal(data.offsets[data.user[mine] + 1] - data.hist_end[mine], back)
        assert np.array_equal(data.role[mine], roles)
    # categories: the event's own, and the item table agrees with the file
    raw_cat = dict(zip(pv["item"], pv["cat"]))
    cat_ids = np.sort(pv["cat"].unique())
    assert np.array_equal(cat_ids[data.item_fields["category"][data.target] - 1],
                          [raw_cat[i] for i in raw_target])
    assert data.report["behaviors"] == ["pv"] and data.report["events_kept"] == len(pv)


def test_taobao_store_is_cached_and_gives_the_same_samples(taobao_csv, tmp_path, monkeypatch):
    from behaviorseq.data import ctr_datasets

    cfg = {"max_len": L, "train_offsets": (3, 8), "n_negatives": 2, "seed": 1}
    direct = taobao_ctr(read_taobao(taobao_csv), TaobaoCTRConfig(**cfg))
    a = open_ctr_dataset(str(taobao_csv), cfg, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(ctr_datasets, "taobao_store", lambda *a, **k: pytest.fail("parsed again"))
    b = open_ctr_dataset(str(taobao_csv.parent), cfg, cache_dir=tmp_path / "cache")  # the folder: same file
    for d in (a, b):
        for k in ("offsets", "user", "hist_end", "target", "label", "role"):
            assert np.array_equal(getattr(d, k), getattr(direct, k)), k
        assert d.raw_items.to_pylist() == direct.raw_items.to_pylist() == sorted(direct.raw_items.to_pylist())
        assert d.report["events_kept"] == direct.report["events_kept"] and d.report["events_read"] > d.report["events_kept"]
    monkeypatch.undo()
    other = open_ctr_dataset(str(taobao_csv), {**cfg, "behaviors": ("pv", "buy")}, cache_dir=tmp_path / "cache")
    assert other.report["events_kept"] > a.report["events_kept"]  # another behaviour set: its own entry
    assert len(list((tmp_path / "cache").iterdir())) == 2
    from behaviorseq.data.datasets import open_dataset

    with pytest.raises(ValueError, match="behaviours are unknown"):  # a plain store holds every behaviour
        taobao_ctr(open_dataset(str(taobao_csv), cache_dir=tmp_path / "c2"), TaobaoCTRConfig(**cfg))
    with pytest.raises(ValueError, match="config asks for"):
        taobao_ctr(ctr_datasets.open_taobao(taobao_csv, ("pv",), cache_dir=tmp_path / "cache"),
                   TaobaoCTRConfig(**cfg, behaviors=("pv", "buy")))


def test_taobao_without_long_enough_users_names_the_file(taobao_csv):
    with pytest.raises(ValueError, match="UserBehavior.csv.*max_len \\+ 10 = 110"):
        taobao_ctr(read_taobao(taobao_csv), TaobaoCTRConfig(max_len=100))


def test_unknown_ctr_dataset_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="ml-100k-ctr"):
        open_ctr_dataset("ml-100k-ctrr")


# ---------------------------------------------------------------- runs through the API and the CLI

TINY = {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 64, "threads": 1, "device": "cpu",
        "early_stop_metric": "auc", "seed": 0}


def test_run_experiment_trains_a_ranking_model_on_planted_data(tmp_path, monkeypatch):
    from behaviorseq.train import compare_runs, evaluate_run, run_experiment

    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    cfg = {"model": "twin", "model_args": {"max_len": 60, "embedding_dim": 4, "top_k": 8},
           "data": {"dataset": "synthetic-long-ctr",
                    "ctr": {"n_users": 40, "n_items": 80, "n_categories": 8, "min_len": 60, "max_len": 70,
                            "n_interests": 2, "samples_per_user": 6}},
           "train": TINY}
    res = run_experiment(cfg, tmp_path / "run")
    for f in ("config.yaml", "metrics.json", "log.jsonl", "curves.png", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (tmp_path / "run" / f).exists(), f
    assert res["protocol"]["task"] == "pointwise_ctr" and 0 <= res["test"]["auc"] <= 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset"] == "synthetic-long-ctr"
    again = evaluate_run(tmp_path / "run")  # the best weights re-evaluated give the same numbers
    assert again["test"]["auc"] == pytest.approx(res["test"]["auc"])
    table, rows = compare_runs([tmp_path / "run"])
    assert "auc" in table.splitlines()[0] and rows[0]["ranking"].startswith("pointwise")


def test_ctr_config_errors_are_early_and_named(tmp_path):
    from behaviorseq.train import resolve_config

    with pytest.raises(ConfigError, match="early_stop_metric"):
        resolve_config({"model": "dare"})  # the retrieval default ndcg@10 is not a CTR metric
    with pytest.raises(ConfigError, match="ranking"):
        resolve_config({"model": "sasrec", "task": "ctr"})
    assert resolve_config({"model": "sasrec"}).task == "retrieval"
    assert resolve_config({"model": "dare", "train": {"early_stop_metric": "auc"}}).task == "ctr"


def test_cli_trains_dare_on_ml100k_ctr(tmp_path, monkeypatch, capsys):
    from behaviorseq.cli import main

    if not (ML100K / "ml-100k.inter").exists():
        pytest.skip(f"ml-100k not found at {ML100K}")
    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    out = tmp_path / "run"
    rc = main(["train", "--model", "dare", "--data", "ml-100k-ctr", "--data-root", str(ML100K.parent),
               "--out", str(out), "train.epochs=1", "train.max_steps_per_epoch=2", "train.threads=1",
               "train.device=cpu", "model.max_len=30", "model.embedding_dim=4", "model.top_k=5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| test |" in text and "gauc_category" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"]["sampling"]["split"] == "user_last" and m["test"]["n"] == 943 * 5
    assert (out / "curves.png").exists() and (out / "checkpoints" / "best.pt").exists()
    cfg = (out / "config.yaml").read_text()
    assert "task: ctr" in cfg and "early_stop_metric: auc" in cfg


@pytest.mark.parametrize("model", ["din", "sim", "eta", "twin", "dare", "sdim"])
def test_packaged_ml100k_ctr_configs_resolve(model):
    from behaviorseq.cli_train import build_config
    from behaviorseq.train import resolve_config

    cfg = resolve_config(build_config(model, "ml-100k-ctr", None, []))
    assert cfg.task == "ctr" and cfg.train.early_stop_metric == "auc" and cfg.data.dataset == "ml-100k-ctr"
    assert cfg.model_args["max_len"] == 200
    ML100KCTRConfig.from_dict(cfg.data.ctr)  # the data arguments are valid too


@pytest.mark.parametrize("model", ["din", "sim", "eta", "twin", "dare", "sdim"])
def test_packaged_generic_ctr_configs_make_any_ctr_dataset_a_ctr_run(model):
    """<model>.yaml alone (no data-set file) gives a CTR run that early-stops on AUC, e.g. on Taobao."""
    from behaviorseq.cli_train import build_config
    from behaviorseq.train import resolve_config

    cfg = resolve_config(build_config(model, "taobao-ctr", None, []))
    assert cfg.task == "ctr" and cfg.train.early_stop_metric == "auc" and cfg.data.dataset == "taobao-ctr"
    assert (cfg.train.batch_size, cfg.train.lr) == (2048, 0.01)
    # the shared long-CTR protocol: every model reads L = 200 (SDIM's own default, the paper's 256, is overridden)
    from behaviorseq import models

    assert cfg.model_args.get("max_len", models.get(model).Config.model_fields["max_len"].default) == 200


def test_taobao_category_vocabulary_covers_every_event_and_offsets_never_reach_valid_or_test(taobao_csv):
    lines = taobao_csv.read_text().splitlines()
    u, item, _, beh, t = lines[0].split(",")
    # a later page view of one item listed under another category, above every category of the item table
    taobao_csv.write_text("\n".join(lines + [f"{u},{item},99999,pv,{int(t) + 1}"]) + "\n")
    data = taobao_ctr(read_taobao(taobao_csv), TaobaoCTRConfig(max_len=L, train_offsets=(3, 8), n_negatives=1))
    assert data.events["category"].max() > data.item_fields["category"].max()  # the case: only an event has it
    assert data.vocab_size("category") > int(data.events["category"].max())  # was the item table's max + 1 only
    for bad in [(1, 3), (2,), (3, 3)]:  # -1 / -2 are test and validation; a repeat trains one target twice
        with pytest.raises(ValueError, match="distinct and >= 3"):
            taobao_ctr(read_taobao(taobao_csv), TaobaoCTRConfig(max_len=L, train_offsets=bad))
