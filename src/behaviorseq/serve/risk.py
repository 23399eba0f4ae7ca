"""Serve a trained default-risk model (LBSF, flat Transformer / GRU, chunked Transformer): new users'
payments in, each user's default probability out (the model's logit through a sigmoid).

``RiskScorer.from_run`` needs the run folder only: the config (the view: window, folding or last N; the
payment tables' column mapping, time unit and delimiter) and ``checkpoints/best.pt`` (weights, amount bucket
edges). A payments table of users to score, in the training tables' layout, is read as the engine reads
them (``read_payments`` without labels) and folded the same way (``train.run_risk.risk_view``). Merchant names
and descriptions are hashed character n-grams, so merchants and texts the training data never held are
encoded like the others, not dropped. The observation date ``label_date`` is given: one for all the request's
users (every payment must lie before it), or one per user (a dict, or a table read by ``read_label_dates``).
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from behaviorseq.data.payment_tables import PaymentTablesConfig, read_payments
from behaviorseq.models.risk import build
from behaviorseq.nn.inference import inference
from behaviorseq.nn.payment_fields import hash_char_ngrams
from behaviorseq.serve.ids import as_int, run_config
from behaviorseq.tasks.default_risk import _take, to_tensors
from behaviorseq.train.run_risk import RiskViewConfig, check_time_origin, risk_length, risk_view


@dataclass
class RiskScores:
    users: list  # raw user ids, sorted
    probs: list[float]  # default probability of each
    payments_used: list[int]  # payments of each user inside the window the model reads


class RiskScorer:
    """``score(payments)`` for one trained default-risk model (``from_run``)."""

    def __init__(self, model: torch.nn.Module, model_name: str, view: RiskViewConfig, tables: PaymentTablesConfig,
                 device: str = "cpu", batch_size: int = 512):
        self.model, self.name, self.view, self.tables = model.to(device).eval(), model_name, view, tables
        self.device, self.batch_size = torch.device(device), batch_size
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> RiskScorer:
        run_dir = Path(run_dir)
        cfg = run_config(run_dir, "default_risk", "RiskScorer serves default-risk models")
        check_time_origin(run_dir, cfg)
        state = torch.load(run_dir / "checkpoints" / "best.pt", map_location=device, weights_only=True)
        shape = lambda k: tuple(state[f"encoder.{k}"].shape)  # noqa: E731 (the training tables' sizes)
        v = RiskViewConfig.from_dict(cfg.data.risk)
        length = risk_length(cfg.model, v)
        model = build(cfg.model, np.zeros(shape("merchant_ngrams"), np.int64), np.zeros(shape("description_ngrams"),
                      np.int64), np.zeros(shape("edges")), length, cfg.model_args)
        model.load_state_dict(state)
        keep = {k: x for k, x in dict(cfg.data.payments).items() if k in ("columns", "time_unit", "delimiter")}
        return cls(model, cfg.model, v, PaymentTablesConfig.from_dict(keep), device)

    def read_label_dates(self, path: str | Path) -> dict:
        """A table of users and their observation dates (CSV / TSV or Parquet, the user and date columns named as
        in the training labels table: ``columns.user`` / ``columns.date`` of the run's config, default ``user``,
        ``date``; the run's delimiter) as the per-user ``label_date`` of :meth:`score`."""
        import pandas as pd

        from behaviorseq.data.payment_tables import (
            _PARQUET,
            _check_time_unit,
            _column_names,
            _delimiter,
            _require,
            _row_error,
        )

        path = Path(path)
        cols = {"user": "user", "date": "date", **self.tables.columns}
        if not path.is_file():
            raise ValueError(f"label dates table {path}: no such file")
        d = self.tables.delimiter
        _require(path, _column_names(path, d), cols, ("user", "date"))
        if path.suffix in _PARQUET:
            df = pd.read_parquet(path, columns=[cols["user"], cols["date"]])
        else:
            # only an empty field is missing: "NA" or "null" is a user id, as in the training tables
            df = pd.read_csv(path, sep=_delimiter(path, d), dtype={cols["user"]: str}, encoding="utf-8-sig",
                             usecols=[cols["user"], cols["date"]], keep_default_na=False,
                             na_values={cols["user"]: [""], cols["date"]: [""]})
        if df.empty:
            raise ValueError(f"label dates table {path}: no rows (a header only?)")
        for role in ("user", "date"):
            bad = df[cols[role]].isna().to_numpy()
            if bad.any():
                raise _row_error(str(path), bad, cols[role], f"no {role}", d, True)
        # dates checked here, so an error names this file's line rather than the scorer's temporary labels table
        # (pandas skips whitespace-only lines, so the line count does too: the last argument of _row_error)
        date = df[cols["date"]]
        if _check_time_unit(path, cols["date"], self.tables.time_unit, d):
            bad = pd.to_datetime(date.astype(str), errors="coerce", format="ISO8601").isna().to_numpy()
            why = "not an ISO date"
        else:
            num = pd.to_numeric(date, errors="coerce").to_numpy(dtype=np.float64)
            bad, why = ~np.isfinite(num), "not a number (or an ISO date)"
        if bad.any():
            raise _row_error(str(path), bad, cols["date"], lambda i: f"date {date.iloc[i]!r}: {why}", d, True)
        users = df[cols["user"]].astype(str).to_numpy()
        dup = pd.Series(users).duplicated().to_numpy()
        if dup.any():
            raise _row_error(str(path), dup, cols["user"], lambda i: f"user {users[i]!r} has a second date", d, True)
        return dict(zip(users.tolist(), df[cols["date"]].tolist()))

    @inference
    def score(self, payments, label_date) -> RiskScores:
        """Default probabilities of the users of ``payments`` (a CSV / Parquet path, or a pandas DataFrame in the
        tables' layout) at their observation date ``label_date``: one for all (ISO date, or a number in the
        tables' time unit; every payment must lie before it) or one per user (a dict user -> date, as a
        ``date`` column of labels.csv: the users it names are scored, their later payments dropped). A user's
        score does not depend on who else is in the request."""
        if label_date is None:
            raise ValueError("give the observation date (label_date): the window ends there; a default taken from "
                             "the request's last payment would make each user's score depend on the others")
        with self._lock:  # the encoder's n-gram tables are set per call
            return self._score(payments, label_date)

    def _score(self, payments, label_date) -> RiskScores:
        import pandas as pd

        per_user = isinstance(label_date, dict)
        c = self.tables.model_copy(update={"label_date": None if per_user else label_date})
        cols = {"user": "user", "label": "label", "date": "date", **c.columns}
        with tempfile.TemporaryDirectory() as tmp:
            if not isinstance(payments, (str, Path)):  # a DataFrame: through Parquet, the path the reader takes
                payments.to_parquet(Path(tmp) / "request_payments.parquet", index=False)  # errors name it, row = payment
                payments = Path(tmp) / "request_payments.parquet"
            labels = None
            if per_user:  # the users and their dates as a labels table: the training reader's per-user path
                labels = Path(tmp) / "request_label_dates.parquet"
                pd.DataFrame({cols["user"]: [str(u) for u in label_date], cols["label"]: 0,
                              cols["date"]: list(label_date.values())}).to_parquet(labels, index=False)
            data = read_payments(payments, labels, c)
        if per_user:  # a user named for a date must have payments before it: else a silent empty-history score
            have = set(np.unique(data.user).tolist())
            empty = [data.user_names[i] for i in range(data.n_users) if i not in have]
            if empty:
                raise ValueError(f"{len(empty)} user(s) of label_date have no payment before their date (or none at "
                                 f"all): {empty[:5]}")
        enc, n_hash = self.model.encoder, self.model.cfg.n_hash
        enc.merchant_ngrams = torch.as_tensor(hash_char_ngrams(data.merchant_names, n_hash), device=self.device)
        enc.description_ngrams = torch.as_tensor(hash_char_ngrams(data.descriptions, n_hash), device=self.device)
        view, _, _ = risk_view(self.name, self.view, data)
        out = []
        for i in range(0, data.n_users, self.batch_size):
            rows = np.arange(i, min(i + self.batch_size, data.n_users))
            batch = _take(to_tensors(view.take(rows)), torch.arange(len(rows)))
            out.append(torch.sigmoid(self.model.score({k: t.to(self.device) for k, t in batch.items()}).double()).cpu())
        probs = torch.cat(out).tolist() if out else []
        users, used = list(data.user_names), np.diff(view.offsets).tolist()
        # integer ids back as integers, in their order, only when each is one's canonical spelling ("007" stays
        # "007": as an integer it would read 7, and "007" beside "7" would be two users of one id)
        if users and all(as_int(u) is not None for u in users):
            order = sorted(range(len(users)), key=lambda i: int(users[i]))
            users, probs, used = [int(users[i]) for i in order], [probs[i] for i in order], [used[i] for i in order]
        return RiskScores(users, probs, used)

