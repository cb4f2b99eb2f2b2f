"""llmtally: exact token accounting for LLM traffic through Envoy."""

from ._api import (BACKENDS, ENCODINGS, PROVIDERS, RequestInfo, ResponseScanner, Usage, backend, count_tokens,
                   default_encoding, encoding_for_model, parse_request, resolve_provider, set_default_encoding)

__all__ = ["BACKENDS", "ENCODINGS", "PROVIDERS", "RequestInfo", "ResponseScanner", "Usage", "backend", "count_tokens",
           "default_encoding", "encoding_for_model", "parse_request", "resolve_provider", "set_default_encoding"]
