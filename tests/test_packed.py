"""Packed payment views: the real payments only, densified per batch, equal to the dense view's rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from behaviorseq.data.folding import fold_by_merchant, last_n
from behaviorseq.data.packed import pack_view
from behaviorseq.data.synthetic.payments import PaymentsConfig, generate_payments
from behaviorseq.tasks.default_risk import to_tensors


@pytest.fixture(scope="module")
def payments():
    data, _ = generate_payments(PaymentsConfig(n_users=300, seed=4))
    return dataclasses.replace(data, label_day=data.label_day - np.arange(300) % 40)  # per-user label dates


@pytest.mark.parametrize("make,args", [(fold_by_merchant, {"window_days": 60, "n_top": 4, "max_per_merchant": 6}),
                                       (last_n, {"window_days": 90, "max_len": 40})])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_packed_batches_equal_the_dense_rows_bit_for_bit(payments, make, args, chunk):
    dense = to_tensors(make(payments, **args))
    packed = pack_view(make, payments, chunk_users=chunk, **args)
    assert packed.n_users == payments.n_users
    mask = dense.get("txn_mask", dense.get("mask"))
    assert packed.offsets[-1] == int(mask.sum())  # one entry per real payment, no padding
    rng = np.random.default_rng(0)
    for users in (rng.permutation(300)[:50], np.array([5]), np.array([], dtype=np.int64), np.arange(300)):
        got = to_tensors(packed.take(users))
        assert sorted(got) == sorted(dense)
        for k, v in dense.items():
            want = v[torch.as_tensor(users, dtype=torch.long)]
            assert got[k].dtype == want.dtype and torch.equal(got[k], want), k


def test_engine_batches_are_the_dense_ones(payments):
    from behaviorseq.config import TrainConfig
    from behaviorseq.tasks.default_risk import DefaultRiskTask

    args = {"window_days": 60, "n_top": 4, "max_per_merchant": 6}
    a = DefaultRiskTask.create(to_tensors(fold_by_merchant(payments, **args)), payments.label, payments.role, TrainConfig())
    b = DefaultRiskTask.create(pack_view(fold_by_merchant, payments, chunk_users=50, **args), payments.label,
                               payments.role, TrainConfig())
    rows = np.random.default_rng(1).permutation(300)[:64]
    x, y = a.batch(rows), b.batch(rows)
    assert sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x)  # trailing padding cut alike


def test_pack_view_refuses_what_the_dense_view_refuses(payments):
    from types import SimpleNamespace

    cols = {k: getattr(payments, k) for k in ("user", "time", "merchant", "amount", "description", "label_day")}
    bad = SimpleNamespace(**{**cols, "user": payments.user[::-1].copy()}, n_users=payments.n_users)
    with pytest.raises(ValueError, match="sorted by user"):
        pack_view(last_n, bad, window_days=90, max_len=10)
    out_of_range = SimpleNamespace(**cols, n_users=payments.n_users - 1)
    with pytest.raises(ValueError, match=r"users in \[0, 299\)"):
        pack_view(last_n, out_of_range, window_days=90, max_len=10)
