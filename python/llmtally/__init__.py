"""llmtally: exact token accounting for LLM traffic through Envoy."""

from ._api import BACKENDS, PROVIDERS, RequestInfo, ResponseScanner, Usage, backend, parse_request

__all__ = ["BACKENDS", "PROVIDERS", "RequestInfo", "ResponseScanner", "Usage", "backend", "parse_request"]
