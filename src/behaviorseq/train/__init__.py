"""Training: the Trainer, run folders, evaluation and comparison of runs.

The names load on first use (PEP 562), so ``behaviorseq --help`` and config handling do not import torch."""

from __future__ import annotations

import importlib

_WHERE = {"DataConfig": "behaviorseq.config", "EvalConfig": "behaviorseq.config", "RunConfig": "behaviorseq.config",
          "TrainConfig": "behaviorseq.config", "build_config": "behaviorseq.train.packaged",
          "compare_runs": "behaviorseq.train.run", "evaluate_run": "behaviorseq.train.run",
          "resolve_config": "behaviorseq.train.run", "run_experiment": "behaviorseq.train.run",
          "Trainer": "behaviorseq.train.trainer"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'behaviorseq.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
