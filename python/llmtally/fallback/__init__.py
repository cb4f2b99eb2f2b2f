"""Pure-Python implementation of llmtally's core, with the same API and
results as the Rust extension (``llmtally._native``, typed in
``_native.pyi``). Its provider tables, field ids and constants are not
written here: they are loaded from ``registry.json``, generated from the
Rust core. The public API in :mod:`llmtally` picks one backend."""

import pathlib

from .otlp import encode_spans
from .registry import resolve, sniff
from .request import parse_request
from .scanner import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_EVENT_BYTES, ResponseScanner
from .tokens import count_tokens, default_encoding, encoding_for_model, set_default_encoding


def resolve_provider(provider: str, path: str = "", content_type: str = "") -> str:
    """The provider id whose format is read (`auto`: detected; unknown: `openai`)."""
    return resolve(provider, path, content_type).id


def sniff_provider(head: bytes) -> str | None:
    """The provider whose body markers appear in the first bytes of a response, if any."""
    d = sniff(head)
    return None if d is None else d.id


def registry_json() -> str:
    """The generated registry this backend is built from."""
    return pathlib.Path(__file__).with_name("registry.json").read_text(encoding="utf-8")


__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
    "ResponseScanner",
    "count_tokens",
    "default_encoding",
    "encode_spans",
    "encoding_for_model",
    "parse_request",
    "registry_json",
    "resolve_provider",
    "set_default_encoding",
    "sniff_provider",
]
