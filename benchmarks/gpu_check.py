"""Training throughput of a baseline on one device: sequences per second, with and without AMP (issue 3).

    python benchmarks/gpu_check.py --device cuda                 # SASRec on Beauty, fp32 and AMP, on the GPU
    python benchmarks/gpu_check.py --device cpu --modes fp32 --threads 2   # the CPU figure beside it

Each mode is a ``run_experiment`` of the packaged config (SASRec: CE loss, hidden 64, max_len 50, batch 256)
for ``--epochs`` epochs with validation only after the last one, so the first ``--epochs - 1`` epochs are
training alone: sequences/s = training sequences per epoch / the median seconds of epochs 2.. (epoch 1
holds the warm-up: CUDA context, kernel selection). The last epoch's validation NDCG@10 is a sanity check
that both modes learn, not a result (4 epochs are far from converged). JSON: results/gpu_check_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from common import machine, write_json

from behaviorseq.cli_train import build_config
from behaviorseq.train import run_experiment


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--modes", nargs="+", default=["fp32", "amp"], choices=["fp32", "amp"])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    rows, lines = [], ["| device | mode | sequences/epoch | s/epoch (training) | sequences/s | valid NDCG@10 after the last epoch |",
                       "|---|---|---|---|---|---|"]
    for mode in args.modes:
        over = [f"train.device={args.device}", f"train.amp={'true' if mode == 'amp' else 'false'}",
                f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}", f"train.patience={args.epochs}"]
        if args.threads:
            over.append(f"train.threads={args.threads}")
        cfg = build_config(args.model, args.dataset, None, over)
        with tempfile.TemporaryDirectory() as tmp:
            res = run_experiment(cfg, Path(tmp) / "run")
            log = [json.loads(x) for x in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
        ends = [r["elapsed_s"] for r in log]  # cumulative, per epoch; the last epoch also validates
        epoch_s = [b - a for a, b in zip(ends, ends[1:-1])] or [ends[0]]  # epochs 2 .. N-1
        steps = log[0]["step"]
        proto = res["protocol"]  # "last": one training sequence per user; else about steps x batch
        batch = cfg.get("train", {}).get("batch_size", 256)
        n_seq = proto["split"]["samples"]["train"] if proto.get("train_windows") == "last" else steps * batch
        s = statistics.median(epoch_s)
        rows.append({"device": args.device, "mode": mode, "sequences_per_epoch": n_seq, "epoch_seconds": epoch_s,
                     "sequences_per_s": n_seq / s, "steps_per_epoch": steps, "valid_ndcg@10": res["valid"]["ndcg@10"],
                     "environment": res["environment"]})
        lines.append(f"| {args.device} | {mode} | {n_seq} | {s:.2f} | {n_seq / s:,.0f} | {res['valid']['ndcg@10']:.4f} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    write_json(args.out or f"gpu_check_{args.device}.json",
               {"machine": machine(), "gpu": gpu, "argv": vars(args), "results": rows, "table": table})


if __name__ == "__main__":
    main()
