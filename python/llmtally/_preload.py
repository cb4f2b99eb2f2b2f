"""Imported by the forkserver that starts `llmtally serve`'s workers, before any worker is forked: the
native backend's vocabularies (o200k_base and cl100k_base, about 90 MB) are loaded here once, and every
worker forked from this process shares those pages with the others (they are never written after the
load). Nothing else is imported here: no gRPC, no threads, so forking stays safe."""

from . import _api

if _api.backend() == "native":
    from ._native import count_tokens

    for _name in ("o200k_base", "cl100k_base"):
        count_tokens("a", encoding=_name)
