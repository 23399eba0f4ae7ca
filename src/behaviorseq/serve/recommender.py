"""Serve a trained next-item model: raw item ids in, top-N raw item ids out.

A retrieval run folder holds what serving needs besides the weights: ``items.parquet`` (written by
``run_experiment``), the raw id of each internal item id (row k = id k + 1) and its count in the training
events. ``Recommender.from_run`` rebuilds the model from ``config.yaml``, loads ``checkpoints/best.pt`` and
needs no training data. Histories are truncated to the model's ``max_len`` latest items and padded on the
model's side, as the evaluator's batches are, so served scores equal evaluated ones. Items the history
already holds are left out by default (the evaluation default); ids the model never saw are reported, not
guessed. A history with no known item gets the most popular training items (the model has nothing to read).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from behaviorseq import models
from behaviorseq.data.item_table import read_item_table
from behaviorseq.data.store import ragged_arange
from behaviorseq.nn.inference import inference
from behaviorseq.serve.ids import RawIds, check_id_lists, run_config


@dataclass
class Recommendation:
    items: list  # raw ids, best first
    scores: list[float]
    unknown: list = field(default_factory=list)  # raw ids of the history the model does not know
    popular_fallback: bool = False  # True: no known history item, so the most popular training items


class Recommender:
    """``recommend(histories, n)`` for one trained retrieval model (``from_run``)."""

    def __init__(self, model: torch.nn.Module, raw_ids: list, train_counts: np.ndarray, device: str = "cpu"):
        self.model = model.to(device)
        self.model.eval()
        self.device = torch.device(device)
        self.ids = RawIds(raw_ids)
        self.raw = self.ids.raw  # internal id k + 1 -> raw id
        self.counts = np.r_[0, np.asarray(train_counts, dtype=np.int64)]
        self.max_len = int(getattr(getattr(model, "cfg", None), "max_len", 0) or 0) or None
        self.padding = getattr(model, "padding", "left")
        if getattr(model, "fields", ()):
            raise ValueError(f"{type(model).__name__} reads event fields {model.fields}; serving takes item ids only")

    def lookup(self, raw: list) -> np.ndarray:
        """Internal ids of raw ids (0 where unknown; see ``RawIds.lookup``)."""
        return self.ids.lookup(raw)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Recommender:
        run_dir = Path(run_dir)
        cfg = run_config(run_dir, "retrieval", "Recommender serves next-item (retrieval) models")
        items = read_item_table(run_dir, "the run's store")
        counts = items["train_count"].to_numpy()
        model = models.build(cfg.model, items.num_rows, cfg.model_args)
        if hasattr(model, "use_item_counts"):  # MostPop scores by them; ComiRec's sampler reads them
            model.use_item_counts(torch.from_numpy(np.r_[0, counts]))
        best = run_dir / "checkpoints" / "best.pt"
        if best.exists():
            model.load_state_dict(torch.load(best, map_location=device, weights_only=True))
        elif any(p.requires_grad for p in model.parameters()):
            raise FileNotFoundError(f"{best} is missing: the run has no best weights")
        return cls(model, items["raw"].to_numpy(zero_copy_only=False), counts, device)

    def encode(self, histories: list[list[Any]]) -> tuple[dict[str, torch.Tensor], list[list], np.ndarray, np.ndarray]:
        """The model's batch for raw histories (oldest first): their known ids, the latest max_len, padded
        on the model's side. Also (unknown raw ids per history, known ids flat, known count per history)."""
        lens = np.array([len(h) for h in histories], dtype=np.int64)
        flat_raw = [r for h in histories for r in h]
        ids = self.lookup(flat_raw)
        row = np.repeat(np.arange(len(histories)), lens)
        known = ids > 0
        unknown = [[] for _ in histories]
        for i in np.flatnonzero(~known):  # only the (rare) unknown ids
            unknown[row[i]].append(flat_raw[i])
        row, ids = row[known], ids[known]
        n_known = np.bincount(row, minlength=len(histories))
        keep = ragged_arange(n_known) >= n_known[row] - (self.max_len or n_known.max(initial=0))  # latest max_len
        row_w, ids_w = row[keep], ids[keep]
        n_w = np.bincount(row_w, minlength=len(histories))
        width = max(1, int(n_w.max(initial=0)))
        col = ragged_arange(n_w) + ((width - n_w)[row_w] if self.padding == "left" else 0)
        item = np.zeros((len(histories), width), dtype=np.int64)
        item[row_w, col] = ids_w
        batch = {"item": torch.from_numpy(item), "length": torch.from_numpy(n_w),
                 "user": torch.zeros(len(histories), dtype=torch.long), "index": torch.arange(len(histories))}
        return batch, unknown, np.stack([row, ids]), n_known

    @inference
    def recommend(self, histories: list[list[Any]], n: int = 10, exclude_seen: bool = True) -> list[Recommendation]:
        """Top-``n`` raw item ids for each history (a list of raw ids, oldest first)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"recommend: n must be an integer >= 1, got {n!r}")
        check_id_lists(histories)
        if not histories:
            return []
        batch, unknown, (row, ids), n_known = self.encode(histories)
        scores = self.model.score({k: v.to(self.device) for k, v in batch.items()}).float().cpu()
        scores[:, 0] = -torch.inf  # padding is never an item
        empty = torch.from_numpy(n_known == 0)
        if empty.any():  # nothing the model can read: popularity
            pop = torch.from_numpy(self.counts.astype(np.float32))
            pop[0] = -torch.inf
            scores[empty] = pop.expand(int(empty.sum()), -1)
        if exclude_seen and len(ids):
            scores[torch.from_numpy(row), torch.from_numpy(ids)] = -torch.inf
        top = torch.topk(scores, min(n, scores.shape[1] - 1), dim=1)  # then each row cut at its own count
        keep = torch.isfinite(top.values).sum(1).tolist()  # a user who has seen nearly everything gets fewer
        raw = self.raw[np.maximum(top.indices.numpy() - 1, 0)]
        return [Recommendation(raw[r, :keep[r]].tolist(), top.values[r, :keep[r]].tolist(), unknown[r], bool(empty[r]))
                for r in range(len(histories))]
