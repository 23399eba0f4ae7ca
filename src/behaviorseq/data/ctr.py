"""Pointwise CTR samples over a CSR store of histories, their batches, and DARE's sampling protocol.

A CTR sample is (history row, history end, target item, label): the history is the events
``offsets[user]:hist_end`` (the last ``max_len`` of them in a batch), so samples index the histories
and never copy them. Target-side fields (e.g. the target's category) are looked up from per-item
tables. Batch fields (B samples, W <= max_len: the batch's longest history, left-padded, latest last)::

    index              [B]     the samples' row numbers in the data
    user               [B]     history rows (the grouping key of user GAUC)
    item, <field>      [B, W]  history items and every other event field, 0 = padding
    length             [B]     real history positions (<= W)
    target             [B]     target item
    target_<field>     [B]     each item field of the target (e.g. target_category)
    label              [B]     float32 click label
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from behaviorseq.data.batching import window_index

TRAIN, VALID, TEST = 0, 1, 2
ROLES = {"train": TRAIN, "valid": VALID, "test": TEST}


@dataclass
class CTRData:
    """Histories in CSR form plus pointwise samples over them.

    Attributes:
        offsets: int64 [n_rows + 1]; the events of history row u are ``offsets[u]:offsets[u + 1]``.
        events: flat event fields, each [n_events] int64, sorted by (row, time); must hold ``item``.
        item_fields: per-item lookup tables, each [n_items + 1] int64 (row 0 = padding), e.g. ``category``.
        user, hist_end, target: int64 [S]; a sample's history is ``offsets[user]:hist_end``.
        label: [S] 0/1; role: int8 [S] (TRAIN / VALID / TEST).
        name, report: data set name and how it was made (recorded in the protocol).
        raw_items: the raw id of item k at index k - 1 (what serving maps requests through); None: the
            internal ids are the raw ids (generated data).
    """

    offsets: np.ndarray
    events: dict[str, np.ndarray]
    item_fields: dict[str, np.ndarray]
    user: np.ndarray
    hist_end: np.ndarray
    target: np.ndarray
    label: np.ndarray
    role: np.ndarray
    name: str = "ctr"
    report: dict = field(default_factory=dict)
    raw_items: pa.Array | None = None

    def __post_init__(self) -> None:
        if "item" not in self.events:
            raise KeyError(f"CTRData.events must hold 'item'; it has {sorted(self.events)}")
        n_ev = int(self.offsets[-1])
        for k, v in self.events.items():
            if len(v) != n_ev:
                raise ValueError(f"event field {k!r} has {len(v)} entries, offsets say {n_ev}")
        s = len(self.user)
        for k in ("hist_end", "target", "label", "role"):
            if len(getattr(self, k)) != s:
                raise ValueError(f"CTRData.{k} has {len(getattr(self, k))} entries, user has {s}")
        if self.raw_items is not None and len(self.raw_items) != self.n_items:
            raise ValueError(f"CTRData.raw_items has {len(self.raw_items)} ids for {self.n_items} items")
        if s and ((self.hist_end < self.offsets[self.user]) | (self.hist_end > self.offsets[self.user + 1])).any():
            raise ValueError("CTRData.hist_end must lie within each sample's history row")

    @property
    def n_items(self) -> int:
        sizes = [len(t) - 1 for t in self.item_fields.values()]
        return int(max([int(self.events["item"].max(initial=0)), *sizes]))

    def raw_item_ids(self) -> pa.Array:
        """Raw ids of items 1..n (the internal ids themselves where the data has no vocabulary)."""
        if self.raw_items is not None:
            return self.raw_items
        return pa.array(np.arange(1, self.n_items + 1, dtype=np.int64))

    def vocab_size(self, name: str) -> int:
        """Number of ids of an item field (padding 0 included): over the item table and, where events carry the
        field too (Taobao: an item listed under several categories), over the events."""
        top = int(self.item_fields[name].max())
        if name in self.events:
            top = max(top, int(np.asarray(self.events[name]).max(initial=0)))
        return top + 1

    def indices(self, role: str) -> np.ndarray:
        return np.flatnonzero(self.role == ROLES[role])

    def stats(self) -> dict:
        lens = self.hist_end - self.offsets[self.user]
        return {"rows": len(self.offsets) - 1, "events": int(self.offsets[-1]), "items": self.n_items,
                "samples": {r: int((self.role == v).sum()) for r, v in ROLES.items()},
                "positive_rate": float(np.mean(self.label)) if len(self.label) else float("nan"),
                "history_len": {"mean": float(lens.mean()) if len(lens) else 0.0,
                                "max": int(lens.max()) if len(lens) else 0}}


class CTRBatcher:
    """Builds batches by one vectorised gather (see the module docstring).

    With ``rows`` (sample indices, e.g. the training samples) position k of the batcher is sample
    ``rows[k]``; without, every sample in order. ``trim`` cuts a batch to its longest history: models
    place positions relative to the latest behaviour and mask padding, so it changes speed, not results.
    """

    def __init__(self, data: CTRData, max_len: int, rows: np.ndarray | None = None, trim: bool = True):
        self.data, self.max_len, self.trim = data, int(max_len), trim
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.data.user) if self.rows is None else len(self.rows)

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Batch of batcher positions ``idx`` (``rng`` is unused: labels are given, not sampled)."""
        d = self.data
        idx = np.asarray(idx, dtype=np.int64)
        if self.rows is not None:
            idx = self.rows[idx]
        flat, valid = window_index(d.offsets[d.user[idx]], d.hist_end[idx], self.max_len, "left")
        if self.trim and len(idx):
            w = max(1, int(valid.sum(1).max()))
            flat, valid = flat[:, -w:], valid[:, -w:]
        tgt = d.target[idx].astype(np.int64)
        out = {"index": torch.from_numpy(idx.copy()), "user": torch.from_numpy(d.user[idx].astype(np.int64)),
               "length": torch.from_numpy(valid.sum(1).astype(np.int64)), "target": torch.from_numpy(tgt),
               "label": torch.from_numpy(d.label[idx].astype(np.float32))}
        for k, col in d.events.items():
            out[k] = torch.from_numpy(np.where(valid, col[flat], 0).astype(np.int64) if len(col) else
                                      np.zeros(flat.shape, np.int64))  # no events at all: nothing to gather
        for k, table in d.item_fields.items():
            out[f"target_{k}"] = torch.from_numpy(table[tgt].astype(np.int64))
        return out


def _frequency_negatives(offsets: np.ndarray, item: np.ndarray, rows: np.ndarray, n_items: int,
                         rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
    """One item per entry of ``rows``, drawn with probability proportional to item frequency and never
    an item of that row's whole history (rejected draws are redrawn, vectorised per round)."""
    freq = np.bincount(item, minlength=n_items + 1).astype(np.float64)
    freq[0] = 0
    cdf = np.cumsum(freq) / freq.sum()
    n_rows = len(offsets) - 1
    seen = np.unique(np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(offsets)) * (n_items + 1) + item)
    out = np.zeros(len(rows), dtype=np.int64)
    todo = np.arange(len(rows))
    for _ in range(max_rounds):
        if not len(todo):
            return out
        draw = np.minimum(np.searchsorted(cdf, rng.random(len(todo)), side="right"), n_items)
        key = rows[todo] * (n_items + 1) + draw
        pos = np.minimum(np.searchsorted(seen, key), len(seen) - 1)
        ok = seen[pos] != key
        out[todo[ok]] = draw[ok]
        todo = todo[~ok]
    raise RuntimeError(f"{len(todo)} negatives still collide with their histories after {max_rounds} rounds")


def dare_protocol(offsets: np.ndarray, events: dict[str, np.ndarray], item_fields: dict[str, np.ndarray],
                  max_len: int = 200, train_offsets: tuple[int, ...] = tuple(range(3, 94, 5)),
                  n_negatives: int = 2, seed: int = 0, name: str = "ctr") -> CTRData:
    """DARE's samples (official preprocessing, brief 1.3): rows with >= max_len + 10 events; positives
    are the events at -i for i in ``train_offsets`` (train), -2 (valid) and -1 (test), each with the
    events before it as history; ``n_negatives`` negatives per positive, drawn by item frequency and
    never an item of the row's history. A negative shares its positive's history."""
    item = np.asarray(events["item"], dtype=np.int64)
    lens = np.diff(offsets)
    rows = np.flatnonzero(lens >= max_len + 10).astype(np.int64)
    back = np.array(list(train_offsets) + [2, 1], dtype=np.int64)
    roles = np.array([TRAIN] * len(train_offsets) + [VALID, TEST], dtype=np.int8)
    if (back > max_len + 10).any() or (back < 1).any():
        raise ValueError(f"target offsets must lie in 1..{max_len + 10} (max_len + 10), got {back.tolist()}: "
                         "set data.ctr.train_offsets below that, or raise model.max_len")
    if min(train_offsets, default=3) < 3 or len(set(train_offsets)) != len(train_offsets):
        raise ValueError(f"train_offsets must be distinct and >= 3 (-2 and -1 are the validation and test targets), "
                         f"got {list(train_offsets)}")
    pos_ev = (offsets[rows + 1][:, None] - back[None, :]).reshape(-1)  # flat event index of each positive
    pos_row = np.repeat(rows, len(back))
    pos_role = np.tile(roles, len(rows))
    n_items = int(max([int(item.max(initial=0)), *(len(t) - 1 for t in item_fields.values())]))
    rng = np.random.default_rng(seed)
    neg_row = np.repeat(pos_row, n_negatives)
    neg = _frequency_negatives(offsets, item, neg_row, n_items, rng)
    k = 1 + n_negatives
    user = np.repeat(pos_row, k)
    hist_end = np.repeat(pos_ev, k)
    target = np.empty(len(pos_ev) * k, dtype=np.int64)
    target[0::k] = item[pos_ev]
    for j in range(n_negatives):
        target[1 + j::k] = neg[j::n_negatives]
    label = np.zeros(len(target), dtype=np.int8)
    label[0::k] = 1
    report = {"protocol": "dare", "max_len": max_len, "train_offsets": list(map(int, train_offsets)),
              "valid_offset": 2, "test_offset": 1, "negatives_per_positive": n_negatives,
              "negative_sampler": "item frequency, excluding the row's history", "seed": seed,
              "rows_kept": int(len(rows)), "rows_total": int(len(lens))}
    return CTRData(np.asarray(offsets, dtype=np.int64), {k_: np.asarray(v) for k_, v in events.items()},
                   item_fields, user, hist_end, target, label, np.repeat(pos_role, k), name, report)


__all__ = ["CTRBatcher", "CTRData", "ROLES", "TEST", "TRAIN", "VALID", "dare_protocol"]
