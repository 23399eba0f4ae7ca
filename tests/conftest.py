import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from behaviorseq.data.events import EventTable
from behaviorseq.data.schema import Schema


def shared_data() -> Path:
    env = os.environ.get("BEHAVIORSEQ_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def data_root() -> Path:
    root = shared_data()
    if not (root / "seqrec").exists():
        pytest.skip(f"shared datasets not found at {root}")
    return root


def make_events(users, items, times, **extra) -> EventTable:
    cols = {"user": users, "item": items, "timestamp": times, **extra}
    kinds = {"user": "categorical", "item": "categorical", "timestamp": "timestamp"}
    for k, v in extra.items():
        kinds[k] = "numeric" if isinstance(v[0], (int, float, np.number)) else "categorical"
    return EventTable(pa.table(cols), Schema.of(**kinds), name="toy")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIORSEQ_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures(...)``): faster
    there, and immune to a busy machine's oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
