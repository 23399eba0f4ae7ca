"""Serve a trained event-stream model (NHP, THP, AttNHP, PromptTPP): the next event's time and type after a
sequence of (time, type) events, by the thinning predictor the evaluation uses (``nn.tpp.thinning_predict``,
with the run's draws, candidates, ``dtime_max`` and chunk length, all read from its ``metrics.json``: a run
trained on chunks of ``max_len`` events conditions on the latest ``max_len - 1``, the longest context any scored
event of training or evaluation had: the state after a chunk's last event is never scored).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from behaviorseq import models
from behaviorseq.nn.inference import inference
from behaviorseq.nn.tpp import state_at, thinning_predict
from behaviorseq.serve.ids import run_config


@dataclass
class NextEvent:
    dtime: float  # predicted time from the last event to the next
    type: int  # predicted type of the next event
    unaccepted: float  # share of thinning draws that found no time before dtime_max (then dtime_max is used)


class EventPredictor:
    """``predict(sequences)`` for one trained TPP model (``from_run``)."""

    def __init__(self, model: torch.nn.Module, num_types: int, dtime_max: float, draws: int = 20,
                 candidates: int = 50, over_sample: float = 1.5, boundary: int = 16, device: str = "cpu",
                 max_len: int | None = None):
        self.model, self.device = model.to(device).eval(), torch.device(device)
        self.num_types, self.dtime_max = num_types, float(dtime_max)
        self.max_len = max_len  # the run's chunk length: no scored event had a context of more than max_len - 1
        self.thinning = (draws, candidates, over_sample, boundary)
        self.positions = 4096  # padded positions per model call: thinning holds [positions, candidates, types] floats

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> EventPredictor:
        run_dir = Path(run_dir)
        cfg = run_config(run_dir, "tpp", "EventPredictor serves event-stream (tpp) models")
        if not (run_dir / "metrics.json").exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run (no metrics.json)")
        p = json.loads((run_dir / "metrics.json").read_text())["protocol"]
        num_types, pred = p["data"]["train"]["num_types"], p["prediction"]
        model = models.build(cfg.model, num_types, cfg.model_args)
        model.load_state_dict(torch.load(run_dir / "checkpoints" / "best.pt", map_location=device, weights_only=True))
        return cls(model, num_types, pred["dtime_max"], pred["draws"], pred["candidates_per_draw"],
                   pred["over_sample"], pred["boundary_points"], device, p.get("max_len"))

    def batch(self, sequences: list[tuple[list[float], list[int]]]) -> dict[str, torch.Tensor]:
        """The task's batch layout (times since each sequence's first event, right-padded); checked."""
        row, col, rel, dt, types, n = self.check(sequences)
        L = int(n.max())
        out = {"time": np.zeros((len(n), L), np.float32), "dtime": np.zeros((len(n), L), np.float32),
               "type": np.full((len(n), L), self.num_types, np.int64), "mask": np.zeros((len(n), L), bool)}
        out["time"][row, col], out["dtime"][row, col] = rel, dt
        out["type"][row, col], out["mask"][row, col] = types, True
        return {k: torch.from_numpy(v).to(self.device) for k, v in out.items()}

    def check(self, sequences: list[tuple[list[float], list[int]]]) -> tuple[np.ndarray, ...]:
        """Every event checked on flat arrays (no [sequences, longest] block): (row, column, time since the
        sequence's first event, time since the previous event, type, events per sequence)."""
        n = np.array([len(t) for t, _ in sequences], dtype=np.int64)
        for i, (t, k) in enumerate(sequences):
            if len(t) == 0 or len(t) != len(k):
                raise ValueError(f"sequence {i}: needs at least one event and as many types as times "
                                 f"({len(t)} times, {len(k)} types)")
        times = np.concatenate([np.asarray(t, dtype=np.float64) for t, _ in sequences])
        raw_types = np.concatenate([np.asarray(k) for _, k in sequences])
        if raw_types.dtype.kind not in "iu":
            raise ValueError(f"event types must be integers, got dtype {raw_types.dtype}")
        types = raw_types.astype(np.int64)
        row = np.repeat(np.arange(len(sequences)), n)
        starts = np.cumsum(n) - n
        col = np.arange(len(times)) - starts[row]
        rel = times - times[starts][row]  # since each sequence's first event, as the task's batches
        dt = np.diff(rel, prepend=rel[:1])
        dt[starts] = 0.0
        big = np.abs(rel) > np.finfo(np.float32).max  # the model reads float32 times since the first event
        bad = ~np.isfinite(times) | big | (dt < 0) | (types < 0) | (types >= self.num_types)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"sequence {row[i]}, event {col[i]}: times must be finite (float32) and non-decreasing, types in "
                             f"0..{self.num_types - 1} (time {times[i]}, type {types[i]})")
        return row, col, rel, dt, types, n

    def noise(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The thinning draws of a request with ``seed``: exponential and uniform, each [draws, candidates]."""
        draws, candidates = self.thinning[0], self.thinning[1]
        gen = torch.Generator().manual_seed(seed)
        return torch.empty(draws, candidates).exponential_(1.0, generator=gen), torch.rand(draws, candidates, generator=gen)

    @inference
    def predict(self, sequences: list[tuple[list[float], list[int]]], seed: int = 0) -> list[NextEvent]:
        """The next event after each (times, types) sequence (absolute times, non-decreasing), all in one batch.
        Every sequence gets the same thinning draws for ``seed`` (``thinning_predict``'s ``noise``), so its answer
        does not depend on the rest of the request (up to float rounding of batched products: 1e-7 seen).
        The request is scored in padded blocks grouped by length, not one model call per sequence."""
        if not sequences:
            return []
        self.check(sequences)  # every sequence checked before any work
        if self.max_len:  # the latest max_len - 1 events: the longest context a scored event had in training
            keep = max(1, self.max_len - 1)
            sequences = [(t[-keep:], k[-keep:]) for t, k in sequences]
        noise, out = self.noise(seed), [None] * len(sequences)
        for rows in _chunks([len(t) for t, _ in sequences], self.positions):
            batch = self.batch([sequences[i] for i in rows])
            last = batch["mask"].sum(1) - 1  # each sequence's last event: the only interval predicted
            state = state_at(self.model.encode(batch), last)
            dt, k, miss = thinning_predict(self.model, state, self.dtime_max, *self.thinning, noise=noise)
            for i, a, b, c in zip(rows, dt[:, 0].tolist(), k[:, 0].tolist(), miss[:, 0].tolist()):
                out[i] = NextEvent(float(a), int(b), float(c))
        return out


def _chunks(lengths: list[int], positions: int) -> list[list[int]]:
    """Sequence indices grouped by length, each group's padded block (count x longest) at most ``positions``
    (one sequence alone may exceed it): one long sequence does not pad all the short ones to its length."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups, cur = [], []
    for i in order:  # ascending: the newest member is the group's longest
        if cur and (len(cur) + 1) * lengths[i] > positions:
            groups.append(cur)
            cur = []
        cur.append(i)
    return groups + ([cur] if cur else [])
