"""Runs: one config -> a run folder with the resolved config, log, checkpoints, metrics and a plot.

    run_dir/config.yaml       the resolved RunConfig (model defaults filled in)
    run_dir/log.jsonl         one line per epoch: loss, validation metrics, elapsed seconds
    run_dir/checkpoints/      last.pt (resumable state) and best.pt (weights of the best validation epoch)
    run_dir/metrics.json      best epoch, validation and test metrics of the best weights, the protocol
    run_dir/curves.png        training loss and the validation metric per epoch
    run_dir/items.parquet     retrieval and CTR runs: raw item ids, training counts, CTR item fields (for serving)
    run_dir/evaluation.json   the latest ``evaluate_run`` (another protocol on the best weights), with its overrides;
    run_dir/evaluations/      every protocol's latest evaluation, one file per set of overrides

A folder holding a run is continued (``resume``), replaced (``overwrite``) or refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from behaviorseq import models
from behaviorseq.config import ConfigError, RunConfig, parse_overrides
from behaviorseq.data.datasets import open_dataset
from behaviorseq.data.item_table import ITEMS_FILE, write_item_table
from behaviorseq.data.sampling import item_counts
from behaviorseq.data.splits import TRAIN, make_split
from behaviorseq.tasks.retrieval import RetrievalTask
from behaviorseq.train.allocator import tune_malloc
from behaviorseq.train.packaged import _merge
from behaviorseq.train.run_ctr import CTR_METRICS, prepare_ctr
from behaviorseq.train.run_risk import RISK_METRICS, check_time_origin, prepare_risk
from behaviorseq.train.run_tpp import TPP_METRICS, prepare_tpp
from behaviorseq.train.trainer import Trainer, dist_info, resolve_device, seed_everything
from behaviorseq.utils import atomic_write_bytes, atomic_write_text

# The task each model family trains on (the package under models/), and what early stopping may maximise.
FAMILY_TASK = {"retrieval": "retrieval", "ranking": "ctr", "risk": "default_risk", "tpp": "tpp"}
_STOP_METRICS = {"ctr": CTR_METRICS, "default_risk": RISK_METRICS, "tpp": TPP_METRICS}


def resolve_task(cfg: RunConfig, check_early_stop: bool = True) -> str:
    """The run's task: ``cfg.task`` if given (checked against the model), else from the model's family."""
    family = models.family(cfg.model)
    expected = FAMILY_TASK[family]
    task = cfg.task or expected
    if task != expected:
        raise ConfigError(f"task {task!r} does not fit model {cfg.model!r} (a {family} model, task {expected!r}); "
                          + "; ".join(f"{f} models ({t}): {models.names(f)}" for f, t in FAMILY_TASK.items()
                                      if f != "retrieval"))
    allowed = _STOP_METRICS.get(task)
    if task == "retrieval":  # what the evaluator reports at eval.ks: target sets (user holdout) or one target
        ks = sorted(cfg.eval.ks)
        allowed = ([f"{m}@{k}" for k in ks for m in ("recall", "hr", "ndcg")] if cfg.data.split == "user_holdout"
                   else ["mrr"] + [f"{m}@{k}" for k in ks for m in ("hr", "ndcg", "mrr")])
    if check_early_stop and cfg.train.early_stop_metric not in allowed:
        raise ConfigError(f"train.early_stop_metric {cfg.train.early_stop_metric!r} is not a {task} metric; "
                          f"use one of {list(allowed)} (the packaged <model>.yaml sets it"
                          + (", and eval.ks the cut-offs)" if task == "retrieval" else ")"))
    return task


def resolve_config(config: dict | RunConfig, training: bool = True) -> RunConfig:
    """The typed run config with the model's config filled in; ``training=False`` (re-evaluation) skips the
    check that early stopping's metric is one the evaluation computes."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    try:
        cls = models.get(cfg.model)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    model_cfg = cls.Config.from_dict(cfg.model_args)  # validates, fills defaults
    task = resolve_task(cfg, check_early_stop=training)
    if task != "retrieval" and (cfg.data.columns or cfg.data.read):
        raise ConfigError(f"data.columns / data.read map an event table for the retrieval task; the {task} task "
                          "reads its own data settings (data.ctr, data.payments, data.tpp)")
    unread = _unread_settings(cfg, task)
    if unread:
        raise ConfigError(f"{', '.join(unread)}: set, but the {task} task never reads {'it' if len(unread) == 1 else 'them'} "
                          "(settings of another task: the run would go on as if they were not there); remove them")
    return cfg.model_copy(update={"model_args": model_cfg.to_dict(), "task": task})


# Settings only some tasks read: a run of another task that sets them is refused, never run without them.
_TASK_ONLY = {"data.steps": {"retrieval"}, "data.split": {"retrieval"}, "data.split_args": {"retrieval"},
              "train.train_windows": {"retrieval"}, "data.ctr": {"ctr"}, "data.payments": {"default_risk"},
              "data.risk": {"default_risk"}, "data.tpp": {"tpp"},
              **{f"eval.{k}": {"retrieval"} for k in ("ks", "exclude_history", "negatives", "negative_sampler",
                                                      "ties", "seed")},
              "eval.batch_size": {"retrieval", "ctr", "default_risk"}}


def _unread_settings(cfg: RunConfig, task: str) -> list[str]:
    default = RunConfig()
    out = []
    for key, tasks in _TASK_ONLY.items():
        section, name = key.split(".")
        if task not in tasks and getattr(getattr(cfg, section), name) != getattr(getattr(default, section), name):
            out.append(f"{key}={getattr(getattr(cfg, section), name)!r}")
    return out


def _prepare_any(cfg: RunConfig, attach: bool = True):
    """(dataset name, model, task) of any task family. ``attach=False``: models' data indexes are not built
    (evaluation scores with the weights alone)."""
    if cfg.task == "ctr":
        data, model, task = prepare_ctr(cfg)
        return data.name, model, task
    if cfg.task == "default_risk":
        _, model, task = prepare_risk(cfg)
        return cfg.data.dataset, model, task
    if cfg.task == "tpp":
        _, model, task = prepare_tpp(cfg)
        return cfg.data.dataset, model, task
    store, _, model, task = prepare(cfg, attach)
    return store.meta.get("name"), model, task


def prepare(cfg: RunConfig, attach: bool = True):
    """(store, split, model, task) for a resolved config."""
    store = open_dataset(cfg.data.dataset, cfg.data.steps, root=cfg.data.data_root, cache_dir=cfg.data.cache_dir,
                         read_args={**cfg.data.read, "columns": cfg.data.columns})
    split = make_split(store, cfg.data.split, **cfg.data.split_args)
    seed_everything(cfg.train.seed)
    model = models.build(cfg.model, store.num_items, cfg.model_args)
    if hasattr(model, "use_item_counts"):  # popularity-aware models: counts over training events only
        model.use_item_counts(torch.from_numpy(item_counts(store, np.flatnonzero(split.roles == TRAIN))))
    task = RetrievalTask.create(store, split, model, cfg.train, cfg.eval)
    if attach and hasattr(model, "attach"):  # models that read the training data beyond their batches (SRA-CL's index)
        model.attach(store, task.train_view(0))
    return store, split, model, task


# A model built from data beyond its weights (SRA-CL's semantic index) records that data's cache key and content
# digest here, so that a resumed run never continues on lists built otherwise (other code, data or device).
INDEX_FILE = "data_index.json"


def check_resume_index(run_dir: Path, model) -> None:
    """Refuse to resume when the model's data index differs from the one the run started with; warn (and record
    it, marked) when the run predates the record."""
    now = getattr(model, "index_record", {})
    f = run_dir / INDEX_FILE
    if not now:
        return
    if not f.exists():
        warnings.warn(f"--resume of {run_dir}: the run has no record of its data index (started before session 21?); "
                      "it goes on with today's, which may differ from the one it started with", stacklevel=3)
        return
    try:
        saved = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{f}: not a readable record ({e}); start a new run folder") from None
    if saved.get("digest") not in (None, now["digest"]):
        raise ConfigError(f"--resume of {run_dir}: its data index (cache key {saved.get('key')}) differs from the one "
                          f"this code, data and device build (cache key {now['key']}): other neighbour lists. Start a "
                          "new run folder.")


def _write_index_record(run_dir: Path, model, resume: bool) -> None:
    rec = getattr(model, "index_record", {})
    if rec and not (resume and (run_dir / INDEX_FILE).exists()):
        atomic_write_text(run_dir / INDEX_FILE, json.dumps({**rec, **({"recorded_on_resume": True} if resume else {})}))


# The data a run started on (its fingerprint and sizes): a resume on other data is refused.
DATA_FILE = "data_record.json"


def _data_record(task) -> dict:
    p = task.protocol("test")
    return json.loads(json.dumps({"data_fingerprint": p.get("data_fingerprint"), "stats": _data_stats(p)}, default=str))


def check_resume_data(run_dir: Path, task) -> None:
    """Refuse to resume on data other than the run started on (runs from before session 25 have no record)."""
    f = run_dir / DATA_FILE
    if not f.exists():
        return
    then, now = json.loads(f.read_text()), _data_record(task)
    if then != now:
        raise ConfigError(f"--resume of {run_dir}: its data changed since the run started (fingerprint "
                          f"{then.get('data_fingerprint')} then, {now.get('data_fingerprint')} now; sizes "
                          f"{then.get('stats')} then, {now.get('stats')} now). Start a new run folder.")


def _drop_stale_evaluations(run_dir: Path, best_before: str | None) -> None:
    """A resumed run whose best weights changed: the re-evaluations of the old ones go (they would be read as
    this run's), with a line saying so."""
    best = run_dir / "checkpoints" / "best.pt"
    now = hashlib.sha256(best.read_bytes()).hexdigest() if best.exists() else None
    stale = [f for f in ("evaluation.json", "evaluations") if (run_dir / f).exists()]
    if now == best_before or not stale:
        return
    for f in stale:
        shutil.rmtree(run_dir / f) if (run_dir / f).is_dir() else (run_dir / f).unlink()
    warnings.warn(f"{run_dir}: removed {', '.join(stale)}: they scored the best weights before this resume, which "
                  "it replaced; `behaviorseq evaluate` scores the new ones", stacklevel=3)


# What a run leaves in its folder; a fresh run refuses a folder holding any of them unless told to overwrite.
RUN_FILES = ("config.yaml", "log.jsonl", "metrics.json", "evaluation.json", "curves.png",
             "checkpoints/last.pt", "checkpoints/best.pt", ITEMS_FILE, "evaluations", INDEX_FILE, DATA_FILE)


def _events_file(run_dir: Path, data) -> tuple[Path, bool]:
    """An in-memory event table (pandas / polars DataFrame, pyarrow Table) saved in the run folder under a
    name of its content's hash, so the run re-reads it by path (evaluate, --resume) and a new run's data never
    overwrites an old run's before the new one is known to start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(data, pa.Table):
        table = data
    elif hasattr(data, "to_arrow"):  # polars
        table = data.to_arrow()
    elif hasattr(data, "to_parquet"):  # pandas
        table = pa.Table.from_pandas(data, preserve_index=False)
    else:
        raise ConfigError(f"data: a pandas or polars DataFrame or a pyarrow Table, got {type(data).__name__}")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    raw = sink.getvalue().to_pybytes()
    path = (run_dir / f"events-{hashlib.sha256(raw).hexdigest()[:16]}.parquet").resolve()
    created = not path.exists()
    if created:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, raw)
    return path, created


def _start(config, run_dir: Path, resume: bool, overwrite: bool, events: Path | None):
    """Everything checked and built before a run deletes or writes anything: (cfg, the held files to replace,
    rank, world, the allocator setting, (dataset, model, task))."""
    cfg = resolve_config(config)
    if events is not None and cfg.task != "retrieval":
        raise ConfigError(f"data=<table> is for retrieval runs; a {cfg.task} run reads its data set by name or path")
    rank, world = dist_info()
    resolve_device(cfg.train.device)  # a device that is not there is refused before anything is deleted
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    allocator = tune_malloc()  # glibc: keep freed memory for the next step (train/allocator.py)
    held: list[str] = []
    if resume:
        check_resume_config(run_dir, cfg)
        if cfg.task == "default_risk":
            check_time_origin(run_dir, cfg)
    else:
        held = [f for f in RUN_FILES if (run_dir / f).exists()]
        own = events or Path(str(cfg.data.dataset))  # the table this run reads is never one to replace
        held += [p.name for p in sorted(run_dir.glob("events-*.parquet")) if p.name != own.name]
        if held and not overwrite:
            raise ConfigError(f"{run_dir} already holds a run ({', '.join(held)}): resume it (--resume), replace it "
                              "(--overwrite), or choose another folder (--out)")
        if world > 1:
            torch.distributed.barrier()  # every rank has looked before rank 0 deletes or writes
    built = _prepare_any(cfg)  # data and model errors before anything is deleted
    if resume:
        check_resume_index(run_dir, built[1])
        check_resume_data(run_dir, built[2])
    return cfg, held, rank, world, allocator, built


def run_experiment(config: dict | RunConfig, run_dir: str | Path, resume: bool = False,
                   overwrite: bool = False, data=None) -> dict:
    """Train with early stopping, then evaluate the best weights on validation and test. A folder that
    holds a run is continued with ``resume``, replaced with ``overwrite`` (its old outputs are deleted
    first, so a failed new run never sits beside the old one's metrics), and otherwise refused. ``data``: the
    events as a DataFrame or Arrow table instead of ``data.dataset`` (retrieval; ``data.columns`` maps its
    columns as for a file); it is kept in the run folder as ``events-<hash>.parquet``."""
    run_dir = Path(run_dir)
    events, created, made_dir = None, False, not run_dir.exists()
    if data is not None:
        events, created = _events_file(run_dir, data)
        config = (config.to_dict() if isinstance(config, RunConfig) else copy.deepcopy(config))
        config.setdefault("data", {})["dataset"] = str(events)
    try:
        cfg, held, rank, world, allocator, (dataset, model, task) = _start(config, run_dir, resume, overwrite, events)
    except BaseException:
        if created:  # a refused or failed start leaves no table of its own behind, nor a folder it made
            events.unlink(missing_ok=True)
            if made_dir and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise
    if not resume and rank == 0:
        for f in held:
            if (run_dir / f).is_dir():
                shutil.rmtree(run_dir / f)
            else:
                (run_dir / f).unlink()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        _write_index_record(run_dir, model, resume)
        if not (resume and (run_dir / DATA_FILE).exists()):
            atomic_write_text(run_dir / DATA_FILE, json.dumps(_data_record(task)))
        if cfg.task == "retrieval":  # what serving needs besides the weights (serve.Recommender.from_run)
            store = task.store
            write_item_table(run_dir, store.events["item"].vocab[1:],
                             item_counts(store, np.flatnonzero(task.split.roles == TRAIN))[1:])
        elif cfg.task == "ctr":  # serve.Ranker.from_run: raw ids, item fields; counts = training targets
            d = task.data
            write_item_table(run_dir, d.raw_item_ids(),
                             np.bincount(d.target[d.indices("train")], minlength=d.n_items + 1)[1:], d.item_fields)
    t0 = time.perf_counter()
    best = run_dir / "checkpoints" / "best.pt"
    best_before = hashlib.sha256(best.read_bytes()).hexdigest() if resume and best.exists() else None
    if any(p.requires_grad for p in model.parameters()):
        trainer = Trainer(model, task, cfg.train, run_dir)
        state, device = trainer.fit(resume=resume), trainer.device
    else:  # nothing to learn (e.g. MostPop): evaluate as built
        device = resolve_device(cfg.train.device)
        model.to(device)
        state = {"best_epoch": None, "epoch": 0, "elapsed_s": 0.0}
    train_s = time.perf_counter() - t0
    if world > 1:
        torch.distributed.barrier()  # rank 0 writes best.pt: every rank must read its final version
    if resume and rank == 0:
        _drop_stale_evaluations(run_dir, best_before)
    if best.exists():
        model.load_state_dict(torch.load(best, map_location=device, weights_only=True))
    valid = task.evaluate(model, "valid", device, rank, world)
    test = task.evaluate(model, "test", device, rank, world)
    result = {
        "model": cfg.model, "dataset": dataset, "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"], "valid": valid, "test": test, "protocol": task.protocol("test"),
        "train_seconds": train_s, "seconds_per_epoch": state["elapsed_s"] / max(1, state["epoch"]),
        "environment": {**environment(device, world), "malloc": allocator},
    }
    if rank == 0:
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2, default=str))
        plot_curves(run_dir, cfg.train.early_stop_metric)
    if world > 1:  # ranks leave together: one that tore its group down while rank 0 still wrote made gloo abort
        torch.distributed.barrier()
    return result


# Keys a resumed run may change: where its data and caches are, how fast it runs, how long it may go on.
RESUME_FREE = {"train.threads", "train.device", "train.num_workers", "train.time_limit_s", "train.epochs",
               "train.checkpoint_every_steps", "train.amp", "eval.batch_size", "data.data_root", "data.cache_dir",
               "model_args.semantic.device", "model_args.semantic.cache_dir",
               # how the LLM endpoint is called, not what it is asked (the index digest checks the summaries' effect)
               *(f"model_args.semantic.llm.{k}" for k in ("api_key_env", "timeout", "retries", "retry_wait",
                                                          "concurrency", "chunk", "dry_run", "max_new_prompts"))}
# Keys added to the code after runs were started with it, and the value that reproduces what those runs did.
ADDED_KEYS = {"model_args.item_ties": "topk", "model_args.prefix_ties": "topk"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v  # an empty dict is a leaf: {} -> {"a": 1} shows as a change
    return out


def _same_events(a, b) -> bool:
    """Two paths of a kept table (``events-<content hash>.parquet``) of the same content: a moved run folder."""
    return isinstance(a, str) and isinstance(b, str) and Path(a).name == Path(b).name and \
        Path(a).name.startswith("events-") and Path(a).suffix == ".parquet"


def _same_path(a, b) -> bool:
    return isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(a).resolve() == Path(b).resolve()


def _exclude_history_default(cfg: RunConfig) -> bool:
    """What eval.exclude_history None resolves to for the run's data set: a registered one's stated default,
    else True (``RetrievalTask``'s rule for one's own files)."""
    from behaviorseq.data.datasets import REGISTRY

    spec = REGISTRY.get(str(cfg.data.dataset).lower())
    return spec.exclude_history if spec is not None else True


def check_resume_config(run_dir: Path, cfg: RunConfig) -> None:
    """--resume continues a run only under its own settings. Refused, naming the keys: a value that changed
    (outside RESUME_FREE), a key that was set and is gone, or a key the saved config.yaml lacks whose value
    differs from what the code did before the key existed (ADDED_KEYS; other new keys are taken to default
    to the old behaviour). ``train.epochs`` may change only without an LR schedule, whose length it sets."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved, now = _flat(yaml.safe_load(saved_path.read_text()) or {}), _flat(cfg.to_dict())
    if cfg.task == "retrieval":  # train_windows None means the model's default: the same run either way
        default = getattr(models.get(cfg.model), "train_windows", "last")
        ex = _exclude_history_default(cfg)  # eval.exclude_history None means the dataset's stated default
        for flat in (saved, now):
            if flat.get("train.train_windows") is None:
                flat["train.train_windows"] = default
            if flat.get("eval.exclude_history", False) is None:
                flat["eval.exclude_history"] = ex
    differ = []
    for k in sorted(saved.keys() | now.keys()):
        if k in RESUME_FREE and not (k == "train.epochs" and cfg.train.scheduler != "none"):
            continue
        old = saved.get(k, ADDED_KEYS.get(k, now.get(k)))
        if k == "data.dataset" and (_same_path(old, now.get(k)) or _same_events(old, now.get(k))):
            continue
        if k not in now or old != now[k]:
            differ.append(f"{k}: {old!r} -> {now.get(k, '(unset)')!r}")
    if differ:
        raise ConfigError(f"--resume of {run_dir} with other settings than it was started with: "
                          + "; ".join(differ) + ". Start a new run folder, or resume with the original settings.")


def _data_stats(protocol: dict) -> dict | None:
    """What a protocol says about the data a run saw (retrieval: users/items/events; others: sample counts)."""
    stats = protocol.get("dataset_stats_after_preprocessing") or protocol.get("dataset_stats")
    return None if stats is None else json.loads(json.dumps(stats, default=str))  # as metrics.json holds it


def load_run_config(run_dir: str | Path, overrides: dict | None = None) -> RunConfig:
    """A run folder's resolved config (for re-evaluating or serving it), with ``overrides`` merged in."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    kept = Path(str((data.get("data") or {}).get("dataset") or ""))
    if kept.name.startswith("events-") and not kept.exists() and (run_dir / kept.name).exists():
        data["data"]["dataset"] = str((run_dir / kept.name).resolve())  # a moved folder: its own kept table
    if overrides:
        if isinstance(overrides.get("model"), dict):  # model.x=... means the model's own config
            overrides = {**overrides, "model_args": overrides["model"]}
            del overrides["model"]
        data = _merge(data, overrides)
    return resolve_config(data, training=False)


# What a re-evaluation may change besides eval.*: where it runs and where the data are, not what was trained.
EVALUATE_RUNTIME = ("train.device", "train.threads", "data.data_root", "data.cache_dir", "model.semantic.cache_dir",
                    "model.semantic.device")


def evaluate_run(run_dir: str | Path, roles=("valid", "test"), overrides: dict | list[str] | None = None) -> dict:
    """Re-evaluate a run's best weights (optionally under another eval protocol, e.g. sampled-100).
    ``overrides``: a nested dict or ``key=value`` strings. Refused if the data no longer match the run's."""
    run_dir = Path(run_dir)
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(list(overrides))
    bad = sorted(k for k in _flat(overrides or {}) if not k.startswith("eval.")
                 and k.replace("model_args.", "model.", 1) not in EVALUATE_RUNTIME)
    if bad:  # the rest would do nothing (training keys), misreport the protocol (train.seed), or not fit the weights
        raise ConfigError(f"evaluate takes eval.* settings and {', '.join(EVALUATE_RUNTIME)}; not {', '.join(bad)} "
                          "(the weights were trained under the run's own settings)")
    cfg = load_run_config(run_dir, overrides)
    if cfg.train.threads:  # as in training (train.threads=1 beside other jobs)
        torch.set_num_threads(cfg.train.threads)
    if cfg.task == "default_risk":
        check_time_origin(run_dir, cfg)
    dataset, model, task = _prepare_any(cfg, attach=False)  # SRA-CL scores with its backbone: no index needed
    protocol = task.protocol("test")
    if (run_dir / "metrics.json").exists():
        then = json.loads((run_dir / "metrics.json").read_text()).get("protocol", {})
        was, fp = _data_stats(then), then.get("data_fingerprint")  # runs without a fingerprint: sizes only
        if (was is not None and was != _data_stats(protocol)) or (fp and fp != protocol.get("data_fingerprint")):
            sizes = f"{was} then, {_data_stats(protocol)} now; " if was is not None else ""
            raise ConfigError(f"the data of {run_dir} changed since it was trained ({sizes}{cfg.data.dataset}"
                              + (f"; fingerprint {fp} then, {protocol.get('data_fingerprint')} now)" if fp else ")"))
    device = resolve_device(cfg.train.device)
    model.to(device)
    best = run_dir / "checkpoints" / "best.pt"
    if best.exists():
        model.load_state_dict(torch.load(best, map_location=device, weights_only=True))
    elif any(p.requires_grad for p in model.parameters()):
        raise FileNotFoundError(f"{best} is missing: the run has no best weights (it has not finished an "
                                "evaluation, or its early-stopping metric was never a number)")
    out = {"run": str(run_dir), "model": cfg.model, "dataset": dataset,
           **{r: task.evaluate(model, r, device) for r in roles}, "protocol": protocol}
    out["overrides"] = overrides or {}
    text = json.dumps(out, indent=2, default=str)
    atomic_write_text(run_dir / "evaluation.json", text)  # the latest; each protocol also keeps its own file
    key = hashlib.sha256(json.dumps([out["overrides"], list(roles)], sort_keys=True, default=str).encode()
                         ).hexdigest()[:10]
    atomic_write_text(run_dir / "evaluations" / f"{key}.json", text)
    return out


def environment(device: torch.device, world: int) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "world_size": world, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}


def read_log(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / "log.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def plot_curves(run_dir: Path, metric: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(run_dir)
    if not rows:
        return None
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ep = [r["epoch"] for r in rows if r.get("train_loss") is not None]
    ax1.plot(ep, [r["train_loss"] for r in rows if r.get("train_loss") is not None], color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ev = [r for r in rows if "valid" in r]
    ax2.plot([r["epoch"] for r in ev], [r["valid"].get(metric) for r in ev], color="tab:red", marker="o", ms=3)
    ax2.set_ylabel(f"valid {metric}", color="tab:red")
    ax1.set_title(f"{run_dir.name}")
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


_CTR_METRICS = ("auc", "gauc_user", "gauc_category", "logloss")
_OTHER_METRICS = ("ks", "loglik", "rmse", "acc")  # default-risk and TPP runs


def _comparable(m: dict) -> dict:
    """What must agree between runs for their numbers to compare: the dataset, the ranking (or its analogue
    per task), history exclusion, ties, the split and its arguments, the data, the sampled negatives' seed."""
    p = m["protocol"]
    if p.get("task") == "pointwise_ctr":  # CTR runs: the sampling protocol and split play "ranking"
        parts = ("pointwise", p["sampling"].get("protocol"), p["sampling"].get("split"))
        p = {"ranking": " ".join(str(x) for x in parts if x), "exclude_history": "n/a"}
    elif p.get("task") == "default_risk":  # the data arguments, the window and the view must agree
        args = json.dumps(p.get("dataset_args", {}), sort_keys=True, default=str)
        p = {"ranking": f"per user, {p['window_days']:g} d, budget {p['payment_budget']}, data args "
                        f"{hashlib.sha256(args.encode()).hexdigest()[:8]}", "exclude_history": "n/a"}
    elif p.get("task") == "temporal_point_process":  # the integral, the chunking and the prediction must agree
        i, pred = p["loglik_integral"], {k: v for k, v in (p.get("prediction") or {}).items() if k != "method"}
        pred_key = hashlib.sha256(json.dumps([pred, p.get("eval_seed")], sort_keys=True, default=str).encode())
        p = {"ranking": f"tpp, {i['method']} x{i['points_per_interval']}, chunks {p['max_len'] or 'whole'}, "
                        f"prediction {pred_key.hexdigest()[:8]} (thinning draws, candidates, dtime_max, seed)",
             "exclude_history": "n/a"}
    split = {k: v for k, v in (p.get("split") or {}).items() if k not in ("samples", "targets")}
    return {"dataset": m["dataset"], "ranking": p["ranking"], "history exclusion": p["exclude_history"],
            "ties": p.get("ties"), "split": split, "data size": _data_stats(m["protocol"]),
            "negatives seed": p.get("negatives_seed"), "data fingerprint": m["protocol"].get("data_fingerprint")}


def _bar_chart(rows: list[dict], metrics: list[str], role: str, out: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, len(metrics) * 1.2), 4))
    w = 0.8 / len(rows)
    x = np.arange(len(metrics))
    for i, r in enumerate(rows):
        ax.bar(x + i * w, [r.get(m, 0) for m in metrics], w, label=r["run"])
    ax.set_xticks(x + 0.4 - w / 2, metrics)
    ax.set_ylabel(role)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def compare_runs(run_dirs: list[str | Path], role: str = "test", out: str | Path | None = None) -> tuple[str, list[dict]]:
    """A markdown table of several runs' metrics (with the protocol columns that must agree, and a warning
    naming what does not) and, with ``out``, a grouped bar chart PNG."""
    if out is not None and not Path(out).resolve().parent.is_dir():
        raise FileNotFoundError(f"{out}: its folder does not exist")
    rows, agree = [], []
    for d in run_dirs:
        if not (Path(d) / "metrics.json").exists():
            raise FileNotFoundError(f"{d}: no metrics.json (not a finished run folder)")
        m = json.loads((Path(d) / "metrics.json").read_text())
        agree.append(_comparable(m))
        rows.append({"run": Path(d).name, "model": m["model"], "dataset": m["dataset"],
                     "ranking": agree[-1]["ranking"], "exclude_history": agree[-1]["history exclusion"],
                     **{k: v for k, v in m[role].items() if k not in ("n", "n_events")}, "n": m[role].get("n")})
    names = list(dict.fromkeys(k for r in rows for k in r if "@" in k or k in ("mrr", *_CTR_METRICS, *_OTHER_METRICS)))
    metrics = [k for k in names if "@" not in k] + sorted(  # every run's metrics; cut-offs in numeric order
        (k for k in names if "@" in k), key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    differ = [k for k in (agree[0] if agree else {})  # a fingerprint counts where every run has one
              if not (k == "data fingerprint" and any(a[k] is None for a in agree))
              and len({json.dumps(a[k], sort_keys=True, default=str) for a in agree}) > 1]
    head = ["run", "model", "dataset", "ranking", "excl. hist."] + metrics
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["run"], r["model"], r["dataset"], r["ranking"], str(r["exclude_history"])]
        lines.append("| " + " | ".join(vals + [f"{r.get(m, float('nan')):.4f}" for m in metrics]) + " |")
    table = "\n".join(lines)
    if differ:
        table += f"\n\nWARNING: these runs differ in {', '.join(differ)}; their numbers are not comparable."
    if out is not None and rows:
        _bar_chart(rows, metrics, role, out)
    return table, rows
