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


def data_root() -> Path:
    env = os.environ.get("BEHAVIORSEQ_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def machine() -> dict:
    import numpy
    import torch

    mem = None
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "ram_gib": mem,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine()}


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
