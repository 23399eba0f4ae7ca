"""Serve a trained CTR model (DIN, SIM, ETA, TWIN, DARE, SDIM): a user's raw item history and raw candidate
ids in, each candidate's click probability out (the main head's logit through a sigmoid; auxiliary heads are
training-only, as in the evaluation).

``Ranker.from_run`` needs the run folder only: ``config.yaml``, ``checkpoints/best.pt`` and ``items.parquet``
(raw ids and every item field of the data, e.g. ``category``). A history keeps its latest ``max_len`` known
items, left-padded as the evaluator's batches are, and its events carry their items' fields. Deviation: on
data whose events hold their own category (Taobao, where an item's events may disagree) the served history
uses the item's category as the item table records it. Each user's history is encoded once and all its
candidates scored together: TWIN and DARE through ``score_candidates`` (keys cached per user), SDIM through
its BSE split (bucket table per user, then lookups), other models on the history repeated per candidate.
Raw ids the model never saw are reported; an unknown candidate gets no probability.
A probability is calibrated to the training labels: under DARE's protocol (two sampled negatives per click)
it estimates P(click) among such samples, not the live click rate.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from behaviorseq.data.item_table import ITEMS_FILE, read_item_table
from behaviorseq.models.ranking import build
from behaviorseq.models.ranking.sdim import BSE, SDIM
from behaviorseq.nn.inference import inference
from behaviorseq.serve.ids import RawIds, check_id_lists, run_config


@dataclass
class Scored:
    items: list  # the candidates' raw ids (request order; best first from ``rank``)
    probs: list  # click probability of each, None for a candidate the model does not know
    unknown_history: list = field(default_factory=list)  # raw ids of the history the model does not know
    unknown_candidates: list = field(default_factory=list)


CHUNK = 1024  # candidates per model call on the repeated-history path: memory stays flat in C


def _check_fields(fields: dict[str, np.ndarray], n_items: int) -> None:
    if "category" not in fields:
        raise ValueError(f"{ITEMS_FILE} has no item field 'category'; ranking models read one (it has {sorted(fields)})")
    for k, v in fields.items():
        if len(v) != n_items:
            raise ValueError(f"{ITEMS_FILE}: field {k!r} has {len(v)} rows for {n_items} items")


class Ranker:
    """``score(history, candidates)`` and ``rank(...)`` for one trained CTR model (``from_run``)."""

    def __init__(self, model: torch.nn.Module, raw_ids: list, fields: dict[str, np.ndarray], device: str = "cpu",
                 use_split: bool = True):
        """``fields``: per-item tables for items 1..n (no padding row), e.g. ``{"category": ...}``. ``use_split``
        False scores every model on the history repeated per candidate (the training path: for checks and timing)."""
        self.use_split = use_split
        self.model = model.to(device)
        self.model.eval()
        self.device = torch.device(device)
        self.ids = RawIds(raw_ids)
        _check_fields(fields, len(self.ids))
        self.fields = {k: np.r_[0, np.asarray(v, dtype=np.int64)] for k, v in fields.items()}
        self.max_len = int(model.cfg.max_len)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Ranker:
        run_dir = Path(run_dir)
        cfg = run_config(run_dir, "ctr", "Ranker serves CTR (ranking) models")
        items = read_item_table(run_dir, "the run's CTRData")
        fields = {k: items[k].to_numpy() for k in items.column_names if k not in ("raw", "train_count")}
        _check_fields(fields, items.num_rows)  # before the model is built from them
        n_categories = int(fields["category"].max(initial=0))
        model = build(cfg.model, items.num_rows, n_categories, cfg.model_args)
        best = run_dir / "checkpoints" / "best.pt"
        if not best.exists():
            raise FileNotFoundError(f"{best} is missing: the run has no best weights")
        model.load_state_dict(torch.load(best, map_location=device, weights_only=True))
        return cls(model, items["raw"].to_numpy(zero_copy_only=False), fields, device)

    def _history(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """``item`` and every item field of history ids [L], on the device."""
        out = {"item": torch.from_numpy(ids), **{k: torch.from_numpy(t[ids]) for k, t in self.fields.items()}}
        return {k: v.to(self.device) for k, v in out.items()}

    def _candidates(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """``target`` and ``target_<field>`` of candidate ids [C], on the device."""
        out = {"target": torch.from_numpy(ids), **{f"target_{k}": torch.from_numpy(t[ids]) for k, t in self.fields.items()}}
        return {k: v.to(self.device) for k, v in out.items()}

    def _logits(self, hist: np.ndarray, cand: np.ndarray) -> torch.Tensor:
        """Main logits [C] of known candidates ``cand`` after the known history ``hist`` (oldest first)."""
        if len(hist) == 0:
            hist = np.zeros(1, dtype=np.int64)  # one padding slot: the models read an empty history as all padding
        h, c = self._history(hist), self._candidates(cand)
        if self.use_split and hasattr(self.model, "score_candidates"):  # TWIN, DARE: the history's keys once, one product
            return self.model.score_candidates(h, c)
        if self.use_split and isinstance(self.model, SDIM):  # BSE: the user's bucket table once, lookups per candidate
            bse = BSE(self.model)
            return bse.score({k: v[None] for k, v in c.items()}, bse.encode({k: v[None] for k, v in h.items()}))[0]
        out = []
        for i in range(0, len(cand), CHUNK):  # the history repeated per candidate, a chunk at a time
            n = min(CHUNK, len(cand) - i)
            batch = {k: v[None].expand(n, -1) for k, v in h.items()}
            batch.update({k: v[i:i + n] for k, v in c.items()}, user=torch.zeros(n, dtype=torch.long, device=self.device),
                         length=torch.full((n,), int((hist > 0).sum()), device=self.device))
            out.append(self.model.score(batch))
        return torch.cat(out)

    @inference
    def score(self, history: list[Any], candidates: list[Any]) -> Scored:
        """Click probabilities of ``candidates`` (raw ids) after ``history`` (raw ids, oldest first)."""
        check_id_lists([history, candidates], "history or candidates, argument")
        h, c = self.ids.lookup(history), self.ids.lookup(candidates)
        known_c = c > 0
        probs = np.full(len(c), None, dtype=object)
        if known_c.any():
            logits = self._logits(h[h > 0][-self.max_len:], c[known_c])
            probs[known_c] = torch.sigmoid(logits.double()).cpu().numpy().tolist()
        return Scored(list(candidates), probs.tolist(),
                      [history[i] for i in np.flatnonzero(h == 0)], [candidates[i] for i in np.flatnonzero(~known_c)])

    def score_many(self, requests: list[tuple[list, list]]) -> list[Scored]:
        """``score`` for each (history, candidates): one model call per user (the per-user serving caches)."""
        return [self.score(h, c) for h, c in requests]

    def rank(self, history: list[Any], candidates: list[Any], n: int | None = None) -> Scored:
        """The known candidates, most probable first (ties in request order), the top ``n`` of them."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise ValueError(f"rank: n must be an integer >= 1 or None, got {n!r}")
        n = None if n is None else int(n)
        s = self.score(history, candidates)
        p = np.array([-1.0 if x is None else x for x in s.probs])
        order = [i for i in np.argsort(-p, kind="stable").tolist() if s.probs[i] is not None][:n]
        return Scored([s.items[i] for i in order], [s.probs[i] for i in order], s.unknown_history, s.unknown_candidates)
