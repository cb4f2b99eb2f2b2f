"""llmtally: exact token accounting for LLM traffic through Envoy."""

from ._api import (
    BACKENDS,
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    ENCODINGS,
    ResponseScanner,
    backend,
    count_tokens,
    default_encoding,
    display_name,
    encoding_for_model,
    parse_request,
    providers,
    resolve_provider,
    set_default_encoding,
    sniff_provider,
    usage_headers,
)
from ._types import Provider, RequestInfo, Stats, Usage

#: provider ids, in `auto` detection order, and `auto`
PROVIDERS = (*(p.id for p in providers()), "auto")

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
    "ENCODINGS",
    "PROVIDERS",
    "Provider",
    "RequestInfo",
    "ResponseScanner",
    "Stats",
    "Usage",
    "backend",
    "count_tokens",
    "default_encoding",
    "display_name",
    "encoding_for_model",
    "parse_request",
    "providers",
    "resolve_provider",
    "set_default_encoding",
    "sniff_provider",
    "usage_headers",
]
