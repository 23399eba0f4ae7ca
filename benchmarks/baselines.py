"""SASRec / GRU4Rec / BERT4Rec on Beauty, Toys, LastFM and ml-100k: HR and NDCG @5/10/20, mean and std
over seeds, full ranking, leave-one-out, history items excluded (the S3-Rec and RecBole protocol; SRA-CL's code leaves them in).

    python benchmarks/baselines.py --models sasrec gru4rec bert4rec --datasets beauty toys lastfm ml-100k \
        --seeds 1 2 3

Each run is a normal run folder under benchmarks/_work/runs/<model>-<dataset>[<tag>]-s<seed>. A finished run
is reused only if its stored config equals the one asked for (``common.finished_run``; paths and thread counts
aside); otherwise the script stops and names the settings that differ: delete the folder, or give other
overrides a --tag. ``--no-train`` aggregates the finished runs as they were made.
Results: benchmarks/results/<--out> (per-seed numbers kept; --merge adds earlier files) and a markdown table.
"""

from __future__ import annotations

import argparse
import time

from common import (
    WORK,
    aggregate,
    cell,
    data_root,
    finished_run,
    kept_records,
    machine,
    seed_record,
    write_json,
)

from behaviorseq.cli_train import build_config
from behaviorseq.train import run_experiment

METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "bert4rec"])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "lastfm", "beauty", "toys"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--out", default="baselines.json")
    ap.add_argument("--no-train", action="store_true", help="only aggregate the runs that have finished")
    ap.add_argument("--tag", default="", help="appended to the run folder names, e.g. --tag=-p30 for runs whose overrides "
                    "differ from the default ones")
    ap.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                    help="earlier results files (name under benchmarks/results/ or a path) whose seeds join the table")
    ap.add_argument("overrides", nargs="*", help="key=value for every run, e.g. train.epochs=50")
    args = ap.parse_args()
    runs: dict[tuple, list[dict]] = kept_records(args.merge, METRICS, args.datasets) if args.merge else {}
    for ds in args.datasets:
        for model in args.models:
            for seed in args.seeds:
                run_dir = WORK / "runs" / f"{model}-{ds}{args.tag}-s{seed}"
                cfg = build_config(model, ds, None, args.overrides + [f"train.seed={seed}"])
                cfg.setdefault("data", {})["data_root"] = str(data_root())
                res = finished_run(run_dir, None if args.no_train else cfg)
                if res is None and args.no_train:
                    continue
                if res is None:
                    t0 = time.time()
                    res = run_experiment(cfg, run_dir, overwrite=True)  # not a finished run of this config
                    print(f"{model} {ds} seed {seed}: test ndcg@10 {res['test']['ndcg@10']:.4f} "
                          f"({time.time() - t0:.0f}s, best epoch {res['best_epoch']})", flush=True)
                runs.setdefault((ds, model), []).append(seed_record(res, METRICS))
    table = ["| dataset | model | seeds | " + " | ".join(m.upper() for m in METRICS) + " | best epoch | s/epoch |",
             "|" + "---|" * (len(METRICS) + 5)]
    summary = []
    for (ds, model), rs in runs.items():
        row = aggregate((ds, model), rs, METRICS)
        summary.append(row)
        table.append(f"| {ds} | {model} | {len(rs)} | " + " | ".join(cell(row[m]) for m in METRICS)
                     + f" | {'/'.join(map(str, row['best_epochs']))} | {row['seconds_per_epoch']:.1f} |")
    print("\n".join(table))
    out = write_json(args.out, {"machine": machine(), "command": "python benchmarks/baselines.py "
                                + " ".join(f"--{k} {' '.join(map(str, v))}" for k, v in
                                           (("models", args.models), ("datasets", args.datasets), ("seeds", args.seeds)))
                                + (f" --merge {' '.join(args.merge)}" if args.merge else "")
                                + " " + " ".join(args.overrides), "results": summary, "table": "\n".join(table)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
