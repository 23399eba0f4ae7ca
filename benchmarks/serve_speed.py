"""Serving speed of a trained SASRec on MovieLens-100K: ``Recommender.recommend`` latency per request and
throughput for batched requests, and the HTTP endpoint's requests per second, same process, same run.

    OMP_NUM_THREADS=1 python benchmarks/serve_speed.py --json serve_speed.json   # -> benchmarks/results/

Trains the packaged SASRec for ``--epochs`` (the weights' quality does not matter here) into a temporary run
folder, then serves each ml-100k user's leave-one-out test input (history up to its last item; the model reads
the latest max_len = 50) with n = 10 and seen items left out. Latency: one user per call; throughput:
``--batch`` users per call; HTTP: sequential POST /recommend of one user from one client over localhost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
import torch
from common import data_root, machine, timed, write_json

from behaviorseq.data.datasets import open_dataset
from behaviorseq.serve import Recommender
from behaviorseq.serve.http import make_server
from behaviorseq.train import build_config, run_experiment


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--requests", type=int, default=300, help="single-user calls (and HTTP requests) timed")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config("sasrec", "ml-100k", None, [f"train.epochs={args.epochs}", "train.threads=1"])
        cfg.setdefault("data", {})["data_root"] = str(data_root())
        run_experiment(cfg, Path(tmp) / "run")
        rec = Recommender.from_run(Path(tmp) / "run")
        store = open_dataset("ml-100k", root=data_root())
        users = [store.raw_items(store.sequence(u))[:-1] for u in range(1, store.num_users + 1)]
        rng = np.random.default_rng(0)
        pick = rng.integers(0, len(users), args.requests)
        rec.recommend([users[0]])  # warm-up
        single = timed(lambda i: rec.recommend([users[i]], n=10), pick)
        batches = [users[i:i + args.batch] for i in range(0, len(users), args.batch)]
        batched = timed(lambda b: rec.recommend(b, n=10), batches)
        server = make_server(rec, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/recommend"

        def post(i: int) -> None:
            body = json.dumps({"history": users[i], "n": 10}).encode()
            with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as r:
                r.read()

        post(0)
        http = timed(post, pick)
        server.shutdown()
        server.server_close()
    ms = lambda xs: {"p50_ms": round(1e3 * float(np.median(xs)), 2), "p99_ms": round(1e3 * float(np.quantile(xs, 0.99)), 2)}  # noqa: E731
    res = {"machine": machine(), "argv": vars(args), "model": "sasrec (packaged ml-100k config)", "items": len(rec.raw),
           "max_len": rec.max_len, "single_user_call": ms(single),
           "batched": {"users_per_call": args.batch, "users_per_s": round(len(users) / sum(batched), 1), **ms(batched)},
           "http_single_user": {**ms(http), "requests_per_s": round(len(http) / sum(http), 1)}}
    print(json.dumps(res, indent=2))
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
