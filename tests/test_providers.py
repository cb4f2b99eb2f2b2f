"""Providers: id resolution and `auto` detection, what request paths tell,
and provider-specific usage rules. Both backends."""

import pytest

import llmtally


@pytest.mark.parametrize(
    "pid, path, ct, want",
    [
        ("OpenAI ", "", "", "openai"),
        ("vllm", "/v1/messages", "", "openai"),
        ("", "/anthropic/v1/messages", "", "anthropic"),
        ("auto", "/anything", "application/vnd.amazon.eventstream; charset=x", "bedrock"),
        ("auto", "/x/api/generate", "", "ollama"),
        ("auto", "/v1/chat/completions?x=/v1/messages", "", "openai"),
        ("vertex-ai", "", "", "vertex-ai"),
    ],
)
def test_resolve_provider(pid, path, ct, want, backend):
    assert llmtally.resolve_provider(pid, path, ct, backend=backend) == want


def test_gemini_latest_usage_object_replaces_earlier(backend):
    body = (
        b'data: {"usageMetadata":{"promptTokenCount":5,"thoughtsTokenCount":7,"totalTokenCount":12}}\r\n\r\n'
        b'data: {"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}}\r\n\r\n'
    )
    sc = llmtally.ResponseScanner("gemini", content_type="text/event-stream", backend=backend)
    sc.feed(body)
    u = sc.finish()
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens, u.total_tokens) == (5, 2, 0, 7)


@pytest.mark.parametrize(
    "path, provider, model, streaming",
    [
        ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", "gemini", "gemini-2.5-pro", True),
        (
            "/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent",
            "vertex-ai",
            "gemini-2.0-flash",
            False,
        ),
        (
            "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream",
            "bedrock",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            True,
        ),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/invoke",
            "bedrock",
            "arn:aws:bedrock:us-east-1:1:inference-profile/x",
            False,
        ),
        ("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", "azure", "gpt4o-prod", False),
        ("/api/chat", "ollama", None, True),
        ("/v1/chat/completions", "openai", None, False),
    ],
)
def test_request_path_facts(path, provider, model, streaming, backend):
    assert llmtally.resolve_provider("auto", path, backend=backend) == provider
    for pid in (provider, "auto"):
        info = llmtally.parse_request(b"{}", pid, path, backend=backend)
        assert (info.model, info.streaming) == (model, streaming)
    info = llmtally.parse_request(b'{"model":"body-model","stream":false}', provider, path, backend=backend)
    assert (info.model, info.streaming) == ("body-model", False)
