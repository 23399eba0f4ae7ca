"""LBSF vs its no-folding baselines over the last N payments (a flat Transformer, a GRU, and a chunked
Transformer: LBSF's pieces over chunks of Lm consecutive payments), at 45 / 90 / 180-day windows, on planted
payments (``behaviorseq.data.synthetic.payments``; LBSF brief section 2, "Offline tests").

Equal budget: every model sees at most (M + 1) * Lm payments per user (LBSF: M merchants + the pooled
rest, Lm each; flat models: the last N = (M + 1) * Lm payments of the window), with the same field encoder
and d; parameter counts are printed. Each model trains the same number of epochs (AdamW, BCE), keeps the
weights of the best valid AUC and reports test AUC / KS. Users are split train / valid / test by the
generator. For LBSF two test-time ablations are also reported: shuffling the payment contents (amount,
description, hour, day of week) across the kept time positions inside each merchant (breaks the
within-merchant chronology), and permuting the order of the top-M merchant slots (should change nothing).

Command (one CPU thread, the recorded results):
    OMP_NUM_THREADS=1 python benchmarks/lbsf_windows.py --seeds 0 1 2 \\
        --json benchmarks/results/lbsf_windows.json --png benchmarks/results/lbsf_windows.png
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import mean_sd, pm

from behaviorseq.data.folding import fold_by_merchant, last_n
from behaviorseq.data.synthetic.payments import TEST, TRAIN, VALID, PaymentsConfig, generate_payments
from behaviorseq.models.risk import build
from behaviorseq.nn.payment_fields import amount_edges, hash_char_ngrams
from behaviorseq.tasks.default_risk import evaluate, fit, to_tensors
from behaviorseq.utils import atomic_write_text, code_version

MODELS = ("lbsf", "transformer", "gru", "chunked")
CONTENT = ("amount", "description", "hour", "dow")  # shuffled inside a merchant; times stay in place


def shuffle_within_merchant(batch: dict, seed: int) -> dict:
    """Permute the payment contents among the kept (left-aligned) positions of every slot."""
    mask = batch["txn_mask"]
    g = torch.Generator().manual_seed(seed)
    key = torch.rand(mask.shape, generator=g).masked_fill(~mask, 2.0)
    perm = key.argsort(dim=-1)  # valid positions first, in random order
    return {k: (v.gather(-1, perm) if k in CONTENT else v) for k, v in batch.items()}


def permute_merchants(batch: dict, n_top: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    perm = torch.cat([torch.randperm(n_top, generator=g), torch.tensor([n_top])])  # the rest slot stays
    return {k: v[:, perm] for k, v in batch.items()}


def run(args) -> dict:
    torch.set_num_threads(1)
    M, Lm = args.top_m, args.lm
    N = (M + 1) * Lm
    rows = []
    for seed in args.seeds:
        data, truth = generate_payments(PaymentsConfig(n_users=args.users, rate_per_day=args.rate, seed=seed))
        train, valid, test = (np.flatnonzero(data.role == r) for r in (TRAIN, VALID, TEST))
        mn = hash_char_ngrams(data.merchant_names, args.n_hash)
        dn = hash_char_ngrams(data.descriptions, args.n_hash)
        edges = amount_edges(data.amount[np.isin(data.user, train)], 16)
        for window in args.windows:
            fo = to_tensors(fold_by_merchant(data, window_days=window, n_top=M, max_per_merchant=Lm))
            fl = to_tensors(last_n(data, window_days=window, max_len=N))
            seen_lbsf = float(fo["txn_mask"].sum(dim=(1, 2)).float().mean())
            seen_flat = float(fl["mask"].sum(dim=1).float().mean())
            for name in args.models:
                torch.manual_seed(seed)
                cfg = {"d": args.d, "n_hash": args.n_hash, "max_days": 180}
                if name == "lbsf":
                    model, view = build("lbsf", mn, dn, edges, Lm, cfg), fo
                elif name == "chunked":  # LBSF's pieces over chunks of Lm consecutive payments (models/risk/chunked_seq.py)
                    model, view = build("chunked_transformer", mn, dn, edges, N, {**cfg, "chunk": Lm}), fl
                else:  # registered as flat_transformer / flat_gru
                    cfg["layers"] = 2 if name == "transformer" else 1
                    model, view = build(f"flat_{name}", mn, dn, edges, N, cfg), fl
                res = fit(model, view, data.label, train, valid, test, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, patience=args.epochs, seed=seed)
                row = {"seed": seed, "window": window, "model": name, "auc": res["test"]["auc"],
                       "ks": res["test"]["ks"], "valid_auc": res["valid"]["auc"], "epochs": res["epochs"],
                       "seconds": round(res["seconds"], 1), "params": sum(p.numel() for p in model.parameters()),
                       "payments_seen": seen_lbsf if name == "lbsf" else seen_flat}
                if name == "lbsf":
                    row["auc_shuffle_within_merchant"] = evaluate(
                        model, shuffle_within_merchant(fo, seed), data.label, test)["auc"]
                    row["auc_permute_merchants"] = evaluate(
                        model, permute_merchants(fo, M, seed), data.label, test)["auc"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"rows": rows, "truth_reason_counts": np.bincount(truth.reason, minlength=4).tolist()}


def summarise(rows: list[dict], windows, models) -> tuple[str, dict]:
    summary, lines = {}, []
    lines.append("| model | " + " | ".join(f"{w}d AUC | {w}d KS" for w in windows) + " | params |")
    lines.append("|---" * (2 * len(windows) + 2) + "|")
    for m in models:
        cells, summary[m] = [], {}
        for w in windows:
            r = [x for x in rows if x["model"] == m and x["window"] == w]
            (am, asd), (km, ksd) = mean_sd(x["auc"] for x in r), mean_sd(x["ks"] for x in r)
            summary[m][str(w)] = {"auc_mean": am, "auc_std": asd, "ks_mean": km, "ks_std": ksd}
            cells.append(f"{pm(am, asd)} | {pm(km, ksd)}")
            if m == "lbsf":
                for key in ("auc_shuffle_within_merchant", "auc_permute_merchants"):
                    summary[m][str(w)][key + "_mean"], summary[m][str(w)][key + "_std"] = mean_sd(x[key] for x in r)
        params = [x["params"] for x in rows if x["model"] == m][0]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {params} |")
    if "lbsf" in models:
        lines.append("")
        lines.append("| LBSF test-time ablation | " + " | ".join(f"{w}d AUC" for w in windows) + " |")
        lines.append("|---" * (len(windows) + 1) + "|")
        for key, label in (("auc", "as trained"), ("auc_shuffle_within_merchant", "shuffle within merchant"),
                           ("auc_permute_merchants", "permute merchant order")):
            s = summary["lbsf"]
            cells = [pm(s[str(w)][key + "_mean"], s[str(w)][key + "_std"]) for w in windows]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines), summary


def plot(summary: dict, windows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, s in summary.items():
        mu = [s[str(w)]["auc_mean"] for w in windows]
        sd = [s[str(w)]["auc_std"] or 0.0 for w in windows]  # None with one seed
        ax.errorbar(windows, mu, yerr=sd, marker="o", capsize=3, label=m)
    ax.set_xlabel("window (days before the label date)")
    ax.set_ylabel("test AUC")
    ax.set_xticks(list(windows))
    ax.set_title("LBSF vs flat baselines (equal payment budget)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def retable(args) -> None:
    saved = json.loads(Path(args.retable).read_text())
    run_args = saved["meta"]["args"]
    windows = [int(w) if float(w).is_integer() else w for w in run_args["windows"]]
    table, summary = summarise(saved["rows"], windows, run_args["models"])
    print(table)
    saved.update(table=table, summary=summary)
    saved["meta"]["retabled"] = datetime.now(timezone.utc).isoformat() + " (mean ± sample std, ddof 1)"
    atomic_write_text(args.retable, json.dumps(saved, indent=1, default=float))
    if args.png:
        plot(summary, windows, args.png)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--users", type=int, default=2400)
    p.add_argument("--rate", type=float, default=0.7, help="background payments per user per day")
    p.add_argument("--windows", type=float, nargs="+", default=[45.0, 90.0, 180.0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--top-m", type=int, default=8)
    p.add_argument("--lm", type=int, default=10)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--n-hash", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None)
    p.add_argument("--retable", default=None, metavar="JSON",
                   help="rebuild the table, summary and PNG from this earlier --json output's rows (no training); "
                   "its run arguments are used and the file is rewritten")
    args = p.parse_args()
    if args.retable:
        retable(args)
        return
    t0 = time.perf_counter()
    out = run(args)
    windows = [int(w) if float(w).is_integer() else w for w in args.windows]
    for r in out["rows"]:
        r["window"] = int(r["window"]) if float(r["window"]).is_integer() else r["window"]
    table, summary = summarise(out["rows"], windows, args.models)
    print(table)
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")
    if args.json:
        meta = {"command": "OMP_NUM_THREADS=1 python benchmarks/lbsf_windows.py " + " ".join(
                    f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in vars(args).items() if v is not None),
                "args": vars(args), "machine": platform.platform(), "code_version": code_version(), "processor": platform.processor(),
                "torch": torch.__version__, "threads": 1, "date": datetime.now(timezone.utc).isoformat(),
                "seconds": round(total, 1),
                "protocol": "users split train/valid/test by the generator; best valid AUC epoch; test AUC/KS; "
                "equal payment budget (M+1)*Lm; LBSF ablations at test time only"}
        atomic_write_text(args.json, json.dumps({"meta": meta, "table": table, "summary": summary, **out},
                                                indent=1, default=float))
    if args.png:
        plot(summary, windows, args.png)


if __name__ == "__main__":
    main()
