"""Default-risk task: turn folded / flat payment views into tensors, train a model with BCE, early-stop on
valid AUC, report AUC and KS on test. Users are the samples; roles come from the data set.

KS (Kolmogorov-Smirnov, standard in credit risk) = max over thresholds of |TPR - FPR|.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import Tensor, nn

from behaviorseq.data.folding import Flat, Folded
from behaviorseq.metrics.pointwise import auc
from behaviorseq.nn.payment_fields import PAYMENT_FIELDS


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
