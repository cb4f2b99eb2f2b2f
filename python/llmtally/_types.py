"""The public value types, shared by both backends (the native extension
builds these same classes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypedDict


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the request body tells."""

    model: str | None = None
    streaming: bool = False
    include_usage: bool = False
    #: an estimate (see docs/providers.md, "Prompt estimates")
    prompt_tokens: int = 0
    #: the output-token limit the request sets (`max_tokens`, `max_completion_tokens`,
    #: `maxOutputTokens`...), None without one (see docs/providers.md, "Output limits")
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one response."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    #: input tokens written to the provider's cache (priced apart from reads and fresh input)
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    provider_model: str | None = None
    streaming: bool = False
    #: `provider`, `tokenizer`, `provider+tokenizer` (provisional provider usage raised to the
    #: count of the text delivered) or `none`
    source: str = "none"
    #: the provider's id of the response (`chatcmpl-...`, `resp_...`, `msg_...`, Gemini's
    #: `responseId`), the first valid one seen; None where the format has none (Bedrock Converse,
    #: Ollama) (see docs/providers.md, "Response ids and finish reasons")
    response_id: str | None = None
    #: the finish (stop) reason of each choice that reported one, in the order of the choice indexes
    finish_reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class Stats(TypedDict):
    """What a scanner saw (see docs/providers.md, "Limits and memory")."""

    bytes: int
    decoded_bytes: int
    docs: int
    broken_docs: int
    errors: int
    corrupt_frames: int
    oversized_events: int
    decode_capped: bool
    decode_failed: bool
    undecodable: bool


@dataclass(frozen=True, slots=True)
class Provider:
    """One entry of the provider registry."""

    #: the id operators configure (`x-llm-provider`) and the `llm` label
    id: str
    #: the `provider` value in the dynamic metadata
    display: str
