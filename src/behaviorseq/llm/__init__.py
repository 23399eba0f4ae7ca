"""Language-model backends for the methods that call one (SRA-CL's summaries; CFT, Sharingan and MAG-V to come):
an OpenAI-compatible HTTP client, a deterministic stand-in for tests, and a record / replay disk cache with a
spending guard (dry run, a cap on new prompts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from behaviorseq.llm.backends import (
    CompletionBackend,
    DeterministicBackend,
    LLMConfig,
    LLMDryRun,
    LLMError,
    OpenAIChatBackend,
)
from behaviorseq.llm.cache import CachedBackend


def make_backend(cfg: LLMConfig, cache_dir: str | Path, setting: str = "llm", offline_hint: str = "") -> CachedBackend:
    """The configured backend behind its disk cache, ``cache_dir/llm/<hash of the backend's name>.jsonl``, with the
    config's spending guard. ``setting``: where the user sets ``cfg`` (for messages); ``offline_hint``: what else
    they can do when the endpoint cannot be reached (appended to that message)."""
    inner: CompletionBackend = (OpenAIChatBackend(cfg, setting, offline_hint) if cfg.backend == "openai"
                                else DeterministicBackend())
    digest = hashlib.sha256(inner.name.encode()).hexdigest()[:16]
    return CachedBackend(inner, Path(cache_dir) / "llm" / f"{digest}.jsonl", cfg.chunk, cfg.dry_run,
                         cfg.max_new_prompts, setting)


__all__ = ["CachedBackend", "CompletionBackend", "DeterministicBackend", "LLMConfig", "LLMDryRun", "LLMError",
           "OpenAIChatBackend", "make_backend"]
