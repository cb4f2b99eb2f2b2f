"""The public API: one set of types, two backends (Rust or pure Python)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from . import fallback
from .fallback.scanner import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_EVENT_BYTES, STATS

try:
    from . import _native
except ImportError:  # pragma: no cover - exercised by installs without the extension
    _native = None

PROVIDERS = ("openai", "azure", "anthropic", "gemini", "vertex-ai", "bedrock", "mistral", "ollama", "auto")
BACKENDS = ("native", "python")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the request body tells."""

    model: str | None = None
    streaming: bool = False
    include_usage: bool = False
    prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one response."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    provider_model: str | None = None
    streaming: bool = False
    source: str = "none"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def backend() -> str:
    """The default backend: ``native`` when the extension imports, else
    ``python``; ``LLMTALLY_BACKEND=python`` forces the fallback."""
    env = os.environ.get("LLMTALLY_BACKEND", "").strip().lower()
    if env == "python" or _native is None:
        return "python"
    return "native"


def _impl(name: str | None):
    b = backend() if name is None else name
    if b == "native":
        if _native is None:
            raise ImportError("llmtally._native is not available; use backend='python'")
        return _native
    if b == "python":
        return fallback
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


def parse_request(body: bytes, provider: str, path: str = "", *, backend: str | None = None) -> RequestInfo:
    """Model, streaming flag and prompt estimate from a request body."""
    return RequestInfo(*_impl(backend).parse_request(body, provider, path))


ENCODINGS = ("o200k_base", "cl100k_base")


def resolve_provider(provider: str, path: str = "", content_type: str = "", *, backend: str | None = None) -> str:
    """The provider whose format is read for `provider` (`auto`: detected from
    the path and content type; an unknown id: `openai`)."""
    return _impl(backend).resolve_provider(provider, path, content_type)


def count_tokens(text: str, *, model: str | None = None, encoding: str | None = None,
                 backend: str | None = None) -> int:
    """Tokens of `text` as tiktoken counts them (``len(encode_ordinary(text))``):
    with `encoding` if given, else the encoding tiktoken maps `model` to, else
    the default encoding (models without a public tokenizer: an estimate)."""
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    return _impl(backend).count_tokens(text, model, encoding)


def encoding_for_model(model: str) -> str | None:
    """`o200k_base` or `cl100k_base` as tiktoken maps `model`; None when the
    model has no public tokenizer (the default encoding is used for it)."""
    return fallback.encoding_for_model(model)


def default_encoding() -> str:
    return fallback.default_encoding()


def set_default_encoding(name: str) -> None:
    """Encoding for models without a public tokenizer (Claude, Gemini, Llama,
    Mistral, ...), for both backends; ``LLMTALLY_DEFAULT_ENCODING`` sets it at import."""
    fallback.set_default_encoding(name)
    if _native is not None:
        _native.set_default_encoding(name)


class ResponseScanner:
    """Scans a response body fed in chunks; ``finish()`` returns its Usage.

    ``feed(chunk: bytes)`` accepts any split of the body and does work
    proportional to ``len(chunk)``; it never raises on bad input.
    """

    __slots__ = ("_impl", "feed", "backend")

    def __init__(self, provider: str, request: RequestInfo | None = None, *, content_type: str = "",
                 content_encoding: str = "", status: int = 200, path: str = "", backend: str | None = None,
                 max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        if not isinstance(provider, str):
            raise TypeError("provider must be a str")
        if not 0 <= status <= 65535:
            raise ValueError(f"status out of range: {status}")
        if max_decoded_bytes < 0 or max_event_bytes < 0:
            raise ValueError("limits must be >= 0")
        module = _impl(backend)
        req = None
        if request is not None:
            req = (request.model, request.streaming, request.include_usage, request.prompt_tokens)
        self._impl = module.ResponseScanner(provider, req, content_type, content_encoding, status, path,
                                            max_decoded_bytes, max_event_bytes)
        self.feed = self._impl.feed
        self.backend = "native" if module is _native else "python"

    def finish(self) -> Usage:
        """The usage so far; call at end of stream (idempotent)."""
        return Usage(*self._impl.finish())

    def snapshot(self) -> Usage:
        """The usage as of now, without finishing (for metadata mid-stream);
        tokenizer counts cost a pass over the few KiB of text held back."""
        return Usage(*self._impl.snapshot())

    def usage_changes(self) -> int:
        """A number that grows whenever the reported usage (or the provider's
        model) changes; cheap enough to poll after every chunk."""
        return self._impl.usage_changes()

    def stats(self) -> dict:
        """What the scanner saw: bytes fed and decoded, JSON documents complete and
        broken, error objects, corrupt and oversized event-stream frames, and
        whether decoding was capped, failed, or impossible (see README)."""
        return dict(zip(STATS, self._impl.stats()))


if os.environ.get("LLMTALLY_DEFAULT_ENCODING"):
    set_default_encoding(os.environ["LLMTALLY_DEFAULT_ENCODING"].strip())
