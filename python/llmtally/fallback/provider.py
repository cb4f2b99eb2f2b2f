"""Provider ids and automatic detection (mirror of provider.rs)."""

from __future__ import annotations

PROVIDERS = ("openai", "azure", "anthropic", "gemini", "vertex-ai", "bedrock", "mistral", "ollama")


def resolve(provider_id: str, path: str) -> str:
    """A provider id; `auto` looks at the path; unknown ids are OpenAI-compatible."""
    pid = provider_id.strip().lower()
    if pid in PROVIDERS:
        return pid
    if pid in ("auto", ""):
        return _detect(path)
    return "openai"


def _detect(path: str) -> str:
    path = path.split("?", 1)[0]
    if path.endswith("/v1/messages") or (path.endswith("/messages") and "anthropic" in path):
        return "anthropic"
    return "openai"
