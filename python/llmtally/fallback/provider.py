"""Provider ids, automatic detection, and what request paths tell (mirror of provider.rs)."""

from __future__ import annotations

from urllib.parse import unquote

from .usage import MODEL_MAX

PROVIDERS = ("openai", "azure", "anthropic", "gemini", "vertex-ai", "bedrock", "mistral", "ollama")
EVENTSTREAM = "application/vnd.amazon.eventstream"
_BEDROCK_OPS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream")


def resolve(provider_id: str, path: str, content_type: str = "") -> str:
    """A provider id; `auto` looks at the path and content type; unknown ids are OpenAI-compatible."""
    pid = provider_id.strip().lower()
    if pid in PROVIDERS:
        return pid
    if pid in ("auto", ""):
        return _detect(path, content_type)
    return "openai"


def path_only(path: str) -> str:
    return path.split("?", 1)[0]


def _bedrock(path: str):
    """Bedrock `/model/{modelId}/{operation}` -> (raw model id, operation), else None."""
    i = path.rfind("/model/")
    if i < 0:
        return None
    model, sep, op = path[i + 7:].rpartition("/")
    if not sep or not model or op not in _BEDROCK_OPS:
        return None
    return model, op


def _detect(path: str, content_type: str) -> str:
    path = path_only(path)
    if content_type.lower().startswith(EVENTSTREAM) or _bedrock(path) is not None:
        return "bedrock"
    if ":generateContent" in path or ":streamGenerateContent" in path:
        return "vertex-ai" if "/projects/" in path else "gemini"
    if "/openai/deployments/" in path:
        return "azure"
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith("/api/chat") or path.endswith("/api/generate"):
        return "ollama"
    return "openai"


def percent_decode(s: str) -> str:
    return unquote(s, errors="replace")


def path_model(provider: str, path: str) -> str | None:
    path = path_only(path)
    name = None
    if provider in ("gemini", "vertex-ai"):
        i = path.rfind("/models/")
        if i >= 0:
            name = path[i + 8:].split(":", 1)[0]
    elif provider == "bedrock":
        b = _bedrock(path)
        if b is not None:
            name = percent_decode(b[0])
    elif provider == "azure":
        i = path.find("/openai/deployments/")
        if i >= 0:
            name = percent_decode(path[i + 20:].split("/", 1)[0])
    if not name or len(name.encode()) > MODEL_MAX:
        return None
    return name


def path_streams(provider: str, path: str) -> bool | None:
    path = path_only(path)
    if provider in ("gemini", "vertex-ai"):
        return ":streamGenerateContent" in path
    if provider == "bedrock":
        b = _bedrock(path)
        return None if b is None else b[1].endswith("stream")
    return None
