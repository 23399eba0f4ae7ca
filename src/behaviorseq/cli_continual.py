"""``behaviorseq continual``: the continual-learning protocol on an event stream (``train.continual.run_continual``).

    behaviorseq continual --model prompttpp --method finetune data.tpp.n_seqs=400 data.tpp.max_events=40
    behaviorseq continual --model attnhp --method retrain --data path/to/stream      # one folder per window

``--data`` is a folder of windows: its sub-folders, in name order, each hold one window's EasyTPP files
(``train|dev|test`` as ``.pkl``, ``.parquet``, ``.jsonl`` or ``.json``; PromptTPP's own data come as
per-task pickles). Without it, a simulated stream: ``max(--schedule) + 1`` random Hawkes regimes, window w
drawn from regime ``schedule[w]``, sized by ``data.tpp`` (``num_types``, ``n_seqs``, ``max_events``,
``branching``, ``seed``, ``split``). The model's packaged config and ``key=value`` overrides set the model,
the training of each window (``train.*``) and the evaluation (``data.tpp.task.*``). The result (R matrices,
summaries, protocol) is written to ``<out>/continual.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from behaviorseq.config import ConfigError


def read_windows(folder: str | Path) -> list[dict]:
    """One window per sub-folder of ``folder`` (name order), each read by ``run_tpp.read_easytpp_folder``."""
    from behaviorseq.train.run_tpp import read_easytpp_folder

    folder = Path(folder)
    subs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not subs:
        raise FileNotFoundError(f"continual data {folder}: expected one sub-folder per window, each with EasyTPP "
                                "train/dev/test files")
    windows = [read_easytpp_folder(p) for p in subs]
    types = {s.num_types for w in windows for s in w.values()}
    if len(types) != 1:
        raise ValueError(f"continual data {folder}: the windows disagree on the number of event types {sorted(types)}")
    return windows


def format_continual(res: dict) -> str:
    lines = ["| metric | current | final | final earlier | forgetting |", "|---|---|---|---|---|"]
    for k, s in res["summary"].items():
        if k.startswith("thinning"):  # a diagnostic of the sampler, kept in the JSON
            continue
        lines.append(f"| {k} | {s['current']:.4f} | {s['final']:.4f} | {s['final_earlier']:.4f} | {s['forgetting']:.4f} |")
    R = np.array(res["R"]["loglik"])
    lines.append("\nR (loglik / event): row = after training on window w, column = test set of window v")
    lines += ["  " + " ".join(f"{x:8.4f}" for x in row) for row in R]
    return "\n".join(lines)


def cmd_continual(args: argparse.Namespace) -> int:
    import torch

    from behaviorseq import models
    from behaviorseq.cli_train import USER_ERRORS, build_config, user_error
    from behaviorseq.train.continual import run_continual, synthetic_stream
    from behaviorseq.train.run import resolve_config
    from behaviorseq.train.run_tpp import TPPDataConfig
    from behaviorseq.utils import atomic_write_text, code_version

    try:
        cfg = resolve_config(build_config(args.model, None, args.config, args.overrides))
        if cfg.task != "tpp":
            raise ConfigError(f"continual runs event-stream models (task tpp); {args.model!r} has task {cfg.task!r}")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        tpp = TPPDataConfig.from_dict(cfg.data.tpp)
        if args.data:
            windows, source = read_windows(args.data), str(args.data)
        else:
            try:
                schedule = [int(x) for x in args.schedule.split(",")]
            except ValueError:
                raise ConfigError(f"--schedule takes regime numbers separated by commas, e.g. 0,1,2; got "
                                  f"{args.schedule!r}") from None
            _, windows = synthetic_stream(tpp.num_types, schedule, tpp.n_seqs, tpp.max_events, tpp.branching,
                                          tpp.seed, tpp.split)
            source = f"synthetic Hawkes stream, schedule {schedule}"
        num_types = windows[0]["train"].num_types
        out = Path(args.out or f"runs/continual-{args.model}-{args.method}-{time.strftime('%Y%m%d-%H%M%S')}")
        held = sorted(f.name for f in out.glob("*") if f.name == "continual.json" or f.name == args.method
                      or f.name.startswith(f"{args.method}_w")) if out.is_dir() else []
        if held and not args.overwrite:
            raise ConfigError(f"{out} already holds a continual run ({', '.join(held[:4])}"
                              f"{', ...' if len(held) > 4 else ''}): --overwrite replaces it, or choose another --out")
        res = run_continual(lambda: models.build(cfg.model, num_types, cfg.model_args), windows, args.method,
                            cfg.train, tpp.task, out, trainable=args.trainable.split(","))
    except USER_ERRORS as e:
        return user_error(e)
    res["protocol"].update(data=source, model=cfg.model, model_args=cfg.model_args,
                           data_args=None if args.data else {k: v for k, v in tpp.to_dict().items() if k != "task"},
                           evaluation=tpp.task.to_dict(), train=cfg.train.to_dict(), code_version=code_version())
    atomic_write_text(out / "continual.json", json.dumps(res, indent=2, default=str))
    print(format_continual(res))
    print(f"\n{source}; method {args.method}, {len(windows)} windows, no replay buffer, no task id at test; "
          f"written to {out / 'continual.json'}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("continual", help="continual learning over the windows of an event stream (PromptTPP's protocol)")
    c.add_argument("--model", required=True, help="an event-stream model: prompttpp, attnhp, nhp, thp, ...")
    c.add_argument("--method", default="finetune", choices=["finetune", "frozen", "retrain", "joint"])
    c.add_argument("--data", default=None, help="a folder with one sub-folder of EasyTPP files per window "
                   "(default: a simulated stream)")
    c.add_argument("--schedule", default="0,1,2,0,1,2", help="simulated stream: the regime of each window")
    c.add_argument("--trainable", default="prompts,prompt_keys",
                   help="--method frozen: the parameters that train from window 2 on")
    c.add_argument("--config", default=None, help="a YAML run config")
    c.add_argument("--out", default=None, help="output folder (default runs/continual-<model>-<method>-<time>)")
    c.add_argument("--overwrite", action="store_true", help="replace the continual run of this method --out holds")
    c.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=20 model.pool_size=10")
    c.set_defaults(func=cmd_continual)
