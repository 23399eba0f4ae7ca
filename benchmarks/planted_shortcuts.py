"""How far a trivial, order-free score gets on the planted data sets behind issue 5's and issue 7's bars.

    OMP_NUM_THREADS=1 python benchmarks/planted_shortcuts.py [--json benchmarks/results/planted_shortcuts.json]

No training: each score is a count read off the generated data, ranked against the test labels (AUC), beside
the Bayes AUC of the true probabilities on the same rows. A high shortcut means a model that only matches
ids or notices a merchant's presence gets most of the way to the ceiling, which is how to read those bars.
- long-sequence CTR (``long_ctr_effect.py``'s ``planted``, L = 200, seed 1): copies of the target's own item
  among the history's deep (oldest) half, where the relevant behaviours are planted, and anywhere;
- near CTR (the SDIM brief's set, ``long_ctr_effect.py sdim --planted near``, L = 1,024, seed 1): whether the
  target's own item is in the history;
- payments (``lbsf_windows.py``, 2,400 users, seed 0): whether the user paid their recurring or credit merchant
  (the two reasons that need one) inside the last W days, W = 45 / 90 / 180, on the test users.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from long_ctr_effect import near, planted

from behaviorseq.data.synthetic.payments import TEST, PaymentsConfig, generate_payments
from behaviorseq.metrics import auc
from behaviorseq.utils import atomic_write_text


def history_matrix(data, rows: np.ndarray, width: int) -> np.ndarray:
    """[len(rows), width] items of each row's last ``width`` history events (these sets have fixed lengths)."""
    start = data.hist_end[rows] - width
    return data.events["item"][start[:, None] + np.arange(width)[None, :]]


def long_ctr(seed: int = 1, L: int = 200) -> dict:
    data, truth = planted(L, seed)
    te = data.indices("test")
    y = data.label[te].astype(bool)
    eq = history_matrix(data, te, L) == data.target[te][:, None]  # oldest first
    rel = data.events["item"][data.offsets[data.user[te]][:, None] + truth.relevant_positions(data, te)]
    return {"bayes_auc": auc(y, truth.click_prob[te]),
            "target_among_its_relevant": float((rel == data.target[te][:, None]).any(1).mean()),
            "auc_target_copies_deep_half": auc(y, eq[:, : L // 2].sum(1).astype(float)),
            "auc_target_in_history": auc(y, eq.any(1).astype(float))}


def near_ctr(seed: int = 1, L: int = 1024) -> dict:
    data, truth = near(L, seed)
    te = data.indices("test")
    y = data.label[te].astype(bool)
    flag = (history_matrix(data, te, L) == data.target[te][:, None]).any(1)
    return {"bayes_auc": auc(y, truth.click_prob[te]), "target_in_history": float(flag.mean()),
            "auc_target_in_history": auc(y, flag.astype(float))}


def payments(seed: int = 0, windows=(45, 90, 180)) -> dict:
    d, t = generate_payments(PaymentsConfig(n_users=2400, rate_per_day=0.7, seed=seed))
    users = np.flatnonzero(d.role == TEST)
    y = d.label[users].astype(bool)
    special = ((d.merchant == t.recurring_merchant[d.user]) | (d.merchant == t.credit_merchant[d.user])) & \
        (d.merchant > 0)
    out = {}
    for w in windows:
        paid = np.bincount(d.user[special & (d.time >= d.label_day - w)], minlength=d.n_users) > 0
        out[f"auc_recurring_or_credit_paid_{w}d"] = auc(y, paid[users].astype(float))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = {"long_ctr_L200_seed1": long_ctr(), "near_ctr_L1024_seed1": near_ctr(), "payments_seed0": payments()}
    for k, v in res.items():
        print(k, {m: round(x, 4) for m, x in v.items()})
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
