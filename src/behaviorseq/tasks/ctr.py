"""Pointwise CTR: how :class:`~behaviorseq.data.ctr.CTRData` becomes training batches, a loss, and metrics.

Training batches are shuffled by (seed, epoch) through ``data.batching.epoch_loader``, so a resumed
run repeats an uninterrupted one. Evaluation scores every sample of a role with the model's main head
(``model.score(batch) -> logits [B]``; auxiliary heads never enter the metrics) and reports

    auc            exact ROC AUC over all samples
    gauc_user      per-user AUC weighted by the user's number of samples (DIN's GAUC)
    gauc_category  per-target-category AUC weighted by group size (what DARE's code reports as GAUC)
    logloss        mean BCE of sigmoid(logit), main head only (DARE's logged loss adds the aux loss)

Under DDP every rank scores a share of the samples and the scores are gathered before the metrics,
which are not sums (AUC needs all scores at once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from behaviorseq.config import EvalConfig, TrainConfig
from behaviorseq.data.batching import epoch_loader
from behaviorseq.data.ctr import CTRBatcher, CTRData
from behaviorseq.metrics import auc, gauc, logloss
from behaviorseq.utils import array_fingerprint, code_version


def _move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class CTRTask:
    data: CTRData
    max_len: int
    train_cfg: TrainConfig
    eval_batch_size: int = 1024
    trim: bool = True

    early_stop_metric = "auc"  # what TrainConfig.early_stop_metric should name for this task

    @classmethod
    def create(cls, data: CTRData, model, train_cfg: TrainConfig, eval_cfg: EvalConfig | None = None) -> CTRTask:
        return cls(data, int(model.cfg.max_len), train_cfg, (eval_cfg or EvalConfig()).batch_size)

    # ---- training -------------------------------------------------------------------------------
    def train_batcher(self) -> CTRBatcher:
        return CTRBatcher(self.data, self.max_len, self.data.indices("train"), self.trim)

    def train_loader(self, epoch: int, start_step: int = 0, rank: int = 0, world: int = 1):
        """(loader, batcher) of the epoch's batches from ``start_step`` on; ranks take turns in the Trainer."""
        batcher = self.train_batcher()
        loader = epoch_loader(batcher, self.train_cfg.batch_size, shuffle=True, seed=self.train_cfg.seed,
                              epoch=epoch, start_step=start_step, num_workers=self.train_cfg.num_workers)
        return loader, batcher

    def steps_per_epoch(self) -> int:
        n = -(-len(self.data.indices("train")) // self.train_cfg.batch_size)
        return min(n, self.train_cfg.max_steps_per_epoch or n)

    # ---- evaluation -----------------------------------------------------------------------------
    def _chunks(self, role: str, rank: int, world: int) -> tuple[CTRBatcher, list[np.ndarray]]:
        rows = self.data.indices(role)
        hist = self.data.hist_end[rows] - self.data.offsets[self.data.user[rows]]
        # Chunks of similar history length waste less padding; the metrics do not depend on order.
        mine = np.argsort(np.minimum(hist, self.max_len), kind="stable")[rank::world]
        batcher = CTRBatcher(self.data, self.max_len, rows, self.trim)
        return batcher, [mine[i:i + self.eval_batch_size] for i in range(0, len(mine), self.eval_batch_size)]

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, role: str, device: torch.device | str = "cpu",
                rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(sample indices [n], main-head logits [n] float64) of this rank's share of ``role``."""
        batcher, chunks = self._chunks(role, rank, world)
        was_training = model.training
        model.eval()
        idx, out = [], []
        for c in chunks:
            batch = batcher.batch(c)
            idx.append(batch.pop("index").numpy())
            del batch["label"]  # the model never sees the label at evaluation
            out.append(model.score(_move(batch, torch.device(device))).double().cpu().numpy())
        if was_training:
            model.train()
        if not idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(idx), np.concatenate(out)

    def evaluate(self, model: torch.nn.Module, role: str, device: torch.device | str = "cpu",
                 rank: int = 0, world: int = 1) -> dict[str, float]:
        idx, logit = self.predict(model, role, device, rank, world)
        if world > 1:
            parts: list = [None] * world
            dist.all_gather_object(parts, (idx, logit))
            idx = np.concatenate([p[0] for p in parts])
            logit = np.concatenate([p[1] for p in parts])
        return self.metrics(idx, logit)

    def metrics(self, idx: np.ndarray, logit: np.ndarray) -> dict[str, float]:
        """AUC, GAUC by user and by target category, logloss of the samples ``idx`` given their logits."""
        d = self.data
        y = d.label[idx].astype(bool)
        prob = 1.0 / (1.0 + np.exp(-logit))
        out = {"auc": auc(y, logit), "gauc_user": gauc(y, logit, d.user[idx]), "logloss": logloss(y, prob)}
        if "category" in d.item_fields:
            out["gauc_category"] = gauc(y, logit, d.item_fields["category"][d.target[idx]])
        out["positive_rate"] = float(y.mean()) if len(y) else float("nan")
        out["n"] = int(len(idx))
        return out

    def protocol(self, role: str = "test") -> dict:
        """Everything a reader needs to compare this result with another."""
        return {
            "task": "pointwise_ctr",
            "dataset": self.data.name,
            "dataset_stats": self.data.stats(),
            "sampling": self.data.report,
            "evaluated_role": role,
            "metrics": {"auc": "exact, ties 1/2", "gauc_user": "weighted by samples per user",
                        "gauc_category": "by target category, weighted by samples",
                        "logloss": "main head only"},
            "max_len": self.max_len,
            "history": "the last max_len events before the target, left-padded",
            "seed": self.train_cfg.seed,
            "data_fingerprint": array_fingerprint(self.data.offsets, self.data.events["item"], self.data.user,
                                                  self.data.hist_end, self.data.target, self.data.label, self.data.role),
            "code_version": code_version(),
        }


@torch.no_grad()
def planted_recall(task: CTRTask, model: torch.nn.Module, truth, role: str = "test",
                   device: torch.device | str = "cpu") -> float:
    """Mean over samples of the fraction of planted relevant behaviours (inside the window) that the
    model's search puts in its top K (``model(batch)["topk_index"]``; TWIN / DARE). ``truth`` is a
    ``LongCTRTruth`` of the task's data."""
    batcher, chunks = task._chunks(role, 0, 1)
    was_training = model.training
    model.eval()
    hit, total = 0.0, 0
    for c in chunks:
        batch = batcher.batch(c)
        rows = batch.pop("index").numpy()
        del batch["label"]
        top = model(_move(batch, torch.device(device)))["topk_index"].cpu().numpy()  # [B, K]
        rel = truth.relevant_columns(task.data, rows, batch["item"].shape[1])  # [B, R]
        ok = rel >= 0
        found = (top[:, :, None] == rel[:, None, :]).any(1) & ok
        has = ok.sum(1) > 0
        hit += float((found.sum(1)[has] / ok.sum(1)[has]).sum())
        total += int(has.sum())
    if was_training:
        model.train()
    return hit / total if total else float("nan")
