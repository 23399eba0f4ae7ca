"""Training-step time of the baselines: the CPU fast paths of ``behaviorseq.nn`` (blocked linear +
cross-entropy, rand-mask dropout) against torch's own ops, each with glibc's default allocator and
with the tuned one that ``run_experiment`` applies (``behaviorseq/train/allocator.py``).

    python benchmarks/train_step_speed.py [--dataset beauty] [--models sasrec gru4rec bert4rec] [--steps 20]

Each model is built from its packaged config for the dataset. The allocator is process-wide, so each
allocator setting runs in its own subprocess (alternating order over ``--reps``); inside one, a round
times ``--steps`` optimizer steps (forward, backward, Adam) with the fast paths, then the same steps from
the same weights with torch's ops, or the other way round. The table gives medians in ms per step.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from common import machine, write_json


def time_steps(model, batches, lr: float) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    t = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        model.loss(b).backward()
        opt.step()
    return (time.perf_counter() - t) / len(batches) * 1e3


def child(args) -> None:
    from behaviorseq.cli_train import build_config
    from behaviorseq.nn import dropout as dropout_mod
    from behaviorseq.nn import losses as losses_mod
    from behaviorseq.train.allocator import tune_malloc
    from behaviorseq.train.run import prepare, resolve_config

    malloc = tune_malloc()
    torch.set_num_threads(args.threads)
    for name in args.models:
        cfg = resolve_config(build_config(name, args.dataset, None, [f"train.threads={args.threads}"]))
        store, split, model, task = prepare(cfg)
        loader, _ = task.train_loader(0)
        batches = [b for _, b in zip(range(args.steps + 2), loader)]
        start = copy.deepcopy(model.state_dict())
        time_steps(model, batches[:2], cfg.train.lr)  # warm-up
        times = {"fast": [], "torch": []}
        for r in range(args.rounds):
            for mode in (("fast", "torch") if r % 2 == 0 else ("torch", "fast")):
                dropout_mod.RAND_MASK = losses_mod.FUSED_CE = mode == "fast"
                model.load_state_dict(start)
                torch.manual_seed(r)
                times[mode].append(time_steps(model, batches[2:], cfg.train.lr))
        print(json.dumps({"model": name, "malloc": malloc, "batch_shape": list(batches[2]["item"].shape), **times}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "bert4rec"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="fast/torch alternations per subprocess")
    ap.add_argument("--reps", type=int, default=2, help="subprocesses per allocator setting")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="train_step_speed.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    argv = [sys.executable, __file__, "--child", "--dataset", args.dataset, "--models", *args.models, "--steps",
            str(args.steps), "--rounds", str(args.rounds), "--threads", str(args.threads)]
    runs = []
    for rep in range(args.reps):
        for tuned in ((False, True) if rep % 2 == 0 else (True, False)):
            env = {**os.environ, "BEHAVIORSEQ_MALLOC_TUNING": "1" if tuned else "0"}
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
            runs += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    lines = ["| model | batch | torch ops, default malloc | fast ops, default malloc | torch ops, tuned malloc | "
             "fast ops, tuned malloc | fast + tuned vs torch + default |", "|" + "---|" * 7]
    rows = []
    for name in args.models:
        cell = {}
        for tuned in (False, True):
            rs = [r for r in runs if r["model"] == name and r["malloc"]["tuned"] == tuned]
            for mode in ("torch", "fast"):
                cell[(tuned, mode)] = statistics.median([t for r in rs for t in r[mode]])
        shape = runs[0]["batch_shape"] if runs else []
        rows.append({"model": name, "batch_shape": shape, "ms_per_step": {f"{m}_{'tuned' if t else 'default'}": v
                                                                          for (t, m), v in cell.items()}})
        lines.append(f"| {name} | {shape[0]} x {shape[1]} | " + " | ".join(
            f"{cell[(t, m)]:.0f}" for t in (False, True) for m in ("torch", "fast"))
            + f" | {cell[(False, 'torch')] / cell[(True, 'fast')]:.2f}x |")
    table = "\n".join(lines)
    print(table)
    write_json(args.out, {"machine": machine(), "argv": vars(args), "results": rows, "runs": runs, "table": table})


if __name__ == "__main__":
    main()
