"""Pure-Python implementation of llmtally's core, with the same results as
the Rust extension (``llmtally._native``): the same constructor, methods and
return tuples. The public API in :mod:`llmtally` wraps either one."""

from .request import parse_request
from .scanner import ResponseScanner

__all__ = ["ResponseScanner", "parse_request"]
