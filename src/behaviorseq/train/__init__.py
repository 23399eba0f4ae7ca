"""Training: the Trainer, run folders, evaluation and comparison of runs."""

from behaviorseq.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from behaviorseq.train.packaged import build_config
from behaviorseq.train.run import compare_runs, evaluate_run, resolve_config, run_experiment
from behaviorseq.train.trainer import Trainer

__all__ = ["DataConfig", "EvalConfig", "RunConfig", "TrainConfig", "Trainer", "build_config", "compare_runs",
           "evaluate_run", "resolve_config", "run_experiment"]
