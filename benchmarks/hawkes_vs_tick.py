"""Independent check of the Hawkes simulator and log-likelihood against ``tick`` (PyPI ``tick``).

Runs in a virtualenv that has tick (it pins its own numpy), with this repository's ``src`` on the path:

    python -m venv /tmp/tickvenv && /tmp/tickvenv/bin/pip install tick pyarrow pandas pydantic pyyaml tqdm
    PYTHONPATH=src OMP_NUM_THREADS=1 /tmp/tickvenv/bin/python benchmarks/hawkes_vs_tick.py --json out.json

Checks, on a 3-type process with one decay (tick's log-likelihood model takes a scalar decay):
1. our closed-form log-likelihood of our sequences == tick's ``ModelHawkesExpKernLogLik`` (same data), at
   the true parameters and at other ones. tick's C++ loss carries an extra constant, the number of types
   times the observation length (not in its docstring; the same for every parameter value), removed here;
2. on tick's own simulated sequences, our compensator gives Exp(1) increments (KS) and the event rates
   of both simulators agree with each other and with the stationary rate (I - A)^-1 mu.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

from behaviorseq.data.eventseq import EventSequences

if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
    # The tick virtualenv has no torch; skip the synthetic package's __init__ (other generators need it).
    _pkg = types.ModuleType("behaviorseq.data.synthetic")
    _pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "src/behaviorseq/data/synthetic")]
    sys.modules["behaviorseq.data.synthetic"] = _pkg

from behaviorseq.data.synthetic.hawkes import (  # noqa: E402
    HawkesParams,
    hawkes_loglik,
    ks_exp1,
    simulate_hawkes,
    time_rescaled,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-seqs", type=int, default=1000)
    ap.add_argument("--t-end", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from tick.hawkes import ModelHawkesExpKernLogLik, SimuHawkesExpKernels

    decay = 1.5
    params = HawkesParams(np.array([0.2, 0.3, 0.1]),
                          np.array([[0.3, 0.1, 0.0], [0.2, 0.2, 0.1], [0.0, 0.3, 0.4]]), decay)
    K, T = params.num_types, args.t_end
    out: dict = {"params": params.to_dict(), "t_end": T, "n_seqs": args.n_seqs, "seed": args.seed}

    # 1. log-likelihood parity on our sequences.
    t0 = time.perf_counter()
    ours = simulate_hawkes(params, args.n_seqs, t_end=T, seed=args.seed)
    out["ours_sim_s"] = time.perf_counter() - t0
    other = HawkesParams(np.array([0.5, 0.1, 0.3]), np.array([[0.1, 0.5, 0.2], [0.0, 0.2, 0.3], [0.4, 0.1, 0.1]]), decay)
    diffs = []
    for par in (params, other):
        coeffs = np.concatenate([par.mu, par.adjacency.ravel()])
        ll = hawkes_loglik(par, ours.seqs, T)
        for n in range(len(ours.seqs)):
            t, k = ours.seqs.sequence(n)
            m = ModelHawkesExpKernLogLik(decay).fit([np.ascontiguousarray(t[k == i]) for i in range(K)], end_times=T)
            # tick's loss is minus the log-likelihood per event, plus K * T / n_jumps
            diffs.append(-m.loss(coeffs) * m.n_jumps - K * T - ll[n])
    out["loglik_max_abs_diff"] = float(np.max(np.abs(diffs)))
    out["loglik_total_ours"] = float(ours.loglik.sum())

    # 2. tick's simulator against our compensator and rates.
    t0 = time.perf_counter()
    times, types = [], []
    for n in range(args.n_seqs):
        sim = SimuHawkesExpKernels(params.adjacency, decay, baseline=params.mu, end_time=T, seed=args.seed + n,
                                   verbose=False)
        sim.simulate()
        t = np.concatenate(sim.timestamps)
        k = np.concatenate([np.full(len(ts), i) for i, ts in enumerate(sim.timestamps)])
        o = np.argsort(t, kind="stable")
        times.append(t[o]), types.append(k[o])
    out["tick_sim_s"] = time.perf_counter() - t0
    theirs = EventSequences.from_lists(times, types, K)
    x = time_rescaled(params, theirs)
    # Increments that start at an event before T - 20: selecting on the start (the past) keeps them
    # Exp(1), while keeping every whole gap inside [0, T] would favour short gaps (the one that straddles T
    # is censored), a bias of order 1 / events per sequence that a KS test on 250k values detects.
    start = np.concatenate([[0.0], theirs.time[:-1]])
    keep = start < T - 20.0
    keep[theirs.offsets[:-1]] = False  # the first increment starts at 0, not at an event
    d, p = ks_exp1(x[keep])
    out["tick_sequences_ks"] = {"D": d, "p": p, "n": int(keep.sum()), "mean": float(x[keep].mean())}
    burn = 20.0  # rates after the start-up transient (the process starts with an empty history)

    def rate(seqs: EventSequences) -> list[float]:
        m = seqs.time >= burn
        return (np.bincount(seqs.type[m], minlength=K) / (len(seqs) * (T - burn))).tolist()

    out["rate_stationary"] = params.stationary_rate().tolist()
    out["rate_ours"], out["rate_tick"] = rate(ours.seqs), rate(theirs)
    out["loglik_ours_params_on_tick_seqs"] = float(hawkes_loglik(params, theirs, T).sum())
    print(f"{'check':44s} value")
    print(f"{'max |loglik ours - tick| per sequence':44s} {out['loglik_max_abs_diff']:.3e}")
    print(f"{'KS of our compensator on tick sequences':44s} D={d:.4f} p={p:.3f} n={int(keep.sum())}")
    for i in range(K):
        print(f"{f'rate type {i}: stationary / ours / tick':44s} {out['rate_stationary'][i]:.4f} / "
              f"{out['rate_ours'][i]:.4f} / {out['rate_tick'][i]:.4f}")
    print(f"{'simulation s: ours (vectorised) / tick (loop)':44s} {out['ours_sim_s']:.2f} / {out['tick_sim_s']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
