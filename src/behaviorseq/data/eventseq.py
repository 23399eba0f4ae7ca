"""Event sequences for temporal point processes: many sequences of (time, type) in one CSR layout.

Sequence ``n`` holds events ``offsets[n]:offsets[n + 1]`` of the flat ``time`` (float64, non-decreasing
within a sequence) and ``type`` (int64 in ``0..num_types - 1``) arrays. This is the TPP counterpart of
``SequenceStore``: times are continuous and types are a small closed set, so no vocabulary is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from behaviorseq.data.store import ragged_arange


@dataclass
class EventSequences:
    offsets: np.ndarray  # int64 [N + 1]
    time: np.ndarray  # float64 [E]
    type: np.ndarray  # int64 [E]
    num_types: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.time = np.asarray(self.time, dtype=np.float64)
        self.type = np.asarray(self.type, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        if np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != len(self.time) or len(self.time) != len(self.type):
            raise ValueError(f"offsets end at {self.offsets[-1]} but there are {len(self.time)} times and "
                             f"{len(self.type)} types")
        if self.num_types < 1:
            raise ValueError(f"num_types must be >= 1, got {self.num_types}")
        if len(self.type) and (self.type.min() < 0 or self.type.max() >= self.num_types):
            bad = int(np.flatnonzero((self.type < 0) | (self.type >= self.num_types))[0])
            raise ValueError(f"event {bad}: type {self.type[bad]} is outside 0..{self.num_types - 1}")
        if not np.all(np.isfinite(self.time)):
            raise ValueError(f"event {int(np.flatnonzero(~np.isfinite(self.time))[0])}: time is not finite")
        first = np.zeros(len(self.time), dtype=bool)
        first[self.offsets[:-1][self.lengths > 0]] = True
        back = np.flatnonzero((np.diff(self.time, prepend=-np.inf) < 0) & ~first)
        if len(back):
            raise ValueError(f"event {int(back[0])}: time {self.time[back[0]]} is before the previous event's")

    @classmethod
    def from_lists(cls, times: list, types: list, num_types: int | None = None, meta: dict | None = None) -> EventSequences:
        """From per-sequence lists/arrays of times and types (``num_types`` defaults to max type + 1)."""
        if len(times) != len(types):
            raise ValueError(f"{len(times)} time sequences but {len(types)} type sequences")
        lens = np.array([len(t) for t in times], dtype=np.int64)
        for n, (t, k) in enumerate(zip(times, types)):
            if len(t) != len(k):
                raise ValueError(f"sequence {n}: {len(t)} times but {len(k)} types")
        offsets = np.concatenate([[0], np.cumsum(lens)])
        time = np.concatenate([np.asarray(t, dtype=np.float64) for t in times]) if len(times) else np.zeros(0)
        typ = np.concatenate([np.asarray(k, dtype=np.int64) for k in types]) if len(types) else np.zeros(0, np.int64)
        if num_types is None:
            num_types = int(typ.max()) + 1 if len(typ) else 1
        return cls(offsets, time, typ, num_types, dict(meta or {}))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def num_events(self) -> int:
        return int(self.offsets[-1])

    def sequence(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.offsets[n], self.offsets[n + 1]
        return self.time[s:e], self.type[s:e]

    def seq_index(self) -> np.ndarray:
        """The sequence of every event, [E]."""
        return np.repeat(np.arange(len(self)), self.lengths)

    def dtime(self) -> np.ndarray:
        """Time since the previous event of the same sequence, 0 for a first event, [E]."""
        d = np.diff(self.time, prepend=0.0)
        d[self.offsets[:-1][self.lengths > 0]] = 0.0
        return d

    def subset(self, idx: np.ndarray) -> EventSequences:
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths[idx]
        take = np.repeat(self.offsets[idx], lens) + ragged_arange(lens)
        return EventSequences(np.concatenate([[0], np.cumsum(lens)]), self.time[take], self.type[take],
                              self.num_types, dict(self.meta))

    def split(self, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
              shuffle: bool = True) -> tuple[EventSequences, EventSequences, EventSequences]:
        """Sequences (not events) split into train / valid / test."""
        if abs(sum(fractions) - 1) > 1e-9 or any(not 0 <= f <= 1 for f in fractions):  # a negative one overlapped
            raise ValueError(f"fractions must lie in [0, 1] and sum to 1, got {fractions}")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        a = int(round(fractions[0] * len(self)))
        b = a + int(round(fractions[1] * len(self)))
        return self.subset(np.sort(order[:a])), self.subset(np.sort(order[a:b])), self.subset(np.sort(order[b:]))

    def time_windows(self, edges: list[float], min_len: int = 2, rebase: bool = True) -> list[EventSequences]:
        """The stream cut at the time ``edges`` (n + 1 increasing values) into n windows (PromptTPP's
        tasks): window w keeps the events with ``edges[w] <= t < edges[w + 1]`` of every sequence that
        has at least ``min_len`` of them. With ``rebase``, times restart at the window's start."""
        edges = [float(e) for e in edges]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"time_windows needs >= 2 increasing edges, got {edges}")
        seq = self.seq_index()
        out = []
        for w, (lo, hi) in enumerate(zip(edges, edges[1:])):
            keep = (self.time >= lo) & (self.time < hi)
            counts = np.bincount(seq[keep], minlength=len(self))
            keep &= counts[seq] >= min_len
            lens = np.bincount(seq[keep], minlength=len(self))
            lens = lens[lens > 0]
            t = self.time[keep] - (lo if rebase else 0.0)
            out.append(EventSequences(np.concatenate([[0], np.cumsum(lens)]), t, self.type[keep], self.num_types,
                                      {**self.meta, "window": w, "window_edges": [lo, hi]}))
        return out

    def stats(self) -> dict:
        lens, dt = self.lengths, self.dtime()
        inner = np.ones(self.num_events, dtype=bool)
        inner[self.offsets[:-1][lens > 0]] = False
        return {"sequences": len(self), "events": self.num_events, "num_types": self.num_types,
                "mean_length": float(lens.mean()) if len(lens) else 0.0,
                "max_length": int(lens.max()) if len(lens) else 0,
                "mean_dtime": float(dt[inner].mean()) if inner.any() else 0.0,
                "type_counts": np.bincount(self.type, minlength=self.num_types).tolist()}


def concat(parts: list[EventSequences]) -> EventSequences:
    """Sequences of several sets (same ``num_types``) in one set; joint training over windows."""
    if not parts:
        raise ValueError("concat needs at least one EventSequences")
    k = {p.num_types for p in parts}
    if len(k) != 1:
        raise ValueError(f"cannot concatenate sets with different num_types {sorted(k)}")
    lens = np.concatenate([p.lengths for p in parts])
    return EventSequences(np.concatenate([[0], np.cumsum(lens)]), np.concatenate([p.time for p in parts]),
                          np.concatenate([p.type for p in parts]), parts[0].num_types, {"parts": len(parts)})
