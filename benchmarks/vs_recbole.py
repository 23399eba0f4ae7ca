"""SASRec against RecBole 1.2.1's SASRec: same data, sizes and protocol, same machine, one run.

Both sides train SASRec with 2 blocks, 2 heads, hidden size 64, max length 50, dropout 0.2, softmax
cross-entropy over all items, Adam with lr 1e-3, seed 2020, validation every epoch with early stopping on
NDCG@10 (patience 10), leave-one-out (last item test, second-to-last validation), full ranking over all
items with HR/NDCG/MRR@{5,10,20}. Reported per side: best validation NDCG@10, the test metrics of the
best-validation checkpoint, seconds per epoch, and the wall time until the side first reaches RecBole's
best validation NDCG@10 (each side's own training-loop clock: time from the start of training, evaluation
and checkpointing included, data loading and model building not).

RecBole side
    RecBole 1.2.1 needs numpy < 2 era pins, so it gets its own virtualenv under ``benchmarks/_work/``
    (created and filled on first use: ``torch==2.13.0`` then ``recbole==1.2.1 "numpy<2" "pandas<2.2"
    "setuptools<81"``). A driver (the string ``RECBOLE_DRIVER`` below, written to the work folder at run
    time) runs in that venv in a subprocess. It uses RecBole's own ``create_dataset``,
    ``data_preparation``, ``SASRec`` and ``Trainer`` unchanged; the only hooks time each epoch and record
    the validation results. RecBole 1.2.1 switches on ``torch.autograd.set_detect_anomaly(True)`` when its
    sequential models are imported (a module-level line in ``sine.py``), which about halves its speed; the
    driver switches it off again after the import, so RecBole runs at its best. Its checkpoints are
    reloaded for the test with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (torch >= 2.6 defaults to
    ``weights_only`` loading, which RecBole 1.2.1's checkpoint format does not pass).

    Data: RecBole reads a ``.inter`` file written to the work folder, with user, item and, as timestamp,
    each event's position in its user's sequence. For ml-100k (RecBole's own atomic file) that position
    follows the exact Unix time with ties in file order, as ours does. RecBole 1.2.1 keeps float fields as
    float32 (step 64 s near 1e9), so raw timestamps reorder events close in time: unnormalized, 254 of the
    943 validation targets differ from the exact order; min-max normalized as RecBole's ml-100k.yaml does
    (step about 1.3 s), 5 targets and 38 validation inputs (``--recbole-raw-timestamps`` links the raw
    file). The dataset is called ``ml100k`` on RecBole's side because RecBole 1.2.1 points the name
    ``ml-100k`` at its bundled copy whatever ``data_path`` says. LastFM (S3-Rec ``LastFM.txt``) gets the
    position in the user's line. No filtering: ``user_inter_num_interval``/``item_inter_num_interval`` are
    ``[0,inf)``, ``val_interval`` and ``rm_dup_inter`` unset. The script checks that RecBole sees the same
    numbers of users, items and interactions as ours, and that every user's validation and test target and
    (last 50) input items are identical on both sides.

    Training samples: RecBole trains on every prefix (one sample per training event, its last <= 50 items
    as input, the loss at the last position only), batch 2048 (its default). Epochs are capped
    (``--recbole-epochs``; about 80-200 s each on ml-100k on 2 cores), so its "best" is the best within the
    cap.

Our side
    ``behaviorseq.train.run_experiment(config, run_dir)`` in a subprocess of this venv; ``log.jsonl`` gives
    the per-epoch clock and validation metrics, ``metrics.json`` the test metrics. ``--ours-windows all``
    (the default) trains each user's training sequence in chunks of <= 50 with the loss at every position,
    so every training event is a target once per epoch, as in RecBole; ``last`` keeps only each user's
    latest 50 (SASRec's own sampling: 40% of ml-100k's training targets, 51% of LastFM's).

Clocks: each side's training-loop wall clock, plus its process CPU seconds and the CPU seconds all other
processes on the machine used meanwhile (from /proc/stat), per epoch, so that a run disturbed by other jobs
shows it ("other load (cores)" in the table). ``--wait-quiet`` waits before each side for the machine to
be idle.

Evaluation masking: RecBole 1.2.1's full-sort evaluation masks a user's history items only for
non-sequential models; for sequential models (``FullSortEvalDataLoader.collate_fn``) the history index is
``None`` and only the padding item is set to -inf. So history items stay rankable on both sides
(``eval.exclude_history = False`` on ours).

Both subprocesses run with the same environment: glibc malloc tuning (``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=536870912``, off with ``--no-malloc-tuning``) and
torch's default thread count; both are recorded in the results.

    python benchmarks/vs_recbole.py --datasets ml-100k lastfm        # RecBole capped at 12 / 20 epochs
    python benchmarks/vs_recbole.py --skip-recbole        # rerun ours against the stored RecBole results
    python benchmarks/vs_recbole.py --skip-recbole --skip-ours --md table.md   # only redo the tables
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
RECBOLE_VENV = WORK / "recbole-venv"
RECBOLE_VERSION = "1.2.1"
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000", "MALLOC_TOP_PAD_": "536870912"}
DATASETS = {  # name -> (ours: registered name, source path under the data root, format, RecBole's name)
    # Not "ml-100k" on RecBole's side: RecBole 1.2.1 points that name at its bundled copy whatever data_path
    # says (Config._set_default_parameters), and loads its ml-100k.yaml (normalize_all etc.) with it.
    "ml-100k": ("ml-100k", "ml-100k/ml-100k.inter", "recbole", "ml100k"),
    "lastfm": ("lastfm", "seqrec/LastFM.txt", "seqtext", "lastfm"),
}
DEFAULT_RECBOLE_EPOCHS = {"ml-100k": 12, "lastfm": 20}
# RecBole's own default batch, 2048, on both. Smaller batches cost RecBole far more per epoch: on LastFM at
# 256 its first epoch took 340 CPU-s (193 steps), against about 100 at 2048 (25 steps).
DEFAULT_RECBOLE_BATCH = {"ml-100k": 2048, "lastfm": 2048}
KS = (5, 10, 20)

# The shared model/training sizes (RecBole's names -> ours are mapped in the two config builders).
HIDDEN, LAYERS, HEADS, MAX_LEN, DROPOUT, LR, PATIENCE, SEED = 64, 2, 2, 50, 0.2, 1e-3, 10, 2020

RECBOLE_DRIVER = r'''
"""Run by benchmarks/vs_recbole.py inside the RecBole venv: python driver.py SPEC.json"""
import time
T_PROCESS = time.perf_counter()
import json, os, sys
spec = json.load(open(sys.argv[1]))
out_path = spec["out"]
TICK = os.sysconf("SC_CLK_TCK")


def sys_busy_s():
    """CPU seconds all processes on the machine have used (/proc/stat: user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / TICK

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import get_model, init_logger, init_seed

model_class = get_model("SASRec")  # imports recbole.model.sequential_recommender (and sine.py with it)
anomaly_after_import = torch.is_anomaly_enabled()
if not spec["keep_anomaly"]:
    torch.autograd.set_detect_anomaly(False)

config = Config(model="SASRec", dataset=spec["dataset"], config_dict=spec["config"])
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
T_DATA = time.perf_counter()
dataset = create_dataset(config)
counts = {"users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1), "interactions": int(dataset.inter_num)}
train_data, valid_data, test_data = data_preparation(config, dataset)
t_data = time.perf_counter() - T_DATA
init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
model = model_class(config, train_data._dataset).to(config["device"])


def targets(loader):
    """raw user -> [target, input items] of every evaluation sample, in raw tokens."""
    ds = loader._dataset
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    lf, lenf = iid + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]
    u = ds.inter_feat[uid].numpy(); t = ds.inter_feat[iid].numpy()
    lst = ds.inter_feat[lf].numpy(); ln = ds.inter_feat[lenf].numpy()
    out = {}
    for j in range(len(u)):
        seq = [str(x) for x in ds.id2token(iid, lst[j, :ln[j]])] if ln[j] else []
        out[str(ds.id2token(uid, u[j]))] = [str(ds.id2token(iid, t[j])), seq]
    return out


result = {"recbole_version": __import__("recbole").__version__, "torch": torch.__version__,
          "numpy": np.__version__, "threads": torch.get_num_threads(), "anomaly_after_import": anomaly_after_import,
          "counts": counts, "train_samples": len(train_data._dataset), "train_batches": len(train_data),
          "data_s": t_data, "config": {k: spec["config"][k] for k in sorted(spec["config"])},
          "env": {k: os.environ.get(k) for k in spec["env_keys"]}, "epochs": []}
if spec.get("dump_targets"):
    result["valid_targets"] = targets(valid_data)
    result["test_targets"] = targets(test_data)


def save():
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, out_path)


class TimedTrainer(Trainer):
    """RecBole's Trainer; only records the clock, the loss and the validation result of every epoch."""

    def fit(self, *args, **kwargs):
        result["anomaly_during_fit"] = torch.is_anomaly_enabled()
        self._t0, self._cpu0, self._busy0 = time.perf_counter(), time.process_time(), sys_busy_s()
        self._epoch = 0
        return super().fit(*args, **kwargs)

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        t = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        self._train_s = time.perf_counter() - t
        self._loss = float(sum(loss) if isinstance(loss, tuple) else loss) / len(train_data)
        return loss

    def _valid_epoch(self, valid_data, *args, **kwargs):
        t = time.perf_counter()
        score, res = super()._valid_epoch(valid_data, *args, **kwargs)
        now = time.perf_counter()
        # elapsed_s: since the start of fit(), at the end of this epoch's evaluation (the previous
        # epoch's checkpoint save is inside it, this epoch's is not yet)
        cpu = time.process_time() - self._cpu0
        result["epochs"].append({"epoch": self._epoch, "elapsed_s": now - self._t0, "train_s": self._train_s,
                                 "eval_s": now - t, "train_loss": self._loss, "cpu_s": cpu,
                                 "foreign_cpu_s": sys_busy_s() - self._busy0 - cpu, "loadavg": os.getloadavg()[0],
                                 "valid": {k: float(v) for k, v in res.items()}})
        self._epoch += 1
        save()
        return score, res


trainer = TimedTrainer(config, model)
T_FIT = time.perf_counter()
best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
result["fit_s"] = time.perf_counter() - T_FIT
t = time.perf_counter()
test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
result["test_s"] = time.perf_counter() - t
best = max(range(len(result["epochs"])), key=lambda i: result["epochs"][i]["valid"]["ndcg@10"], default=None)
result.update(best_epoch=best, best_valid={k: float(v) for k, v in (best_valid_result or {}).items()},
              test={k: float(v) for k, v in test_result.items()}, process_s=time.perf_counter() - T_PROCESS)
save()
print(json.dumps({k: result[k] for k in ("counts", "best_epoch", "best_valid", "test", "fit_s")}))
'''

OURS_DRIVER = r'''
"""Run by benchmarks/vs_recbole.py in the project venv: python driver.py CONFIG.json RUN_DIR OUT.json"""
import time
T_PROCESS = time.perf_counter()
import json, os, sys, threading
import torch
from behaviorseq.train import run_experiment

TICK = os.sysconf("SC_CLK_TCK")


def sys_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / TICK


# A sampler thread: (wall since process start, process CPU, machine-wide busy CPU) every 0.1 s, and the same
# at the moment each new line of log.jsonl appears, so that per-epoch CPU and foreign load can be derived.
samples, lines, stop = [], [], threading.Event()
log_path = os.path.join(sys.argv[2], "log.jsonl")


def sampler():
    seen = 0
    while not stop.wait(0.1):
        now = (time.perf_counter() - T_PROCESS, time.process_time(), sys_busy_s(), os.getloadavg()[0])
        samples.append(now)
        try:
            with open(log_path, "rb") as f:
                n = f.read().count(b"\n")
        except OSError:
            n = 0
        while seen < n:
            lines.append(now)
            seen += 1


config = json.load(open(sys.argv[1]))
threading.Thread(target=sampler, daemon=True).start()
t = time.perf_counter()
res = run_experiment(config, sys.argv[2])
run_s = time.perf_counter() - t
stop.set()
json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__, "run_experiment_s": run_s,
           "run_experiment_start_s": t - T_PROCESS, "process_s": time.perf_counter() - T_PROCESS,
           "env": {k: os.environ.get(k) for k in sys.argv[4:]}, "samples": samples, "line_samples": lines,
           "returned": res}, open(sys.argv[3], "w"), indent=1, default=str)
'''


# ----------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[{_dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_recbole_venv(venv: Path = RECBOLE_VENV) -> Path:
    """Create the RecBole virtualenv and install RecBole 1.2.1 into it, unless it already works."""
    py = venv_python(venv)
    check = [str(py), "-c", f"import recbole, numpy; assert recbole.__version__ == {RECBOLE_VERSION!r}; "
             "assert numpy.__version__ < '2'"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    log(f"creating the RecBole {RECBOLE_VERSION} virtualenv in {venv}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)  # first, so that recbole does not pull another torch
    subprocess.run(pip + [f"recbole=={RECBOLE_VERSION}", "numpy<2", "pandas<2.2", "setuptools<81"], check=True)
    subprocess.run(check, check=True)
    return py


def child_env(malloc: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV and k != "PYTHONPATH"}
    if malloc:
        env.update(MALLOC_ENV)
    env["BEHAVIORSEQ_MALLOC_TUNING"] = "1" if malloc else "0"  # run_experiment's own mallopt follows the flag
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # RecBole reloads its own checkpoints; harmless for ours
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_logged(cmd: list[str], cwd: Path, env: dict, log_path: Path) -> float:
    log(f"running {' '.join(cmd)}  (log: {log_path})")
    t = time.perf_counter()
    with open(log_path, "w") as f:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{cmd[0]} exited with {rc} after {wall:.0f} s; log tail:\n{tail}")
    return wall


def norm_metrics(d: dict | None) -> dict:
    """RecBole's 'hit@10' -> 'hr@10'; keys lower-case; only HR/NDCG/MRR at the reported ks."""
    out = {}
    for k, v in (d or {}).items():
        k = k.lower().replace("hit@", "hr@").replace("recall@", "hr@")
        name, _, kk = k.partition("@")
        if name in ("hr", "ndcg", "mrr") and kk.isdigit() and int(kk) in KS and v is not None:
            out[k] = float(v)
    return out


# ----------------------------------------------------------------------------------------------- RecBole side
def recbole_data(name: str, data_root: Path, data_dir: Path, raw_timestamps: bool = False) -> None:
    """The RecBole atomic file for ``name`` under data_dir/<RecBole's name>/: user, item and, as timestamp,
    the event's position in its user's sequence (exact time order, ties in file order, as ours); see the
    module docstring for why. With ``raw_timestamps`` the original ml-100k file is linked instead."""
    rb_name = DATASETS[name][3]
    ds_dir = data_dir / rb_name
    ds_dir.mkdir(parents=True, exist_ok=True)
    inter = ds_dir / f"{rb_name}.inter"
    src = data_root / DATASETS[name][1]
    if raw_timestamps and DATASETS[name][2] == "recbole":
        if inter.is_symlink() or inter.exists():
            inter.unlink()
        inter.symlink_to(src)
        return
    tmp = inter.with_suffix(".tmp")
    with open(src) as fin, open(tmp, "w") as fout:
        fout.write("user_id:token\titem_id:token\ttimestamp:float\n")
        if DATASETS[name][2] == "seqtext":  # S3-Rec text: "user item item ...", in time order
            for line in fin:
                parts = line.split()
                if len(parts) >= 2:
                    fout.writelines(f"{parts[0]}\t{item}\t{pos}\n" for pos, item in enumerate(parts[1:]))
        else:  # RecBole atomic file: timestamp -> the event's rank in its user's (time, file row) order
            header = fin.readline().rstrip("\n").split("\t")
            cu, ci, ct = (header.index(c) for c in ("user_id:token", "item_id:token", "timestamp:float"))
            rows = [line.rstrip("\n").split("\t") for line in fin if line.strip()]
            order = sorted(range(len(rows)), key=lambda j: (rows[j][cu], float(rows[j][ct])))  # stable: file order on ties
            rank: dict[str, int] = {}
            for j in order:
                u = rows[j][cu]
                rank[u] = rank.get(u, -1) + 1
                fout.write(f"{u}\t{rows[j][ci]}\t{rank[u]}\n")
    os.replace(tmp, inter)


def recbole_config(name: str, data_dir: Path, saved_dir: Path, epochs: int, batch: int) -> dict:
    return {
        "data_path": str(data_dir), "checkpoint_dir": str(saved_dir),
        "use_gpu": False, "gpu_id": "", "seed": SEED, "reproducibility": True, "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "normalize_all": False,
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "val_interval": None, "rm_dup_inter": None,
        "n_layers": LAYERS, "n_heads": HEADS, "hidden_size": HIDDEN, "inner_size": 256,
        "hidden_dropout_prob": DROPOUT, "attn_dropout_prob": DROPOUT, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE",
        "MAX_ITEM_LIST_LENGTH": MAX_LEN, "train_neg_sample_args": None,
        "epochs": epochs, "train_batch_size": batch, "learner": "adam", "learning_rate": LR,
        "eval_step": 1, "stopping_step": PATIENCE,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": list(KS), "valid_metric": "NDCG@10",
        "eval_batch_size": 4096, "metric_decimal_place": 6,
    }


def run_recbole(name: str, args, workdir: Path) -> dict:
    py = ensure_recbole_venv()
    data_dir, saved_dir = workdir / "recbole_data", workdir / "recbole_saved"
    recbole_data(name, args.data_root, data_dir, args.recbole_raw_timestamps)
    saved_dir.mkdir(parents=True, exist_ok=True)
    driver = workdir / "recbole_driver.py"
    driver.write_text(RECBOLE_DRIVER)
    out = workdir / f"recbole_{name}.json"
    epochs = args.recbole_epochs.get(name, args.recbole_epochs.get("*", DEFAULT_RECBOLE_EPOCHS[name]))
    spec = {"dataset": DATASETS[name][3], "out": str(out), "keep_anomaly": args.recbole_anomaly, "dump_targets": True,
            "env_keys": sorted(MALLOC_ENV) + ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "OMP_NUM_THREADS"],
            "config": recbole_config(name, data_dir, saved_dir, epochs,
                                     args.recbole_batch.get(name, args.recbole_batch.get("*", DEFAULT_RECBOLE_BATCH[name])))}
    spec_path = workdir / f"recbole_{name}_spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    wall = run_logged([str(py), str(driver), str(spec_path)], workdir, child_env(not args.no_malloc_tuning),
                      workdir / f"recbole_{name}.log")
    res = json.loads(out.read_text())
    res["subprocess_wall_s"] = wall
    res["epochs_cap"] = epochs
    return res


# ----------------------------------------------------------------------------------------------- our side
def ours_config(name: str, args) -> dict:
    return {
        "model": "sasrec",
        "model_config": {"hidden_size": HIDDEN, "num_blocks": LAYERS, "num_heads": HEADS, "dropout": DROPOUT,
                         "max_len": MAX_LEN, "loss": "ce"},
        "data": {"dataset": DATASETS[name][0], "data_root": str(args.data_root), "split": "leave_one_out"},
        "train": {"epochs": args.ours_epochs, "batch_size": args.ours_batch, "lr": LR, "patience": args.ours_patience,
                  "seed": SEED, "early_stop_metric": "ndcg@10", "train_windows": args.ours_windows},
        "eval": {"ks": list(KS), "exclude_history": False},
    }


def add_cpu_clock(epochs: list[dict], samples: list, line_samples: list) -> None:
    """Per-epoch process CPU seconds and other processes' CPU seconds since our training loop started.

    The driver's sampler saw log line i appear at (wall, cpu, machine busy, loadavg); the loop started at
    wall(line 0) - elapsed_s(epoch 0), where CPU and machine busy are interpolated from the 0.1 s samples."""
    if not samples or len(line_samples) < len(epochs) or not epochs or epochs[0].get("elapsed_s") is None:
        return
    start = line_samples[0][0] - epochs[0]["elapsed_s"]

    def at(t: float, j: int) -> float:
        prev = samples[0]
        for s in samples:
            if s[0] >= t:
                if s[0] == prev[0]:
                    return s[j]
                return prev[j] + (s[j] - prev[j]) * (t - prev[0]) / (s[0] - prev[0])
            prev = s
        return samples[-1][j]

    cpu0, busy0 = at(start, 1), at(start, 2)
    for e, ls in zip(epochs, line_samples, strict=False):
        e["cpu_s"] = ls[1] - cpu0
        e["foreign_cpu_s"] = ls[2] - busy0 - e["cpu_s"]
        e["loadavg"] = ls[3]


def machine_busy_cores(window_s: float = 5.0) -> float:
    """Average number of busy cores on the machine over window_s (all processes)."""
    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")

    b0 = busy()
    time.sleep(window_s)
    return (busy() - b0) / window_s


def wait_quiet(max_wait_s: float, threshold: float) -> dict:
    """Wait (up to max_wait_s) until other processes use less than ``threshold`` cores; return what was seen."""
    t0 = time.time()
    load = machine_busy_cores()
    while load > threshold and time.time() - t0 < max_wait_s:
        log(f"machine busy: {load:.2f} cores in use by other processes; waiting (up to {max_wait_s - (time.time() - t0):.0f} s more)")
        time.sleep(25)
        load = machine_busy_cores()
    return {"busy_cores_before": round(load, 3), "waited_s": round(time.time() - t0, 1)}


def wait_for_ours(timeout_s: float, every_s: float) -> None:
    """Our engine may still be being written: wait until ``behaviorseq.train.run_experiment`` imports."""
    check = [sys.executable, "-c", "from behaviorseq.train import run_experiment"]
    deadline = time.time() + timeout_s
    while subprocess.run(check, capture_output=True, cwd=ROOT).returncode != 0:
        if time.time() >= deadline:
            raise RuntimeError("behaviorseq.train.run_experiment is not importable")
        log(f"behaviorseq.train.run_experiment not importable yet; next check in {every_s:.0f} s")
        time.sleep(every_s)


def run_ours(name: str, args, workdir: Path) -> dict:
    run_dir = workdir / f"ours_{name}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cfg = ours_config(name, args)
    cfg_path, driver, out = workdir / f"ours_{name}_config.json", workdir / "ours_driver.py", workdir / f"ours_{name}.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    driver.write_text(OURS_DRIVER)
    env_keys = sorted(MALLOC_ENV) + ["OMP_NUM_THREADS"]
    wall = run_logged([sys.executable, str(driver), str(cfg_path), str(run_dir), str(out), *env_keys], ROOT,
                      child_env(not args.no_malloc_tuning), workdir / f"ours_{name}.log")
    drv = json.loads(out.read_text())
    epochs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    add_cpu_clock(epochs, drv.get("samples") or [], drv.get("line_samples") or [])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"config": cfg, "threads": drv["threads"], "torch": drv["torch"], "env": drv["env"],
            "run_experiment_s": drv["run_experiment_s"], "process_s": drv["process_s"], "subprocess_wall_s": wall,
            "epochs": [{k: e.get(k) for k in ("epoch", "elapsed_s", "train_loss", "cpu_s", "foreign_cpu_s", "loadavg")}
                       | {"valid": e.get("valid") or {}} for e in epochs],
            "best_epoch": metrics.get("best_epoch"), "best_valid": metrics.get("valid"), "test": metrics.get("test"),
            "protocol": metrics.get("protocol"), "metrics_json": metrics, "run_dir": str(run_dir)}


# ----------------------------------------------------------------------------------------------- alignment
def alignment(name: str, rb: dict, data_root: Path) -> dict:
    """Same users/items/interactions, and the same validation/test targets and input sequences per user."""
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from behaviorseq.data.datasets import open_dataset

    store = open_dataset(DATASETS[name][0], root=data_root, cache=False)
    ours_counts = {"users": int(store.num_users), "items": int(store.num_items), "interactions": int(store.num_events)}
    users = store.raw_users(np.arange(1, store.num_users + 1))
    res = {"recbole_counts": rb.get("counts"), "ours_counts": ours_counts,
           "counts_equal": rb.get("counts") == ours_counts}
    for role, cut in (("valid", 2), ("test", 1)):
        want = rb.get(f"{role}_targets")
        if not want:
            continue
        same_t = same_seq = n = 0
        for u_idx, raw_u in enumerate(users, start=1):
            seq = [str(x) for x in store.raw_items(store.sequence(u_idx))]
            if len(seq) < 3:
                continue
            n += 1
            got = want.get(str(raw_u))
            if got is None:
                continue
            same_t += got[0] == seq[-cut]
            same_seq += got[1] == seq[:-cut][-MAX_LEN:]
        res[role] = {"users": n, "recbole_samples": len(want), "same_target": same_t, "same_input": same_seq}
    return res


# ----------------------------------------------------------------------------------------------- report
def first_reach(epochs: list[dict], target: float | None) -> dict | None:
    if target is None:
        return None
    for e in epochs:
        v = (e.get("valid") or {}).get("ndcg@10")
        if v is not None and v >= target - 1e-12:
            return {"epoch": e["epoch"], "elapsed_s": e["elapsed_s"], "cpu_s": e.get("cpu_s"),
                    "foreign_cpu_s": e.get("foreign_cpu_s"), "ndcg@10": v}
    return None


def side_summary(side: dict) -> dict:
    eps = side.get("epochs") or []
    n = len(eps)
    total = eps[-1]["elapsed_s"] if eps else None
    best = max(eps, key=lambda e: e["valid"].get("ndcg@10", -1)) if eps else None
    s = {"epochs_run": n, "loop_s": total, "s_per_epoch": total / n if n else None,
         "best_valid_ndcg@10": best["valid"].get("ndcg@10") if best else None,
         "best_valid_epoch": best["epoch"] if best else None,
         "best_valid_elapsed_s": best["elapsed_s"] if best else None,
         "test": norm_metrics(side.get("test")), "best_valid": norm_metrics(side.get("best_valid"))}
    if eps and eps[-1].get("cpu_s") is not None:
        s["cpu_s_per_epoch"] = eps[-1]["cpu_s"] / n
        s["foreign_cores"] = eps[-1]["foreign_cpu_s"] / total  # other processes' average load during the loop
    if eps and "train_s" in eps[0]:
        s["train_s_per_epoch"] = sum(e["train_s"] for e in eps) / n
        s["eval_s_per_epoch"] = sum(e["eval_s"] for e in eps) / n
    return s


def compare(rb: dict, ours: dict | None) -> dict:
    rs = side_summary(rb)
    target = rs["best_valid_ndcg@10"]
    out = {"target_valid_ndcg@10": target, "recbole": rs,
           "recbole_reach": first_reach(rb["epochs"], target)}
    if ours:
        os_ = side_summary(ours)
        reach = first_reach(ours["epochs"], target)
        out.update(ours=os_, ours_reach=reach)
        if reach and out["recbole_reach"]:
            out["speedup_to_target"] = out["recbole_reach"]["elapsed_s"] / max(reach["elapsed_s"], 1e-9)
            if reach.get("cpu_s") and out["recbole_reach"].get("cpu_s"):
                out["speedup_to_target_cpu"] = out["recbole_reach"]["cpu_s"] / max(reach["cpu_s"], 1e-9)
        if rs["s_per_epoch"] and os_["s_per_epoch"]:
            out["s_per_epoch_ratio"] = rs["s_per_epoch"] / os_["s_per_epoch"]
        rt, ot = rs["test"].get("ndcg@10"), os_["test"].get("ndcg@10")
        if rt is not None and ot is not None:
            out["test_ndcg@10_delta"] = ot - rt
    return out


def fmt(x, nd=4):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def markdown(results: dict) -> str:
    lines = []
    for name, r in results["datasets"].items():
        c = r.get("comparison")
        if not c:
            continue
        lines += [f"### {name}", "",
                  f"Target: RecBole's best validation NDCG@10 = {fmt(c['target_valid_ndcg@10'])}.", "",
                  "| side | batch | s/epoch | epochs run | best valid NDCG@10 (epoch) | test HR@5 / NDCG@5 | "
                  "test HR@10 / NDCG@10 | test HR@20 / NDCG@20 | wall s to target (epoch) | speed-up (wall) | "
                  "CPU s to target | speed-up (CPU) | other load (cores) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for side in ("recbole", "ours"):
            s, reach = c.get(side), c.get(f"{side}_reach")
            if not s:
                continue
            batch = r[side]["config"]["train_batch_size"] if side == "recbole" else r[side]["config"]["train"]["batch_size"]
            t = s["test"]
            if side == "recbole":
                speed, speed_cpu = "1.0x", "1.0x"
            else:
                speed = f"{c['speedup_to_target']:.1f}x" if c.get("speedup_to_target") else "not reached"
                speed_cpu = f"{c['speedup_to_target_cpu']:.1f}x" if c.get("speedup_to_target_cpu") else "-"
            cap = f" (cap {r[side].get('epochs_cap')})" if side == "recbole" else ""
            label = "RecBole 1.2.1" if side == "recbole" else \
                f"behaviorseq (windows: {r[side]['config']['train'].get('train_windows', 'last')})"
            lines.append(
                f"| {label} | {batch} | {fmt(s['s_per_epoch'], 1)} | "
                f"{s['epochs_run']}{cap} | {fmt(s['best_valid_ndcg@10'])} ({s['best_valid_epoch']}) | "
                f"{fmt(t.get('hr@5'))} / {fmt(t.get('ndcg@5'))} | {fmt(t.get('hr@10'))} / {fmt(t.get('ndcg@10'))} | "
                f"{fmt(t.get('hr@20'))} / {fmt(t.get('ndcg@20'))} | "
                f"{fmt(reach['elapsed_s'], 1) + ' (' + str(reach['epoch']) + ')' if reach else 'not reached'} | {speed} | "
                f"{fmt(reach.get('cpu_s') if reach else None, 1)} | {speed_cpu} | {fmt(s.get('foreign_cores'), 2)} |")
        a = r.get("alignment")
        if a:
            lines += ["", f"Data check: RecBole {a['recbole_counts']}, ours {a['ours_counts']}; "
                      + "; ".join(f"{role}: same target {a[role]['same_target']}/{a[role]['users']}, same input "
                                  f"{a[role]['same_input']}/{a[role]['users']}" for role in ("valid", "test") if role in a)]
        lines.append("")
    return "\n".join(lines)


def parse_epochs(vals: list[str] | None) -> dict:
    """["12"] -> {"*": 12}; ["ml-100k=12", "lastfm=40"] -> per dataset."""
    out = {}
    for v in vals or []:
        if "=" in v:
            k, n = v.split("=", 1)
            out[k] = int(n)
        else:
            out["*"] = int(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "lastfm"], choices=sorted(DATASETS))
    ap.add_argument("--recbole-epochs", nargs="+", default=None, metavar="N|DATASET=N",
                    help=f"RecBole epoch cap, for all datasets (N) or one (DATASET=N); default {DEFAULT_RECBOLE_EPOCHS}")
    ap.add_argument("--recbole-batch", nargs="+", default=None, metavar="N|DATASET=N",
                    help=f"RecBole train_batch_size, for all datasets or one; default {DEFAULT_RECBOLE_BATCH}")
    ap.add_argument("--recbole-raw-timestamps", action="store_true",
                    help="give RecBole ml-100k's raw Unix timestamps (float32 in RecBole: reorders near ties)")
    ap.add_argument("--recbole-anomaly", action="store_true",
                    help="leave RecBole's set_detect_anomaly(True) on (for reference; off by default)")
    ap.add_argument("--ours-batch", type=int, default=256)
    ap.add_argument("--ours-windows", choices=["last", "all", "prefixes"], default="all",
                    help="our training windows: 'all' trains every event like RecBole's prefixes; 'last' is SASRec's own")
    ap.add_argument("--ours-epochs", type=int, default=200)
    ap.add_argument("--ours-patience", type=int, default=PATIENCE,
                    help=f"our early-stopping patience in evaluations (default {PATIENCE}, as RecBole's stopping_step)")
    ap.add_argument("--skip-recbole", action="store_true", help="reuse the RecBole results stored in --out")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--wait-for-ours", type=float, default=0.0, metavar="SECONDS",
                    help="poll (every 120 s) up to this long for behaviorseq.train.run_experiment to exist")
    ap.add_argument("--wait-quiet", type=float, default=1800.0, metavar="SECONDS",
                    help="before each side, wait up to this long for other processes to leave the CPUs idle")
    ap.add_argument("--quiet-threshold", type=float, default=0.3, metavar="CORES",
                    help="'idle' = other processes use fewer than this many cores (5 s average)")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="run both sides without the glibc malloc env")
    ap.add_argument("--data-root", type=Path,
                    default=Path(os.environ.get("BEHAVIORSEQ_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--workdir", type=Path, default=WORK / "vs_recbole")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vs_recbole.json")
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown tables here")
    args = ap.parse_args(argv)
    args.recbole_epochs = parse_epochs(args.recbole_epochs)
    args.recbole_batch = parse_epochs(args.recbole_batch)
    args.data_root, args.workdir, args.out = args.data_root.resolve(), args.workdir.resolve(), args.out.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    previous = json.loads(args.out.read_text()) if args.out.exists() else {"datasets": {}}
    results = {"benchmark": "vs_recbole", "date": _dt.datetime.now().isoformat(timespec="seconds"),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "malloc_env": None if args.no_malloc_tuning else MALLOC_ENV,
               "shared": {"hidden": HIDDEN, "layers": LAYERS, "heads": HEADS, "max_len": MAX_LEN, "dropout": DROPOUT,
                          "lr": LR, "patience": PATIENCE, "seed": SEED, "loss": "CE (softmax over all items)",
                          "split": "leave-one-out", "ranking": "full, history items not masked", "ks": list(KS)},
               "datasets": dict(previous.get("datasets", {}))}

    def save():
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str))
        os.replace(tmp, args.out)

    for name in args.datasets:
        r = dict(results["datasets"].get(name, {}))
        if args.skip_recbole:
            if "recbole" not in r:
                raise SystemExit(f"--skip-recbole: no stored RecBole result for {name} in {args.out}")
            log(f"{name}: reusing RecBole results from {r['recbole'].get('date', args.out)}")
        else:
            quiet = wait_quiet(args.wait_quiet, args.quiet_threshold)
            rb = run_recbole(name, args, args.workdir)
            rb["quiet_check"] = quiet
            rb["date"] = _dt.datetime.now().isoformat(timespec="seconds")
            rb["malloc_env"] = None if args.no_malloc_tuning else MALLOC_ENV
            valid_t, test_t = rb.pop("valid_targets", None), rb.pop("test_targets", None)
            r["recbole"] = rb
            r["alignment"] = alignment(name, {**rb, "valid_targets": valid_t, "test_targets": test_t}, args.data_root)
            log(f"{name}: alignment {json.dumps(r['alignment'])}")
        results["datasets"][name] = r
        save()
        if not args.skip_ours:
            if args.wait_for_ours > 0:
                wait_for_ours(args.wait_for_ours, 120)
            quiet = wait_quiet(args.wait_quiet, args.quiet_threshold)
            ours = run_ours(name, args, args.workdir)
            ours["quiet_check"] = quiet
            ours["date"] = _dt.datetime.now().isoformat(timespec="seconds")
            ours["malloc_env"] = None if args.no_malloc_tuning else MALLOC_ENV
            r["ours"] = ours
        r["comparison"] = compare(r["recbole"], r.get("ours") if not args.skip_ours or "ours" in r else None)
        results["datasets"][name] = r
        save()
        log(f"{name}: {json.dumps(r['comparison'], default=str)[:2000]}")
    md = markdown({"datasets": {k: results["datasets"][k] for k in args.datasets}})
    print(md)
    if args.md:
        args.md.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
