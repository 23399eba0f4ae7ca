"""Default-risk task: turn folded / flat payment views into tensors, train a model with BCE, early-stop on
valid AUC, report AUC and KS on test. Users are the samples; roles come from the data set.

Two drivers share the pieces: :func:`fit` (a compact loop for benchmark grids, ``benchmarks/lbsf_windows.py``)
and :class:`DefaultRiskTask`, the task interface of ``train.Trainer`` behind ``train.run_experiment`` (run
folders, checkpoints, resume). KS (Kolmogorov-Smirnov, standard in credit risk) = max over thresholds of
|TPR - FPR|.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import expit
from torch import Tensor, nn

from behaviorseq.config import EvalConfig, TrainConfig
from behaviorseq.data.folding import Flat, Folded
from behaviorseq.data.packed import PackedView
from behaviorseq.data.synthetic.payments import TEST, TRAIN, VALID
from behaviorseq.metrics.pointwise import auc, logloss
from behaviorseq.nn.payment_fields import PAYMENT_FIELDS
from behaviorseq.utils import code_version


def ks(labels, scores) -> float:
    """KS statistic: max_t |TPR(t) - FPR(t)| over all thresholds (ties grouped); nan with one class."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"ks: labels {y.shape} and scores {s.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    o = np.argsort(-s, kind="stable")
    ys, ss = y[o], s[o]
    tpr = np.cumsum(ys) / n_pos
    fpr = np.cumsum(~ys) / n_neg
    last = np.r_[ss[1:] != ss[:-1], True]  # only after the last of a run of tied scores
    return float(np.max(np.abs(tpr - fpr)[last]))


def to_tensors(view: Folded | Flat) -> dict[str, Tensor]:
    """A folded or flat view as a dict of CPU tensors (ids long, reals float32, masks bool)."""
    out = {}
    for k, v in view.fields.items():
        out[k] = torch.from_numpy(v.astype(np.float32) if v.dtype.kind == "f" else v)
    if isinstance(view, Folded):
        out["txn_mask"] = torch.from_numpy(view.txn_mask)
        out["merchant_mask"] = torch.from_numpy(view.merchant_mask)
        out["stats"] = torch.from_numpy(view.stats.astype(np.float32))
    else:
        out["mask"] = torch.from_numpy(view.mask)
    return out


def _take(batch: dict[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    """Rows ``idx``, with trailing all-padding payment columns cut (flat views are right-padded and folded
    slots left-aligned, so the cut never drops a payment and leaves every output unchanged)."""
    out = {k: v[idx] for k, v in batch.items()}
    mask = out.get("mask", out.get("txn_mask"))
    if mask is not None:
        cols = mask.reshape(-1, mask.shape[-1]).any(dim=0)
        n = int(cols.nonzero().max()) + 1 if bool(cols.any()) else 1
        keep = ("mask", "txn_mask") + PAYMENT_FIELDS
        out = {k: (v[..., :n] if k in keep else v) for k, v in out.items()}
    return out


@torch.no_grad()
def predict(model: nn.Module, data: dict[str, Tensor], idx: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Scores (logits) of the users ``idx``: float64 [len(idx)]."""
    model.eval()
    idx_t = torch.as_tensor(idx, dtype=torch.long)
    out = [model(_take(data, idx_t[i:i + batch_size])).double() for i in range(0, len(idx_t), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def evaluate(model: nn.Module, data: dict[str, Tensor], label: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    s = predict(model, data, idx)
    return {"auc": auc(label[idx], s), "ks": ks(label[idx], s)}


def fit(model: nn.Module, data: dict[str, Tensor], label: np.ndarray, train: np.ndarray, valid: np.ndarray,
        test: np.ndarray | None = None, *, epochs: int = 20, batch_size: int = 64, lr: float = 1e-3,
        weight_decay: float = 1e-4, patience: int = 4, seed: int = 0, max_seconds: float | None = None) -> dict:
    """AdamW + BCE (``model.loss``), gradient norm clipped at 5; keeps the weights of the best valid AUC
    (stops after ``patience`` epochs without improvement or past ``max_seconds``); returns the history and
    the valid / test metrics of those weights."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    y = torch.as_tensor(label, dtype=torch.float32)
    best, best_state, bad, history = -1.0, None, 0, []
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        perm = torch.as_tensor(train, dtype=torch.long)[torch.randperm(len(train), generator=g)]
        for i in range(0, len(perm), batch_size):
            b = perm[i:i + batch_size]
            loss = model.loss(_take(data, b), y[b])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        v = evaluate(model, data, label, valid)
        history.append({"epoch": ep, **v})
        if v["auc"] > best:
            best, best_state, bad = v["auc"], copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        if bad >= patience or (max_seconds is not None and time.perf_counter() - t0 > max_seconds):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    out = {"history": history, "valid": evaluate(model, data, label, valid), "epochs": len(history),
           "seconds": time.perf_counter() - t0}
    if test is not None:
        out["test"] = evaluate(model, data, label, test)
    return out


_ROLE_IDS = {"train": TRAIN, "valid": VALID, "test": TEST}  # PaymentData.role codes


@dataclass
class DefaultRiskTask:
    """One sample per user: ``tensors`` is the whole view, dense (``to_tensors``) or packed (``data.packed``:
    densified per batch, the same batches); ``label`` / ``role`` [n_users]. ``view`` describes it for the
    protocol (window, folding or last N, data set report)."""

    tensors: dict[str, Tensor] | PackedView
    label: np.ndarray
    role: np.ndarray
    train_cfg: TrainConfig
    eval_batch_size: int = 512
    view: dict = field(default_factory=dict)

    early_stop_metric = "auc"

    @classmethod
    def create(cls, tensors: dict[str, Tensor] | PackedView, label: np.ndarray, role: np.ndarray, train_cfg: TrainConfig,
               eval_cfg: EvalConfig | None = None, view: dict | None = None) -> DefaultRiskTask:
        return cls(tensors, np.asarray(label), np.asarray(role), train_cfg, (eval_cfg or EvalConfig()).batch_size,
                   dict(view or {}))

    def indices(self, role: str) -> np.ndarray:
        return np.flatnonzero(self.role == _ROLE_IDS[role])

    def batch(self, rows: np.ndarray) -> dict[str, Tensor]:
        if isinstance(self.tensors, PackedView):
            out = _take(to_tensors(self.tensors.take(rows)), torch.arange(len(rows)))
        else:
            out = _take(self.tensors, torch.as_tensor(rows, dtype=torch.long))
        out["label"] = torch.as_tensor(self.label[rows], dtype=torch.float32)
        return out

    # ---- training: batches shuffled by (seed, epoch), so a resumed run repeats an uninterrupted one ----
    def train_loader(self, epoch: int, start_step: int = 0, rank: int = 0, world: int = 1):
        rows = np.random.default_rng([self.train_cfg.seed, epoch]).permutation(self.indices("train"))
        bs = self.train_cfg.batch_size
        starts = range(start_step * bs, len(rows), bs)
        return (self.batch(rows[i:i + bs]) for i in starts), None

    def steps_per_epoch(self) -> int:
        n = -(-len(self.indices("train")) // self.train_cfg.batch_size)
        return min(n, self.train_cfg.max_steps_per_epoch or n)

    # ---- evaluation: every rank scores all users of the role (one sample per user: small) ------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, role: str, device: torch.device | str = "cpu", rank: int = 0,
                 world: int = 1) -> dict[str, float]:
        rows = self.indices(role)
        was_training = model.training
        model.eval()
        out = []
        for i in range(0, len(rows), self.eval_batch_size):
            b = {k: v.to(device) for k, v in self.batch(rows[i:i + self.eval_batch_size]).items() if k != "label"}
            out.append(model.score(b).double().cpu().numpy())
        if was_training:
            model.train()
        s = np.concatenate(out) if out else np.zeros(0)
        y = self.label[rows].astype(bool)
        return {"auc": auc(y, s), "ks": ks(y, s), "logloss": logloss(y, expit(s)),
                "positive_rate": float(y.mean()) if len(y) else float("nan"), "n": int(len(rows))}

    def protocol(self, role: str = "test") -> dict:
        return {"task": "default_risk", "evaluated_role": role, "samples": "one per user",
                "users": {r: int(len(self.indices(r))) for r in _ROLE_IDS},
                "metrics": {"auc": "exact, ties 1/2", "ks": "max |TPR - FPR| over thresholds, ties grouped",
                            "logloss": "mean BCE of sigmoid(logit)"},
                **self.view, "seed": self.train_cfg.seed, "code_version": code_version()}
