"""EventTable: the one in-memory form every loader produces.

An Arrow table of events (one row per event, columns ``user``, ``item``, ``timestamp`` plus optional
fields such as ``behavior``, ``rating``, ``category``), a Schema naming each field's kind, and optional
side tables of item and user features keyed by the raw ``item`` / ``user`` id. Raw ids are kept as
found in the source; encoding to contiguous ints happens in ``data.preprocess``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from behaviorseq.data.schema import ITEM, TIME, USER, Kind, Schema


@dataclass
class EventTable:
    events: pa.Table
    schema: Schema
    items: pa.Table | None = None
    item_schema: Schema | None = None
    users: pa.Table | None = None
    user_schema: Schema | None = None
    sources: list[str] = field(default_factory=list)  # files read, for provenance and cache keys
    name: str = "events"
    # What the loader noticed: e.g. {"skipped_rows": 3, "bad_rows": [{"file", "line", "field", "reason"}, ...]}
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for role in (USER, ITEM, TIME):
            if role not in self.schema:
                raise ValueError(f"{self.name}: event schema lacks the required field {role!r}")
        self.schema.check(self.events, f"{self.name} events")
        if self.items is not None:
            if self.item_schema is None or ITEM not in self.item_schema:
                raise ValueError(f"{self.name}: an item table needs an item_schema with an {ITEM!r} field")
            self.item_schema.check(self.items, f"{self.name} items")
        if self.users is not None:
            if self.user_schema is None or USER not in self.user_schema:
                raise ValueError(f"{self.name}: a user table needs a user_schema with a {USER!r} field")
            self.user_schema.check(self.users, f"{self.name} users")

    def __len__(self) -> int:
        return self.events.num_rows

    @property
    def num_events(self) -> int:
        return self.events.num_rows

    @property
    def num_users(self) -> int:
        return pc.count_distinct(self.events[USER]).as_py()

    @property
    def num_items(self) -> int:
        return pc.count_distinct(self.events[ITEM]).as_py()

    def column(self, name: str) -> np.ndarray:
        return self.events[name].to_numpy()

    def field_kinds(self) -> dict[str, Kind]:
        return {f.name: f.kind for f in self.schema.fields}

    def replace(self, events: pa.Table) -> EventTable:
        """Same side tables and provenance, new events (used by filters)."""
        return EventTable(events, self.schema.select([n for n in self.schema.names if n in events.column_names]),
                          self.items, self.item_schema, self.users, self.user_schema, list(self.sources), self.name, dict(self.report))

    def __repr__(self) -> str:
        extra = [f.name for f in self.schema.fields if f.name not in (USER, ITEM, TIME)]
        return (f"EventTable({self.name!r}, events={self.num_events:,}, fields={extra}, "
                f"items={'yes' if self.items is not None else 'no'}, users={'yes' if self.users is not None else 'no'})")
