"""The LLM summary step of SRA-CL (Cui et al., NeurIPS 2025, arXiv 2503.04162, Sec. 3.1 and its appendix).

The paper asks DeepSeek-V3 ("deepseek-chat", temperature 0, top_p 0.001) to summarise every item and every
training prefix, then embeds the summaries. Here (``semantic.llm`` in SRA-CL's config):

    SummaryBackend        the interface: ``name`` and ``complete(prompts) -> completions``, in order
    OpenAIChatBackend     any OpenAI-compatible ``/chat/completions`` endpoint (DeepSeek, OpenAI, vLLM, llama.cpp's
                          server, Ollama's /v1), standard library only: concurrent requests, retries with backoff
                          on 429 / 5xx / timeouts / dropped connections, an error naming the endpoint when nothing
                          listens there; the API key only from the variable ``api_key_env`` names (none by default)
    DeterministicBackend  a pure function of the prompt, for tests
    CachedBackend         record / replay in an append-only JSON-lines file, written as answers arrive: an
                          interrupted run keeps what it received, a rerun asks only for the rest, a finished one
                          asks nothing; processes sharing the file (DDP ranks, parallel seeds) write a key once

The item prompt lists up to 5 sequences of 2-11 items that end with the item (the official code's numbers; the
paper says up to 10), drawn by ``item_sequences`` from the targets of training prefixes with the items before them,
so no validation or test event enters a prompt (the brief's leakage pitfall: the code also drew on prefixes ending
at validation items). Under DDP, SRA-CL's rank 0 builds the index (and asks the LLM) before the other ranks.

Deviations, one line each:
- Items are named by their text (the item fields joined; ``semantic.fields`` picks them), in sequences too; the
  code uses titles there.
- A completion is embedded as returned (the item prompt's JSON included); the paper does not say it parses it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import Field, model_validator

from behaviorseq.config import StrictConfig

USER_PROMPT = ("The user interacted with these items in chronological order: {items}. Summarise the user's "
               "specific preference in no more than 100 words.")  # paper, Appendix (user summaries)
ITEM_PROMPT = ("Item: {item}.{sequences} Give a JSON object with an 'item summary' (at most 80 words) and a "
               "'potential user analysis' (at most 50 words).")  # paper, Appendix (item summaries)
SEQUENCES = " Users came to it through these sequences, each in order and ending with it: {lists}."
ITEM_SEQUENCES = (5, 11, 0)  # per item: at most 5 sequences of at most 11 items (official code), sampling seed
PROMPTS_DIGEST = hashlib.sha256(repr((USER_PROMPT, ITEM_PROMPT, SEQUENCES, ITEM_SEQUENCES)).encode()).hexdigest()[:12]
RETRY_4XX = {408, 409, 425, 429}  # worth another try, as is any 5xx but 501 / 505; other 4xx are the request's fault


class LLMConfig(StrictConfig):
    backend: Literal["openai", "deterministic"] = "openai"  # deterministic: the test stand-in
    base_url: str | None = None  # openai: e.g. https://api.deepseek.com (the paper's), http://localhost:8000/v1 (vLLM)
    model: str | None = None  # openai: e.g. deepseek-chat (the paper's DeepSeek-V3)
    api_key_env: str | None = None  # the environment variable holding the key (e.g. DEEPSEEK_API_KEY); None: none sent
    temperature: float = Field(0.0, ge=0.0)  # paper: 0
    top_p: float | None = Field(0.001, gt=0.0, le=1.0)  # paper: 0.001; None: not sent
    max_tokens: int = Field(400, gt=0)  # the prompts ask for at most 100 / 130 words
    timeout: float = Field(120.0, gt=0.0)  # seconds per request
    retries: int = Field(6, ge=0)  # further tries of a request after a retryable failure
    retry_wait: float = Field(1.0, ge=0.0)  # seconds before the first retry; doubles each time (at most 60)
    concurrency: int = Field(8, gt=0)  # requests in flight
    chunk: int = Field(64, gt=0)  # prompts per cache append (a hard kill loses at most the chunk in flight)

    @model_validator(mode="after")
    def _endpoint(self) -> LLMConfig:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("semantic.llm with backend openai needs base_url and model (e.g. base_url="
                             "https://api.deepseek.com model=deepseek-chat, the paper's DeepSeek-V3)")
        if self.base_url is not None and not re.match(r"https?://", self.base_url):
            raise ValueError(f"semantic.llm.base_url {self.base_url!r}: an http:// or https:// address")
        return self


class SummaryBackend(Protocol):
    """The LLM step of the paper: prompts in, completions out (same length, same order)."""

    name: str

    def complete(self, prompts: list[str]) -> list[str]: ...


class LLMError(RuntimeError):
    """The endpoint could not give a completion; the message names it and why."""


class OpenAIChatBackend:
    """One chat completion per prompt (one user message) from an OpenAI-compatible endpoint.

    Retries 408 / 409 / 425 / 429 and 5xx answers (but 501 / 505), timeouts and dropped connections ``retries``
    times, waiting ``retry_wait`` seconds doubled each time (at most 60; a Retry-After header in seconds is honoured).
    Before any request has succeeded, an endpoint that refuses the connection or whose host does not resolve (no
    network, a wrong host or port) fails at once, naming it. The first failure for good stops the other requests
    (each at its next try) and is the one raised; answers that arrived before it are kept (``complete_into``)."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None  # checked when first needed
        self.name = (f"openai:{cfg.model}@{cfg.base_url.rstrip('/')}:temperature={cfg.temperature}:top_p={cfg.top_p}"
                     f":max_tokens={cfg.max_tokens}")
        self.reached = False  # a request has succeeded: later refused connections are worth retrying too
        self.sleep = None  # None: wait on the stop event (tests record the waits instead)

    def complete(self, prompts: list[str]) -> list[str]:
        out: dict[int, str] = {}
        self.complete_into(prompts, out)
        return [out[i] for i in range(len(prompts))]

    def complete_into(self, prompts: list[str], out: dict[int, str]) -> None:
        """Fill ``out[i]`` with prompt i's completion as each arrives; on a failure, raise it with ``out`` holding
        every completion received (the cache writes those)."""
        if self.cfg.api_key_env and not self.key:
            raise LLMError(f"semantic.llm.api_key_env names {self.cfg.api_key_env}, which is not set")
        pending = list(range(len(prompts)))
        stop = threading.Event()
        if pending and not self.reached:  # one answer first: an unreachable endpoint fails once, not N times
            out[0] = self._one(prompts[0], stop)
            pending = pending[1:]
        if not pending:
            return
        pool = ThreadPoolExecutor(min(self.cfg.concurrency, len(pending)))
        futures = {pool.submit(self._one, prompts[i], stop): i for i in pending}
        failed, interrupted = None, True
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            interrupted = False
        finally:  # a failure, or Ctrl-C / an error here: the rest give up at their next try, queued ones never start
            if failed is not None or interrupted:
                stop.set()
            # a failure waits for the requests in flight (their answers are kept); an interrupt does not
            pool.shutdown(wait=not interrupted, cancel_futures=True)
            for f, i in futures.items():
                if f.done() and not f.cancelled() and f.exception() is None:
                    out[i] = f.result()
        if failed is not None:
            raise failed.exception()

    def _one(self, prompt: str, stop: threading.Event) -> str:
        cfg = self.cfg
        body = {"model": cfg.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "stream": False}
        if cfg.top_p is not None:
            body["top_p"] = cfg.top_p
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode()
        for attempt in range(cfg.retries + 1):
            if stop.is_set():
                raise LLMError(f"{self.url}: stopped after another request failed")
            pause = min(60.0, cfg.retry_wait * 2**attempt) * (0.5 + random.random() / 2)
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=cfg.timeout) as r:
                    raw = r.read()
            except urllib.error.HTTPError as e:
                detail = _error_text(e)
                retry = e.code in RETRY_4XX or (500 <= e.code < 600 and e.code not in (501, 505))
                if not retry or attempt == cfg.retries:
                    hint = " (is the API key right? semantic.llm.api_key_env names its variable)" \
                        if e.code in (401, 403) else ""
                    raise LLMError(f"{self.url}: HTTP {e.code}{hint}: {detail} (prompt {prompt[:80]!r}...)") from None
                pause = _retry_after(e, pause)
            except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, dropped connections
                reason = getattr(e, "reason", e)
                if (not self.reached and _unreachable(reason)) or attempt == cfg.retries:
                    raise LLMError(f"cannot reach the LLM endpoint {self.url} ({reason}). Summaries received so far "
                                   "stay in the cache; point semantic.llm.base_url at a reachable OpenAI-compatible "
                                   "server, or drop semantic.llm to embed the raw texts (the paper's w/o-LLM "
                                   "ablation)") from None
            else:
                self.reached = True  # set once, never reset: a benign race between threads
                return _content(raw, self.url)
            (self.sleep or stop.wait)(pause)
        raise AssertionError("unreachable")


def _unreachable(reason: object) -> bool:
    """No server at the address (refused, host unknown, TLS impossible): not a slow or busy one."""
    return isinstance(reason, (ConnectionRefusedError, socket.gaierror, ssl.SSLError))


def _content(raw: bytes, url: str) -> str:
    try:
        reply = json.loads(raw)
        content = reply["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LLMError(f"{url}: the answer has no choices[0].message.content: {raw[:300]!r}") from None
    if not isinstance(content, str):
        raise LLMError(f"{url}: choices[0].message.content is {type(content).__name__}, not text")
    return re.sub("[\ud800-\udfff]", "\ufffd", content)  # a lone surrogate (JSON allows it) is no UTF-8: U+FFFD


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        raw = e.read()
        err = json.loads(raw).get("error", {})
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except Exception:
        return str(e.reason)


def _retry_after(e: urllib.error.HTTPError, default: float) -> float:
    try:
        return min(120.0, max(0.0, float(e.headers.get("Retry-After", ""))))
    except (TypeError, ValueError):
        return default


def item_sequences(events: np.ndarray, start: np.ndarray, end: np.ndarray, n_items: int,
                   per_item: int = ITEM_SEQUENCES[0], max_len: int = ITEM_SEQUENCES[1],
                   seed: int = ITEM_SEQUENCES[2]) -> list[list[list[int]]]:
    """For each item row 0..n_items, up to ``per_item`` sequences of item ids that end with it: a training prefix's
    target ``events[end[j]]`` and at most ``max_len - 1`` of the prefix's items before it (at least one). The
    prefixes are drawn at random (``seed``) among those whose target is the item; row 0 and items that are no
    training target get none."""
    j = np.flatnonzero(end - start >= 1)
    target = events[end[j]]
    order = np.lexsort((np.random.default_rng(seed).random(len(j)), target))
    j, target = j[order], target[order]
    rank = np.arange(len(j)) - np.searchsorted(target, target, side="left")  # place within the item's draws
    out: list[list[list[int]]] = [[] for _ in range(n_items + 1)]
    for jj, t in zip(j[rank < per_item].tolist(), target[rank < per_item].tolist()):
        out[t].append(events[max(start[jj], end[jj] - (max_len - 1)):end[jj] + 1].tolist())
    return out


def item_prompt(text: str, sequences: list[list[int]] | None, names: list[str]) -> str:
    """The item prompt of ``text``; ``sequences`` (item ids) named through ``names`` (row i: item i's text)."""
    lists = "; ".join("[" + ", ".join(names[i] for i in seq) + "]" for seq in sequences or [])
    return ITEM_PROMPT.format(item=text, sequences=SEQUENCES.format(lists=lists) if lists else "")


class DeterministicBackend:
    """Test stand-in for an LLM: a pure function of the prompt (its 24 most frequent words)."""

    name = "deterministic"

    def complete(self, prompts: list[str]) -> list[str]:
        out = []
        for p in prompts:
            words, counts = np.unique(re.findall(r"\w+", p.lower()), return_counts=True)
            top = words[np.lexsort((words, -counts))][:24] if len(words) else []
            out.append("summary: " + " ".join(top))
        return out


class CachedBackend:
    """Record / replay: completions kept in a JSON-lines file (``{"key": sha256(prompt), "completion": ...}`` per
    line, ASCII). Prompts not yet there go to ``backend`` ``chunk`` at a time; each chunk's completions are appended
    (and fsynced) when the chunk ends, those received before a failure or an interrupt included, so a hard kill
    loses at most the chunk in flight; lines already written are never rewritten. Before each chunk the file is
    read again, so prompts another process (a parallel seed) answered meanwhile are not asked twice; an append
    reads what others appended (under a lock) and keeps the first completion of a key. A line cut short by an
    interrupted write is skipped (its prompt is asked again). The file is read on the first call, not before."""

    def __init__(self, backend: SummaryBackend, path: str | Path, chunk: int = 64):
        self.backend, self.path, self.chunk, self.name = backend, Path(path), chunk, f"cached:{backend.name}"
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

    def complete(self, prompts: list[str]) -> list[str]:
        keys = [hashlib.sha256(p.encode("utf-8", "surrogatepass")).hexdigest() for p in prompts]
        todo = sorted({k: p for k, p in zip(keys, prompts) if k not in self.memory}.items())
        bar = None
        if todo and os.environ.get("BEHAVIORSEQ_PROGRESS", "1") != "0" and len(todo) > self.chunk:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"LLM summaries ({self.backend.name})", unit="prompt")
        try:
            while todo:
                self.refresh()
                todo = [(k, p) for k, p in todo if k not in self.memory]  # others may have asked them meanwhile
                part, todo = todo[:self.chunk], todo[self.chunk:]
                got: dict[int, str] = {}
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
                        self._append([(part[i][0], got[i]) for i in sorted(got)])
                if bar is not None:
                    bar.update(len(part))
        finally:
            if bar is not None:
                bar.close()
        return [self.memory[k] for k in keys]

    def _append(self, pairs: list[tuple[str, str]]) -> None:
        memory = self.memory
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            _lock(f)
            self._read(f)  # other processes' appends since: their completions win, no second line per key
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


def _lock(f) -> None:
    """An exclusive lock for the append (two runs sharing one cache); released when the file closes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: appends of one write each, unlocked
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def make_backend(cfg: LLMConfig, cache_dir: str | Path) -> CachedBackend:
    """The configured backend behind its disk cache: ``cache_dir/llm/<hash of the backend's name>.jsonl``."""
    inner: SummaryBackend = OpenAIChatBackend(cfg) if cfg.backend == "openai" else DeterministicBackend()
    digest = hashlib.sha256(inner.name.encode()).hexdigest()[:16]
    return CachedBackend(inner, Path(cache_dir) / "llm" / f"{digest}.jsonl", cfg.chunk)
