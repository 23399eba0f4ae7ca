"""Tests of the planted long-sequence CTR generator, CTR samples and batches, DARE's sampling protocol,
and the pointwise CTR task (metrics, DDP shares, Trainer compatibility)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from behaviorseq.config import TrainConfig
from behaviorseq.data.ctr import TEST, TRAIN, VALID, CTRBatcher, CTRData, dare_protocol
from behaviorseq.data.synthetic import LongCTRConfig, generate_long_ctr
from behaviorseq.metrics import auc, gauc, logloss
from behaviorseq.tasks.ctr import CTRTask

SMALL = dict(n_users=60, n_items=120, n_categories=12, latent_dim=4, min_len=60, max_len=90, n_interests=3,
             n_relevant=4, n_decoys=2, samples_per_user=10)


@pytest.fixture(scope="module")
def planted():
    return generate_long_ctr(LongCTRConfig(**SMALL))


# ---------------------------------------------------------------- generator


def test_config_is_frozen_and_validated():
    cfg = LongCTRConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    bad = [dict(n_users=0), dict(n_items=2.5), dict(n_categories=4, n_interests=4), dict(max_len=100),
           dict(deep_fraction=1.0), dict(min_len=30, max_len=30), dict(signal_scale=float("nan")),
           dict(valid_fraction=0.6, test_fraction=0.4), dict(n_items=10, n_categories=20), dict(n_decoys=-1),
           dict(samples_per_user=True)]
    for kw in bad:
        with pytest.raises(ValueError, match="LongCTRConfig"):
            LongCTRConfig(**kw)


def test_same_seed_same_data_other_seed_other_data():
    a, ta = generate_long_ctr(LongCTRConfig(**SMALL))
    b, tb = generate_long_ctr(LongCTRConfig(**SMALL))
    c, _ = generate_long_ctr(LongCTRConfig(**{**SMALL, "seed": 1}))
    for k in ("item", "category"):
        assert np.array_equal(a.events[k], b.events[k])
    assert np.array_equal(a.label, b.label) and np.array_equal(ta.click_prob, tb.click_prob)
    assert not np.array_equal(a.events["item"][:500], c.events["item"][:500])


def test_planted_structure_is_where_the_truth_says(planted):
    data, truth = planted
    cfg = truth.config
    cat_of = data.item_fields["category"]
    assert np.array_equal(cat_of[data.events["item"]], data.events["category"])
    lens = np.diff(data.offsets)
    assert lens.min() >= cfg.min_len and lens.max() <= cfg.max_len
    for u in range(cfg.n_users):
        cats = data.events["category"][data.offsets[u]:data.offsets[u + 1]]
        n_deep = int(np.floor(cfg.deep_fraction * lens[u]))
        in_interest = np.isin(cats, truth.interests[u])
        for k, c in enumerate(truth.interests[u]):
            deep_c = np.flatnonzero(cats[:n_deep] == c)
            recent_c = n_deep + np.flatnonzero(cats[n_deep:] == c)
            assert np.array_equal(deep_c, truth.relevant_index[u, k])  # exactly the relevant ones
            assert np.array_equal(recent_c, truth.decoy_index[u, k])  # exactly the decoys
        assert in_interest.sum() == cfg.n_interests * (cfg.n_relevant + cfg.n_decoys)  # the rest are distractors
    # every sample's target comes from the interest its relevant positions belong to
    s = np.arange(len(data.user))
    tgt_cat = cat_of[data.target]
    assert np.array_equal(tgt_cat, truth.interests[data.user, truth.sample_interest])
    pos = truth.relevant_positions(data, s)
    ev = data.offsets[data.user][:, None] + pos
    assert (data.events["category"][ev] == tgt_cat[:, None]).all()


def test_click_probability_is_the_planted_formula(planted):
    data, truth = planted
    cfg = truth.config
    z = truth.item_latent
    rel_items = data.events["item"][data.offsets[data.user][:, None] + truth.relevant_positions(data, np.arange(len(data.user)))]
    logit = cfg.signal_scale * np.einsum("sd,sd->s", z[data.target], z[rel_items].mean(1)) + cfg.bias
    np.testing.assert_allclose(truth.click_prob, 1 / (1 + np.exp(-logit)), rtol=1e-12)
    cat_mean = np.zeros((cfg.n_categories + 1, cfg.latent_dim))
    np.add.at(cat_mean, truth.item_category[1:], z[1:])
    assert np.abs(cat_mean).max() < 1e-9  # centred per category: the category alone says nothing
    se = np.sqrt(np.sum(truth.click_prob * (1 - truth.click_prob))) / len(data.label)
    assert abs(data.label.mean() - truth.click_prob.mean()) < 4 * se


def test_labels_follow_the_history_signal_and_vanish_without_it():
    data, truth = generate_long_ctr(LongCTRConfig(**{**SMALL, "n_users": 300}))
    assert auc(data.label, truth.click_prob) > 0.75  # the Bayes AUC is high
    flat, truth0 = generate_long_ctr(LongCTRConfig(**{**SMALL, "n_users": 300, "signal_scale": 0.0}))
    assert np.allclose(truth0.click_prob, 0.5)


def test_histories_up_to_ten_thousand_behaviours():
    data, truth = generate_long_ctr(LongCTRConfig(n_users=12, n_items=500, n_categories=20, min_len=200,
                                                  max_len=10_000, samples_per_user=3, seed=4))
    lens = np.diff(data.offsets)
    assert lens.max() > 5_000 and lens.max() <= 10_000 and lens.min() >= 200
    n_deep = np.floor(0.5 * lens)[data.user]
    assert (truth.relevant_positions(data, np.arange(len(data.user))) < n_deep[:, None]).all()


def test_roles_are_drawn_with_the_given_fractions():
    data, _ = generate_long_ctr(LongCTRConfig(**{**SMALL, "n_users": 400, "valid_fraction": 0.2,
                                                "test_fraction": 0.1}))
    frac = np.bincount(data.role, minlength=3) / len(data.role)
    assert abs(frac[VALID] - 0.2) < 0.02 and abs(frac[TEST] - 0.1) < 0.02 and frac[TRAIN] > 0.66


# ---------------------------------------------------------------- batches


def test_batches_are_left_padded_windows_with_target_fields(planted):
    data, truth = planted
    batcher = CTRBatcher(data, max_len=50)
    rows = np.array([0, 7, 33, 101])
    b = batcher.batch(rows)
    assert b["item"].shape == (4, 50) and b["item"].dtype == torch.int64 and b["label"].dtype == torch.float32
    for i, s in enumerate(rows):
        hist = data.events["item"][data.offsets[data.user[s]]:data.hist_end[s]][-50:]
        assert np.array_equal(b["item"][i, 50 - len(hist):].numpy(), hist)
    assert torch.equal(b["target_category"], torch.from_numpy(data.item_fields["category"][data.target[rows]]))
    # the planted positions map onto batch columns holding the target's category
    cols = truth.relevant_columns(data, rows, 50)
    for i in range(4):
        c = cols[i][cols[i] >= 0]
        assert (b["category"][i, c] == b["target_category"][i]).all()
    short = CTRBatcher(data, max_len=200).batch(rows)  # trimmed to the longest history
    assert short["item"].shape[1] == int(short["length"].max()) <= 90


# ---------------------------------------------------------------- DARE's protocol


def test_dare_protocol_targets_offsets_and_negatives():
    rng = np.random.default_rng(0)
    lens = np.array([15, 40, 25, 11, 60])
    offsets = np.concatenate([[0], np.cumsum(lens)])
    item = rng.integers(1, 200, lens.sum())
    cat_table = np.arange(201) % 7
    data = dare_protocol(offsets, {"item": item, "category": cat_table[item]}, {"category": cat_table},
                         max_len=10, train_offsets=(3, 8), n_negatives=2, seed=1)
    kept = np.unique(data.user)
    assert np.array_equal(kept, np.flatnonzero(lens >= 20))
    pos = data.label == 1
    assert (data.label.reshape(-1, 3) == [1, 0, 0]).all()
    back = data.offsets[data.user + 1] - data.hist_end
    assert sorted(set(back[pos & (data.role == TRAIN)])) == [3, 8]
    assert set(back[data.role == VALID]) == {2} and set(back[data.role == TEST]) == {1}
    assert np.array_equal(data.target[pos], item[data.hist_end[pos]])  # the positive is the next event
    for s in np.flatnonzero(~pos):
        u = data.user[s]
        assert data.target[s] not in item[offsets[u]:offsets[u + 1]]


# ---------------------------------------------------------------- the task


def _task(data, **kw) -> CTRTask:
    return CTRTask(data, 100, TrainConfig(batch_size=64, seed=3, device="cpu", early_stop_metric="auc", **kw),
                   eval_batch_size=37)


def test_evaluate_reports_auc_gauc_logloss_from_the_main_head(planted):
    data, truth = planted
    task = _task(data)

    keys = data.user * 10_000 + data.target  # (user, target) -> the true logit
    true_logit = np.zeros(keys.max() + 1)
    true_logit[keys] = np.log(truth.click_prob / (1 - truth.click_prob))

    class Truthful(torch.nn.Module):
        def score(self, batch):
            assert "label" not in batch and "index" not in batch  # evaluation never offers the label
            return torch.from_numpy(true_logit[batch["user"].numpy() * 10_000 + batch["target"].numpy()])

    res = task.evaluate(Truthful(), "test")
    te = data.indices("test")
    y = data.label[te]
    assert res["n"] == len(te)
    assert res["auc"] == pytest.approx(auc(y, truth.click_prob[te]), abs=1e-12)
    assert res["gauc_user"] == pytest.approx(gauc(y, truth.click_prob[te], data.user[te]), abs=1e-12)
    cats = data.item_fields["category"][data.target[te]]
    assert res["gauc_category"] == pytest.approx(gauc(y, truth.click_prob[te], cats), abs=1e-12)
    assert res["logloss"] == pytest.approx(logloss(y, truth.click_prob[te]), abs=1e-9)
    assert task.early_stop_metric in res


def test_ddp_shares_gather_to_the_single_process_metrics(planted):
    data, _ = planted
    task = _task(data)
    torch.manual_seed(0)
    from behaviorseq.models.ranking import build

    model = build("twin", data.n_items, data.vocab_size("category") - 1, {"max_len": 100, "embedding_dim": 4})
    whole = task.metrics(*task.predict(model, "valid"))
    parts = [task.predict(model, "valid", rank=r, world=3) for r in range(3)]
    idx = np.concatenate([p[0] for p in parts])
    assert np.array_equal(np.sort(idx), data.indices("valid"))
    merged = task.metrics(idx, np.concatenate([p[1] for p in parts]))
    for k in ("auc", "gauc_user", "gauc_category", "logloss"):
        assert merged[k] == pytest.approx(whole[k], abs=1e-9)


def test_train_loader_covers_the_training_samples_and_resumes(planted):
    data, _ = planted
    task = _task(data)
    loader, _ = task.train_loader(epoch=2)
    batches = list(loader)
    assert len(batches) == task.steps_per_epoch()
    seen = np.concatenate([b["index"].numpy() for b in batches])
    assert np.array_equal(np.sort(seen), data.indices("train"))
    resumed = list(task.train_loader(epoch=2, start_step=3)[0])
    assert all(torch.equal(a["index"], b["index"]) for a, b in zip(batches[3:], resumed))
    other = next(iter(task.train_loader(epoch=3)[0]))
    assert not torch.equal(other["index"], batches[0]["index"])


def test_trainer_fits_the_ctr_task(planted, tmp_path, monkeypatch):
    from behaviorseq.models.ranking import build
    from behaviorseq.train.trainer import Trainer

    monkeypatch.setenv("BEHAVIORSEQ_PROGRESS", "0")
    data, _ = planted
    torch.manual_seed(0)
    model = build("dare", data.n_items, data.vocab_size("category") - 1, {"max_len": 100, "embedding_dim": 4})
    task = _task(data, epochs=2, max_steps_per_epoch=3)
    state = Trainer(model, task, task.train_cfg, tmp_path).fit()
    assert state["epoch"] == 2 and state["global_step"] == 6
    assert 0.0 <= state["history"][-1]["valid"]["auc"] <= 1.0
    proto = task.protocol()
    assert proto["task"] == "pointwise_ctr" and proto["dataset"] == "synthetic-long-ctr"


def test_ctr_data_rejects_inconsistent_arrays():
    off = np.array([0, 3])
    ev = {"item": np.array([1, 2, 3])}
    ok = dict(user=np.array([0]), hist_end=np.array([2]), target=np.array([4]), label=np.array([1]),
              role=np.array([0], dtype=np.int8))
    CTRData(off, ev, {}, **ok)
    with pytest.raises(ValueError, match="hist_end"):
        CTRData(off, ev, {}, **{**ok, "hist_end": np.array([5])})
    with pytest.raises(KeyError, match="item"):
        CTRData(off, {"category": np.array([1, 1, 1])}, {}, **ok)


def test_planted_recall_counts_the_planted_positions_a_search_finds(planted):
    from behaviorseq.tasks.ctr import planted_recall

    data, truth = planted
    task = _task(data)

    class Searcher(torch.nn.Module):
        def __init__(self, cheat: bool):
            super().__init__()
            self.cheat = cheat

        def forward(self, batch):
            assert "label" not in batch
            B, W = batch["item"].shape
            if not self.cheat:  # the K most recent: never the deep part
                return {"topk_index": torch.arange(W - 4, W).expand(B, 4)}
            rows = np.flatnonzero(np.isin(np.arange(len(data.user)), data.indices("test")))
            key = {(int(u), int(t)): i for i, (u, t) in enumerate(zip(data.user[rows], data.target[rows]))}
            idx = [rows[key[(int(u), int(t))]] for u, t in zip(batch["user"], batch["target"])]
            return {"topk_index": torch.from_numpy(truth.relevant_columns(data, np.array(idx), W))}

    assert planted_recall(task, Searcher(True), truth) == pytest.approx(1.0)
    assert planted_recall(task, Searcher(False), truth) == 0.0
