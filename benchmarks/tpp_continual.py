"""Continual learning on a Hawkes stream whose parameters shift: PromptTPP against its baselines (issue 6).

    OMP_NUM_THREADS=1 python benchmarks/tpp_continual.py --seeds 0,1,2 --json benchmarks/results/tpp_continual.json
        [--png benchmarks/results/tpp_continual.png] [--types 3] [--schedule 0,1,2,0,1,2] [--n-seqs 400]
        [--max-events 40] [--epochs 20] [--methods prompttpp,finetune,retrain,joint] [--reuse]

Each run's result is written to ``<workdir>/seed<s>/result-<methods>.json``; ``--reuse`` loads the methods already
run with the same arguments and runs only the missing ones, so seeds and methods can run as separate processes
(``--seeds 0``, ``--seeds 1 --methods prompttpp_frozen``, ...) and a last call with ``--seeds 0,1,2 --reuse``
prints the table and draws the PNG. ``--retable JSON`` summarises an earlier ``--json`` output again (mean +- sample
std over its seeds) without training.

Stream: three regimes (random K-type Hawkes processes, each rescaled to one event per unit time) in the
order ``schedule`` (recurring: A B C A B C); window w draws ``n_seqs`` fresh sequences from its regime,
split 80/10/10. Protocol (no replay buffer, no task id at test time):
- ``prompttpp``: PromptTPP trained on window 1, then on each next window from the previous weights;
- ``finetune``: the same with plain AttNHP (the forgetting baseline);
- ``retrain``: AttNHP from scratch on each window;
- ``prompttpp_frozen`` (not in the paper, which trains the backbone on every window): PromptTPP trained fully on
  window 1, then only its prompt pools (prompts and keys) on the next windows, the L2P recipe of a frozen backbone;
- ``prompttpp_oracle`` (a diagnostic, not a method: it is told the regime): as ``prompttpp_frozen``, but each
  regime always selects its own ``top_n`` pool entries (``OraclePromptTPP``), so prompts are never shared or
  overwritten across regimes; it measures what a frozen backbone with perfect retrieval can reach;
- ``joint``: AttNHP trained once on the training sequences of all windows (the upper bound).
Each training run: Adam, batch 32, early stopping on that window's validation log-likelihood (patience 3).
The protocol itself is the package's ``behaviorseq.train.continual.run_continual`` (``behaviorseq continual`` on
the command line), and the stream its ``synthetic_stream``; this script adds the true model, the oracle, seeds
and the table. R[w][v] = test log-likelihood per event on window v after training on window w. Reported per
method: ``current`` = mean_w R[w][w] (right after training on it), ``final`` = mean_v R[T-1][v] (after the last
window), ``final_earlier`` = the same over the earlier windows only (the forgetting bar), ``forgetting`` =
mean_{v < T-1} (R[v][v] - R[T-1][v]), and the same for the true model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import mean_sd, pm
from torch import Tensor

from behaviorseq import models
from behaviorseq.config import TrainConfig
from behaviorseq.data.synthetic.hawkes import HawkesParams
from behaviorseq.models.tpp.hawkes_exp import HawkesExp
from behaviorseq.models.tpp.prompttpp import PromptTPP, PromptTPPConfig
from behaviorseq.tasks.tpp import TPPBatcher, TPPTask, TPPTaskConfig
from behaviorseq.train.continual import run_continual, summarize, synthetic_stream
from behaviorseq.utils import atomic_write_text


class OraclePromptTPP(PromptTPP):
    """A diagnostic, not a method (the task id is known, which the protocol forbids): regime r always selects
    pool entries r N .. r N + N - 1 (N = top_n; the pool holds N per regime), in every layer and pool, so no two
    regimes ever share or overwrite a prompt. Run with the frozen backbone, it bounds what retrieval could give."""

    regime = 0  # set by the caller before training or evaluating on a window

    def _select(self, h: int, n: int, cos: Tensor) -> tuple[Tensor, Tensor]:
        N = self.cfg.top_n
        ids = torch.arange(self.regime * N, (self.regime + 1) * N, device=cos.device).expand(*cos.shape[:-1], N)
        return cos.gather(-1, ids), ids


def make_stream(args, seed: int) -> tuple[list[HawkesParams], list[int], list[tuple]]:
    """The seed's regimes, the window schedule and each window's (train, valid, test) sequences."""
    schedule = [int(x) for x in args.schedule.split(",")]
    regimes, windows = synthetic_stream(args.types, schedule, args.n_seqs, args.max_events, 0.7, seed)
    return regimes, schedule, [(w["train"], w["valid"], w["test"]) for w in windows]


def selection(args, seed: int) -> None:
    """Which prompts the final PromptTPP (after the last window) retrieves at each test sequence's last event,
    per window: the share of sequences selecting each pool entry, key pools of stack 1, one line per layer."""
    _, schedule, splits = make_stream(args, seed)
    model = models.build("prompttpp", args.types, prompt_config(args))
    ck = Path(args.workdir) / f"seed{seed}" / f"prompttpp_w{len(schedule) - 1}" / "checkpoints" / "best.pt"
    model.load_state_dict(torch.load(ck, weights_only=True))
    model.eval()
    for w, (_, _, test) in enumerate(splits):
        batch = TPPBatcher(test, None).batch(np.arange(len(test)))
        with torch.no_grad():
            ids = model.encode(batch)["prompt_ids"]  # [stacks, layers, 2, B, L, top_n]
        last = batch["mask"].sum(1) - 1
        rows = []
        for layer in range(ids.shape[1]):
            sel = ids[0, layer, 0][torch.arange(len(last)), last]  # [B, top_n]
            share = np.bincount(sel.flatten().numpy(), minlength=model.cfg.pool_size) / len(last)
            rows.append(f"layer {layer + 1}: " + " ".join(f"{x:.2f}" for x in share))
        print(f"seed {seed} window {w} (regime {schedule[w]})  " + " | ".join(rows))


def prompt_config(args) -> dict:
    """PromptTPP config overrides from ``--prompt key=value ...`` (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for kv in args.prompt or []:
        k, sep, v = kv.partition("=")
        if not sep:
            raise SystemExit(f"--prompt takes key=value, got {kv!r}")
        out[k] = yaml.safe_load(v)
    return out


def run_seed(args, seed: int) -> dict:
    regimes, schedule, splits = make_stream(args, seed)
    windows = [dict(zip(("train", "valid", "test"), sp)) for sp in splits]
    cfg = TrainConfig(epochs=args.epochs, batch_size=32, lr=args.lr, early_stop_metric="loglik", patience=3,
                      device="cpu", seed=seed, time_limit_s=args.time_limit)
    tcfg = TPPTaskConfig(predict_roles=[])  # log-likelihood only: thinning is not needed here
    K = args.types
    out: dict = {"schedule": schedule, "regimes": [r.to_dict() for r in regimes]}
    truth = [TPPTask(windows[v], tcfg, cfg).evaluate(HawkesExp.from_params(regimes[r].mu, regimes[r].adjacency,
                                                                          regimes[r].decay), "test")["loglik"]
             for v, r in enumerate(schedule)]
    out["truth"] = {"R_diag": truth, "current": float(np.mean(truth)), "final": float(np.mean(truth)),
                    "final_earlier": float(np.mean(truth[:-1])), "forgetting": 0.0}
    work = Path(args.workdir) / f"seed{seed}"
    for method in args.methods.split(","):
        model_cfg = prompt_config(args) if method.startswith("prompttpp") else {}
        if method == "prompttpp_oracle":  # the pool holds top_n entries per regime
            ocfg = PromptTPPConfig(**model_cfg)
            ocfg = ocfg.model_copy(update={"pool_size": ocfg.top_n * len(regimes)})

            def build(ocfg=ocfg):
                return OraclePromptTPP(ocfg, K)

            def hook(model, w):
                model.regime = schedule[w]
        else:
            name = "prompttpp" if method.startswith("prompttpp") else "attnhp"

            def build(name=name, model_cfg=model_cfg):
                return models.build(name, K, model_cfg)

            hook = None
        protocol = {"prompttpp": "finetune", "prompttpp_frozen": "frozen", "prompttpp_oracle": "frozen"}.get(method, method)
        res = run_continual(build, windows, protocol, cfg, tcfg, work, window_hook=hook, run_name=method)
        out[method] = {"R": res["R"]["loglik"], "seconds": res["seconds"], **res["summary"]["loglik"]}
    return out


def run_args(args) -> dict:
    """The arguments that change a seed's result (a kept result is reused only when they match)."""
    skip = ("seeds", "json", "png", "reuse", "workdir", "methods", "selection")
    return {k: v for k, v in vars(args).items() if k not in skip and not (k == "prompt" and v is None)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--types", type=int, default=3)
    ap.add_argument("--schedule", default="0,1,2,0,1,2")
    ap.add_argument("--n-seqs", type=int, default=400)
    ap.add_argument("--max-events", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds per training run")
    ap.add_argument("--methods", default="prompttpp,finetune,retrain,joint")
    ap.add_argument("--prompt", nargs="*", default=None, metavar="KEY=VALUE",
                    help="PromptTPP config overrides, e.g. top_n=2 pull_weight=1.0 (part of a kept result's arguments)")
    ap.add_argument("--workdir", default="benchmarks/_work/tpp_continual")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    ap.add_argument("--selection", action="store_true",
                    help="also print the final PromptTPP's prompt selection per window (needs its kept checkpoints)")
    ap.add_argument("--reuse", action="store_true", help="load a seed's kept result from --workdir if its args match")
    ap.add_argument("--retable", default=None, metavar="JSON",
                    help="summarise (and plot, or write with --json) the per-seed results of this earlier --json "
                    "output, with its methods; nothing is trained")
    args = ap.parse_args()
    torch.set_num_threads(1)
    per_seed = {}
    wanted = args.methods.split(",")
    if args.retable:
        saved = json.loads(Path(args.retable).read_text())
        per_seed, args.methods = saved["per_seed"], saved["args"]["methods"]
    for s in [] if args.retable else args.seeds.split(","):  # each seed's result is kept, so seeds (and methods) can run as separate processes
        seed_dir = Path(args.workdir) / f"seed{s}"
        kept: dict = {}
        for f in sorted(seed_dir.glob("result*.json")) if args.reuse else []:
            saved = json.loads(f.read_text())
            if saved["args"] == run_args(args):
                kept.update({k: v for k, v in saved["result"].items() if k not in kept})
        missing = [m for m in wanted if m not in kept]
        if missing:
            sub = argparse.Namespace(**{**vars(args), "methods": ",".join(missing)})
            fresh = run_seed(sub, int(s))
            seed_dir.mkdir(parents=True, exist_ok=True)
            done = seed_dir / f"result-{'+'.join(missing)}.json"
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps({"args": run_args(args), "result": fresh}))
            tmp.replace(done)
            kept.update({k: v for k, v in fresh.items() if k not in kept or k in missing})
        per_seed[s] = kept
        if args.selection:
            selection(args, int(s))
    methods = ["truth", *args.methods.split(",")]
    keys = ("current", "next", "final", "final_earlier", "forgetting")
    print(f"{'method':10s} {'current':>13s} {'next window':>13s} {'final':>13s} {'final earlier':>13s} "
          f"{'forgetting':>13s}   (ll/event, mean +- sd over {len(per_seed)} seed(s))")

    def value(res: dict, k: str) -> float:  # "next" is derived from R (runs before session 17 did not store it)
        if k in res:
            return res[k]
        return float(np.mean(res["R_diag"][1:])) if "R_diag" in res else summarize(res["R"])[k]

    summary = {}
    for m in methods:
        summary[m] = {k: list(mean_sd(value(per_seed[s][m], k) for s in per_seed)) for k in keys}
        print(f"{m:10s} " + " ".join(f"{pm(*summary[m][k], sep='+-'):>13s}" for k in keys))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4))
        first = next(iter(per_seed.values()))
        T = len(first["schedule"])
        for i, m in enumerate(methods):
            if m == "truth":
                y = np.mean([per_seed[s]["truth"]["R_diag"] for s in per_seed], 0)
                ax.plot(range(T), y, "k--", label="true model")
                continue
            R = np.mean([np.array(per_seed[s][m]["R"]) for s in per_seed], 0)
            ax.plot(range(T), R[-1], marker="o", color=f"C{i}", label=f"{m}: after the last window")
            ax.plot(range(T), np.diag(R), marker="x", ls=":", color=f"C{i}", label=f"{m}: right after its window")
        ax.set_xlabel("window (regime " + ",".join(map(str, first["schedule"])) + ")")
        ax.set_ylabel("test log-likelihood per event")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=120)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        if args.retable:  # the run's date and torch, not today's
            meta = {"torch": saved["torch"], "date": saved["date"],
                    "retabled": time.strftime("%Y-%m-%d") + " (mean +- sample std, ddof 1)"}
        else:
            meta = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        out = {"args": saved["args"] if args.retable else vars(args), "summary": summary, "per_seed": per_seed, **meta}
        atomic_write_text(args.json, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
