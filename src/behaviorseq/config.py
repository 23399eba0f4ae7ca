"""Strict typed configs: an unknown or misspelt key is an error that lists the valid keys."""

from __future__ import annotations

from typing import Any

import pydantic


class ConfigError(ValueError):
    pass


class StrictConfig(pydantic.BaseModel):
    """Base of every config. ``extra='forbid'`` plus a message naming the valid keys."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> StrictConfig:
        data = {**(data or {}), **overrides}
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(cls.model_fields)}")
        try:
            return cls(**data)
        except pydantic.ValidationError as e:
            raise ConfigError(f"{cls.__name__}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> nested dict with YAML-typed values (``1`` -> int, ``true`` -> bool)."""
    import yaml

    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"override {p!r} is not key=value")
        key, val = p.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = yaml.safe_load(val)
    return out
