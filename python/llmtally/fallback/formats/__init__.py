"""Provider formats: which JSON paths carry usage (mirror of rust/core/src/formats)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..json_scan import Arr


@dataclass(frozen=True)
class Format:
    pat: object
    #: the provider's input count excludes cache reads and writes: add them
    prompt_adds_cache: bool = False
    #: the provider's output count excludes reasoning tokens: add them
    completion_adds_reasoning: bool = False
    #: shape of documents wrapped in base64 `bytes` strings (Bedrock)
    inner: object = None
    #: the same documents streamed as the elements of one JSON array
    array: object = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "array", Arr(self.pat))


def for_provider(provider: str) -> Format:
    from . import anthropic, bedrock, gemini, ollama, openai
    return {
        "anthropic": anthropic.FORMAT,
        "gemini": gemini.FORMAT,
        "vertex-ai": gemini.FORMAT,
        "bedrock": bedrock.FORMAT,
        "ollama": ollama.FORMAT,
    }.get(provider, openai.FORMAT)
