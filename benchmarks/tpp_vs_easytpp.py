"""Training throughput of our NHP / THP / AttNHP against EasyTPP's (PyPI ``easy-tpp``) on the same data (issue 6).

    python -m venv benchmarks/_work/easytpp-venv
    benchmarks/_work/easytpp-venv/bin/pip install torch==2.13.0 && benchmarks/_work/easytpp-venv/bin/pip install easy-tpp==0.3.0
    OMP_NUM_THREADS=1 python benchmarks/tpp_vs_easytpp.py --json benchmarks/results/tpp_vs_easytpp.json
        [--models nhp,thp,attnhp] [--batch-size 256] [--batches 4] [--warmup 1] [--repeats 3]
        [--hidden 32] [--time-emb 16] [--layers 2] [--heads 2] [--samples 20] [--types 3] [--max-events 50]

Data: the process of ``tpp_hawkes.py`` (``random_hawkes_params(K, 0.6, seed)`` rescaled to one event per unit
time), ``n_seqs`` sequences of exactly ``max_events`` events, the first 80% as training data. The training
sequences are written as EasyTPP's Gatech pickle (``train.pkl``: ``dim_process`` and a list of sequences of
``{time_since_start, time_since_last_event, type_event}``, times from each sequence's first event) and read
back by EasyTPP's own ``TPPDataLoader``; our side batches the same sequences, in the same order (no
shuffling), with ``TPPBatcher``. Every batch holds the same events on both sides (checked).

The saved run (``benchmarks/results/tpp_vs_easytpp.json``) is the first command with the defaults; it takes about
15 minutes on a loaded 2-core machine, most of it EasyTPP's AttNHP (about 25 s per batch of 256 there).

Measurement: one training step is forward, backward and an Adam step (EasyTPP: its ``run_batch``; ours: the
Trainer's step, ``model.loss(batch)``), both minimising the mean negative log-likelihood per event.
``warmup`` steps, then ``batches`` timed steps, one torch thread, batches collated before the clock starts.
Each measurement is a fresh subprocess (EasyTPP's in its own virtualenv via ``_easytpp_driver.py``, ours in
this interpreter via ``--worker``). ``repeats`` rounds alternate the side that goes first, so background load
hits both alike; the table reports the median events/s (all real events in the timed batches, per second)
and the ratio of medians, by wall-clock time and by the process's CPU time (less sensitive to other jobs on a
shared machine). The 1/5/15-minute load averages are recorded around every measurement.

Sizes, both sides: hidden size, layers, heads, time-embedding size, integral points per interval, batch
size and sequence length as given; dropout 0 (EasyTPP's default); EasyTPP's ``use_ln`` off. Differences
that cannot be matched (documented, not tuned away):
- Integral points: EasyTPP evaluates the intensity at ``samples`` points of a linspace grid over each
  interval (``use_mc_samples``: their mean) plus at the event; ours at ``samples`` uniform random points
  plus at the event (``integral="mc"``). The same number of intensity evaluations.
- THP blocks: EasyTPP's THP has no residual connections or LayerNorm, no attention output projection, and
  one ReLU FFN (width 2 x hidden) shared by all layers; ours follows the paper and the official code (residual,
  post-LayerNorm, an output projection, a GELU FFN per layer of width ``inner_size`` = 2 x hidden). Ours
  therefore does more work per step and has more parameters (both counts are in the JSON).
  ``--our-thp-blocks easytpp`` runs ours with EasyTPP's layout instead (``THPConfig.blocks``): the same work.
- AttNHP: EasyTPP re-runs the whole [2L]-token encoder once per integral point (its sample times ride in the
  "layer" half of the input); ours encodes the events once and lets every query time attend to them
  (numerically the same model; ``tests/test_tpp_models.py`` checks the equality).
- NHP: the same CT-LSTM (a 2H -> 7H linear per step; ours looks the type half up in a [K + 1, 7H] table). Both keep
  the left-limit hidden state h(t_i) of every event and take the event intensities from it; the integral points
  decay the cell states (since session 14 on our side; before, ours decayed them for the events too).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / "benchmarks/_work/easytpp-venv/bin/python"
EASYTPP_NAME = {"nhp": "NHP", "thp": "THP", "attnhp": "AttNHP"}


def our_config(name: str, a: argparse.Namespace) -> dict:
    common = {"hidden_size": a.hidden, "integral": "mc", "integral_samples": a.samples}
    if name == "nhp":
        return common
    if name == "thp":
        return {**common, "num_layers": a.layers, "num_heads": a.heads, "inner_size": 2 * a.hidden, "dropout": 0.0,
                "blocks": a.our_thp_blocks}
    if name == "attnhp":
        return {**common, "time_emb_size": a.time_emb, "num_layers": a.layers, "num_heads": a.heads, "dropout": 0.0}
    raise ValueError(f"unknown model {name!r}; choose from {sorted(EASYTPP_NAME)}")


def simulate(a: argparse.Namespace):
    from behaviorseq.data.synthetic.hawkes import random_hawkes_params, simulate_hawkes

    params = random_hawkes_params(a.types, 0.6, seed=a.seed).unit_rate()
    sample = simulate_hawkes(params, a.n_seqs, max_events=a.max_events, seed=a.seed)
    tr, _, _ = sample.seqs.split((0.8, 0.1, 0.1), seed=a.seed)
    return params, tr


def write_easytpp_pickle(seqs, path: Path) -> None:
    """The Gatech layout EasyTPP reads (see ``behaviorseq.data.loaders.tpp``); times from each first event."""
    out = []
    for n in range(len(seqs)):
        t, k = seqs.sequence(n)
        t = t - t[0]
        dt = np.diff(t, prepend=t[0])
        out.append([{"time_since_start": float(t[i]), "time_since_last_event": float(dt[i]),
                     "type_event": int(k[i]), "idx_event": i} for i in range(len(t))])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({"dim_process": int(seqs.num_types), "train": out}, fh)


def worker_ours(a: argparse.Namespace) -> dict:
    """One measurement of our training step (run in a fresh process by ``--worker``)."""
    import torch

    from behaviorseq import models
    from behaviorseq.data.loaders.tpp import read_easytpp_pickle
    from behaviorseq.tasks.tpp import TPPBatcher

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    if a.our_attention == "math":  # EasyTPP's form: softmax(masked q k^T / sqrt(d)) v with explicit matmuls
        import behaviorseq.nn.transformer as tr

        def math_attention(q, k, v, mask, p):
            s = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).masked_fill(~mask, float("-inf"))
            return torch.softmax(s, -1) @ v

        tr.attention = math_attention
    seqs = read_easytpp_pickle(Path(a.workdir) / "train.pkl", "train")
    batcher, bs = TPPBatcher(seqs, None), a.batch_size
    batches = [batcher.batch(np.arange(i * bs, (i + 1) * bs)) for i in range(a.warmup + a.batches)]
    m = models.build(a.worker, seqs.num_types, our_config(a.worker, a))
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def step(b: dict) -> float:
        loss = m.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    for b in batches[:a.warmup]:
        step(b)
    timed = batches[a.warmup:]
    events = int(sum(int(b["mask"].sum()) for b in timed))
    t0, c0 = time.perf_counter(), time.process_time()
    losses = [step(b) for b in timed]
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    prof = None
    if a.profile:
        from _easytpp_driver import op_groups

        prof = op_groups(step, timed)
    return {"profile_ms_per_step": prof, "side": "ours", "model": a.worker, "events": events, "seconds": secs, "events_per_s": events / secs,
            "cpu_seconds": cpu, "events_per_cpu_s": events / cpu,
            "batches": len(timed), "first_loss": losses[0], "last_loss": losses[-1],
            "params": sum(p.numel() for p in m.parameters()), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def size_args(a: argparse.Namespace) -> list[str]:
    return ["--hidden", str(a.hidden), "--time-emb", str(a.time_emb), "--layers", str(a.layers), "--heads",
            str(a.heads), "--samples", str(a.samples), "--batch-size", str(a.batch_size), "--warmup", str(a.warmup),
            "--batches", str(a.batches), "--seed", str(a.seed)] + (["--profile"] if a.profile else [])


def measure(side: str, name: str, a: argparse.Namespace, num_types: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if a.malloc_tuned:  # the same glibc settings on both sides, those run_experiment applies to training
        from behaviorseq.train.allocator import malloc_env

        env.update(malloc_env())
    if side == "easytpp":
        cmd = [str(VENV_PY), str(ROOT / "benchmarks/_easytpp_driver.py"), "--data", a.workdir,
               "--model", EASYTPP_NAME[name], "--num-types", str(num_types)]
        env.pop("PYTHONPATH", None)
    else:
        cmd = [sys.executable, __file__, "--worker", name, "--workdir", a.workdir, "--our-attention", a.our_attention,
               "--our-thp-blocks", a.our_thp_blocks]
        env["PYTHONPATH"] = str(ROOT / "src")
    load_before = os.getloadavg()
    p = subprocess.run(cmd + size_args(a), capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode:
        raise RuntimeError(f"{side} {name} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["loadavg_before"], out["loadavg_after"] = list(load_before), list(os.getloadavg())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="nhp,thp,attnhp")
    ap.add_argument("--types", type=int, default=3)
    ap.add_argument("--n-seqs", type=int, default=4000)
    ap.add_argument("--max-events", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--time-emb", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=str(ROOT / "benchmarks/_work/tpp_vs_easytpp"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--malloc-tuned", action="store_true",
                    help="run both sides with glibc's mmap threshold off (as run_experiment does for training)")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, profile the same steps once more and report ms per step by op group "
                         "(matrix products, SDPA attention, other; _easytpp_driver.op_groups)")
    ap.add_argument("--our-attention", choices=["sdpa", "math"], default="sdpa",
                    help="THP on our side: SDPA (the library's) or attention as explicit matmuls (EasyTPP's form)")
    ap.add_argument("--our-thp-blocks", choices=["paper", "easytpp"], default="paper",
                    help="THP on our side: the paper's blocks (the default) or EasyTPP's layer layout (THPConfig.blocks), "
                         "the same work per step as EasyTPP's THP")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker_ours(a)))
        return
    if not VENV_PY.exists():
        raise SystemExit(f"no EasyTPP virtualenv at {VENV_PY}; see this script's docstring")
    names = a.models.split(",")
    for n in names:
        our_config(n, a)
    params, tr = simulate(a)
    need = (a.warmup + a.batches) * a.batch_size
    if len(tr) < need:
        raise SystemExit(f"{len(tr)} training sequences < (warmup + batches) x batch size = {need}; raise --n-seqs")
    write_easytpp_pickle(tr, Path(a.workdir) / "train.pkl")
    runs: dict[str, dict[str, list[dict]]] = {n: {"easytpp": [], "ours": []} for n in names}
    for r in range(a.repeats):
        for n in names:
            for side in (("easytpp", "ours") if r % 2 == 0 else ("ours", "easytpp")):
                out = measure(side, n, a, tr.num_types)
                runs[n][side].append(out)
                print(f"  round {r} {n:7s} {side:8s} {out['events_per_s']:9.0f} ev/s  load {out['loadavg_before'][0]:.2f}",
                      flush=True)
    rows = {}
    for n in names:
        e, o = runs[n]["easytpp"], runs[n]["ours"]
        if e[0]["events"] != o[0]["events"]:
            raise RuntimeError(f"{n}: the timed batches differ ({e[0]['events']} vs {o[0]['events']} events)")
        me = statistics.median(x["events_per_s"] for x in e)
        mo = statistics.median(x["events_per_s"] for x in o)
        ce = statistics.median(x["events_per_cpu_s"] for x in e)
        co = statistics.median(x["events_per_cpu_s"] for x in o)
        rows[n] = {"easytpp_events_per_s": me, "ours_events_per_s": mo, "ratio": mo / me,
                   "easytpp_events_per_cpu_s": ce, "ours_events_per_cpu_s": co, "ratio_cpu": co / ce,
                   "easytpp_params": e[0]["params"], "ours_params": o[0]["params"], "events_timed": o[0]["events"]}
    print(f"\nbatch {a.batch_size} x {a.max_events} events, hidden {a.hidden}, layers {a.layers}, heads {a.heads}, "
          f"time emb {a.time_emb}, {a.samples} integral points, median of {a.repeats}, one thread\n")
    print("| model | EasyTPP ev/s | ours ev/s | ours / EasyTPP | same, per CPU-second | params EasyTPP / ours |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        print(f"| {n} | {r['easytpp_events_per_s']:.0f} | {r['ours_events_per_s']:.0f} | {r['ratio']:.2f}x | "
              f"{r['ratio_cpu']:.2f}x | {r['easytpp_params']} / {r['ours_params']} |")
    if a.profile:  # the profiled pass follows the timed one in each measurement; medians over the rounds
        print("\nms per step by op group, under torch's profiler (it inflates 'other'; see op_groups), and the "
              "unprofiled step\n")
        print("| model | side | matmul | attention (SDPA) | other | unprofiled step |")
        print("|---|---|---:|---:|---:|---:|")
        for n in names:
            for side in ("easytpp", "ours"):
                xs = runs[n][side]
                g = {k: statistics.median(x["profile_ms_per_step"][k] for x in xs) for k in ("matmul", "attention", "other")}
                step_ms = statistics.median(1e3 * x["seconds"] / x["batches"] for x in xs)
                rows[n][f"{side}_profile_ms"] = {**g, "step_ms": step_ms}
                print(f"| {n} | {side} | {g['matmul']:.1f} | {g['attention']:.1f} | {g['other']:.1f} | {step_ms:.1f} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        easy = runs[names[0]]["easytpp"][0]
        with open(a.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(a).items() if k != "worker"}, "params": params.to_dict(),
                       "data": tr.stats(), "results": rows, "runs": runs, "machine": platform.platform(),
                       "cpus": os.cpu_count(), "easy_tpp": easy["easy_tpp"], "torch_easytpp": easy["torch"],
                       "torch_ours": runs[names[0]]["ours"][0]["torch"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                      fh, indent=1)


if __name__ == "__main__":
    main()
