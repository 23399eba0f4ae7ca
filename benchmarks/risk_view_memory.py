"""Memory of the default-risk views: dense (``to_tensors(fold_by_merchant(...))``, what the engine kept before
session 19) against packed (``data.packed.pack_view``: the real payments only, densified per batch), same
process, same data.

    OMP_NUM_THREADS=1 python benchmarks/risk_view_memory.py --json risk_view_memory.json   # -> benchmarks/results/

Data: ``--per-user`` payments per user at random times in the 170 days before a label date of day 180, 499
merchants, 49 descriptions; the 180-day window holds them all. Views: LBSF's fold (top 8 merchants + rest, 10
payments each) and the flat last 90 payments (the same budget of 90). Reported: numpy peak during the build
(tracemalloc), bytes kept for training, build seconds, and the time to densify one batch of 64 users.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
from common import machine, write_json

from behaviorseq.data.folding import fold_by_merchant, last_n
from behaviorseq.data.packed import pack_view
from behaviorseq.tasks.default_risk import to_tensors


def payments(n_users: int, per_user: int, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(n_users), per_user)
    t = np.sort(rng.random((n_users, per_user)) * 170, axis=1).ravel()
    return SimpleNamespace(n_users=n_users, user=user, time=t, merchant=rng.integers(1, 500, size=user.size),
                           amount=rng.random(user.size) * 100, description=rng.integers(1, 50, size=user.size),
                           label_day=180.0)


def measure(build, *args, **kw) -> tuple[object, float, float]:
    tracemalloc.start()
    t = time.perf_counter()
    out = build(*args, **kw)
    s = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak, s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--per-user", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name, fn, kw in (("folded", fold_by_merchant, {"n_top": 8, "max_per_merchant": 10}),
                         ("flat", last_n, {"max_len": 90})):
        for n in args.users:
            d = payments(n, args.per_user)
            dense, d_peak, d_s = measure(lambda *a, f=fn, **k: to_tensors(f(*a, **k)), d, window_days=180.0, **kw)
            d_kept = sum(t.numel() * t.element_size() for t in dense.values())
            del dense
            packed, p_peak, p_s = measure(pack_view, fn, d, window_days=180.0, **kw)
            p_kept = (packed.offsets.nbytes + packed.cell.nbytes + sum(v.nbytes for v in packed.fields.values())
                      + sum(v.nbytes for v in packed.per_user.values()))
            t = time.perf_counter()
            for i in range(0, 64 * 20, 64):
                to_tensors(packed.take(np.arange(i, i + 64) % n))
            take_ms = (time.perf_counter() - t) / 20 * 1e3
            row = {"view": name, "users": n, "payments": int(d.user.size),
                   "dense": {"peak_mib": round(d_peak / 2**20, 1), "kept_mib": round(d_kept / 2**20, 1),
                             "bytes_per_payment": round(d_kept / d.user.size), "build_s": round(d_s, 2)},
                   "packed": {"peak_mib": round(p_peak / 2**20, 1), "kept_mib": round(p_kept / 2**20, 1),
                              "bytes_per_payment": round(p_kept / d.user.size), "build_s": round(p_s, 2),
                              "batch_of_64_ms": round(take_ms, 2)},
                   "kept_ratio": round(d_kept / p_kept, 1)}
            rows.append(row)
            print(row, flush=True)
    if args.json:
        write_json(args.json, {"machine": machine(), "argv": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
