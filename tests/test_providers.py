"""Providers: id resolution and `auto` detection, what request paths tell,
and provider-specific usage rules. Both backends."""

import json

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
        # percent-encoded letters are the same URL to Google: the model (and its budget key) is the decoded name
        ("/v1beta/models/%67emini-2.5-pro:generateContent", "gemini", "gemini-2.5-pro", False),
        (
            "/v1/projects/p/locations/l/publishers/google/models/gemini%2D2.0-flash:streamGenerateContent",
            "vertex-ai",
            "gemini-2.0-flash",
            True,
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
        # Claude on Vertex AI: the model only in the path (a body's `model` cannot pick another budget)
        (
            "/v1/projects/p/locations/l/publishers/anthropic/models/claude-opus-4@20250514:streamRawPredict",
            "anthropic",
            "claude-opus-4@20250514",
            False,
        ),
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


def sse(*docs) -> bytes:
    return b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs)


def scan(provider, body, backend, content_type="text/event-stream", request=None, **kw):
    sc = llmtally.ResponseScanner(provider, request, content_type=content_type, backend=backend, **kw)
    sc.feed(body)
    return sc.finish()


WORDS = " ".join(["tokens"] * 40)  # 41 tokens in o200k_base


def test_final_usage_of_complete_responses_and_interactions_streams_wins(backend):
    """Usage that only final events carry is final: the delivered text never replaces it."""
    body = sse(
        {"type": "response.created", "response": {"id": "r", "status": "in_progress", "model": "m"}},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": WORDS},
        {
            "type": "response.completed",
            "response": {"usage": {"input_tokens": 10, "output_tokens": 30, "total_tokens": 40}},
        },
    )
    u = scan("openai", body, backend)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.source) == (10, 30, 40, "provider")
    body = sse(
        {"event_type": "interaction.created", "interaction": {"id": "i", "status": "in_progress"}},
        {"event_type": "step.delta", "index": 1, "delta": {"type": "text", "text": WORDS}},
        {
            "event_type": "interaction.completed",
            "interaction": {"usage": {"total_input_tokens": 9, "total_output_tokens": 30, "total_tokens": 39}},
        },
    )
    u = scan("gemini", body, backend, path="/v1beta/interactions")
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.source) == (9, 30, 39, "provider")


def test_a_compaction_summary_delivered_before_a_cut_is_charged(backend):
    summary = " ".join(["summary"] * 60)
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-opus-4-6",'
        b'"usage":{"input_tokens":60385,"output_tokens":5}}}\n\n'
        + b"event: content_block_delta\ndata: "
        + json.dumps(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "compaction_delta", "content": summary}}
        ).encode()
        + b"\n\n"
    )
    u = scan("anthropic", body, backend)
    want = llmtally.count_tokens(summary, backend=backend)
    assert (u.prompt_tokens, u.completion_tokens, u.source) == (60385, want, "provider+tokenizer")


def test_empty_finish_reasons_and_other_choices_keep_running_usage_provisional(backend):
    """TGI-style `"finish_reason": ""` on every chunk is no finish; and one choice finishing does not make the
    running usage final while another choice still streams."""
    chunks = [
        {
            "choices": [{"index": 0, "delta": {"content": " tokens"}, "finish_reason": ""}],
            "usage": {"prompt_tokens": 5, "completion_tokens": i, "total_tokens": 5 + i},
        }
        for i in range(20)
    ]
    u = scan("openai", sse(*chunks), backend, request=llmtally.RequestInfo(model="gpt-4o", streaming=True))
    assert (u.completion_tokens, u.source) == (20, "provider+tokenizer")  # 20 delivered, 19 reported
    first = {
        "candidates": [{"index": 0, "content": {"parts": [{"text": "Done."}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
    }
    rest = [{"candidates": [{"index": 1, "content": {"parts": [{"text": " tokens"}]}}]} for _ in range(30)]
    u = scan("gemini", sse(first, *rest), backend)
    assert (u.completion_tokens, u.source) == (2 + 30, "provider+tokenizer")


def test_body_markers_do_not_misread_content(backend):
    """Markers are quoted JSON names found earliest in the body; a NUL first byte is an event stream."""
    anthropic = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x",'
        b'"usage":{"input_tokens":20,"output_tokens":1}}}\n\nevent: content_block_delta\ndata: '
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Wait for interaction.completed '
        b'and :event-type."}}\n\n'
    )
    assert llmtally.sniff_provider(anthropic, backend=backend) == "anthropic"
    openai = b'{"model":"gpt-4o","usage":{"prompt_tokens":2000,"completion_tokens":9,"cache_creation_input_tokens":1}}'
    assert llmtally.sniff_provider(openai, backend=backend) is None
    assert llmtally.sniff_provider(b"\x00\x00\x00\x55rest", backend=backend) == "bedrock"


def test_claude_on_bedrock_reads_thinking_and_iterations(backend):
    body = json.dumps(
        {
            "model": "claude",
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 612,
                "output_tokens": 2819,
                "output_tokens_details": {"thinking_tokens": 62},
                "iterations": [
                    {"type": "compaction", "input_tokens": 60385, "output_tokens": 522},
                    {"type": "message", "input_tokens": 612, "output_tokens": 2819},
                ],
            },
        }
    ).encode()
    u = scan("bedrock", body, backend, content_type="application/json", path="/model/x/invoke")
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens) == (60997, 3341, 62)


def test_usage_headers_win_over_the_body(backend):
    body = b'{"output":{"message":{"content":[{"text":"hi"}]}},"usage":{"inputTokens":30,"outputTokens":0}}'
    headers = {"X-Amzn-Bedrock-Input-Token-Count": "30", "x-amzn-bedrock-output-token-count": " 51 "}
    u = scan("bedrock", body, backend, content_type="application/json", path="/model/m/invoke", headers=headers)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.source) == (30, 51, 81, "provider")


def test_provisional_reasoning_is_at_least_the_reasoning_delivered(backend):
    thought = " ".join(["think"] * 30)
    chunk = {
        "choices": [{"index": 0, "delta": {"reasoning_content": thought}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 80, "total_tokens": 83},
    }
    u = scan("openai", sse(chunk), backend, request=llmtally.RequestInfo(model="gpt-4o", streaming=True))
    want = llmtally.count_tokens(thought, model="gpt-4o", backend=backend)
    assert (u.completion_tokens, u.reasoning_tokens, u.source) == (80, want, "provider")


def ids_and_reasons(provider, ct, body, backend, step=None):
    sc = llmtally.ResponseScanner(provider, content_type=ct, backend=backend)
    pieces = [body] if step is None else [body[i : i + step] for i in range(0, len(body), step)]
    for p in pieces:
        sc.feed(p)
    u = sc.finish()
    return u.response_id, u.finish_reasons


@pytest.mark.parametrize(
    "provider, ct, body, want",
    [
        # candidates finishing in any order, `index` after `finishReason`; the first responseId
        (
            "gemini",
            "text/event-stream",
            b'data: {"candidates":[{"finishReason":"MAX_TOKENS","index":2}],"responseId":"r-1"}\n\n'
            b'data: {"candidates":[{"finishReason":"STOP"},{"index":1,"finishReason":"SAFETY"}],'
            b'"responseId":"r-2"}\n\n',
            ("r-1", ("STOP", "SAFETY", "MAX_TOKENS")),
        ),
        # the Responses API: the response's id, its incomplete reason (completed: none)
        (
            "openai",
            "text/event-stream",
            b'data: {"type":"response.created","response":{"id":"resp_9","status":"in_progress",'
            b'"incomplete_details":null}}\n\n'
            b'data: {"type":"response.incomplete","response":{"id":"resp_9","status":"incomplete",'
            b'"incomplete_details":{"reason":"content_filter"}}}\n\n',
            ("resp_9", ("content_filter",)),
        ),
        # Anthropic: message_start's id (a tool_use block's id is not the response's), the stop reason
        (
            "anthropic",
            "text/event-stream",
            b'data: {"type":"message_start","message":{"id":"msg_7","stop_reason":null}}\n\n'
            b'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1"}}\n\n'
            b'data: {"type":"message_delta","delta":{"stop_reason":"tool_use"}}\n\n',
            ("msg_7", ("tool_use",)),
        ),
        # Cohere v2: message-start's id, message-end's reason
        (
            "cohere",
            "text/event-stream",
            b'data: {"type":"message-start","id":"c-1","delta":{"message":{"role":"assistant"}}}\n\n'
            b'data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hi"}}}}\n\n'
            b'data: {"type":"message-end","delta":{"finish_reason":"COMPLETE"}}\n\n',
            ("c-1", ("COMPLETE",)),
        ),
        # Bedrock InvokeModel, Claude: the message id of the Anthropic body
        (
            "bedrock",
            "application/json",
            b'{"id":"msg_bdrk_1","type":"message","stop_reason":"end_turn"}',
            ("msg_bdrk_1", ("end_turn",)),
        ),
        # hostile values: an id past 256 bytes, control characters, a reason past 64 bytes
        (
            "openai",
            "text/event-stream",
            b'data: {"id":"' + b"x" * 257 + b'","choices":[{"index":0,"finish_reason":"' + b"y" * 65 + b'"}]}\n\n'
            b'data: {"id":"a\\u0000b","choices":[{"index":1,"finish_reason":"st\\nop"}]}\n\n'
            b'data: {"id":"\xc3\xa9t\xc3\xa9","choices":[{"index":2,"finish_reason":"stop"}]}\n\n'
            b'data: {"id":"chatcmpl-ok","choices":[{"index":3,"finish_reason":"length"}]}\n\n',
            ("chatcmpl-ok", ("stop", "length")),
        ),
    ],
    ids=["gemini", "responses", "anthropic", "cohere", "bedrock-claude", "hostile"],
)
def test_response_ids_and_finish_reasons(provider, ct, body, want, backend):
    for step in (None, 1, 5):
        assert ids_and_reasons(provider, ct, body, backend, step) == want


def test_finish_reasons_keep_at_most_16_choices(backend):
    chunks = b"".join(b'data: {"choices":[{"index":%d,"finish_reason":"r%d"}]}\n\n' % (i, i) for i in range(30, 10, -1))
    # indexes 30..15 are kept (the first 16 seen); 14..11 are not; a kept index takes a later reason
    chunks += b'data: {"choices":[{"index":15,"finish_reason":"last"}]}\n\n'
    _, reasons = ids_and_reasons("openai", "text/event-stream", chunks, backend)
    assert reasons == ("last",) + tuple(f"r{i}" for i in range(16, 31))


def test_snapshots_change_only_with_the_change_counters(backend):
    """A host that snapshots only when `usage_changes` or `text_changes` grew sees every new id and reason."""
    body = (
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    )
    for step in (1, 3, 40):
        req = llmtally.RequestInfo(streaming=True)  # `streaming` is not what is watched here
        sc = llmtally.ResponseScanner("openai", req, content_type="text/event-stream", backend=backend)
        seen, last = (0, 0), sc.snapshot()
        for i in range(0, len(body), step):
            sc.feed(body[i : i + step])
            u = sc.snapshot()
            now = (sc.usage_changes(), sc.text_changes())
            if now == seen:
                assert u == last, (step, i)
            seen, last = now, u
        assert (last.response_id, last.finish_reasons) == ("chatcmpl-1", ("stop",))
        assert sc.finish() == last


@pytest.mark.parametrize(
    "provider, path, want",
    [
        ("gemini", "/v1beta/openai/chat/completions", "openai"),
        ("gemini", "/v1beta/openai/embeddings", "openai"),
        ("vertex-ai", "/v1/projects/p/locations/l/endpoints/openapi/chat/completions", "openai"),
        ("cohere", "/compatibility/v1/chat/completions", "openai"),
        ("anthropic", "/v1/chat/completions", "openai"),
        ("bedrock", "/openai/v1/chat/completions", "openai"),
        (
            "vertex-ai",
            "/v1/projects/p/locations/l/publishers/anthropic/models/claude-x@1:streamRawPredict",
            "anthropic",
        ),
        ("auto", "/v1/projects/p/locations/l/publishers/anthropic/models/claude-x@1:rawPredict", "anthropic"),
        ("azure", "/openai/deployments/d/chat/completions", "azure"),
        ("mistral", "/v1/chat/completions", "mistral"),
        ("ollama", "/v1/chat/completions", "ollama"),
        ("cohere", "/v2/chat", "cohere"),
        ("gemini", "/v1beta/models/m:streamGenerateContent", "gemini"),
    ],
)
def test_another_apis_paths_under_an_id(provider, path, want, backend):
    """A provider's OpenAI-compatible endpoint (and Claude on Vertex AI) is read in that API's format whatever
    id the route names: under `gemini`, Gemini's OpenAI endpoint read as zeros before."""
    assert llmtally.resolve_provider(provider, path, backend=backend) == want
    if "/publishers/anthropic/models/" in path:  # the path's model stays the request's under every id
        assert llmtally.parse_request(b"{}", provider, path, backend=backend).model == "claude-x@1"
