"""glibc malloc settings for training processes.

By default glibc serves every allocation above 128 KiB-32 MiB with a fresh ``mmap`` and returns it on
free, so each training step page-faults its large temporaries again (the [N, n_items] logits of a
full-softmax loss are 87 MB on Beauty). Keeping freed memory in the heap instead makes a SASRec step on
Beauty 1.4x faster on the project's 2-core machines (``benchmarks/train_step_speed.py``); RecBole's
SASRec gains 1.6x the same way (benchmarks README, section 5). The cost: the process keeps its peak
heap until it exits. Applied by :func:`behaviorseq.train.run_experiment` once per process; set
``BEHAVIORSEQ_MALLOC_TUNING=0`` to leave the allocator alone. No-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters (malloc.h) and the values of the MALLOC_*_ environment variables they replace
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
SETTINGS = {"mmap_max": 0, "trim_threshold": 2**31 - 1, "top_pad": 512 << 20}
_applied: dict | None = None


def tune_malloc() -> dict:
    """Apply :data:`SETTINGS` through ``mallopt`` once; returns what was done (recorded in metrics.json)."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("BEHAVIORSEQ_MALLOC_TUNING", "1") == "0":
        _applied = {"tuned": False, "reason": "BEHAVIORSEQ_MALLOC_TUNING=0"}
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _applied = {"tuned": False, "reason": "not glibc"}
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        ok = [libc.mallopt(_M_MMAP_MAX, SETTINGS["mmap_max"]), libc.mallopt(_M_TRIM_THRESHOLD, SETTINGS["trim_threshold"]),
              libc.mallopt(_M_TOP_PAD, SETTINGS["top_pad"])]
        _applied = {"tuned": all(r == 1 for r in ok), **SETTINGS}
    return _applied


def malloc_env() -> dict[str, str]:
    """:data:`SETTINGS` as glibc's ``MALLOC_*_`` environment variables, for a subprocess (e.g. a peer's side
    of a benchmark, which runs no ``tune_malloc``)."""
    return {"MALLOC_MMAP_MAX_": str(SETTINGS["mmap_max"]), "MALLOC_TRIM_THRESHOLD_": str(SETTINGS["trim_threshold"]),
            "MALLOC_TOP_PAD_": str(SETTINGS["top_pad"])}
