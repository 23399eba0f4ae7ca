"""Serving speed of event-stream and default-risk runs, same process: ``EventPredictor.predict`` on a request
of many sequences (one batched call against one call per sequence; both thin only each sequence's last
interval; best of 3 each), and ``RiskScorer.score`` users per second.

    OMP_NUM_THREADS=1 python benchmarks/serve_tpp_risk_speed.py --json serve_tpp_risk_speed.json   # -> results/

TPP: NHP, THP and AttNHP with their packaged configs, trained ``--tpp-epochs`` on the default synthetic Hawkes
data (quality does not matter for speed), then ``--sequences`` test sequences cut to their first ``--events``
events, predicted with seed 0. Risk: LBSF on planted payment tables written as a user would (``--users``
users, 180-day window, the packaged set-up), 1 epoch, then every user scored at the label date.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import machine, timed, write_json

from behaviorseq.serve import EventPredictor, RiskScorer
from behaviorseq.train import build_config, run_experiment


def seconds(fn, repeat: int = 3) -> float:
    """The best of ``repeat`` timings of ``fn()``."""
    return min(timed(lambda _: fn(), range(repeat)))


def tpp_rows(tmp: Path, args) -> list[dict]:
    from behaviorseq.train.run import load_run_config
    from behaviorseq.train.run_tpp import prepare_tpp

    rows = []
    for name in ("nhp", "thp", "attnhp"):
        cfg = build_config(name, None, None, [f"train.epochs={args.tpp_epochs}", "train.threads=1"])
        run_experiment(cfg, tmp / name)
        pred = EventPredictor.from_run(tmp / name)
        test = prepare_tpp(load_run_config(tmp / name))[2].data["test"]
        seqs = []
        for i in range(min(args.sequences, len(test.offsets) - 1)):
            a, b = test.offsets[i], min(test.offsets[i + 1], test.offsets[i] + args.events)
            seqs.append((test.time[a:b].tolist(), test.type[a:b].tolist()))
        pred.predict(seqs[:2])  # warm-up
        batched = seconds(lambda p=pred, s=seqs: p.predict(s, seed=0))
        single = seconds(lambda p=pred, s=seqs: [p.predict([q], seed=0) for q in s])
        rows.append({"model": name, "sequences": len(seqs), "events_each": args.events,
                     "batched_ms": round(1e3 * batched, 1), "per_sequence_ms": round(1e3 * single, 1),
                     "speedup": round(single / batched, 2)})
        print(rows[-1], flush=True)
    return rows


def risk_row(tmp: Path, args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_risk_run import _write_tables  # the planted tables as a user's CSV files

    _, pay, _ = _write_tables(tmp / "tables", n_users=args.users)
    cfg = build_config("lbsf", str(tmp / "tables"), None, ["train.epochs=1", "train.threads=1",
                                                          "data.payments.label_date=2024-06-29"])
    run_experiment(cfg, tmp / "lbsf")
    scorer = RiskScorer.from_run(tmp / "lbsf")
    s = seconds(lambda: scorer.score(pay, label_date="2024-06-29"))
    row = {"model": "lbsf", "users": args.users, "payments": len(pay), "score_s": round(s, 2),
           "users_per_s": round(args.users / s)}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=40)
    ap.add_argument("--events", type=int, default=8)
    ap.add_argument("--tpp-epochs", type=int, default=1)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    np.random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tables").mkdir()
        res = {"machine": machine(), "argv": vars(args), "tpp": tpp_rows(Path(tmp), args),
               "risk": risk_row(Path(tmp), args)}
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
