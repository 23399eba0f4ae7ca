"""What every served model shares: a trained run's config checked for its task (``run_config``), and raw ids
to the run's internal ids, matched as the data wrote them (``RawIds``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_INTS = (int, np.integer)
DECIMAL = re.compile(r"-?[0-9]{1,20}")


def as_int(x) -> int | None:
    """An integer id, or the integer a canonical decimal string spells ("12", "-3"; not "012", "+1", " 3")."""
    if isinstance(x, bool):
        return None
    if isinstance(x, _INTS):
        return int(x)
    if isinstance(x, str) and DECIMAL.fullmatch(x):
        v = int(x)
        return v if str(v) == x else None
    return None


class RawIds:
    """``lookup(raw) -> internal ids`` for a vocabulary whose internal id k + 1 is ``raw[k]`` (0 = unknown):
    integers (signed or unsigned 64-bit) or strings."""

    def __init__(self, raw: list | np.ndarray, source: str = "items.parquet"):
        raw = np.asarray(raw)
        if raw.dtype.kind == "O" and all(isinstance(x, str) for x in raw.tolist()):
            raw = raw.astype(str)
        if raw.size and raw.dtype.kind not in "iuU":
            raise ValueError(f"{source}: raw ids must be integers or strings, got dtype {raw.dtype} (ids above 2**63 "
                             "mixed with others? read them as unsigned 64-bit)")
        self.raw = raw
        self.order = np.argsort(self.raw, kind="stable")  # raw id -> internal id by binary search
        if len(self.raw) > 1 and (self.raw[self.order][1:] == self.raw[self.order][:-1]).any():
            raise ValueError(f"{source}: a raw id occurs twice")
        # strings: a dict built once (a per-call hash set of the vocabulary cost 0.1 s a call at 1M items)
        self.index = None if self.integer else {s: i + 1 for i, s in enumerate(self.raw.tolist())}
        self.bounds = (0, 2**64) if self.raw.dtype.kind == "u" else (-2**63, 2**63)

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def integer(self) -> bool:
        return self.raw.dtype.kind in "iu"

    def lookup(self, raw: list) -> np.ndarray:
        """Internal ids of raw ids (0 where unknown). An integer and its decimal string are the same id (JSON
        and command lines cannot say which type a data set's loader gave its ids: ml-100k's RecBole tokens are
        strings, Beauty's are integers): 3 finds "3" in a string vocabulary, "3" finds 3 in an integer one;
        "03" or " 3" find only themselves, booleans nothing. No array is sized by the longest requested id."""
        if len(raw) == 0 or self.raw.size == 0:
            return np.zeros(len(raw), dtype=np.int64)
        if not self.integer:
            get = self.index.get
            return np.fromiter((get(x if isinstance(x, str) else str(int(x)), 0)
                                if isinstance(x, (str, *_INTS)) and not isinstance(x, bool) else 0 for x in raw),
                               dtype=np.int64, count=len(raw))
        vals = [as_int(x) for x in raw]
        lo, hi = self.bounds
        ok = np.fromiter((v is not None and lo <= v < hi for v in vals), dtype=bool, count=len(raw))
        q = np.fromiter((v if o else 0 for v, o in zip(vals, ok)), count=len(raw),
                        dtype=np.uint64 if self.raw.dtype.kind == "u" else np.int64)
        idx = self.order[np.minimum(np.searchsorted(self.raw, q, sorter=self.order), len(self.raw) - 1)]
        return np.where(ok & (self.raw[idx] == q), idx + 1, 0).astype(np.int64)

    def parse_cli(self, text: str) -> list:
        """Comma-separated ids from a command line (text) as the data's ids: digits become integers when the
        vocabulary is integer."""
        fields = [x.strip() for x in text.split(",")]  # "3, 5, 7" as typed on a command line: the ids 3, 5, 7
        return [int(x) if self.integer and DECIMAL.fullmatch(x) else x for x in fields if x]


def check_id_lists(lists, what: str = "history") -> None:
    """Each of ``lists`` must be a list of raw ids (a list, tuple or array), never a string, whose characters
    would be read as ids one by one ("12" as the ids 1 and 2), nor a single id."""
    for i, x in enumerate(lists):
        if isinstance(x, (str, bytes)) or not isinstance(x, (list, tuple, np.ndarray)):
            raise ValueError(f"{what} {i} is {x!r}, not a list of raw ids: one user's {what} is a list, e.g. "
                             f"[[12, 58]] for a single user with the ids 12 and 58")


def run_config(run_dir: str | Path, task: str, served_by: str):
    """The resolved config of the run in ``run_dir``; ValueError unless it trained ``task``."""
    from behaviorseq.train.run import load_run_config

    cfg = load_run_config(run_dir)
    if cfg.task != task:
        raise ValueError(f"{run_dir}: a {cfg.task} run; {served_by}")
    return cfg
