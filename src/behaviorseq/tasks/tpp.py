"""Temporal point processes: event sequences -> padded batches -> log-likelihood, next time and type.

Batches (see ``behaviorseq.nn.tpp``): ``time`` [B, L] float32 since the chunk's first event, ``dtime``
[B, L] (0 at the first event and at padding), ``type`` [B, L] long (padding = num_types), ``mask`` [B, L];
right-padded to the batch's longest chunk. A sequence longer than ``max_len`` is cut into chunks of
``max_len`` events that overlap by one, so every event but a sequence's first is predicted exactly once
(each chunk conditions on its first event, the previous chunk's last).

Metrics (per predicted event, i.e. events 2..L of each chunk):
- ``loglik``: log lambda_k(t) - integral of the total intensity since the previous event (nats/event),
  the integral by ``eval_integral`` with ``eval_integral_samples`` points (Monte Carlo from a fixed seed
  by default: unbiased, and the same numbers at every evaluation);
- ``rmse``: of the predicted time to the next event, by thinning (the NHP paper's sampler; ``nn.tpp.thinning_predict``);
- ``acc``: of the predicted next type (argmax of the expected type distribution at the drawn times).
Thinning runs only for the roles in ``predict_roles`` (test by default): it costs ``thinning_samples`` x
``thinning_n_exp`` intensity evaluations per event. Sums and counts are all-reduced under DDP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field

from behaviorseq.config import StrictConfig, TrainConfig
from behaviorseq.data.eventseq import EventSequences
from behaviorseq.data.store import ragged_arange
from behaviorseq.nn.tpp import loglik, thinning_predict
from behaviorseq.utils import array_fingerprint, code_version


class TPPTaskConfig(StrictConfig):
    max_len: int | None = Field(None, ge=2)  # None: whole sequences
    eval_batch_size: int = Field(64, gt=0)
    eval_integral: Literal["mc", "midpoint", "exact"] = "mc"  # "exact" needs a model with a compensator
    eval_integral_samples: int = Field(50, gt=0)
    predict_roles: list[str] = Field(default_factory=lambda: ["test"])
    thinning_samples: int = Field(20, gt=0)  # draws of the next time per event
    thinning_n_exp: int = Field(50, gt=0)  # candidates per draw
    thinning_over_sample: float = Field(1.5, ge=1.0)  # dominating rate / largest intensity on the grid
    thinning_boundary: int = Field(16, gt=1)  # grid points for that largest intensity
    dtime_max: float | None = Field(None, gt=0)  # None: the longest inter-event time in training data
    seed: int = 12345  # evaluation randomness (MC integral, thinning)


class TPPBatcher:
    """Chunks of an ``EventSequences`` and their padded batches, built by one vectorised gather."""

    def __init__(self, seqs: EventSequences, max_len: int | None):
        if max_len is not None and max_len < 2:  # 1 kept each sequence's first event only (chunks overlap by one)
            raise ValueError(f"TPPBatcher: max_len must be None (whole sequences) or >= 2, got {max_len}")
        self.seqs, self.max_len = seqs, max_len
        lens = seqs.lengths
        step = (max_len - 1) if max_len else None
        n_chunks = np.maximum(1, -(-(lens - 1) // step)) if step else np.ones(len(lens), dtype=np.int64)
        n_chunks[lens == 0] = 0
        c = ragged_arange(n_chunks)
        start = np.repeat(seqs.offsets[:-1], n_chunks) + (c * step if step else 0)
        end = np.repeat(seqs.offsets[1:], n_chunks)
        self.start = start
        self.end = np.minimum(end, start + max_len) if max_len else end

    def __len__(self) -> int:
        return len(self.start)

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        s, n = self.start[idx], self.lengths[idx]
        L = int(n.max()) if len(n) else 1
        pos = np.arange(L)
        valid = pos[None, :] < n[:, None]  # [B, L]
        flat = np.where(valid, s[:, None] + pos[None, :], s[:, None])
        t = np.where(valid, self.seqs.time[flat] - self.seqs.time[s][:, None], 0.0)
        dt = np.where(valid, np.diff(t, axis=1, prepend=t[:, :1]), 0.0)
        typ = np.where(valid, self.seqs.type[flat], self.seqs.num_types)
        return {"time": torch.from_numpy(t.astype(np.float32)), "dtime": torch.from_numpy(dt.astype(np.float32)),
                "type": torch.from_numpy(typ.astype(np.int64)), "mask": torch.from_numpy(valid)}


@dataclass
class TPPTask:
    data: dict[str, EventSequences]  # "train", "valid", "test"
    cfg: TPPTaskConfig
    train_cfg: TrainConfig
    reference: dict | None = None  # e.g. the true model's metrics on simulated data, copied into the protocol

    def __post_init__(self) -> None:
        missing = [r for r in ("train", "valid", "test") if r not in self.data]
        if missing:
            raise KeyError(f"TPPTask needs the roles train, valid, test; missing {missing}")
        k = {s.num_types for s in self.data.values()}
        if len(k) != 1:
            raise ValueError("the train / valid (dev) / test sets disagree on the number of event types (dim_process): "
                             + str({r: s.num_types for r, s in self.data.items()}))
        self.num_types = k.pop()
        self.batchers = {r: TPPBatcher(s, self.cfg.max_len) for r, s in self.data.items()}
        self.dtime_max = self.cfg.dtime_max or float(max(self.data["train"].dtime().max(initial=0.0), 1e-6))

    # ---- training -------------------------------------------------------------------------------
    def train_loader(self, epoch: int, start_step: int = 0, rank: int = 0,
                     world: int = 1) -> tuple[Iterator[dict[str, torch.Tensor]], TPPBatcher]:
        """Every rank yields every batch (the Trainer takes its share); the order is a function of
        (seed, epoch), so a resumed run sees the same batches from ``start_step`` on."""
        b, bs = self.batchers["train"], self.train_cfg.batch_size
        order = np.random.default_rng([self.train_cfg.seed, epoch, 11]).permutation(len(b))

        def gen() -> Iterator[dict[str, torch.Tensor]]:
            for step in range(start_step, self.steps_per_epoch()):
                yield b.batch(order[step * bs:(step + 1) * bs])

        return gen(), b

    def steps_per_epoch(self) -> int:
        n = -(-len(self.batchers["train"]) // self.train_cfg.batch_size)
        return min(n, self.train_cfg.max_steps_per_epoch or n)

    # ---- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, role: str, device: torch.device | str = "cpu",
                 rank: int = 0, world: int = 1) -> dict[str, float]:
        c, b = self.cfg, self.batchers[role]
        device = torch.device(device)
        predict = role in c.predict_roles
        was_training = model.training
        model.eval()
        order = np.argsort(b.lengths, kind="stable")  # similar lengths per batch: less padding
        chunks = [order[i:i + c.eval_batch_size] for i in range(0, len(order), c.eval_batch_size)]
        sums = torch.zeros(5, dtype=torch.float64)  # loglik, events, squared error, correct, misses
        for j in range(rank, len(chunks), world):
            batch = {k: v.to(device) for k, v in b.batch(chunks[j]).items()}
            gen = torch.Generator(device=device).manual_seed(c.seed * 1_000_003 + j)
            state = model.encode(batch)
            ll = loglik(model, batch, c.eval_integral_samples, c.eval_integral, state=state, generator=gen)
            n = ll.mask.sum()
            sums[0] += ll.per_event[ll.mask].double().sum().cpu()
            sums[1] += n.cpu()
            if predict and n > 0:
                dt, k, miss = thinning_predict(model, state, self.dtime_max, c.thinning_samples, c.thinning_n_exp,
                                               c.thinning_over_sample, c.thinning_boundary, gen)
                m = ll.mask
                sums[2] += ((dt[:, :-1] - batch["dtime"][:, 1:]) ** 2)[m].double().sum().cpu()
                sums[3] += (k[:, :-1] == batch["type"][:, 1:])[m].double().sum().cpu()
                sums[4] += miss[:, :-1][m].double().sum().cpu()  # over the predicted events only
        if world > 1:
            dist.all_reduce(sums)
        if was_training:
            model.train()
        n = float(sums[1])
        out = {"loglik": float(sums[0]) / n if n else float("nan"), "n_events": n}
        if predict:
            out.update(rmse=float((sums[2] / n).sqrt()) if n else float("nan"),
                       acc=float(sums[3]) / n if n else float("nan"),
                       thinning_unaccepted=float(sums[4]) / n if n else float("nan"))
        return out

    @torch.no_grad()
    def time_rescaling(self, model: torch.nn.Module, role: str = "test", n_grid: int = 64,
                       device: torch.device | str = "cpu") -> dict[str, float]:
        """Goodness of fit by time rescaling (Brown et al. 2002; the brief's offline check 3.3.2): the
        compensator of the total intensity between consecutive events, under ``model``, is i.i.d. Exp(1) when
        ``model`` is the process that made the data. Returns the one-sample KS statistic against Exp(1), its
        p-value and the number of intervals, over the predicted events of ``role``. Each interval's integral is
        exact for a model with a ``compensator`` (the true Hawkes model), else the midpoint rule on ``n_grid``
        points. With tens of thousands of intervals the test detects small misfits: compare D between models."""
        from behaviorseq.data.synthetic.hawkes import ks_exp1

        b, c = self.batchers[role], self.cfg
        method = "exact" if hasattr(model, "compensator") else "midpoint"
        was_training = model.training
        model.eval()
        order = np.argsort(b.lengths, kind="stable")
        xs = []
        for i in range(0, len(order), c.eval_batch_size):
            batch = {k: v.to(device) for k, v in b.batch(order[i:i + c.eval_batch_size]).items()}
            ll = loglik(model, batch, n_grid, method)
            xs.append(ll.integral[ll.mask].double().cpu().numpy())
        if was_training:
            model.train()
        x = np.concatenate(xs)
        d, p = ks_exp1(x)
        return {"ks_d": d, "ks_p": p, "n_intervals": int(len(x)), "integral": method,
                "points": n_grid if method == "midpoint" else None}

    def protocol(self, role: str = "test") -> dict:
        c = self.cfg
        return {
            "task": "temporal_point_process",
            "data": {r: {**s.stats(), "source": s.meta.get("source") or s.meta.get("generator")}
                     for r, s in self.data.items()},
            "evaluated_role": role,
            "conditioning": "each chunk's first event is conditioned on; metrics are per predicted event",
            "max_len": c.max_len,
            "loglik_integral": {"method": c.eval_integral, "points_per_interval": c.eval_integral_samples},
            "prediction": {"method": "thinning (NHP), mean of draws / argmax expected type",
                           "draws": c.thinning_samples, "candidates_per_draw": c.thinning_n_exp,
                           "over_sample": c.thinning_over_sample, "boundary_points": c.thinning_boundary,
                           "dtime_max": self.dtime_max, "roles": list(c.predict_roles)},
            "seed": self.train_cfg.seed,
            "eval_seed": c.seed,
            "data_fingerprint": array_fingerprint(*[a for r in sorted(self.data) for a in
                                                    (self.data[r].offsets, self.data[r].time, self.data[r].type)]),
            **({"reference": self.reference} if self.reference else {}),
            "code_version": code_version(),
        }
