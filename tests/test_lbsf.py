"""LBSF: payment generator, merchant folding (against a pandas groupby reference), the model's
permutation properties, the flat baselines and a small learning check on planted data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from behaviorseq.config import ConfigError
from behaviorseq.data import folding as folding_module
from behaviorseq.data.folding import fold_by_merchant, last_n
from behaviorseq.data.synthetic.payments import TRAIN, VALID, PaymentsConfig, generate_payments
from behaviorseq.models.risk import lbsf as lbsf_module
from behaviorseq.models.risk.flat_seq import FlatConfig, FlatSequenceModel
from behaviorseq.models.risk.lbsf import LBSF, LBSFConfig
from behaviorseq.nn.payment_fields import amount_edges, hash_char_ngrams
from behaviorseq.tasks.default_risk import fit, ks, to_tensors

torch.set_num_threads(1)


def _random_table(seed: int, n_users: int = 9):
    """Integer times (many ties), a few users with fewer merchants than M, one user with no payment."""
    rng = np.random.default_rng(seed)
    n_per = rng.integers(0, 40, n_users)
    n_per[0] = 0
    user = np.repeat(np.arange(n_users), n_per)
    n_merch = rng.integers(1, 9, n_users)  # merchants available to each user
    merchant = 1 + (rng.random(user.shape[0]) * n_merch[user]).astype(np.int64) * 3
    time = rng.integers(0, 30, user.shape[0]).astype(np.float64)
    amount = np.round(rng.lognormal(2, 1, user.shape[0]), 2)
    description = rng.integers(1, 20, user.shape[0])
    o = np.lexsort((time, user))
    return dict(n_users=n_users, user=user[o], time=time[o], merchant=merchant[o], amount=amount[o],
                description=description[o])


def _pandas_fold(t: dict, label_day: float, window: float, M: int, Lm: int):
    """Reference: plain pandas groupby over the same rules as ``fold_by_merchant``'s docstring."""
    df = pd.DataFrame({k: t[k] for k in ("user", "time", "merchant", "amount", "description")})
    df["row"] = np.arange(len(df))
    df = df[(df.time >= label_day - window) & (df.time < label_day)]
    g = df.groupby(["user", "merchant"]).agg(cnt=("time", "size"), last=("time", "max")).reset_index()
    g = g.sort_values(["user", "cnt", "last", "merchant"], ascending=[True, False, False, True])
    g["rank"] = g.groupby("user").cumcount()
    g["slot"] = g["rank"].clip(upper=M)
    df = df.merge(g[["user", "merchant", "slot"]], on=["user", "merchant"]).sort_values(["user", "slot", "row"])
    df["dt_prev"] = df.groupby(["user", "slot"]).time.diff().fillna(-1.0)
    S = M + 1
    amount = np.zeros((t["n_users"], S, Lm))
    dt = np.zeros((t["n_users"], S, Lm))
    merch = np.zeros((t["n_users"], S, Lm), dtype=np.int64)
    mask = np.zeros((t["n_users"], S, Lm), dtype=bool)
    stats = np.zeros((t["n_users"], S, 6))
    for (u, s), grp in df.groupby(["user", "slot"]):
        tail = grp.tail(Lm)
        k = len(tail)
        amount[u, s, :k], dt[u, s, :k] = tail.amount, tail.dt_prev
        merch[u, s, :k], mask[u, s, :k] = tail.merchant, True
        la = np.log1p(grp.amount.to_numpy())
        before = label_day - grp.time.to_numpy()
        stats[u, s] = [np.log1p(len(grp)), np.log1p(grp.amount.sum()), la.mean(), la.std(),
                       before.max() / window, before.min() / window]
    return amount, dt, merch, mask, stats


@pytest.mark.parametrize("seed,window,M,Lm", [(0, 30.0, 3, 4), (1, 12.0, 2, 3), (2, 30.0, 10, 50)])
def test_fold_matches_pandas_groupby_reference(seed, window, M, Lm):
    t = _random_table(seed)
    f = fold_by_merchant(**t, label_day=25.0, window_days=window, n_top=M, max_per_merchant=Lm)
    amount, dt, merch, mask, stats = _pandas_fold(t, 25.0, window, M, Lm)
    assert f.txn_mask.shape == (t["n_users"], M + 1, Lm)
    np.testing.assert_array_equal(f.txn_mask, mask)
    np.testing.assert_array_equal(f.fields["merchant"], merch)
    np.testing.assert_allclose(f.fields["amount"], amount)
    np.testing.assert_allclose(f.fields["dt_prev"], dt)
    np.testing.assert_allclose(f.stats, stats, atol=1e-9)
    np.testing.assert_array_equal(f.merchant_mask, mask.any(axis=2))
    assert not f.merchant_mask[0].any()  # the user without payments


def test_last_n_matches_pandas_reference_and_has_no_leak():
    t = _random_table(3)
    flat = last_n(**t, label_day=25.0, window_days=20.0, max_len=7)
    df = pd.DataFrame({k: t[k] for k in ("user", "time", "merchant", "amount")})
    df = df[(df.time >= 5.0) & (df.time < 25.0)]
    for u in range(t["n_users"]):
        tail = df[df.user == u].tail(7)
        k = len(tail)
        np.testing.assert_allclose(flat.fields["amount"][u, :k], tail.amount)
        assert flat.mask[u].sum() == k and flat.mask[u, :k].all()
        assert (flat.fields["days_before"][u, :k] > 0).all()  # strictly before the label date


def test_fold_rejects_bad_input_naming_the_field():
    t = _random_table(4)
    with pytest.raises(ValueError, match="sorted by"):
        fold_by_merchant(**{**t, "time": t["time"][::-1].copy()}, label_day=25.0)
    with pytest.raises(ValueError, match="'merchant'"):
        fold_by_merchant(**{**t, "merchant": t["merchant"].astype(float)}, label_day=25.0)
    with pytest.raises(ValueError, match="'amount'"):
        fold_by_merchant(**{**t, "amount": t["amount"][:-1]}, label_day=25.0)
    with pytest.raises(ValueError, match="window_days"):
        fold_by_merchant(**t, label_day=25.0, window_days=0)


@pytest.mark.parametrize("bad,match", [
    ({"n_users": 0}, "n_users"), ({"n_users": 2.5}, "n_users"), ({"tail_prob": 1.5}, "tail_prob"),
    ({"p_collapse": 0.6, "p_stop": 0.6}, "p_collapse"), ({"collapse_max": 200.0}, "collapse_max"),
    ({"stop_min": 50.0, "stop_max": 40.0}, "stop_max"), ({"n_categories": 40}, "n_categories"),
    ({"rate_per_day": float("nan")}, "rate_per_day"), ({"pillar_share": 1.0}, "pillar_share"),
])
def test_generator_validation_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        PaymentsConfig(**bad)


def test_generator_plants_the_three_mechanisms():
    d, tr = generate_payments(PaymentsConfig(n_users=600, seed=3))
    assert np.all(np.diff(d.user) >= 0) and np.all((np.diff(d.time) >= 0) | (np.diff(d.user) > 0))
    assert d.time.max() < d.label_day and d.amount.min() > 0
    pil = d.merchant == tr.pillar_merchant[d.user]
    assert np.all(tr.merchant_category[tr.pillar_merchant] == tr.pillar_category)
    before = d.label_day - d.time
    # collapse: no pillar-category payment after the collapse, the replacement takes over.
    col = tr.reason[d.user] == 1
    assert not np.any(pil & col & (before < tr.collapse_before[d.user]))
    assert np.any(pil & col) and np.any(col & (d.merchant == tr.replacement_merchant[d.user]))
    # recurring stop: nothing from the recurring merchant in the last stop_before days.
    rec = d.merchant == tr.recurring_merchant[d.user]
    assert not np.any(rec & (tr.reason[d.user] == 2) & (before < tr.stop_before[d.user]))
    # escalation: credit amounts rise in time for reason 3.
    cred = (d.merchant == tr.credit_merchant[d.user]) & (tr.reason[d.user] == 3)
    same = d.user[cred][1:] == d.user[cred][:-1]
    assert np.all(np.diff(d.amount[cred])[same] >= 0)
    assert 0.2 < d.label.mean() < 0.5


def _tiny(seed=0, n_users=160, M=4, Lm=5, window=180.0, **cfg):
    d, _ = generate_payments(PaymentsConfig(n_users=n_users, seed=seed, **cfg))
    fo = fold_by_merchant(d, window_days=window, n_top=M, max_per_merchant=Lm)
    fl = last_n(d, window_days=window, max_len=(M + 1) * Lm)
    text = hash_char_ngrams(d.merchant_names, 256), hash_char_ngrams(d.descriptions, 256)
    return d, fo, fl, text, amount_edges(d.amount, 8)


def test_models_shapes_and_missing_field():
    d, fo, fl, (mn, dn), ed = _tiny()
    torch.manual_seed(0)
    lbsf = LBSF(LBSFConfig(d=16, n_hash=256), mn, dn, ed, max_per_merchant=5).eval()
    batch = {k: v[:7] for k, v in to_tensors(fo).items()}
    assert batch["amount"].shape == (7, 5, 5) and lbsf(batch).shape == (7,)
    for kind, pool in (("transformer", False), ("gru", False), ("transformer", True), ("gru", True)):
        m = FlatSequenceModel(FlatConfig(kind=kind, d=16, n_hash=256, max_pool=pool), mn, dn, ed, max_len=25).eval()
        out = m({k: v[:7] for k, v in to_tensors(fl).items()})
        assert out.shape == (7,) and torch.isfinite(out).all()
    with pytest.raises(KeyError, match="stats"):
        lbsf({k: v for k, v in batch.items() if k != "stats"})
    assert lbsf_module.N_STATS == folding_module.N_STATS == fo.stats.shape[-1]
    with pytest.raises(ConfigError, match="valid keys"):
        LBSFConfig.from_dict({"d_model": 8})


def test_lbsf_merchant_order_invariant_but_within_merchant_order_matters():
    d, fo, fl, (mn, dn), ed = _tiny(seed=1)
    torch.manual_seed(0)
    model = LBSF(LBSFConfig(d=16, n_hash=256), mn, dn, ed, max_per_merchant=5).eval()
    batch = to_tensors(fo)
    base = model(batch)
    g = torch.Generator().manual_seed(0)
    perm = torch.cat([torch.randperm(4, generator=g), torch.tensor([4])])  # the rest slot stays last
    permuted = {k: (v[:, perm] if v.dim() >= 2 else v) for k, v in batch.items()}
    torch.testing.assert_close(model(permuted), base, rtol=1e-5, atol=1e-5)
    # Reverse the kept payments of each merchant (left-aligned) while keeping them left-aligned.
    n = batch["txn_mask"].sum(-1, keepdim=True)  # [U, S, 1]
    idx = (n - 1 - torch.arange(5)).clamp(min=0)
    idx = torch.where(batch["txn_mask"], idx, torch.arange(5).expand_as(idx))
    shuffled = {k: (v.gather(2, idx) if v.shape == batch["txn_mask"].shape else v) for k, v in batch.items()}
    assert (model(shuffled) - base).abs().max() > 1e-3


def test_ks_hand_case():
    assert ks([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert ks([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.5)
    assert ks([1, 0], [0.5, 0.5]) == 0.0  # a tie cannot separate
    assert np.isnan(ks([1, 1], [0.1, 0.2]))


def test_lbsf_beats_flat_model_on_planted_long_range_shift():
    """Only the long-range collapse is planted (120-150 days before the label date): at equal budget the
    flat model's last 36 payments cover ~70 days and miss it, while LBSF's folded slots keep the dormant
    pillar merchant and its first/last-seen statistics."""
    cfg = dict(p_collapse=0.4, p_stop=0.0, p_escalate=0.0, recurring_prob=0.0, credit_prob=0.0, label_noise=0.0,
               collapse_max=150.0, pillar_share=0.5, rate_per_day=0.6, valid_fraction=0.2, test_fraction=0.3)
    d, fo, fl, (mn, dn), ed = _tiny(seed=5, n_users=1000, M=8, Lm=4, **cfg)
    train, valid = np.flatnonzero(d.role == TRAIN), np.flatnonzero(d.role == VALID)
    test = np.flatnonzero(d.role > VALID)
    res = {}
    for name in ("lbsf", "transformer"):
        torch.manual_seed(0)
        if name == "lbsf":
            m, data = LBSF(LBSFConfig(d=16, n_hash=256, intra_layers=0), mn, dn, ed, 4), to_tensors(fo)
        else:
            m, data = FlatSequenceModel(FlatConfig(d=16, n_hash=256, layers=1), mn, dn, ed, 36), to_tensors(fl)
        res[name] = fit(m, data, d.label, train, valid, test, epochs=8, batch_size=32, lr=3e-3, patience=8)["test"]
    assert res["lbsf"]["auc"] > 0.85, res
    assert res["lbsf"]["auc"] > res["transformer"]["auc"] + 0.2, res
