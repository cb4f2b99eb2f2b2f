"""Provider formats: which JSON paths carry usage (mirror of rust/core/src/formats)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    pat: object
    #: the provider's input count excludes cache reads and writes
    prompt_adds_cache: bool
