"""Long-sequence CTR effect runs (issue 5): does each method find and use the planted behaviours?

    # DARE vs TWIN at L = 200, d in {4, 8, 16}, 3 seeds, with the halved attention-dim ablation
    python benchmarks/long_ctr_effect.py effect --dims 4 8 16 --seeds 1 2 3
    # SDIM vs DIN over the full sequence at L = 1,024 (relevant and decoy behaviours scaled with L)
    python benchmarks/long_ctr_effect.py sdim --seeds 1 2 3 --users 3000 --epochs 6 --set n_relevant=25 n_decoys=10
    # all six models on the planted data (L = 200, d = 16) and on ml-100k-ctr
    python benchmarks/long_ctr_effect.py table --datasets planted ml-100k-ctr --seeds 1 2 3

Planted data: ``data.synthetic.long_ctr`` (relevant behaviours in the oldest half of the history,
same-category decoys in the recent half, click logit signal_scale * <z_target, mean z_relevant>), sizes
below (``PLANTED``), split at random per sample 80/10/10. Every model trains with the Trainer: Adam,
batch 2048, lr 0.01 (DARE's scripts), early stopping on validation AUC (patience ``--patience``, default 2;
at most ``--epochs`` epochs), one torch thread;
its best checkpoint is evaluated on the test samples. Reported: AUC, GAUC by user and by target
category, logloss of the main head; for TWIN / DARE the planted recall (the share of the planted
behaviours inside the window that the top-K search returns); the Bayes AUC (the true click
probabilities ranked) is the ceiling. Variants: ``dare-half`` is DARE with d_A = d / 2 and d_R = d;
``twin-half`` is TWIN with its one table at d / 2 (the same shrink of the attention side, which TWIN
cannot make without shrinking its representation too); ``din-torchinit`` is DIN with torch's default init instead
of DARE's N(0, 0.01) (a check on the slow start of DIN-long at L = 1,024); ``sim-twin`` / ``eta-twin`` are SIM and ETA
with TWIN's ESU (``esu="twin"``: its score scaling and auxiliary head). Results: benchmarks/results/long_ctr_<cmd>.json.
Runs are cached under benchmarks/_work/long_ctr/<data>/<variant>-d<d>-s<seed>/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
from common import WORK, data_root, machine, write_json

from behaviorseq.config import TrainConfig
from behaviorseq.data.ctr_datasets import open_ctr_dataset
from behaviorseq.data.synthetic.long_ctr import LongCTRConfig, LongCTRTruth, generate_long_ctr
from behaviorseq.data.synthetic.near_ctr import NearCTRConfig, generate_near_ctr
from behaviorseq.metrics import auc
from behaviorseq.models.ranking import build
from behaviorseq.tasks.ctr import CTRTask, planted_recall
from behaviorseq.train.trainer import Trainer, seed_everything

# Planted data of the effect runs (L = 200) and of the SDIM run (L = 1,024).
PLANTED = dict(n_users=8000, n_items=400, n_categories=40, latent_dim=8, n_interests=4, n_relevant=5,
               n_decoys=2, samples_per_user=20)
VARIANTS = {  # name -> (registered model, model args given d)
    "din": ("din", lambda d: {"embedding_dim": d}),
    "din-torchinit": ("din", lambda d: {"embedding_dim": d, "init_std": None}),  # torch's init, not N(0, 0.01)
    "sim": ("sim", lambda d: {"embedding_dim": d}),
    "eta": ("eta", lambda d: {"embedding_dim": d}),
    "sim-twin": ("sim", lambda d: {"embedding_dim": d, "esu": "twin"}),  # TWIN's ESU: DARE's "TWIN (hard)"
    "eta-twin": ("eta", lambda d: {"embedding_dim": d, "esu": "twin"}),
    "twin": ("twin", lambda d: {"embedding_dim": d}),
    "twin-half": ("twin", lambda d: {"embedding_dim": d // 2}),
    "dare": ("dare", lambda d: {"embedding_dim": d}),
    "dare-half": ("dare", lambda d: {"embedding_dim": d, "attention_dim": d // 2}),
    "sdim": ("sdim", lambda d: {"embedding_dim": d}),
    "sdim-tau6": ("sdim", lambda d: {"embedding_dim": d, "tau": 6}),  # narrower kernel: 8 signatures of 64 buckets
    "din-short": ("din", lambda d: {"embedding_dim": d}),  # DIN over the latest WINDOW behaviours only
}
WINDOW = {"din-short": 16}  # variants that see only the latest behaviours (16: SDIM's short_len); others see L
LR, BATCH = 0.01, 2048  # DARE's scripts (brief 1.4): batch 2048, Adam lr 0.01, weight decay 1e-6 in the loss


def planted(L: int, seed: int, **over):
    cfg = LongCTRConfig(**{**PLANTED, **over, "min_len": L, "max_len": L, "seed": seed})
    return generate_long_ctr(cfg)


def near(L: int, seed: int, **over):
    """The SDIM brief's synthetic data (``data.synthetic.near_ctr``): click iff a behaviour with cos > 0.8."""
    return generate_near_ctr(NearCTRConfig(**{**over, "length": L, "seed": seed}))


def run_one(data, truth, variant: str, d: int, seed: int, L: int, epochs: int, tag: str, batch_size: int = BATCH,
            patience: int = 2) -> dict:
    out_dir = WORK / "long_ctr" / tag / f"{variant}-d{d}-s{seed}"
    budget = {"epochs": epochs, "patience": patience}
    if (out_dir / "metrics.json").exists():
        cached = json.loads((out_dir / "metrics.json").read_text())
        if cached.get("budget", budget) == budget:  # runs cached before budgets were recorded count as a match
            return cached
        raise SystemExit(f"{out_dir} holds a run with budget {cached['budget']}, not {budget}: move it aside")
    log, claim = out_dir / "run" / "log.jsonl", out_dir / "claim"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:  # claim the run atomically, so two processes on the same grid never train it both
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        fresh = [f for f in (claim, log) if f.exists() and time.time() - f.stat().st_mtime < 1200]
        if fresh:  # another process is training it (a claim or a log touched in the last 20 minutes)
            print(f"{tag} {variant} d={d} seed {seed}: in progress in another process, skipped", flush=True)
            return None
        claim.touch()  # a stale claim: its process died
    name, args = VARIANTS[variant]
    seed_everything(seed)
    window = WINDOW.get(variant, L)
    model = build(name, data.n_items, data.vocab_size("category") - 1, {"max_len": window, **args(d)})
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=LR, early_stop_metric="auc",
                      patience=patience, device="cpu", seed=seed, threads=1)
    task = CTRTask(data, window, cfg)
    run = out_dir / "run"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    st = Trainer(model, task, cfg, run).fit()
    train_s = time.perf_counter() - t0
    model.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True))
    res = {"variant": variant, "model": name, "model_args": {"max_len": window, **args(d)}, "d": d, "seed": seed,
           "test": task.evaluate(model, "test"), "valid": task.evaluate(model, "valid"),
           "train_s": train_s, "epochs": st["epoch"], "best_epoch": st["best_epoch"], "budget": budget,
           "n_params": sum(p.numel() for p in model.parameters()), "protocol": task.protocol("test")}
    if truth is not None:
        te = data.indices("test")
        res["bayes_auc"] = auc(data.label[te].astype(bool), truth.click_prob[te])
        if name in ("twin", "dare") and isinstance(truth, LongCTRTruth):
            res["planted_recall"] = planted_recall(task, model, truth, "test")
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(res, indent=1, default=str))
    tmp.replace(out_dir / "metrics.json")
    claim.unlink(missing_ok=True)
    t = res["test"]
    print(f"{tag} {variant} d={d} seed {seed}: auc {t['auc']:.4f} gauc_user {t['gauc_user']:.4f} logloss "
          f"{t['logloss']:.4f} recall {res.get('planted_recall', float('nan')):.3f} "
          f"({train_s:.0f}s, best epoch {st['best_epoch']}/{st['epoch']})", flush=True)
    return res


def mean_std(v: list[float]) -> str:
    v = np.asarray(v, dtype=float)
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def table(rows: list[dict], keys: tuple[str, ...]) -> str:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["data"], r["variant"], r["d"]), []).append(r)
    head = "| data | model | d | seeds | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 4)]
    for (ds, v, d), rs in groups.items():
        cells = []
        for k in keys:
            vals = [r["test"][k] if k in r["test"] else r.get(k) for r in rs]
            cells.append(mean_std(vals) if all(x is not None for x in vals) else "-")
        lines.append(f"| {ds} | {v} | {d} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["effect", "sdim", "table"])
    ap.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--variants", nargs="+", default=None)
    ap.add_argument("--datasets", nargs="+", default=["planted", "ml-100k-ctr"])
    ap.add_argument("--length", type=int, default=None, help="L (default 200; sdim: 1024)")
    ap.add_argument("--planted", choices=["long", "near"], default="long",
                    help="planted data of effect/sdim: DARE's (long_ctr, default) or the SDIM brief's (near_ctr)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--users", type=int, default=None, help="planted users (default PLANTED)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="other LongCTRConfig (NearCTRConfig with --planted near) fields, e.g. n_relevant=25")
    ap.add_argument("--suffix", default="")
    ap.add_argument("--batch", type=int, default=BATCH, help=f"batch size (default {BATCH}, DARE's scripts)")
    ap.add_argument("--patience", type=int, default=2, help="early-stopping patience in epochs (default 2)")
    ap.add_argument("--tag", default="", help="appended to the cache folder: a run with another budget on the same data")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    over = {"n_users": args.users} if args.users else {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        over[k] = float(v) if "." in v else int(v)
    tag_over = "".join(f"-{k}{v}" for k, v in sorted(over.items()))  # runs on other planted data cache apart
    tag_over_b = tag_over + (f"-b{args.batch}" if args.batch != BATCH else "")  # and runs at other batch sizes
    tag_over_b += f"-{args.tag}" if args.tag else ""
    rows = []
    if args.cmd in ("effect", "sdim"):
        L = args.length or (200 if args.cmd == "effect" else 1024)
        variants = args.variants or (["twin", "dare", "twin-half", "dare-half"] if args.cmd == "effect"
                                     else ["din", "sdim"])
        dims = args.dims if args.cmd == "effect" else [args.dims[-1]]
        gen, kind = (near, "near") if args.planted == "near" else (planted, "planted")
        for seed in args.seeds:
            data, truth = gen(L, seed, **over)
            for d in dims:
                for v in variants:
                    r = run_one(data, truth, v, d, seed, L, args.epochs, f"{kind}-L{L}{tag_over_b}", args.batch,
                                args.patience)
                    if r is not None:
                        rows.append({**r, "data": f"{kind} L={L}"})
        keys = ("auc", "gauc_user", "logloss", "planted_recall", "bayes_auc")
    else:
        L = args.length or 200
        variants = args.variants or ["din", "sim", "eta", "twin", "dare", "sdim"]
        for ds in args.datasets:
            for seed in args.seeds:
                if ds == "planted":
                    data, truth = planted(L, seed, **over)
                else:
                    data, truth = open_ctr_dataset(ds, {}, root=data_root(), max_len=L), None
                for v in variants:
                    tag = f"{ds}-L{L}{tag_over if ds == 'planted' else ''}" + tag_over_b[len(tag_over):]
                    r = run_one(data, truth, v, args.dims[-1], seed, L, args.epochs, tag, args.batch)
                    if r is not None:
                        rows.append({**r, "data": ds})
        keys = ("auc", "gauc_user", "gauc_category", "logloss", "planted_recall", "bayes_auc")
    text = table(rows, keys)
    print(text)
    write_json(f"long_ctr_{args.cmd}{args.suffix}.json", {
        "command": "python benchmarks/long_ctr_effect.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "planted": {**PLANTED, **over} if args.planted == "long" else {**NearCTRConfig().to_dict(), **over, "length": L},
        "table": text, "runs": rows, "machine": machine()})


if __name__ == "__main__":
    main()
