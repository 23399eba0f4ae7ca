"""LBSF and its flat baselines trained by the engine (``behaviorseq train``, task ``default_risk``) against the
benchmark loop of ``lbsf_windows.py``: same planted data, view, sizes, optimiser and epochs; only the driver
differs (Trainer batches, checkpoint of the best validation AUC, run folders). A check that the engine path
reproduces the published table, not a new result.

    OMP_NUM_THREADS=1 python benchmarks/risk_engine.py --seeds 0 1 2 --window 180 \\
        --json risk_engine.json      # written to benchmarks/results/

Each run is ``behaviorseq train --model M data.payments.seed=S train.seed=S ...``; its folder is
``benchmarks/_work/runs/risk-<model>-w<window>[-e<epochs>p<patience>]-s<seed>``, reused when finished (delete it
to retrain). ``--epochs 30 --patience 6`` asks whether the flat baselines only lacked training time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import WORK, finished_run, machine, mean_sd, pm, write_json

from behaviorseq.cli_train import build_config
from behaviorseq.train import run_experiment
from behaviorseq.utils import atomic_write_text

NAMES = {"lbsf": "lbsf", "flat_transformer": "transformer", "flat_gru": "gru"}  # lbsf_windows.py's names


def tabulate(rows: list[dict], ref: dict, models: list[str], window: float) -> str:
    lines = [f"| model | engine AUC ({window:g} d) | engine KS | benchmark loop AUC (8 epochs) | seeds | best epochs |",
             "|---|---|---|---|---|---|"]
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        bench = pm(*mean_sd(ref[NAMES[model]])) if ref.get(NAMES[model]) else "-"
        best = "/".join(str(r["best_epoch"]) for r in mine)
        lines.append(f"| {model} | {pm(*mean_sd(r['auc'] for r in mine))} | {pm(*mean_sd(r['ks'] for r in mine))} "
                     f"| {bench} | {len(mine)} | {best} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--window", type=float, default=180.0)
    p.add_argument("--models", nargs="+", default=list(NAMES))
    p.add_argument("--epochs", type=int, default=8, help="8 = lbsf_windows.py's budget")
    p.add_argument("--patience", type=int, default=None, help="default: --epochs (no early stop)")
    p.add_argument("--json", default=None)
    p.add_argument("--reference", default="benchmarks/results/lbsf_windows.json")
    p.add_argument("--retable", default=None, metavar="JSON",
                   help="rebuild the table of this earlier --json output (a path) from its rows; no training")
    args = p.parse_args()
    if args.retable:
        saved = json.loads(Path(args.retable).read_text())
        a = saved["args"]
        saved["table"] = tabulate(saved["rows"], saved["reference_rows"], a["models"], a["window"])
        saved["retabled"] = time.strftime("%Y-%m-%d %H:%M") + " (mean ± sample std, ddof 1)"
        print(saved["table"])
        atomic_write_text(args.retable, json.dumps(saved, indent=2, default=str))
        return
    # lbsf_windows.py's set-up: 2,400 users at 0.7 payments/day, M = 8, Lm = 10, N = 90, d = 32, batch 64,
    # AdamW lr 2e-3 wd 1e-4, 8 epochs, the best validation AUC's weights on test
    common = ["data.payments.n_users=2400", "data.payments.rate_per_day=0.7", f"data.risk.window_days={args.window}",
              "data.risk.n_top=8", "data.risk.max_per_merchant=10", "model.d=32", "model.n_hash=2048",
              f"train.epochs={args.epochs}", f"train.patience={args.patience or args.epochs}", "train.threads=1"]
    rows = []
    for model in args.models:
        for seed in args.seeds:
            tag = "" if args.epochs == 8 and args.patience in (None, 8) else f"-e{args.epochs}p{args.patience}"
            run_dir = WORK / "runs" / f"risk-{model}-w{args.window:g}{tag}-s{seed}"
            extra = ["model.layers=2"] if model == "flat_transformer" else []
            cfg = build_config(model, None, None, common + extra + [f"data.payments.seed={seed}", f"train.seed={seed}"])
            res = finished_run(run_dir, cfg)  # reused only if made with this config
            if res is None:
                t0 = time.time()
                res = run_experiment(cfg, run_dir, overwrite=True)  # not a finished run of this config
                print(f"{model} seed {seed}: test AUC {res['test']['auc']:.4f} KS {res['test']['ks']:.4f} "
                      f"({time.time() - t0:.0f} s, best epoch {res['best_epoch']})", flush=True)
            rows.append({"model": model, "seed": seed, "auc": res["test"]["auc"], "ks": res["test"]["ks"],
                         "best_epoch": res["best_epoch"], "train_seconds": res["train_seconds"]})
    ref = {}
    if Path(args.reference).exists():
        for r in json.loads(Path(args.reference).read_text())["rows"]:
            if float(r["window"]) == args.window and r["seed"] in args.seeds:
                ref.setdefault(r["model"], []).append(r["auc"])
    table = tabulate(rows, ref, args.models, args.window)
    print(table)
    if args.json:
        out = write_json(args.json, {"machine": machine(), "args": vars(args), "common_overrides": common,
                                     "rows": rows, "reference_rows": ref, "table": table})
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
