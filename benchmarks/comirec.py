"""ComiRec (issue 4) under the ComiRec protocol: user holdout 8:1:1 (seed 1230), held-out users' first
80% as input and the rest as the target set, full ranking over all items, history items kept,
Recall/HR/NDCG@20,50 (NDCG with IDCG over min(|targets|, N)), early stopping on validation Recall@50.

    # the table: MostPopular, GRU4Rec, SASRec (single interest), ComiRec-SA, ComiRec-DR, 3 seeds
    python benchmarks/comirec.py table --datasets ml-100k --seeds 1 2 3 train.threads=1
    # the interest-count sweep K in {1, 2, 4, 8} (seed 1), one model a process (the README's runs)
    python benchmarks/comirec.py ksweep --datasets ml-100k --seeds 1 --models comirec_sa --suffix _sa train.threads=1
    python benchmarks/comirec.py ksweep --datasets ml-100k --seeds 1 --models comirec_dr --suffix _dr train.threads=1
    # controllable aggregation: lambda in {0, .05, .1, .25, .5} on the trained table runs (--seeds: which) -> PNG
    python benchmarks/comirec.py lambda --datasets ml-100k --seeds 1 2 3
    # planted multi-topic users (2-4 topics each): ComiRec vs single-interest SASRec on Recall@50
    python benchmarks/comirec.py planted --seeds 1 2 3 train.threads=1
    # how the trained table runs use their interests (target shares, each interest alone, norms)
    python benchmarks/comirec.py capsules --datasets beauty toys --seeds 1
    # the ComiRec code's own recall and NDCG (both branches) beside ours, on the trained table runs
    python benchmarks/comirec.py official --datasets beauty toys
    # any of the above with --no-train only aggregates the finished runs

Runs are normal run folders under benchmarks/_work/comirec/<dataset>/<model>[-K<k>]-s<seed>; finished
ones are reused if made with the same config (`common.finished_run`: else the script stops and names the
settings that differ; delete the folder to retrain). Results: benchmarks/results/comirec_*.json and tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
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

MODELS = ["mostpop", "gru4rec", "sasrec", "comirec_sa", "comirec_dr"]
METRICS = ["recall@20", "ndcg@20", "hr@20", "recall@50", "ndcg@50", "hr@50"]
LAMBDAS = [0.0, 0.05, 0.1, 0.25, 0.5]
NO_TRAIN = False  # --no-train: only aggregate the runs that have finished


def run(model: str, ds: str, seed: int, overrides: list[str], tag: str = "", extra: list[str] = ()) -> dict:
    run_dir = WORK / "comirec" / Path(ds).stem / f"{model}{tag}-s{seed}"
    data = None if ds.endswith(".csv") else ds
    from behaviorseq import models

    fields = models.get(model).Config.model_fields  # model.* overrides apply where the model has the key
    ov = [o for o in list(overrides) + list(extra) if not o.startswith("model.") or o[6:].split("=")[0] in fields]
    cfg = build_config(model, data, None, ov + [f"train.seed={seed}"], protocol="comirec")
    if data is None:
        cfg.setdefault("data", {})["dataset"] = ds
    else:
        cfg.setdefault("data", {})["data_root"] = str(data_root())
    res = finished_run(run_dir, None if NO_TRAIN else cfg)  # reused only if made with this config
    if res is not None or NO_TRAIN:
        return res
    t0 = time.time()
    res = run_experiment(cfg, run_dir, overwrite=True)  # not a finished run of this config
    print(f"{model}{tag} {Path(ds).name} seed {seed}: test recall@50 {res['test']['recall@50']:.4f} "
          f"({time.time() - t0:.0f}s, best epoch {res['best_epoch']})", flush=True)
    return res


def summarize(rows: dict, label: str, kept: dict | None = None, data_per_seed: bool = False) -> tuple[list[dict], str]:
    """Rows of finished runs (None = not trained), plus the per-seed records ``kept`` from earlier files;
    ``data_per_seed``: each seed has its own planted data set (see ``common.aggregate``)."""
    recs = {k: [seed_record(r, METRICS) for r in rs if r is not None] for k, rs in rows.items()}
    for k, rs in (kept or {}).items():
        recs.setdefault(k, []).extend(rs)
    table = [f"| dataset | {label} | seeds | " + " | ".join(m for m in METRICS) + " | s/epoch |",
             "|" + "---|" * (len(METRICS) + 4)]
    out = []
    for (ds, name), rs in recs.items():
        if not rs:
            continue
        row = aggregate((ds, name), rs, METRICS, label, data_per_seed)
        out.append(row)
        table.append(f"| {Path(ds).stem} | {name} | {len(rs)} | " + " | ".join(cell(row[m]) for m in METRICS)
                     + f" | {row['seconds_per_epoch']:.2f} |")
    return out, "\n".join(table)


def cmd_table(args) -> None:
    rows = {}
    for ds in args.datasets:
        for model in args.models:
            for seed in args.seeds:
                rows.setdefault((ds, model), []).append(run(model, ds, seed, args.overrides))
    summary, table = summarize(rows, "model", kept_records(args.merge, METRICS, args.datasets) if args.merge else None)
    print(table)
    write_json(f"comirec_table{args.suffix}.json", {"machine": machine(), "argv": vars(args), "results": summary,
                                                     "table": table})


def cmd_ksweep(args) -> None:
    rows = {}
    for ds in args.datasets:
        for model in [m for m in args.models if m.startswith("comirec")]:
            for k in (1, 2, 4, 8):
                for seed in args.seeds:
                    tag = "" if k == 4 else f"-K{k}"
                    rows.setdefault((ds, f"{model} K={k}"), []).append(
                        run(model, ds, seed, args.overrides, tag, [f"model.num_interests={k}"]))
    summary, table = summarize(rows, "model")
    print(table)
    write_json(f"comirec_ksweep{args.suffix}.json", {"machine": machine(), "argv": vars(args), "results": summary,
                                                      "table": table})


def cmd_lambda(args) -> None:
    from behaviorseq.data.categories import DEFAULTS, item_categories
    from behaviorseq.tasks.multi_interest import evaluate_controllable

    results, lines = [], ["| dataset | model | seed | lambda | recall@50 | ndcg@50 | hr@50 | diversity@50 | recall@20 | diversity@20 |",
                          "|" + "---|" * 10]
    for ds, model, seed, (store, _, m, task) in trained_runs(args.datasets, ("comirec_sa", "comirec_dr"), args.seeds):
        column = DEFAULTS.get(str(store.meta.get("name", "")).lower(), ("category",))[0]
        cate, record = item_categories(store, *((column, args.category) if args.category else ()))
        res = evaluate_controllable(task, m, "test", cate, LAMBDAS, n=50, ks=[20, 50], index={"kind": args.index})
        for lam, r in res.items():
            results.append({"dataset": ds, "model": model, "seed": seed, "lambda": lam, "category": record,
                            "index": args.index, **r})
            lines.append(f"| {Path(ds).stem} | {model} | {seed} | {lam} | {r['recall@50']:.4f} | "
                         f"{r['ndcg@50']:.4f} | {r['hr@50']:.4f} | {r['diversity@50']:.4f} | "
                         f"{r['recall@20']:.4f} | {r['diversity@20']:.4f} |")
    table = "\n".join(lines)
    print(table)
    write_json(f"comirec_lambda{args.suffix}.json", {"machine": machine(), "argv": vars(args), "lambdas": LAMBDAS,
                                                      "results": results, "table": table})
    plot_lambda(results, Path(__file__).parent / "results" / f"comirec_lambda{args.suffix}.png")


def plot_lambda(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["dataset"], r["model"]) for r in results})
    for ds, model in keys:
        rs = [r for r in results if r["dataset"] == ds and r["model"] == model]
        lam = sorted({r["lambda"] for r in rs})
        rec = [np.mean([r["recall@50"] for r in rs if r["lambda"] == x]) for x in lam]
        div = [np.mean([r["diversity@50"] for r in rs if r["lambda"] == x]) for x in lam]
        ax.plot(div, rec, "o-", label=f"{Path(ds).stem} {model}")
        for x, d, rr in zip(lam, div, rec):
            ax.annotate(f"{x:g}", (d, rr), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("Diversity@50")
    ax.set_ylabel("Recall@50")
    ax.set_title("ComiRec controllable aggregation (labels: lambda)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def planted_csv(seed: int) -> Path:
    """The planted multi-topic users as a CSV the dataset layer reads (user,item,timestamp,category)."""
    from behaviorseq.data.synthetic import MultiInterestConfig, generate_multi_interest

    path = WORK / "comirec" / f"planted-multi-interest-d{seed}.csv"
    cfg = MultiInterestConfig(n_users=3000, n_topics=50, items_per_topic=40, min_topics=2, max_topics=4, min_len=20,
                              max_len=60, seed=seed)
    sidecar = path.with_suffix(".config.json")  # the generator settings the CSV was made with
    want = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if path.exists() and sidecar.exists() and sidecar.read_text() != want:
        raise SystemExit(f"{path} was generated with other settings ({sidecar}); delete both to regenerate")
    if not path.exists():
        table, _ = generate_multi_interest(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.events.to_pandas().to_csv(path, index=False)
    if not sidecar.exists():
        sidecar.write_text(want)
    return path


def trained_runs(datasets, models, seeds):
    """(dataset, model, seed, load_run(...)) of every finished table run; missing ones are reported and skipped."""
    for ds in datasets:
        for model in models:
            for seed in seeds:
                run_dir = WORK / "comirec" / Path(ds).stem / f"{model}-s{seed}"
                if not (run_dir / "metrics.json").exists():
                    print(f"skip {run_dir}: not trained (run the table first)")
                    continue
                if not (run_dir / "checkpoints" / "best.pt").exists():
                    print(f"skip {run_dir}: its checkpoint was removed (retrain to evaluate it again)")
                    continue
                yield ds, model, seed, load_run(run_dir)


def load_run(run_dir: Path):
    """(store, split, model with its best checkpoint, task) of a finished run folder."""
    import torch
    import yaml

    from behaviorseq.train.run import prepare, resolve_config

    store, split, m, task = prepare(resolve_config(yaml.safe_load((run_dir / "config.yaml").read_text())))
    m.load_state_dict(torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True))
    return store, split, m.eval(), task


def cmd_capsules(args) -> None:
    """How a trained ComiRec uses its interests on the test users: the share of targets each interest wins (the
    hard readout), Recall@50 of each interest alone against the max over all, interest and item norms, and
    the rank correlation of item norm with training frequency."""
    import torch
    from scipy.stats import spearmanr

    from behaviorseq.data.batching import SeqBatcher

    out = []
    models = [m for m in args.models if m.startswith("comirec")]
    for ds, model, seed, (store, split, m, task) in trained_runs(args.datasets, models, args.seeds):
        view = split.view("test")
        batch = SeqBatcher(store, view, task.max_len, task.padding, task.fields,
                           max_targets=None).batch(np.arange(len(view)))
        targets = batch["targets"] if "targets" in batch else batch["target"][:, None]
        with torch.no_grad():
            v = m.interests(batch)  # [U, K, d]
            table = m.item_emb.weight
            s = torch.einsum("ukd,nd->ukn", v, table)
        s[:, :, 0] = -torch.inf
        K = v.shape[1]
        wins = np.concatenate([s[u][:, t[t > 0]].argmax(0).numpy() for u, t in enumerate(targets)])

        def recall(scores, targets=targets):
            top = scores.topk(50, -1).indices.numpy()
            return float(np.mean([np.isin(t[t > 0].numpy(), top[u]).mean() for u, t in enumerate(targets)]))

        norms = table.detach().norm(dim=-1).numpy()[1:]
        counts = np.bincount(np.asarray(store.item), minlength=table.shape[0])[1:]
        row = {"dataset": ds, "model": model, "seed": seed,
               "target_share": (np.bincount(wins, minlength=K) / len(wins)).round(3).tolist(),
               "recall@50_max": recall(s.max(1).values),
               "recall@50_alone": [recall(s[:, k]) for k in range(K)],
               "interest_norm": v.norm(dim=-1).mean(0).numpy().round(3).tolist(),
               "item_norm_mean": float(norms.mean()),
               "spearman_item_norm_frequency": float(spearmanr(norms, counts).statistic)}
        out.append(row)
        print(json.dumps(row))
    write_json(f"comirec_capsules{args.suffix}.json", {"machine": machine(), "argv": vars(args), "results": out})


def cmd_planted(args) -> None:
    rows = {}
    for seed in args.seeds:
        ds = str(planted_csv(seed))
        for model in args.models:
            rows.setdefault(("planted", model), []).append(run(model, ds, seed, args.overrides))
    summary, table = summarize(rows, "model", data_per_seed=True)  # each seed draws its own users
    print(table)
    write_json(f"comirec_planted{args.suffix}.json", {"machine": machine(), "argv": vars(args), "results": summary,
                                                       "table": table})


def cmd_official(args) -> None:
    """Our Recall/NDCG@20,50 beside the ComiRec code's two variants (``metrics.comirec_official``: ``master``
    normalises NDCG by the hit count, ``paper`` also scores positions in the target list and counts repeated
    targets) on the trained table runs at lambda = 0, mean over seeds. Says how far the paper's NDCG column
    is from ours on the same ranking."""
    from behaviorseq.data.categories import item_categories
    from behaviorseq.tasks.multi_interest import evaluate_controllable

    models = [m for m in args.models if m != "mostpop"]  # no checkpoint to load
    keys = [f"{m}@{k}" for k in (20, 50) for m in ("recall", "recall_master", "recall_paper",
                                                    "ndcg", "ndcg_master", "ndcg_paper")]
    rows: dict[tuple, list[dict]] = {}
    for ds, model, seed, (store, _, m, task) in trained_runs(args.datasets, models, args.seeds):
        cate, _ = item_categories(store)
        r = evaluate_controllable(task, m, "test", cate, (0.0,), n=50, ks=[20, 50], index={"kind": args.index})[0.0]
        rows.setdefault((Path(ds).stem, model), []).append({"seed": seed, **{k: r[k] for k in keys}})
    lines = ["| dataset | model | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (3 + len(keys))]
    for (ds, model), rs in rows.items():
        lines.append(f"| {ds} | {model} | {len(rs)} | " + " | ".join(f"{np.mean([r[k] for r in rs]):.4f}" for k in keys)
                     + " |")
    table = "\n".join(lines)
    print(table)
    write_json(f"comirec_official{args.suffix}.json", {"machine": machine(), "argv": vars(args),
                                                        "results": {f"{d}/{m}": rs for (d, m), rs in rows.items()},
                                                        "table": table})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["table", "ksweep", "lambda", "planted", "capsules", "official"])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--datasets", nargs="+", default=["ml-100k"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--index", default="flat", choices=["flat", "ivf", "hnsw"])
    ap.add_argument("--category", choices=["first", "last", "coarsest"], default=None,
                    help="lambda: which element of the category column (default: the dataset's choice in "
                         "behaviorseq.data.categories)")
    ap.add_argument("--suffix", default="", help="appended to the result file names")
    ap.add_argument("--no-train", action="store_true", help="only aggregate the runs that have finished")
    ap.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                    help="table: earlier results files (name under benchmarks/results/ or a path) whose seeds join it")
    # and any number of key=value overrides for every run, e.g. train.threads=1
    argv = sys.argv[1:]
    # key=value overrides may stand anywhere (after --seeds 1 2 3 too), so take them out before argparse.
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = ap.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    global NO_TRAIN
    NO_TRAIN = args.no_train
    {"table": cmd_table, "ksweep": cmd_ksweep, "lambda": cmd_lambda, "planted": cmd_planted,
     "capsules": cmd_capsules, "official": cmd_official}[args.what](args)


if __name__ == "__main__":
    main()
