"""Typed schema of an event table: what kind of value each field holds.

Three fields have fixed names and roles: ``user`` and ``item`` (categorical ids as found in the source)
and ``timestamp`` (numeric, seconds or any monotone clock; for sources without times it is the
position of the event in its user's sequence). Every other field keeps its source name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pyarrow as pa

USER, ITEM, TIME = "user", "item", "timestamp"


class Kind(str, Enum):
    CATEGORICAL = "categorical"
    NUMERIC = "numeric"
    TIMESTAMP = "timestamp"
    TEXT = "text"
    CATEGORICAL_LIST = "categorical_list"
    NUMERIC_LIST = "numeric_list"

    @property
    def is_list(self) -> bool:
        return self in (Kind.CATEGORICAL_LIST, Kind.NUMERIC_LIST)


# RecBole atomic-file header types (``name:type``) and the kinds they map to.
RECBOLE_TYPES = {
    "token": Kind.CATEGORICAL,
    "token_seq": Kind.CATEGORICAL_LIST,
    "float": Kind.NUMERIC,
    "float_seq": Kind.NUMERIC_LIST,
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind.value}


@dataclass(frozen=True)
class Schema:
    """Ordered fields of one table. Unknown kinds or duplicate names are errors."""

    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"schema has duplicate field names: {sorted(dup)}")

    @classmethod
    def of(cls, **kinds: Kind | str) -> Schema:
        return cls(tuple(Field(n, Kind(k)) for n, k in kinds.items()))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def kind(self, name: str) -> Kind:
        for f in self.fields:
            if f.name == name:
                return f.kind
        raise KeyError(f"no field {name!r} in schema; fields are {self.names}")

    def select(self, names: list[str]) -> Schema:
        return Schema(tuple(Field(n, self.kind(n)) for n in names))

    def to_dict(self) -> list[dict]:
        return [f.to_dict() for f in self.fields]

    @classmethod
    def from_dict(cls, rows: list[dict]) -> Schema:
        return cls(tuple(Field(r["name"], Kind(r["kind"])) for r in rows))

    def check(self, table: pa.Table, what: str = "table") -> None:
        """Fail with the field's name if ``table`` lacks a field or holds the wrong kind of value."""
        for f in self.fields:
            if f.name not in table.column_names:
                raise ValueError(f"{what}: field {f.name!r} ({f.kind.value}) is missing; columns are {table.column_names}")
            t = table.schema.field(f.name).type
            ok = {
                Kind.CATEGORICAL: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_dictionary(t),
                Kind.NUMERIC: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t),
                Kind.TIMESTAMP: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t),
                Kind.TEXT: pa.types.is_string(t) or pa.types.is_large_string(t),
                Kind.CATEGORICAL_LIST: pa.types.is_list(t) or pa.types.is_large_list(t),
                Kind.NUMERIC_LIST: pa.types.is_list(t) or pa.types.is_large_list(t),
            }[f.kind]
            if not ok:
                raise TypeError(f"{what}: field {f.name!r} is declared {f.kind.value} but holds Arrow type {t}")
