"""Continual learning on an event stream cut into windows (PromptTPP's protocol, Xue et al., NeurIPS 2023).

The windows (tasks) arrive in order. Training sees one window at a time, keeps no replay buffer, and the
model is never told at test time which window a sequence comes from. After training on window w, the test
set of every window v is scored: ``R[metric][w][v]``. Reported per metric, from R:

- ``current``: mean over w of R[w][w], each window right after training on it;
- ``next``: mean over w < T-1 of R[w][w+1], each window before training on it, with the model of the window
  before (how well the stream's next window is predicted: the brief's "average per-task metric on the next
  window");
- ``final``: mean over v of R[T-1][v], every window after the last;
- ``final_earlier``: the same over the earlier windows v < T-1 only (what forgetting costs);
- ``forgetting``: mean over v < T-1 of R[v][v] - R[T-1][v] (for the log-likelihood and accuracy, a positive
  value is what was lost; for RMSE, lower is better, so a loss shows as a negative value).

Methods:
- ``finetune``: one model, trained on window 1, then on each next window from the weights in memory (warm
  start). With PromptTPP this is the paper's recipe (its backbone trains on every window);
- ``frozen``: as ``finetune``, but from window 2 on only the parameters named in ``trainable`` train (for
  PromptTPP its pools, ``prompts`` and ``prompt_keys``: L2P's frozen backbone);
- ``retrain``: a fresh model per window;
- ``joint``: one model on all windows' training sets at once (the upper bound; it sees the whole stream).

A model with an ``end_task()`` method is told of each window boundary before the next window trains
(PromptTPP's optional diversified selection). ``window_hook(model, w)``, if given, runs before the model
trains on or is scored on window w: a place for diagnostics only (one that told the model the window
would break the protocol), as ``benchmarks/tpp_continual.py``'s oracle does.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from behaviorseq.config import TrainConfig
from behaviorseq.data.eventseq import EventSequences, concat
from behaviorseq.data.synthetic.hawkes import HawkesParams, random_hawkes_params, simulate_hawkes_stream
from behaviorseq.tasks.tpp import TPPTask, TPPTaskConfig
from behaviorseq.train.trainer import Trainer, seed_everything

METHODS = ("finetune", "frozen", "retrain", "joint")
_TRAINER_FILES = {"log.jsonl", "checkpoints"}  # what Trainer.fit writes into a run folder
Window = dict[str, EventSequences]  # {"train": ..., "valid": ..., "test": ...}


def summarize(R: np.ndarray) -> dict[str, float]:
    """current, next, final, final_earlier and forgetting of one metric's [T, T] matrix (module docstring)."""
    R = np.asarray(R, dtype=np.float64)
    d = np.diag(R)
    earlier = R[-1, :-1] if len(R) > 1 else np.full(1, np.nan)
    nxt = float(np.diag(R, 1).mean()) if len(R) > 1 else float("nan")
    return {"current": float(d.mean()), "next": nxt, "final": float(R[-1].mean()), "final_earlier": float(earlier.mean()),
            "forgetting": float((d[:-1] - R[-1, :-1]).mean()) if len(R) > 1 else float("nan")}


def _fit(model: nn.Module, task: TPPTask, cfg: TrainConfig, run_dir: Path) -> None:
    """Train with early stopping into a fresh ``run_dir``, then load the best weights. An earlier training's
    folder is replaced; a folder holding anything a training does not write is refused, never deleted."""
    other = sorted(f.name for f in run_dir.iterdir() if f.name not in _TRAINER_FILES) if run_dir.is_dir() else []
    if other:
        raise ValueError(f"{run_dir} holds files a continual run did not write ({', '.join(other[:5])}): choose "
                         "another output folder")
    shutil.rmtree(run_dir, ignore_errors=True)
    Trainer(model, task, cfg, run_dir).fit()
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True))


def run_continual(build: Callable[[], nn.Module], windows: Sequence[Window],
                  method: Literal["finetune", "frozen", "retrain", "joint"], train_cfg: TrainConfig,
                  task_cfg: TPPTaskConfig, workdir: str | Path, trainable: Sequence[str] = ("prompts", "prompt_keys"),
                  window_hook: Callable[[nn.Module, int], None] | None = None, run_name: str | None = None) -> dict:
    """Run one method over ``windows`` (module docstring). ``build()`` returns a fresh model; each training
    run (``train_cfg``: early stopping on the window's validation set) writes ``<workdir>/<run_name>_w<w>``
    (``run_name`` defaults to the method; ``joint`` writes ``<workdir>/<run_name>``).
    Returns ``{"method", "R": {metric: [T][T]}, "summary": {metric: summarize(R)}, "seconds", "protocol"}``."""
    if method not in METHODS:
        raise ValueError(f"unknown continual method {method!r}; choose from {METHODS}")
    if not windows:
        raise ValueError("run_continual needs at least one window")
    for w, win in enumerate(windows):
        missing = {"train", "valid", "test"} - set(win)
        if missing:
            raise ValueError(f"window {w} has no {sorted(missing)} set")
    t0, workdir, T, run_name = time.perf_counter(), Path(workdir), len(windows), run_name or method
    if task_cfg.dtime_max is None:  # one thinning cut-off for every window, from what is known at the start (each
        # window's own training gaps gave the "next" column, scored before training on a window, a number from it)
        task_cfg = task_cfg.model_copy(update={"dtime_max": float(max(windows[0]["train"].dtime().max(initial=0.0),
                                                                        1e-6))})
    tasks = [TPPTask(dict(win), task_cfg, train_cfg) for win in windows]
    hook = window_hook or (lambda model, w: None)
    seed_everything(train_cfg.seed)
    model = build()
    rows: list[list[dict[str, float]]] = []
    if method == "frozen" and not set(trainable) & {n for n, _ in model.named_parameters()}:
        raise ValueError(f"frozen: none of {list(trainable)} is a parameter of {type(model).__name__} (the frozen "
                         "method trains only a prompt model's pools after the first window: use --model prompttpp)")

    def score(model: nn.Module) -> list[dict[str, float]]:
        out = []
        for v, task in enumerate(tasks):
            hook(model, v)
            out.append(task.evaluate(model, "test"))
        return out

    if method == "joint":
        joint = TPPTask({r: concat([win[r] for win in windows]) for r in ("train", "valid", "test")}, task_cfg, train_cfg)
        _fit(model, joint, train_cfg, workdir / run_name)
        rows = [score(model)] * T
    else:
        for w in range(T):
            if method == "retrain" and w:
                model = build()
            if method == "frozen" and w == 1:
                for name, p in model.named_parameters():
                    p.requires_grad_(name in trainable)
            if w and hasattr(model, "end_task"):
                model.end_task()
            hook(model, w)
            _fit(model, tasks[w], train_cfg, workdir / f"{run_name}_w{w}")
            rows.append(score(model))
    metrics = [k for k in rows[0][0] if k != "n_events"]
    R = {k: np.array([[rows[w][v][k] for v in range(T)] for w in range(T)]) for k in metrics}
    return {"method": method, "R": {k: r.tolist() for k, r in R.items()},
            "summary": {k: summarize(r) for k, r in R.items()}, "seconds": time.perf_counter() - t0,
            "protocol": {"windows": [{r: s.stats() for r, s in win.items()} for win in windows],
                         "method": method, "trainable_after_window_1": list(trainable) if method == "frozen" else None,
                         "replay_buffer": False, "task_id_at_test": False, "seed": train_cfg.seed,
                         "dtime_max": task_cfg.dtime_max,  # every window's thinning cut-off (window 0's gaps by default)
                         "early_stopping": {"metric": train_cfg.early_stop_metric, "patience": train_cfg.patience,
                                            "max_epochs": train_cfg.epochs}}}


def synthetic_stream(num_types: int = 3, schedule: Sequence[int] = (0, 1, 2, 0, 1, 2), n_seqs: int = 400,
                     max_events: int = 40, branching: float = 0.7, seed: int = 0,
                     split: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[list[HawkesParams], list[Window]]:
    """A stream whose parameters shift: ``max(schedule) + 1`` random Hawkes regimes (each rescaled to one event
    per unit time), window w drawing ``n_seqs`` fresh sequences from regime ``schedule[w]``, split by sequence.
    Returns the regimes and the windows (``benchmarks/tpp_continual.py``'s stream)."""
    regimes = [random_hawkes_params(num_types, branching, seed=100 * seed + r).unit_rate()
               for r in range(max(schedule) + 1)]
    stream = simulate_hawkes_stream(regimes, list(schedule), n_seqs, max_events=max_events, seed=seed)
    windows = [dict(zip(("train", "valid", "test"), s.seqs.split(split, seed=seed))) for s in stream]
    return regimes, windows


__all__ = ["METHODS", "run_continual", "summarize", "synthetic_stream"]
