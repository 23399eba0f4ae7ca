"""Serving speed of trained CTR models on ml-100k-ctr: ``Ranker.score`` of C candidates after one user's
history, through each model's serving split (TWIN / DARE ``score_candidates``, SDIM's BSE) against the same
model on the history repeated per candidate (``use_split=False``, the training path), same process, same
weights; and the HTTP endpoint's requests per second.

    OMP_NUM_THREADS=1 python benchmarks/serve_ctr_speed.py --json serve_ctr_speed.json   # -> benchmarks/results/

Each model trains ``--steps`` steps of one epoch (the weights' quality does not matter here) into a temporary
run folder with the package defaults (max_len 200). Requests: ``--users`` ml-100k users drawn with seed 0, each
with their whole rating history (the model reads the latest 200) and C candidates drawn uniformly from the
catalogue. Reported: median seconds per call and candidates scored per second.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from common import data_root, machine, timed, write_json

from behaviorseq.data.datasets import open_dataset
from behaviorseq.serve import Ranker
from behaviorseq.serve.http import make_server
from behaviorseq.train import build_config, run_experiment


def median_s(fn, inputs) -> float:
    return float(np.median(timed(fn, inputs)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["din", "twin", "dare", "sdim"])
    ap.add_argument("--candidates", nargs="+", type=int, default=[1, 100, 1000])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--http-requests", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    store = open_dataset("ml-100k", root=data_root())
    rng = np.random.default_rng(0)
    users = [store.raw_items(store.sequence(int(u))) for u in rng.integers(1, store.num_users + 1, args.users)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            cfg = build_config(name, "ml-100k-ctr", None, ["train.epochs=1", f"train.max_steps_per_epoch={args.steps}",
                                                           "train.threads=1"])
            cfg.setdefault("data", {})["data_root"] = str(data_root())
            run_experiment(cfg, Path(tmp) / name)
            ranker = Ranker.from_run(Path(tmp) / name)
            raw = ranker.ids.raw
            for c in args.candidates:
                reqs = [(h, raw[rng.integers(0, len(raw), c)].tolist()) for h in users]
                ranker.score(*reqs[0])  # warm-up
                res = {"model": name, "candidates": c}
                for split in (True, False):
                    ranker.use_split = split
                    s = median_s(lambda r, ranker=ranker: ranker.score(*r), reqs)
                    key = "split" if split else "repeated"
                    res[f"{key}_ms"] = round(1e3 * s, 2)
                    res[f"{key}_candidates_per_s"] = round(c / s)
                ranker.use_split = True
                res["speedup"] = round(res["repeated_ms"] / res["split_ms"], 2)
                rows.append(res)
                print(json.dumps(res), flush=True)
        ranker = Ranker.from_run(Path(tmp) / args.models[-1])
        server = make_server(ranker, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/score"
        raw = ranker.ids.raw
        bodies = [json.dumps({"history": users[i % len(users)], "candidates": raw[rng.integers(0, len(raw), 100)].tolist()}).encode()
                  for i in range(args.http_requests)]

        def post(body: bytes) -> None:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as r:
                r.read()

        post(bodies[0])
        t = time.perf_counter()
        for b in bodies:
            post(b)
        http = {"model": args.models[-1], "candidates": 100, "requests_per_s": round(len(bodies) / (time.perf_counter() - t), 1)}
        server.shutdown()
        server.server_close()
    res = {"machine": machine(), "argv": vars(args), "data": "ml-100k-ctr (package defaults, max_len 200)",
           "history_len": {"mean": float(np.mean([len(h) for h in users])), "max": max(len(h) for h in users)},
           "rows": rows, "http": http}
    print(json.dumps(http))
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
