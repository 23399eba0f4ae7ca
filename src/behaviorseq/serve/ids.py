"""Raw ids to a run's internal ids, matched as the data wrote them (shared by every served model)."""

from __future__ import annotations

import numpy as np

_INTS = {int, np.int64, np.int32}


class RawIds:
    """``lookup(raw) -> internal ids`` for a vocabulary whose internal id k + 1 is ``raw[k]`` (0 = unknown)."""

    def __init__(self, raw: list | np.ndarray, source: str = "items.parquet"):
        self.raw = np.asarray(raw)
        self.order = np.argsort(self.raw, kind="stable")  # raw id -> internal id by binary search
        if len(self.raw) > 1 and (self.raw[self.order][1:] == self.raw[self.order][:-1]).any():
            raise ValueError(f"{source}: a raw id occurs twice")

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def integer(self) -> bool:
        return self.raw.dtype.kind in "iu"

    def lookup(self, raw: list) -> np.ndarray:
        """Internal ids of raw ids (0 where unknown). An id of another type than the vocabulary's (the
        string "12" for integer ids, or 12 for string ids) is unknown: ids are matched as the data wrote them."""
        ints = self.integer
        kinds = set(map(type, raw))  # numpy would turn [1, "x"] into two strings: check the types first
        q = np.asarray(raw)
        if kinds <= (_INTS if ints else {str}) and q.dtype.kind in ("iu" if ints else "U"):
            ok = np.ones(len(q), dtype=bool)  # one type throughout: no per-id work
        else:  # mixed types, bools, objects: per id
            ok = np.array([(isinstance(x, (int, np.integer)) and not isinstance(x, bool)) if ints
                           else isinstance(x, str) for x in raw], dtype=bool)
            q = np.array([x if o else (0 if ints else "") for x, o in zip(raw, ok)], dtype=np.int64 if ints else str)
        if not ok.any() or self.raw.size == 0:
            return np.zeros(len(ok), dtype=np.int64)
        idx = self.order[np.minimum(np.searchsorted(self.raw, q, sorter=self.order), len(self.raw) - 1)]
        return np.where(ok & (self.raw[idx] == q), idx + 1, 0).astype(np.int64)

    def parse_cli(self, text: str) -> list:
        """Comma-separated ids from a command line (text) as the data's ids: digits become integers when the
        vocabulary is integer."""
        return [int(x) if self.integer and x.lstrip("-").isdigit() else x for x in text.split(",") if x]
