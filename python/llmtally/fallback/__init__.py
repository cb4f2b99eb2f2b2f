"""Pure-Python implementation of llmtally's core, with the same results as
the Rust extension (``llmtally._native``): the same constructor, methods and
return tuples. The public API in :mod:`llmtally` wraps either one."""

from .provider import resolve as resolve_provider
from .request import parse_request
from .scanner import ResponseScanner
from .tokens import count_tokens, default_encoding, encoding_for_model, set_default_encoding

__all__ = ["ResponseScanner", "count_tokens", "resolve_provider", "default_encoding", "encoding_for_model", "parse_request",
           "set_default_encoding"]
