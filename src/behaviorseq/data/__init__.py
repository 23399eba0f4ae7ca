"""The data layer: events -> EventTable -> preprocessing -> SequenceStore -> split views -> batches."""

from behaviorseq.data.datasets import REGISTRY, load_events, open_dataset, stats
from behaviorseq.data.events import EventTable
from behaviorseq.data.preprocess import Dedup, KCore, Label, MinLength, Threshold, Truncate, run
from behaviorseq.data.schema import Kind, Schema
from behaviorseq.data.splits import (
    Split,
    View,
    leave_one_out,
    make_split,
    rolling_windows,
    temporal,
    user_holdout,
)
from behaviorseq.data.store import SequenceStore

__all__ = [
    "REGISTRY", "EventTable", "Kind", "Schema", "SequenceStore", "Split", "View",
    "Dedup", "KCore", "Label", "MinLength", "Threshold", "Truncate",
    "load_events", "open_dataset", "stats", "run",
    "leave_one_out", "make_split", "rolling_windows", "temporal", "user_holdout",
]
