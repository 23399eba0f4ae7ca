"""What the topic-driven sequence generators (``seqrec``, ``multi_interest``) share once their items are drawn:
the users' clocks and the event table with its item table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from behaviorseq.data.events import EventTable
from behaviorseq.data.schema import ITEM, TIME, USER, Kind, Schema


def user_clocks(lengths: np.ndarray, mean_gap: float, start_time: int, start_spread: int,
                rng: np.random.Generator) -> np.ndarray:
    """int64 timestamps of events laid out user after user (``lengths`` each): each user's first event at a uniform
    integer in [start_time, start_time + start_spread), then gaps of 1 + floor(Exp(mean_gap)), so strictly
    increasing per user. Draws the gaps, then the starts (the generators' seeded order)."""
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gaps = 1 + np.floor(rng.exponential(mean_gap, size=int(lengths.sum()))).astype(np.int64)
    gaps[first] = 0
    clock = np.cumsum(gaps)
    starts = start_time + rng.integers(0, start_spread, size=len(lengths), dtype=np.int64)
    return clock - np.repeat(clock[first] - starts, lengths)


def topic_event_table(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, topics: np.ndarray,
                      item_topic: np.ndarray, column: str, name: str, config_dict: dict) -> EventTable:
    """The events (user, item, timestamp and the event's topic under ``column``) and every item 1..n with its
    topic (``item_topic[1:]``; index 0 is the padding row), all int64."""
    events = pa.table({USER: pa.array(users, pa.int64()), ITEM: pa.array(items, pa.int64()),
                       TIME: pa.array(timestamps, pa.int64()), column: pa.array(topics, pa.int64())})
    item_table = pa.table({ITEM: pa.array(np.arange(1, len(item_topic)), pa.int64()),
                           column: pa.array(item_topic[1:], pa.int64())})
    return EventTable(
        events,
        Schema.of(**{USER: Kind.CATEGORICAL, ITEM: Kind.CATEGORICAL, TIME: Kind.TIMESTAMP, column: Kind.CATEGORICAL}),
        items=item_table,
        item_schema=Schema.of(**{ITEM: Kind.CATEGORICAL, column: Kind.CATEGORICAL}),
        name=name,
        report={"generator": name, "config": config_dict},
    )
