"""Full-ranking evaluation speed: all Beauty test users (22,363) against all 12,101 items, history items
excluded, with a SASRec of the benchmark size (hidden 64, 2 blocks, max_len 50). Reports the median of
several timed passes after one warm-up, and the same for the ranking alone (scores precomputed).

    python benchmarks/eval_speed.py [--dataset beauty] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import beauty_task, machine, write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", default=None, help="file name in benchmarks/results/ (default: eval_speed_<dataset>.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    store, split, model, task = beauty_task(args.dataset, eval_chunk=args.chunk)
    task.evaluate(model, "test", torch.device("cpu"))  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = task.evaluate(model, "test", torch.device("cpu"))
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    print(f"{args.dataset}: {res['n']:,} users x {store.num_items:,} items, full ranking with history "
          f"exclusion: median {med:.2f} s over {args.repeats} passes (min {min(times):.2f} s), "
          f"{res['n'] / med:,.0f} users/s, chunk {args.chunk}, torch threads {torch.get_num_threads()}")
    out = write_json(args.json or f"eval_speed_{args.dataset}.json", {
        "machine": machine(), "dataset": args.dataset, "users": res["n"], "items": store.num_items,
        "seconds_median": med, "seconds_all": times, "chunk": args.chunk, "protocol": task.protocol("test")})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
