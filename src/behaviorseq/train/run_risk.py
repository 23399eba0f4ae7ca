"""The default-risk branch of a run: a resolved :class:`RunConfig` with ``task: default_risk`` -> (data, model,
task), for the risk models of ``models.risk`` (LBSF and its flat baselines).

``train.run.run_experiment`` calls :func:`prepare_risk` and writes the usual run folder. The data set comes
from ``data.payment_tables.open_payments`` (``data.dataset``: ``synthetic-payments`` or a folder of the user's
payments and labels tables; ``data.payments`` holds its typed arguments). ``data.risk`` sets the view
(:class:`RiskViewConfig`): the window before the label date, LBSF's folding (top ``n_top`` merchants, the last
``max_per_merchant`` payments of each, the rest pooled) or the flat models' last ``max_len`` payments, by
default the same payment budget ``(n_top + 1) * max_per_merchant`` (LBSF brief section 2, equal budget).
Amount bucket edges come from the training users' payments only.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from behaviorseq import models
from behaviorseq.config import ConfigError, RunConfig, StrictConfig
from behaviorseq.data.folding import fold_by_merchant, last_n
from behaviorseq.data.packed import PackedView, pack_view
from behaviorseq.data.payment_tables import open_payments
from behaviorseq.data.synthetic.payments import TRAIN, PaymentData
from behaviorseq.models.risk import build
from behaviorseq.nn.payment_fields import amount_edges, hash_char_ngrams
from behaviorseq.tasks.default_risk import DefaultRiskTask
from behaviorseq.train.trainer import seed_everything
from behaviorseq.utils import array_fingerprint

RISK_METRICS = ("auc", "ks")  # what early stopping can maximise


class RiskViewConfig(StrictConfig):
    window_days: float = Field(180.0, gt=0)  # the paper's longest window; its AUC rises from 45 to 180 days
    n_top: int = Field(8, ge=1)  # LBSF: merchants with their own slot (M)
    max_per_merchant: int = Field(10, ge=1)  # LBSF: payments kept per merchant (Lm)
    max_len: int | None = Field(None, ge=1)  # flat models: last N payments; None = (n_top + 1) * max_per_merchant
    amount_buckets: int = Field(16, ge=2)


TIME_ORIGIN = "whole weeks after 1970-01-01: weekday = floor(time) % 7"  # payment tables since session 19


def check_time_origin(run_dir, cfg: RunConfig) -> None:
    """A run on one's own payment tables trained before the weekday origin (session 19) read its weekday feature
    counted from its earliest payment: scoring it now would shift that feature. Refused, saying so."""
    import json
    from pathlib import Path


    metrics = Path(run_dir) / "metrics.json"
    if cfg.data.dataset == "synthetic-payments" or not metrics.exists():
        return
    if json.loads(metrics.read_text()).get("protocol", {}).get("time_origin") != TIME_ORIGIN:
        raise ConfigError(f"{run_dir} was trained before the payment tables' weekday fix (its weekday feature "
                          "counted from its earliest payment); retrain it")


def risk_length(model: str, v: RiskViewConfig) -> int:
    """The length a risk model is built with: LBSF's payments per merchant, or the flat models' last N."""
    return v.max_per_merchant if "txn_mask" in models.get(model).fields else v.max_len or (v.n_top + 1) * v.max_per_merchant


def risk_view(model: str, v: RiskViewConfig, data: PaymentData) -> tuple[PackedView, int, str]:
    """(the packed view ``model`` reads, its length argument, a description): LBSF's fold or the flat last N,
    real payments only, densified per batch (``data.packed``). Training and serving build it the same way."""
    length = risk_length(model, v)
    if "txn_mask" in models.get(model).fields:
        view = pack_view(fold_by_merchant, data, window_days=v.window_days, n_top=v.n_top, max_per_merchant=length)
        return view, length, f"folded by merchant: top {v.n_top} + rest, last {length} each"
    return pack_view(last_n, data, window_days=v.window_days, max_len=length), length, f"flat: last {length} payments"


def prepare_risk(cfg: RunConfig) -> tuple[PaymentData, object, DefaultRiskTask]:
    """(data, model, task) for a resolved default-risk config."""
    data = open_payments(cfg.data.dataset, cfg.data.payments, root=cfg.data.data_root)
    v = RiskViewConfig.from_dict(cfg.data.risk)
    n_hash = int(cfg.model_args["n_hash"])
    train_users = np.flatnonzero(data.role == TRAIN)
    edges = amount_edges(data.amount[np.isin(data.user, train_users)], v.amount_buckets)
    max_days = int(cfg.model_args.get("max_days", 180))
    if v.window_days > max_days:  # every payment beyond max_days would share the last recency embedding
        raise ConfigError(f"data.risk.window_days={v.window_days:g} exceeds model.max_days={max_days}, the recency "
                          "embedding's range: set model.max_days to at least the window")
    view, length, kind = risk_view(cfg.model, v, data)
    folded = "txn_mask" in models.get(cfg.model).fields
    seed_everything(cfg.train.seed)
    model = build(cfg.model, hash_char_ngrams(data.merchant_names, n_hash), hash_char_ngrams(data.descriptions, n_hash),
                  edges, length, cfg.model_args)
    info = {"dataset": cfg.data.dataset, "dataset_args": dict(cfg.data.payments), "dataset_report": data.report,
            "window_days": v.window_days, "view": kind,
            "payment_budget": (v.n_top + 1) * v.max_per_merchant if folded else length,
            "amount_edges": "quantiles of training users' payments",
            "time_origin": TIME_ORIGIN,
            "data_fingerprint": array_fingerprint(data.user, data.time, data.merchant, data.amount, data.description,
                                                  data.label, data.role, np.asarray(data.label_day, dtype=np.float64)),
            "label_day": data.label_day if np.ndim(data.label_day) == 0 else  # per user: their range
            {"per_user": True, "min": float(np.min(data.label_day)), "max": float(np.max(data.label_day))}}
    task = DefaultRiskTask.create(view, data.label, data.role, cfg.train, cfg.eval, info)
    return data, model, task


__all__ = ["RISK_METRICS", "TIME_ORIGIN", "RiskViewConfig", "check_time_origin", "prepare_risk", "risk_length",
           "risk_view"]
