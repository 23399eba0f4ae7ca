"""Training-time overhead of SRA-CL and CL4SRec against plain SASRec (issue 4), per step and per epoch.

    python benchmarks/sracl_overhead.py [--datasets beauty ml-100k] [--steps 12] [--rounds 2]

Each variant is built from its packaged config for the dataset (``prepare``, as ``run_experiment`` does)
and times ``--steps`` optimizer steps (forward, backward, Adam) on the same batches of its own loader,
``--rounds`` times in alternating order; the table gives the median ms per step, the loader's steps per
epoch and their product. Variants:

- ``sasrec``: our SASRec baseline as trained in benchmarks README §4 (every position of a user's
  sequence is a target; one sample per user chunk);
- ``sasrec-prefixes``: SRA-CL with alpha = beta = 0, which is exactly SASRec trained on SRA-CL's prefix
  samples (one sample per training event, as the official code);
- ``cl4srec``; ``sracl-is`` (beta only), ``sracl-cs`` (alpha only), ``sracl`` (both, the paper's);
- ``sracl-1group``: SRA-CL with its (3 + k) B rows encoded as one group (``cpu_buckets = 1``, the GPU
  path) instead of length groups, to show what the grouping buys on a CPU.

The step cost does not depend on where the semantic vectors come from, so ml-100k uses the attribute
source here (the text source needs the optional MiniLM weights). One process, glibc allocator tuned
as in ``run_experiment``, one torch thread by default. Pause other jobs while it runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine, write_json

VARIANTS = ("sasrec", "sasrec-prefixes", "cl4srec", "sracl-is", "sracl-cs", "sracl", "sracl-1group")


def build(variant: str, dataset: str, threads: int):
    from behaviorseq.cli_train import build_config
    from behaviorseq.train.run import prepare, resolve_config

    model = {"sasrec": "sasrec", "cl4srec": "cl4srec"}.get(variant, "sracl")
    over = [f"train.threads={threads}"]
    if model == "sracl":
        over.append("model.semantic.source=attributes")
        over += {"sasrec-prefixes": ["model.alpha=0", "model.beta=0"], "sracl-is": ["model.alpha=0"],
                 "sracl-cs": ["model.beta=0"]}.get(variant, [])
    cfg = resolve_config(build_config(model, dataset, None, over))
    store, split, net, task = prepare(cfg)
    if variant == "sracl-1group":
        net.cpu_buckets = 1
    loader, _ = task.train_loader(0)
    return cfg, net, loader


def time_steps(model, opt, batches) -> list[float]:
    out = []
    for b in batches:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(b).backward()
        opt.step()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["beauty", "ml-100k"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="sracl_overhead.json")
    args = ap.parse_args()
    from behaviorseq.train.allocator import tune_malloc

    malloc = tune_malloc()
    torch.set_num_threads(args.threads)
    rows, lines = [], []
    for ds in args.datasets:
        built = {}
        for v in args.variants:
            cfg, net, loader = build(v, ds, args.threads)
            it = iter(loader)
            batches = [next(it) for _ in range(args.steps + 2)]
            net.train()
            opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
            time_steps(net, opt, batches[:2])  # warm-up
            built[v] = (net, opt, batches[2:], len(loader), tuple(batches[2]["item"].shape))
        times: dict[str, list[float]] = {v: [] for v in built}
        for r in range(args.rounds):
            for v in (list(built) if r % 2 == 0 else list(reversed(built))):
                net, opt, batches, _, _ = built[v]
                torch.manual_seed(r)
                times[v] += time_steps(net, opt, batches)
        base_step = statistics.median(times["sasrec-prefixes"]) if "sasrec-prefixes" in times else None
        base_epoch = None
        if "sasrec" in times:
            base_epoch = statistics.median(times["sasrec"]) * built["sasrec"][3] / 1e3
        lines += [f"\n{ds}", "| variant | batch | ms / step | steps / epoch | s / epoch | step vs SASRec on prefixes "
                  "| epoch vs SASRec |", "|" + "---|" * 7]
        for v, (_, _, _, n_steps, shape) in built.items():
            ms = statistics.median(times[v])
            epoch = ms * n_steps / 1e3
            rows.append({"dataset": ds, "variant": v, "batch_shape": shape, "ms_per_step": ms, "steps_per_epoch": n_steps,
                         "s_per_epoch": epoch, "all_ms": times[v]})
            lines.append(f"| {v} | {shape[0]} x {shape[1]} | {ms:.0f} | {n_steps} | {epoch:.0f} | "
                         + (f"{ms / base_step:.2f}x" if base_step else "-") + " | "
                         + (f"{epoch / base_epoch:.1f}x" if base_epoch else "-") + " |")
        print("\n".join(lines[-len(built) - 3:]), flush=True)
    table = "\n".join(lines)
    write_json(args.out, {"machine": machine(), "malloc": malloc, "argv": vars(args), "results": rows, "table": table})


if __name__ == "__main__":
    main()
