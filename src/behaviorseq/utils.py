"""Small shared helpers."""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: files written here get the usual mode (mkstemp's own is 0600)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside ``path`` and rename it over: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sync_folder(folder: str | Path) -> None:
    """Before a temp folder is renamed into place: its files flushed to disk (a power cut after the rename
    leaves the whole entry, not empty files under a complete-looking name) and the folder given the usual mode
    (mkdtemp's is 0700, which other users of a shared cache could not read)."""
    folder = Path(folder)
    for f in folder.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    os.chmod(folder, 0o777 & ~_UMASK)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def array_fingerprint(*arrays) -> str:
    """A short hash of arrays' bytes, in order: what results record of their data, so a run is never
    re-evaluated on other data of the same size."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit (and ".dirty" with uncommitted changes) when the code runs
    from a git checkout: results record which code made them."""
    from behaviorseq import __version__

    here = Path(__file__).resolve().parent
    if "site-packages" in here.parts:  # an installed copy: a git tree around it is not this code's
        return __version__
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}" + (".dirty" if dirty else "")


T = TypeVar("T")


def rank0_first(build: Callable[[], T], wait: timedelta) -> T:
    """Under torch.distributed with more than one rank: rank 0 runs ``build`` (which caches its result on disk)
    while the other ranks wait for it, up to ``wait``, on a gloo group of their own (the default group's timeout,
    30 minutes and NCCL's shorter, bounds no long build); then they run ``build`` too, reading that cache. A failure
    of rank 0 (an error, a dry run's stop) is raised on every rank as the same exception (a RuntimeError naming it
    where it cannot be pickled), not as a broken connection in the others. Otherwise: ``build()``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return build()
    group = dist.new_group(backend="gloo", timeout=wait)
    failed: list = [None]  # rank 0's exception, pickled (None: it built)
    error = None
    try:
        if dist.get_rank() == 0:
            try:
                out = build()
            except BaseException as e:
                error, failed[0] = e, _portable(e)
            dist.broadcast_object_list(failed, src=0, group=group)
        else:
            dist.broadcast_object_list(failed, src=0, group=group)
            if failed[0] is None:
                out = build()
            else:
                error = pickle.loads(failed[0])
    finally:
        dist.destroy_process_group(group)
    if error is not None:
        raise error
    return out


def _portable(e: BaseException) -> bytes:
    """``e`` pickled for the other ranks, or, where it does not survive pickling (an exception whose constructor
    needs more than its message, or one holding a lock), a RuntimeError naming it."""
    try:
        data = pickle.dumps(e)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"rank 0 failed: {type(e).__name__}: {e}"))
