"""How well can one sequence of the continual stream (``tpp_continual.py``) tell which regime made it? (issue 6)

    python benchmarks/tpp_regime_id.py [--seeds 0 1 2] [--json benchmarks/results/tpp_regime_id.json]

PromptTPP can only keep regimes apart if its retrieval query tells them apart. Two ceilings, on the training
sequences of all six windows (the stream's defaults: 3 types, 400 sequences of 40 events per window):
- Bayes: argmax over the three regimes of the exact Hawkes log-likelihood of the whole sequence, with the true
  parameters (the best any classifier can do from one sequence);
- pooled statistics: a logistic regression (fit on half the sequences, scored on the other half) on what a
  mean-pooled query can carry: the sequence's type shares and the mean and sd of its log inter-event times.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from tpp_continual import make_stream

from behaviorseq.data.synthetic.hawkes import hawkes_loglik


def pooled_stats(seqs, num_types: int) -> np.ndarray:
    rows = []
    for n in range(len(seqs)):
        t, k = seqs.sequence(n)
        logdt = np.log(np.diff(t) + 1e-9)
        rows.append(np.r_[np.bincount(k, minlength=num_types) / len(k), logdt.mean(), logdt.std()])
    return np.asarray(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--types", type=int, default=3)
    ap.add_argument("--schedule", default="0,1,2,0,1,2")
    ap.add_argument("--n-seqs", type=int, default=400)
    ap.add_argument("--max-events", type=int, default=40)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = []
    for seed in args.seeds:
        regimes, schedule, splits = make_stream(args, seed)
        ll, stats, y = [], [], []
        for w, (train, _, _) in enumerate(splits):
            ll.append(np.stack([hawkes_loglik(r, train) for r in regimes], 1))  # [n, regimes]
            stats.append(pooled_stats(train, args.types))
            y += [schedule[w]] * len(train)
        ll, stats, y = np.concatenate(ll), np.concatenate(stats), np.asarray(y)
        half = np.arange(len(y)) % 2 == 0
        probe = LogisticRegression(max_iter=2000).fit(stats[half], y[half]).score(stats[~half], y[~half])
        shares = [stats[y == r, : args.types].mean(0).round(3).tolist() for r in range(len(regimes))]
        row = {"seed": seed, "bayes_accuracy": float((ll.argmax(1) == y).mean()), "pooled_probe_accuracy": float(probe),
               "type_shares_by_regime": shares, "n": int(len(y))}
        out.append(row)
        print(f"seed {seed}: Bayes {row['bayes_accuracy']:.3f}, pooled-statistics probe {probe:.3f} (chance 0.333); "
              f"type shares by regime {shares}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": vars(args), "results": out}, indent=2))


if __name__ == "__main__":
    main()
