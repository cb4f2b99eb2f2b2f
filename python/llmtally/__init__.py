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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmtally")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version()

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
    "__version__",
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
