"""Does the data path feed the model at least as fast as it trains? Batches/s of the loader alone
(LOO training view of Beauty, batch 256, one sampled negative per position that avoids the user's
training items: the most expensive path) against training steps/s of SASRec on the same batches.

    python benchmarks/loader_speed.py [--dataset beauty] [--batches 60]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import beauty_task, machine, write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    store, split, model, task = beauty_task(args.dataset, loss="bce", batch_size=args.batch_size)
    loader, _ = task.train_loader(epoch=0)
    t0 = time.perf_counter()
    batches = []
    for i, b in enumerate(loader):
        batches.append(b)
        if i + 1 == args.batches:
            break
    load_s = time.perf_counter() - t0
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    t0 = time.perf_counter()
    for b in batches:
        opt.zero_grad()
        model.loss(b).backward()
        opt.step()
    train_s = time.perf_counter() - t0
    res = {"dataset": args.dataset, "batch_size": args.batch_size, "batches": len(batches),
           "loader_batches_per_s": len(batches) / load_s, "train_steps_per_s": len(batches) / train_s,
           "ratio_loader_over_train": (len(batches) / load_s) / (len(batches) / train_s)}
    print(f"loader {res['loader_batches_per_s']:.1f} batches/s, SASRec-BCE training {res['train_steps_per_s']:.1f}"
          f" steps/s: the loader is {res['ratio_loader_over_train']:.1f}x faster than training")
    write_json(f"loader_speed_{args.dataset}.json", {"machine": machine(), **res})


if __name__ == "__main__":
    main()
