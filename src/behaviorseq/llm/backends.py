"""Language-model backends: prompts in, completions out (same length, same order).

    CompletionBackend     the interface: ``name`` and ``complete(prompts) -> completions``
    OpenAIChatBackend     any OpenAI-compatible ``/chat/completions`` endpoint (DeepSeek, OpenAI, vLLM, llama.cpp's
                          server, Ollama's /v1), standard library only: concurrent requests, retries with backoff
                          on 429 / 5xx / timeouts / dropped connections, an error naming the endpoint when nothing
                          listens there; the API key only from the variable ``api_key_env`` names (none by default)
    DeterministicBackend  a pure function of the prompt, for tests

``llm.cache.CachedBackend`` puts either behind a record / replay file with a spending guard; ``make_backend`` builds
the pair from an ``LLMConfig``. The defaults (temperature 0, top_p 0.001) are SRA-CL's (Cui et al., NeurIPS 2025),
the first method here that calls an LLM.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Literal, Protocol

import numpy as np
from pydantic import Field, model_validator

from behaviorseq.config import StrictConfig

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
    # spending guard, checked before anything is sent: dry_run lists the prompts not in the cache (a file beside it)
    # and stops with their count; max_new_prompts stops a run that would send more than that many (None: no limit)
    dry_run: bool = False
    max_new_prompts: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _endpoint(self) -> LLMConfig:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("semantic.llm with backend openai needs base_url and model (e.g. base_url="
                             "https://api.deepseek.com model=deepseek-chat, the paper's DeepSeek-V3)")
        if self.base_url is not None and not re.match(r"https?://", self.base_url):
            raise ValueError(f"semantic.llm.base_url {self.base_url!r}: an http:// or https:// address")
        return self


class CompletionBackend(Protocol):
    """Prompts in, completions out (same length, same order)."""

    name: str

    def complete(self, prompts: list[str]) -> list[str]: ...


class LLMError(RuntimeError):
    """The endpoint could not give a completion, or the spending guard stopped the run; the message says why."""


class LLMDryRun(LLMError):
    """``dry_run``: the prompts a run would send were counted and written out; nothing was sent."""


class OpenAIChatBackend:
    """One chat completion per prompt (one user message) from an OpenAI-compatible endpoint.

    Retries 408 / 409 / 425 / 429 and 5xx answers (but 501 / 505), timeouts and dropped connections ``retries``
    times, waiting ``retry_wait`` seconds doubled each time (at most 60; a Retry-After header in seconds is honoured).
    Before any request has succeeded, an endpoint that refuses the connection or whose host does not resolve (no
    network, a wrong host or port) fails at once, naming it. The first failure for good stops the other requests
    (each at its next try) and is the one raised; answers that arrived before it are kept (``complete_into``)."""

    def __init__(self, cfg: LLMConfig, setting: str = "llm", offline_hint: str = ""):
        self.cfg = cfg
        self.setting, self.offline_hint = setting, offline_hint  # where the user sets cfg; what else they can do
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
            raise LLMError(f"{self.setting}.api_key_env names {self.cfg.api_key_env}, which is not set")
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
                    hint = f" (is the API key right? {self.setting}.api_key_env names its variable)" \
                        if e.code in (401, 403) else ""
                    raise LLMError(f"{self.url}: HTTP {e.code}{hint}: {detail} (prompt {prompt[:80]!r}...)") from None
                pause = _retry_after(e, pause)
            except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, dropped connections
                reason = getattr(e, "reason", e)
                # a connect that times out (URLError wrapping the timeout; a stalled answer is a bare one) is a
                # host that drops packets: with the default timeout and retries it waited 15 minutes, silently
                connect_timeout = isinstance(e, urllib.error.URLError) and isinstance(reason, TimeoutError)
                if (not self.reached and (_unreachable(reason) or connect_timeout)) or attempt == cfg.retries:
                    raise LLMError(f"cannot reach the LLM endpoint {self.url} ({reason}{_proxy_note(self.url)}). "
                                   "Completions received so far stay in the cache; point "
                                   f"{self.setting}.base_url at a reachable OpenAI-compatible server"
                                   f"{self.offline_hint}") from None
            else:
                self.reached = True  # set once, never reset: a benign race between threads
                return _content(raw, self.url)
            (self.sleep or stop.wait)(pause)
        raise AssertionError("unreachable")


def _proxy_note(url: str) -> str:
    """Where a request went through a proxy (HTTP(S)_PROXY), the proxy is what could not be reached: say so."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return ""
    return f"; sent through the proxy {proxy} ({parts.scheme.upper()}_PROXY): NO_PROXY={parts.hostname} bypasses it"


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
