"""Raw ids to a run's internal ids, matched as the data wrote them (shared by every served model)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INTS = (int, np.integer)
_I64 = (-2**63, 2**63)


class RawIds:
    """``lookup(raw) -> internal ids`` for a vocabulary whose internal id k + 1 is ``raw[k]`` (0 = unknown)."""

    def __init__(self, raw: list | np.ndarray, source: str = "items.parquet"):
        self.raw = np.asarray(raw)
        self.order = np.argsort(self.raw, kind="stable")  # raw id -> internal id by binary search
        if len(self.raw) > 1 and (self.raw[self.order][1:] == self.raw[self.order][:-1]).any():
            raise ValueError(f"{source}: a raw id occurs twice")
        self.strings = None if self.integer else pa.array(self.raw.tolist(), pa.string())

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def integer(self) -> bool:
        return self.raw.dtype.kind in "iu"

    def lookup(self, raw: list) -> np.ndarray:
        """Internal ids of raw ids (0 where unknown). An id of another type than the vocabulary's (the
        string "12" for integer ids, or 12 for string ids) is unknown: ids are matched as the data wrote them.
        No array is sized by the longest requested id (numpy's fixed-width strings would be)."""
        if len(raw) == 0 or self.raw.size == 0:
            return np.zeros(len(raw), dtype=np.int64)
        if not self.integer:  # strings through Arrow: anything else is unknown
            arr = pa.array([x if isinstance(x, str) else None for x in raw], pa.string())
            found = pc.index_in(arr, value_set=self.strings)
            return (found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1)
        ok = np.fromiter((isinstance(x, _INTS) and not isinstance(x, bool) and _I64[0] <= x < _I64[1] for x in raw),
                         dtype=bool, count=len(raw))
        q = np.fromiter((x if o else 0 for x, o in zip(raw, ok)), dtype=np.int64, count=len(raw))
        idx = self.order[np.minimum(np.searchsorted(self.raw, q, sorter=self.order), len(self.raw) - 1)]
        return np.where(ok & (self.raw[idx] == q), idx + 1, 0).astype(np.int64)

    def parse_cli(self, text: str) -> list:
        """Comma-separated ids from a command line (text) as the data's ids: digits become integers when the
        vocabulary is integer."""
        return [int(x) if self.integer and x.lstrip("-").isdigit() else x for x in text.split(",") if x]
