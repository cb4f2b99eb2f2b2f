"""The public API: one set of types, two backends (Rust or pure Python).

The backend is chosen per call (``backend=``) or once (``LLMTALLY_BACKEND``);
the pure-Python fallback is imported only when it is used.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._types import Provider, RequestInfo, Stats, Usage

if TYPE_CHECKING:
    from . import _native as _native_t

try:
    from . import _native
except ImportError:  # pragma: no cover - exercised by installs without the extension
    _native = None  # type: ignore[assignment]

BACKENDS = ("native", "python")
#: set_default_encoding's choice, applied to the fallback when it is first imported
_default_encoding: str | None = None
#: the warning for an invalid LLMTALLY_DEFAULT_ENCODING: given at first use, not at import, so that
#: the command line can refuse the value with its own one-line error first
_env_warning: str | None = None


def backend() -> str:
    """The default backend: ``native`` when the extension imports, else
    ``python``; ``LLMTALLY_BACKEND=python`` forces the fallback."""
    env = os.environ.get("LLMTALLY_BACKEND", "").strip().lower()
    if env == "python" or _native is None:
        return "python"
    return "native"


@functools.cache
def _fallback() -> ModuleType:
    module = importlib.import_module(".fallback", __package__)
    if _default_encoding is not None:
        module.set_default_encoding(_default_encoding)
    return module


def _impl(name: str | None) -> Any:
    global _env_warning
    if _env_warning is not None:
        message, _env_warning = _env_warning, None
        warnings.warn(message, stacklevel=3)
    b = backend() if name is None else name
    if b == "native":
        if _native is None:
            raise ImportError("llmtally._native is not available; use backend='python'")
        return _native
    if b == "python":
        return _fallback()
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


@functools.cache
def _registry() -> dict[str, Any]:
    """The provider registry of the Rust core (the fallback holds a generated copy)."""
    data: dict[str, Any] = json.loads(_impl(None).registry_json())
    return data


#: the encodings counted exactly, and the one for models without a public tokenizer (the core's tables)
ENCODINGS: tuple[str, ...] = tuple(_registry()["encodings"])
DEFAULT_ENCODING: str = _registry()["default_encoding"]


@functools.cache
def _display() -> dict[str, str]:
    return {p["id"]: p["display"] for p in _registry()["providers"]}


def providers() -> tuple[Provider, ...]:
    """Every provider llmtally reads, in `auto` detection order."""
    return tuple(Provider(id=p["id"], display=p["display"]) for p in _registry()["providers"])


def display_name(provider: str) -> str:
    """The `provider` metadata value for a provider id (`OpenAI`, `Anthropic`, ...);
    an unknown id is read as OpenAI-compatible, so it gets OpenAI's."""
    names = _display()
    name = names.get(provider)  # the host passes resolved ids: no second resolution
    return name if name is not None else names[resolve_provider(provider)]


def sniff_provider(head: bytes, *, backend: str | None = None) -> str | None:
    """The provider whose format the first bytes of a response body show (SSE event
    names, Gemini's `usageMetadata`, the event-stream prelude, ...); None when
    nothing tells (an OpenAI-compatible body, for one)."""
    pid: str | None = _impl(backend).sniff_provider(head)
    return pid


def usage_headers() -> frozenset[str]:
    """Lowercase names of the response headers any provider reports usage in."""
    return frozenset(h for p in _registry()["providers"] for h, _ in p["usage_headers"])


def parse_request(body: bytes, provider: str, path: str = "", *, backend: str | None = None) -> RequestInfo:
    """Model, streaming flag and prompt estimate from a request body."""
    info: RequestInfo = _impl(backend).parse_request(body, provider, path)
    return info


def resolve_provider(provider: str, path: str = "", content_type: str = "", *, backend: str | None = None) -> str:
    """The provider whose format is read for `provider` (`auto`: detected from
    the path and content type; an unknown id: `openai`)."""
    pid: str = _impl(backend).resolve_provider(provider, path, content_type)
    return pid


def count_tokens(
    text: str, *, model: str | None = None, encoding: str | None = None, backend: str | None = None
) -> int:
    """Tokens of `text` as tiktoken counts them (``len(encode_ordinary(text))``):
    with `encoding` if given, else the encoding tiktoken maps `model` to, else
    the default encoding (models without a public tokenizer: an estimate)."""
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    n: int = _impl(backend).count_tokens(text, model=model, encoding=encoding)
    return n


def encoding_for_model(model: str) -> str | None:
    """`o200k_base` or `cl100k_base` as tiktoken maps `model`; None when the
    model has no public tokenizer (the default encoding is used for it)."""
    enc: str | None = _impl(None).encoding_for_model(model)
    return enc


def default_encoding() -> str:
    enc: str = _impl(None).default_encoding()
    return enc


def set_default_encoding(name: str) -> None:
    """Encoding for models without a public tokenizer (Claude, Gemini, Llama,
    Mistral, ...), for both backends; ``LLMTALLY_DEFAULT_ENCODING`` sets it at import."""
    global _default_encoding
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; expected one of {ENCODINGS}")
    _default_encoding = name
    if _native is not None:
        _native.set_default_encoding(name)
    if _fallback.cache_info().currsize:
        _fallback().set_default_encoding(name)


def _checked_request(r: Any) -> RequestInfo:
    """Any object with RequestInfo's attributes, checked as both backends need it."""
    model, streaming, include_usage, prompt = r.model, r.streaming, r.include_usage, r.prompt_tokens
    if not (model is None or isinstance(model, str)) or not isinstance(streaming, bool):
        raise TypeError("request: model must be a str or None, streaming a bool")
    if not isinstance(include_usage, bool) or isinstance(prompt, bool) or not isinstance(prompt, int):
        raise TypeError("request: include_usage must be a bool, prompt_tokens an int")
    if not 0 <= prompt < 1 << 64:
        raise ValueError(f"request: prompt_tokens out of range: {prompt}")
    return r if type(r) is RequestInfo else RequestInfo(model, streaming, include_usage, prompt)


class ResponseScanner:
    """Scans a response body fed in chunks; ``finish()`` returns its Usage.

    ``feed(chunk: bytes)`` accepts any split of the body and does work
    proportional to ``len(chunk)``; it never raises on bad input.
    """

    __slots__ = ("_impl", "feed", "backend")

    def __init__(
        self,
        provider: str,
        request: RequestInfo | None = None,
        *,
        content_type: str = "",
        content_encoding: str = "",
        path: str = "",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        backend: str | None = None,
        max_decoded_bytes: int | None = None,
        max_event_bytes: int | None = None,
    ):
        if not isinstance(provider, str):
            raise TypeError("provider must be a str")
        module = _impl(backend)
        limits = {}
        for name, value in (("max_decoded_bytes", max_decoded_bytes), ("max_event_bytes", max_event_bytes)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
                raise ValueError(f"{name} must be an integer from 0 to 2**63-1, not {value!r}")
            limits[name] = value
        if request is not None:
            request = _checked_request(request)
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
            raise TypeError("headers must be str names and values")
        self._impl: _native_t.ResponseScanner = module.ResponseScanner(
            provider,
            request,
            content_type=content_type,
            content_encoding=content_encoding,
            path=path,
            headers=pairs,
            **limits,
        )
        self.feed = self._impl.feed
        self.backend = "native" if module is _native else "python"

    def finish(self) -> Usage:
        """The usage so far; call at end of stream (idempotent)."""
        return self._impl.finish()

    def snapshot(self) -> Usage:
        """The usage as of now, without finishing (for metadata mid-stream); the
        counted texts are settled first, so a snapshot per chunk costs in proportion
        to the chunk."""
        return self._impl.snapshot()

    def usage_changes(self) -> int:
        """A number that grows whenever the reported usage (or the provider's
        model) changes; cheap enough to poll after every chunk."""
        return self._impl.usage_changes()

    def text_changes(self) -> int:
        """A number that grows whenever output text arrives (tokenizer counts may then
        have grown); with `usage_changes`, what to poll after each chunk."""
        return self._impl.text_changes()

    def stats(self) -> Stats:
        """What the scanner saw: bytes fed and decoded, JSON documents complete and
        broken, error objects, corrupt and oversized event-stream frames, and
        whether decoding was capped, failed, or impossible."""
        return self._impl.stats()

    @property
    def provider(self) -> str:
        """The provider id whose format is read (`auto` and unknown ids resolved)."""
        return self._impl.provider

    @property
    def framing(self) -> str | None:
        """`sse`, `json`, `json-array`, `ndjson` or `eventstream`; None until the
        content type or the first body bytes decide."""
        return self._impl.framing


#: default caps of a scanner: decoded bytes per response, one event-stream message
DEFAULT_MAX_DECODED_BYTES: int = _impl(None).DEFAULT_MAX_DECODED_BYTES
DEFAULT_MAX_EVENT_BYTES: int = _impl(None).DEFAULT_MAX_EVENT_BYTES

_env_encoding = os.environ.get("LLMTALLY_DEFAULT_ENCODING", "").strip()
if _env_encoding:
    if _env_encoding in ENCODINGS:
        set_default_encoding(_env_encoding)
    else:  # a library import must not fail on it (warned at first use); the command line refuses it
        _env_warning = f"LLMTALLY_DEFAULT_ENCODING={_env_encoding!r} is not one of {ENCODINGS}; ignored"
