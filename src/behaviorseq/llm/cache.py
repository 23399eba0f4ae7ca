"""Record / replay of LLM completions on disk, with a spending guard (see ``CachedBackend``)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

from behaviorseq.llm.backends import CompletionBackend, LLMDryRun, LLMError


def _key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


class CachedBackend:
    """Record / replay: completions kept in a JSON-lines file (``{"key": sha256(prompt), "completion": ...}`` per
    line, ASCII). Prompts not yet there go to ``backend`` ``chunk`` at a time; each chunk's completions are appended
    (and fsynced) when the chunk ends, those received before a failure or an interrupt included, so a hard kill
    loses at most the chunk in flight; lines already written are never rewritten. Before each chunk the file is
    read again, so prompts another process (a parallel seed) answered meanwhile are not asked twice; an append
    reads what others appended (under a lock) and keeps the first completion of a key. A line cut short by an
    interrupted write is skipped (its prompt is asked again). The file is read on the first call, not before.

    Spending guard (:meth:`preflight`, also applied by :meth:`complete` to its own prompts): ``dry_run`` lists the
    prompts not in the cache in a file beside it (``self.pending``) and raises :class:`LLMDryRun` with their count;
    ``max_new`` refuses to send more than that many prompts in this object's life (None: no limit; a count per process, not
    shared with other runs on the file). ``setting`` names where the user sets these, for the messages. Each
    process sends its prompts in an order of its own, so runs started together ask few prompts twice."""

    def __init__(self, backend: CompletionBackend, path: str | Path, chunk: int = 64, dry_run: bool = False,
                 max_new: int | None = None, setting: str = "llm"):
        self.backend, self.path, self.chunk, self.name = backend, Path(path), chunk, f"cached:{backend.name}"
        self.dry_run, self.max_new, self.setting = dry_run, max_new, setting
        self.sent = 0  # prompts handed to the backend so far (answered or not)
        self.pending: Path | None = None  # the last dry run's list of prompts to send
        self._memory: dict[str, str] | None = None
        self.offset = 0  # bytes of the file read into memory
        self.inode: int | None = None  # the file they were read from
        self.skipped = 0  # unreadable lines

    @property
    def memory(self) -> dict[str, str]:
        if self._memory is None:
            self._memory = {}
            if self.path.exists():
                with open(self.path, "rb") as f:
                    self._read(f)
                if self.skipped:
                    warnings.warn(f"{self.path}: {self.skipped} unreadable line(s) skipped (an interrupted write?); "
                                  "their prompts are asked again", stacklevel=2)
        return self._memory

    def _read(self, f) -> None:
        """Lines from ``self.offset`` on into memory (the first completion of a key wins); a last line without
        its newline is left for later (another process may be writing it). A file replaced or cut shorter since
        (another process cleared the cache) is read again from its start, and its answers replace ours."""
        st = os.fstat(f.fileno())
        if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
            self._memory, self.offset = {}, 0
        self.inode = st.st_ino
        f.seek(self.offset)
        for line in f.read().splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            self.offset += len(line)
            try:
                rec = json.loads(line)
                self._memory.setdefault(rec["key"], str(rec["completion"]))
            except (ValueError, KeyError, TypeError):
                self.skipped += line.strip() != b""

    def refresh(self) -> None:
        """Read what other processes appended since (a run sharing the cache need not ask for those)."""
        if self.path.exists():
            with open(self.path, "rb") as f:
                self.memory  # noqa: B018  (loaded first, with its warnings)
                self._read(f)

    @property
    def guarded(self) -> bool:
        return self.dry_run or self.max_new is not None

    def preflight(self, prompt_lists: Iterable[list[str]]) -> dict[str, int]:
        """Count the prompts of ``prompt_lists`` that are not in the cache, before any is sent, and apply the
        spending guard to them (see the class): a dry run always stops here, with nothing to send too. Returns
        ``{"prompts", "new", "characters"}`` (characters of the new prompts); without a guard, counts nothing.
        A dry run lists the new prompts in ``<cache>.pending-<digest of all the prompts' keys>.jsonl``
        (``self.pending``): one list per prompt set, replaced by the next dry run of the same set."""
        counts = {"prompts": 0, "new": 0, "characters": 0}
        if not self.guarded:
            return counts
        self.refresh()
        memory, seen, whole = self.memory, set(), hashlib.sha256()
        out = tmp = None
        if self.dry_run:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.parent / f".{self.path.stem}.pending.{os.getpid()}.{threading.get_ident()}.tmp"
            out = open(tmp, "w", encoding="ascii")  # the usual permissions (mkstemp's are owner-only)
        try:
            for prompts in prompt_lists:
                for p in prompts:
                    counts["prompts"] += 1
                    k = _key(p)
                    digest = bytes.fromhex(k)  # half the memory of the hex string
                    whole.update(digest)
                    if k in memory or digest in seen:
                        continue
                    seen.add(digest)
                    counts["new"] += 1
                    counts["characters"] += len(p)
                    if out is not None:
                        out.write(json.dumps({"key": k, "prompt": p}) + "\n")
            if out is not None:
                out.close()
                self.pending = self.path.with_name(f"{self.path.stem}.pending-{whole.hexdigest()[:12]}.jsonl")
                os.replace(tmp, self.pending)
        except BaseException:
            if out is not None:
                out.close()
                os.unlink(tmp)
            raise
        self._guard(counts)
        return counts

    def _guard(self, counts: dict[str, int]) -> None:
        new, chars = counts["new"], counts["characters"]
        out_tokens = getattr(getattr(self.backend, "cfg", None), "max_tokens", None)
        cost = (f"{new:,} prompt(s) of {counts['prompts']:,} are not in the cache {self.path} ({chars:,} characters, "
                f"about {chars // 4:,} input tokens at 4 characters a token"
                + (f", at most {new * out_tokens:,} output tokens" if out_tokens else "") + ")")
        if self.dry_run:
            raise LLMDryRun(f"dry run, nothing sent: {cost}; they are listed in {self.pending}. "
                            f"{self.setting}.dry_run=false sends them")
        if self.max_new is not None and new and self.sent + new > self.max_new:
            raise LLMError(f"nothing sent: {cost}, and {self.setting}.max_new_prompts is {self.max_new:,}"
                           + (f" ({self.sent:,} sent already)" if self.sent else "")
                           + f" (a count per process: runs sharing the cache each have their own). Raise it (null: "
                           f"no limit), or list them first with {self.setting}.dry_run=true")

    def complete(self, prompts: list[str]) -> list[str]:
        keys = [_key(p) for p in prompts]
        memory = self.memory
        have = {k: memory[k] for k in keys if k in memory}  # this call's answers, also if the file is cleared meanwhile
        todo = list({k: p for k, p in zip(keys, prompts) if k not in have}.items())
        if todo and self.guarded:
            self.preflight([prompts])
        # in an order of this process's own: runs sharing the cache rarely ask the same prompts at once (in one
        # order, a run that caught up with another would follow it chunk for chunk)
        random.Random(f"{os.getpid()}:{id(self)}").shuffle(todo)
        bar = None
        if todo and os.environ.get("BEHAVIORSEQ_PROGRESS", "1") != "0" and len(todo) > self.chunk:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"LLM summaries ({self.backend.name})", unit="prompt")
        try:
            i = 0
            while i < len(todo):
                self.refresh()
                memory, part, skipped = self.memory, [], 0
                while i < len(todo) and len(part) < self.chunk:  # the next chunk of prompts nobody has answered
                    k, p = todo[i]
                    i += 1
                    if k in memory:  # another process answered it meanwhile
                        have[k], skipped = memory[k], skipped + 1
                    else:
                        part.append((k, p))
                if bar is not None:
                    bar.update(skipped)
                if not part:
                    continue
                got: dict[int, str] = {}
                self.sent += len(part)
                try:
                    if hasattr(self.backend, "complete_into"):
                        self.backend.complete_into([p for _, p in part], got)
                    else:
                        answers = self.backend.complete([p for _, p in part])
                        if len(answers) != len(part):
                            raise LLMError(f"{self.backend.name}: {len(answers)} completions for {len(part)} prompts")
                        got = dict(enumerate(answers))
                finally:
                    if got:  # what arrived is kept, the failure or not
                        have.update(self._append([(part[j][0], got[j]) for j in sorted(got)]))
                if bar is not None:
                    bar.update(len(part))
        finally:
            if bar is not None:
                bar.close()
        return [have[k] for k in keys]

    def _append(self, pairs: list[tuple[str, str]]) -> dict[str, str]:
        """Append the pairs whose keys the file lacks; returns each key's completion as the file now has it (another
        process's, where it wrote the key first)."""
        self.memory  # noqa: B018  (loaded first)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            _lock(f)
            self._read(f)  # other processes' appends since: their completions win, no second line per key
            memory = self._memory  # after the read: a file replaced meanwhile gives a new dict
            new = [(k, c) for k, c in pairs if k not in memory]
            f.seek(0, os.SEEK_END)
            size = f.tell()
            torn = False
            if size:  # a line cut short before: start on a fresh line so this chunk stays readable
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            text = ("\n" if torn else "") + "".join(json.dumps({"key": k, "completion": c}) + "\n" for k, c in new)
            f.write(text.encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
            self.offset = size + len(text)
        memory.update(new)
        return {k: memory[k] for k, _ in pairs}


def _lock(f) -> None:
    """An exclusive lock for the append (two runs sharing one cache); released when the file closes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: appends of one write each, unlocked
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)

