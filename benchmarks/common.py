"""Shared helpers of the benchmark scripts: data location, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "_work"


def timed(fn, inputs) -> list[float]:
    """Seconds of ``fn(x)`` for each x (the serving benchmarks' one timing loop)."""
    out = []
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


def data_root() -> Path:
    env = os.environ.get("BEHAVIORSEQ_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def machine() -> dict:
    import numpy
    import torch

    from behaviorseq.utils import code_version

    mem = None
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "ram_gib": mem,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "code_version": code_version()}


# Settings that change where a run reads its data or how fast it goes, never what it computes.
SPEED_ONLY = {"data.data_root", "data.cache_dir", "train.threads", "train.device", "train.num_workers",
              "train.checkpoint_every_steps", "eval.batch_size"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def finished_run(run_dir: Path, config: dict | None) -> dict | None:
    """The metrics of the finished run in ``run_dir``, or None when there is none. With a ``config``, a finished
    run is reused only if it was made with that config (resolved with the model's defaults; ``SPEED_ONLY``
    settings and settings newer than the stored run aside); otherwise SystemExit names the settings that
    differ. ``config=None`` (aggregating finished runs only) takes the run as it was made."""
    import yaml

    from behaviorseq.train.run import resolve_config

    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        return None
    if config is None:
        return json.loads(metrics.read_text())
    result = json.loads(metrics.read_text())
    stored = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()))
    wanted = _flat(resolve_config(config).to_dict())
    ignore = SPEED_ONLY | ({"train.amp"} if str(result.get("environment", {}).get("device")) == "cpu" else set())
    differ = [f"{k}: {stored[k]!r} there, {wanted[k]!r} here" for k in sorted(stored.keys() & wanted.keys())
              if k not in ignore and stored[k] != wanted[k]]
    if differ:
        raise SystemExit(f"{run_dir} holds a finished run made with other settings ({'; '.join(differ)}). "
                         "Delete the folder to retrain, or give these settings their own --tag.")
    return result


def write_json(name: str, payload: dict) -> Path:
    from behaviorseq.utils import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / name
    atomic_write_text(out, json.dumps(payload, indent=2, default=str))
    return out


def beauty_task(dataset: str = "beauty", loss: str = "ce", **train):
    """(store, split, model, task) for a benchmark-size SASRec (hidden 64, 2 blocks, 2 heads, max_len 50)
    on a registered dataset with leave-one-out, as the speed benchmarks use it."""
    import torch

    from behaviorseq.config import EvalConfig, TrainConfig
    from behaviorseq.data import leave_one_out, open_dataset
    from behaviorseq.models import build
    from behaviorseq.tasks.retrieval import RetrievalTask

    store = open_dataset(dataset, root=data_root())
    split = leave_one_out(store)
    torch.manual_seed(0)
    model = build("sasrec", store.num_items, {"hidden_size": 64, "num_heads": 2, "loss": loss})
    eval_cfg = EvalConfig(batch_size=train.pop("eval_chunk", 1024))
    task = RetrievalTask.create(store, split, model, TrainConfig(**train), eval_cfg)
    return store, split, model, task


# ---- per-seed results: run folders live in the git-ignored _work/ and do not outlive a session, so a
# results JSON keeps every seed's numbers, and a later session adds seeds by merging the older files.

def seed_record(res: dict, metrics: list[str]) -> dict:
    """The part of a run's metrics.json that a table row keeps per seed."""
    return {"seed": res["protocol"]["seed"], "test": {m: res["test"][m] for m in metrics},
            "best_epoch": res["best_epoch"], "seconds_per_epoch": res["seconds_per_epoch"],
            "protocol": res["protocol"]}


def kept_records(paths: list[str], metrics: list[str], datasets: list[str], label: str = "model") -> dict[tuple, list[dict]]:
    """Per-seed records of the rows of earlier results files on ``datasets``, keyed (dataset, ``label``). Rows
    written before per-seed keeping (no ``per_seed``) can be used only when they hold one seed (their mean is
    that seed)."""
    out: dict[tuple, list[dict]] = {}
    for p in paths:
        path = Path(p) if Path(p).exists() else RESULTS / p
        for row in json.loads(path.read_text())["results"]:
            key = (row["dataset"], row[label])
            if row["dataset"] not in datasets:
                continue
            if "per_seed" in row:  # each seed's own protocol; files before session 17 kept only the row's
                recs = [{**r, "protocol": r.get("protocol") or {**row["protocol"], "seed": r["seed"]}}
                        for r in row["per_seed"]]
            elif len(row["seeds"]) == 1:
                recs = [{"seed": row["seeds"][0], "test": {m: row[m]["mean"] for m in metrics},
                         "best_epoch": row["best_epochs"][0], "seconds_per_epoch": row["seconds_per_epoch"],
                         "protocol": row["protocol"]}]
            else:
                raise SystemExit(f"{path}: row {key} aggregates seeds {row['seeds']} without per-seed values, "
                                 "so it cannot be merged; leave that file out")
            out.setdefault(key, []).extend(recs)
    return out


# What describes the data itself: it differs between seeds where each seed draws its own planted data set.
DATA_KEYS = ("dataset", "dataset_stats_after_preprocessing", "preprocessing", "data_fingerprint")


def _protocol_key(p: dict, keys: set, data_per_seed: bool = False) -> str:
    """A protocol on ``keys``, without the seed, the code version and where the data files were (sessions
    differ there); with ``data_per_seed``, without what describes the data (``DATA_KEYS``) either."""
    drop = ("seed", "code_version") + (DATA_KEYS if data_per_seed else ())
    p = {k: v for k, v in p.items() if k in keys and k not in drop}
    if data_per_seed and isinstance(p.get("split"), dict):  # the split's sample counts come from the data
        p["split"] = {k: v for k, v in p["split"].items() if k not in ("samples", "targets")}
    p["preprocessing"] = [{k: ([Path(s).name for s in v] if k == "sources" else v) for k, v in step.items()}
                          for step in p.get("preprocessing", [])]
    return json.dumps(p, sort_keys=True, default=str)


def aggregate(key: tuple, recs: list[dict], metrics: list[str], label: str = "model",
              data_per_seed: bool = False) -> dict:
    """One table row: mean and sample std over seeds, the per-seed records and the shared protocol. Refuses
    seeds run under different protocols and a seed counted twice. ``data_per_seed``: each seed drew its own
    data (planted sets), so only the rest of the protocol must agree."""
    seeds = [r["seed"] for r in recs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"{key}: seed counted twice ({seeds}); drop one of the sources")
    # older runs lack protocol fields added since; the shared fields must agree, the others are listed
    shared = set.intersection(*(set(r["protocol"]) for r in recs))
    if len({_protocol_key(r["protocol"], shared, data_per_seed) for r in recs}) > 1:
        raise SystemExit(f"{key}: the seeds were run under different protocols; not merged")
    unchecked = sorted(set.union(*(set(r["protocol"]) for r in recs)) - shared)
    order = sorted(range(len(recs)), key=lambda i: seeds[i])
    recs = [recs[i] for i in order]
    row = {"dataset": key[0], label: key[1], "seeds": [r["seed"] for r in recs], "protocol": recs[0]["protocol"]}
    for m in metrics:
        mean, std = mean_sd([r["test"][m] for r in recs])
        row[m] = {"mean": mean, "std": std}
    row["best_epochs"] = [r["best_epoch"] for r in recs]
    row["seconds_per_epoch"] = sum(r["seconds_per_epoch"] for r in recs) / len(recs)
    row["per_seed"] = recs  # with each seed's protocol, so a later --merge checks seeds against each other
    if unchecked:  # e.g. a field an older seed's run did not record yet
        row["protocol_fields_not_in_every_seed"] = unchecked
        print(f"note: {key}: protocol fields {unchecked} are not recorded for every seed", flush=True)
    return row


def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; None for a single value): the convention of every "±" and
    "+-" in benchmarks/README.md."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_sd of no values")
    mean = sum(v) / len(v)
    if len(v) < 2:
        return mean, None
    return mean, (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5


def pm(mean: float, sd: float | None, digits: int = 3, sep: str = " ± ") -> str:
    """"mean ± sd", or the mean alone when there is no spread to report (one seed)."""
    return f"{mean:.{digits}f}" + ("" if sd is None else f"{sep}{sd:.{digits}f}")


def cell(stat: dict) -> str:
    return pm(stat["mean"], stat["std"], 4)
