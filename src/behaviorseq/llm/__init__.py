"""Language-model backends for the methods that call one (SRA-CL's summaries; CFT, Sharingan and MAG-V to come):
an OpenAI-compatible HTTP client, a deterministic stand-in for tests, and a record / replay disk cache with a
spending guard (dry run, a cap on new prompts)."""

from behaviorseq.llm.backends import (
    CompletionBackend,
    DeterministicBackend,
    LLMConfig,
    LLMDryRun,
    LLMError,
    OpenAIChatBackend,
)
from behaviorseq.llm.cache import CachedBackend, make_backend

__all__ = ["CachedBackend", "CompletionBackend", "DeterministicBackend", "LLMConfig", "LLMDryRun", "LLMError",
           "OpenAIChatBackend", "make_backend"]
