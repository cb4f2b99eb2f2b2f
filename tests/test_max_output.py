"""`RequestInfo.max_output_tokens`: the output-token limit a request sets, per request format, against
exact values and an independent oracle (tests/oracle.py: json.loads of the same bytes); values that
are not plain integers, repeated keys, the fixtures' recorded requests, random values and random
splits of the fallback's scan. Both backends."""

import json
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmtally
import oracle
from conftest import BACKENDS, load
from llmtally.fallback import json_scan
from llmtally.fallback import request as fallback_request
from llmtally.fallback.registry import resolve

CHAT = "/v1/chat/completions"
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
VERTEX = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent"
MESSAGES = [{"role": "user", "content": "Hello"}]

# (provider, path, body, the limit)
FORMATS = [
    # OpenAI Chat Completions: max_completion_tokens, else max_tokens
    ("openai", CHAT, {"model": "gpt-4o", "messages": MESSAGES, "max_completion_tokens": 512}, 512),
    ("openai", CHAT, {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 300}, 300),
    ("openai", CHAT, {"model": "gpt-4o", "max_tokens": 300, "max_completion_tokens": 700}, 700),
    ("openai", CHAT, {"model": "gpt-4o", "max_completion_tokens": 700, "max_tokens": 300}, 700),
    ("openai", CHAT, {"model": "gpt-4o", "max_completion_tokens": None, "max_tokens": 300}, 300),
    ("openai", CHAT, {"model": "gpt-4o", "max_completion_tokens": -5, "max_tokens": 300}, 300),
    ("openai", CHAT, {"model": "gpt-4o", "messages": MESSAGES, "stream": True}, None),
    # Responses API, legacy completions, embeddings (no limit)
    ("openai", "/v1/responses", {"model": "gpt-5", "input": "Hi", "max_output_tokens": 2048}, 2048),
    ("openai", "/v1/responses", {"model": "gpt-5", "input": "Hi"}, None),
    ("openai", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "max_tokens": 16}, 16),
    ("openai", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "Hi"}, None),
    # the OpenAI-compatible ids, `auto` and an unknown id
    ("azure", "/openai/deployments/my-gpt4o/chat/completions", {"messages": MESSAGES, "max_completion_tokens": 64}, 64),
    ("azure", "/openai/deployments/my-gpt4o/chat/completions", {"messages": MESSAGES, "max_tokens": 65}, 65),
    ("mistral", CHAT, {"model": "mistral-large-latest", "messages": MESSAGES, "max_tokens": 100}, 100),
    ("auto", CHAT, {"model": "gpt-4o", "max_tokens": 8}, 8),
    ("vllm", CHAT, {"model": "llama", "max_completion_tokens": 9}, 9),
    # Anthropic Messages
    ("anthropic", "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": MESSAGES}, 1024),
    ("anthropic", "/v1/messages", {"model": "claude-sonnet-4-5", "messages": MESSAGES}, None),
    ("auto", "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 4000}, 4000),
    # Bedrock: InvokeModel with an Anthropic body; Converse; other InvokeModel families
    (
        "bedrock",
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke",
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 4096, "messages": MESSAGES},
        4096,
    ),
    (
        "bedrock",
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 2000}},
        2000,
    ),
    ("bedrock", "/model/m/converse-stream", {"inferenceConfig": {"temperature": 0.5, "maxTokens": 10}}, 10),
    ("bedrock", "/model/m/converse-stream", {"inferenceConfig": {"temperature": 0.5}}, None),
    ("bedrock", "/model/meta.llama3-70b-instruct-v1%3A0/invoke", {"prompt": "Hi", "max_gen_len": 128}, 128),
    (
        "bedrock",
        "/model/amazon.titan-text-express-v1/invoke",
        {"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 200}},
        200,
    ),
    ("bedrock", "/model/cohere.command-text-v14/invoke", {"prompt": "Hi", "max_tokens": 200}, 200),
    # Gemini and Vertex AI generateContent (camelCase and snake_case), the Interactions API
    ("gemini", GEMINI, {"contents": [], "generationConfig": {"temperature": 1, "maxOutputTokens": 800}}, 800),
    ("gemini", GEMINI, {"contents": [], "generation_config": {"max_output_tokens": 900}}, 900),
    ("gemini", GEMINI, {"contents": [], "generationConfig": {"responseSchema": {"type": "object"}}}, None),
    ("gemini", GEMINI, {"maxOutputTokens": 5, "max_tokens": 6}, None),
    ("gemini", "/v1beta/interactions", {"input": "Hi", "generation_config": {"max_output_tokens": 300}}, 300),
    ("vertex-ai", VERTEX, {"contents": [], "generationConfig": {"maxOutputTokens": 8192}}, 8192),
    ("auto", VERTEX, {"contents": [], "generationConfig": {"maxOutputTokens": 8191}}, 8191),
    # Cohere v2 chat (and v1)
    ("cohere", "/v2/chat", {"model": "command-a-03-2025", "messages": MESSAGES, "max_tokens": 250}, 250),
    ("cohere", "/v1/chat", {"model": "command-r", "message": "Hi", "max_tokens": 251}, 251),
    ("cohere", "/v2/chat", {"model": "command-a-03-2025", "messages": MESSAGES}, None),
    # Ollama: options.num_predict (negative: unlimited), max_tokens on its /v1 endpoints
    ("ollama", "/api/chat", {"model": "llama3.2", "messages": MESSAGES, "options": {"num_predict": 128}}, 128),
    ("ollama", "/api/generate", {"model": "llama3.2", "prompt": "Hi", "options": {"num_predict": 0}}, 0),
    ("ollama", "/api/generate", {"model": "llama3.2", "prompt": "Hi", "options": {"num_predict": -1}}, None),
    ("ollama", "/api/generate", {"model": "llama3.2", "prompt": "Hi", "options": {"num_predict": -2}}, None),
    ("ollama", "/api/chat", {"model": "llama3.2", "messages": MESSAGES, "num_predict": 128}, None),
    ("ollama", "/v1/chat/completions", {"model": "llama3.2", "messages": MESSAGES, "max_tokens": 77}, 77),
]


@pytest.mark.parametrize(
    "provider, path, body, want", FORMATS, ids=[f"{p}{u}-{i}" for i, (p, u, _, _) in enumerate(FORMATS)]
)
@pytest.mark.parametrize("indent", [None, 2])
def test_output_limit_per_format(provider, path, body, want, indent, backend):
    resolved = llmtally.resolve_provider(provider, path, backend=backend)
    assert oracle.max_output_tokens(body, resolved) == want
    raw = json.dumps(body, indent=indent).encode()
    assert llmtally.parse_request(raw, provider, path, backend=backend).max_output_tokens == want


# (provider, a body with `{}` where the value goes)
PLACES = [
    ("openai", '{"model":"gpt-4o","max_completion_tokens":%s}'),
    ("openai", '{"model":"gpt-4o","max_tokens":%s}'),
    ("openai", '{"model":"gpt-5","max_output_tokens":%s}'),
    ("anthropic", '{"model":"claude-sonnet-4-5","max_tokens":%s}'),
    ("bedrock", '{"inferenceConfig":{"maxTokens":%s}}'),
    ("gemini", '{"generationConfig":{"maxOutputTokens":%s}}'),
    ("vertex-ai", '{"generation_config":{"max_output_tokens":%s}}'),
    ("cohere", '{"model":"command-a-03-2025","max_tokens":%s}'),
    ("ollama", '{"model":"llama3.2","options":{"num_predict":%s}}'),
]
NOT_A_LIMIT = [
    "-1",
    "-0",
    "1.5",
    "100.0",
    "1e3",
    "1E3",
    '"100"',
    "null",
    "true",
    "false",
    "[100]",
    '{"n":100}',
    "4294967297",
    "18446744073709551616",
    "9" * 40,
]


@pytest.mark.parametrize("value", NOT_A_LIMIT)
@pytest.mark.parametrize("provider, template", PLACES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(PLACES)])
def test_values_that_are_not_plain_integers_are_no_limit(provider, template, value, backend):
    assert llmtally.parse_request((template % value).encode(), provider, backend=backend).max_output_tokens is None


@pytest.mark.parametrize("provider, template", PLACES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(PLACES)])
def test_limits_at_the_bounds(provider, template, backend):
    for value, want in (("0", 0), ("1", 1), ("4294967296", 1 << 32), (" 64 ", 64)):
        info = llmtally.parse_request((template % value).encode(), provider, backend=backend)
        assert info.max_output_tokens == want


# a key repeated: the last value wins (as json.loads and most servers' parsers keep it), a non-integer included
REPEATED = [
    ("openai", '{"max_tokens":10,"max_tokens":20}', 20),
    ("openai", '{"max_tokens":10,"max_tokens":-1}', None),
    ("openai", '{"max_completion_tokens":10,"max_completion_tokens":null,"max_tokens":99}', 99),
    ("openai", '{"max_completion_tokens":10,"max_tokens":99,"max_tokens":"x"}', 10),
    ("anthropic", '{"max_tokens":10,"max_tokens":"x"}', None),
    ("anthropic", '{"max_tokens":"x","max_tokens":10}', 10),
    ("gemini", '{"generationConfig":{"maxOutputTokens":10,"maxOutputTokens":30}}', 30),
    ("ollama", '{"options":{"num_predict":10,"num_predict":-1}}', None),
    ("ollama", '{"options":{"num_predict":10},"options":{"temperature":0}}', 10),
]


@pytest.mark.parametrize("provider, body, want", REPEATED)
def test_a_repeated_key_keeps_its_last_value(provider, body, want, backend):
    assert llmtally.parse_request(body.encode(), provider, backend=backend).max_output_tokens == want


def test_cut_bodies(backend):
    """Envoy may pass only the first part of a large body: a number at the cut is read as it stands (as
    every integer field), a value cut inside a string or array is not a value."""
    cases = [
        ('{"max_tokens":10', 10),
        ('{"max_tokens":10,"max_tokens":"1', 10),
        ('{"max_tokens":10,"max_tokens":[1', 10),
        ('{"messages":[{"role":"user","content":"Hel', None),
    ]
    for body, want in cases:
        assert llmtally.parse_request(body.encode(), "anthropic", backend=backend).max_output_tokens == want


def test_recorded_requests(backend):
    """The fixtures' request bodies (recorded by public test suites, see SOURCES.md)."""
    cases = [
        ("anthropic", "/v1/messages", "anthropic/messages_stream.request.json", 1024),
        ("bedrock", "/model/m/invoke-with-response-stream", "bedrock/invoke_stream_claude3_sonnet.request.json", 200),
        ("bedrock", "/model/m/converse-stream", "bedrock/converse_stream.request.json", 512),
        ("bedrock", "/model/m/converse-stream", "bedrock/converse_stream_titan_guardrail.request.json", None),
        ("bedrock", "/model/m/invoke", "bedrock/invoke_cohere_command_text.request.json", 200),
        ("bedrock", "/model/m/invoke", "bedrock/invoke_llama3_70b.request.json", 128),
        ("bedrock", "/model/m/invoke", "bedrock/invoke_nova_lite_guardrail.request.json", 500),
        ("bedrock", "/model/m/invoke", "bedrock/invoke_titan_text_express.request.json", 200),
        ("openai", CHAT, "openai/chat_stream_usage.request.json", None),
    ]
    for provider, path, rel, want in cases:
        body = load(rel)
        assert oracle.max_output_tokens(json.loads(body), provider) == want, rel
        assert llmtally.parse_request(body, provider, path, backend=backend).max_output_tokens == want, rel


def test_request_info_keeps_its_positional_fields():
    info = llmtally.RequestInfo("gpt-4o", True, False, 5)
    assert info.max_output_tokens is None
    assert llmtally.RequestInfo("gpt-4o", True, False, 5, 100).max_output_tokens == 100
    assert llmtally.RequestInfo().max_output_tokens is None


def test_the_scanner_takes_requests_with_and_without_the_limit(backend):
    """ResponseScanner reads any object with RequestInfo's attributes; `max_output_tokens` may be missing."""
    plain = types.SimpleNamespace(model="gpt-4o", streaming=True, include_usage=False, prompt_tokens=7)
    full = llmtally.parse_request(b'{"model":"gpt-4o","stream":true,"max_tokens":50}', "openai", backend=backend)
    assert full.max_output_tokens == 50
    results = []
    for req in (plain, full, llmtally.RequestInfo("gpt-4o", True, False, 7, 99)):
        sc = llmtally.ResponseScanner("openai", req, content_type="text/event-stream", backend=backend)
        sc.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\ndata: [DONE]\n\n')
        results.append(sc.finish())
    assert results[0].completion_tokens == results[1].completion_tokens == results[2].completion_tokens > 0
    assert results[0].model == "gpt-4o"


VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.integers(0, (1 << 32) + 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=6,
)
# at a limit's key: mostly integers, near 0 and near 2^32
AT_KEY = st.integers(0, 5000) | st.integers((1 << 32) - 2, (1 << 32) + 2) | VALUES


def _bodies(spec):
    """A body with any subset of the spec's keys (and another key), in any order, each with any value."""
    kids = {k: (_bodies(s) if isinstance(s, dict) else AT_KEY) for k, s in spec.items()}
    kids["temperature"] = VALUES
    return st.lists(st.sampled_from(sorted(kids)), unique=True).flatmap(
        lambda keys: st.tuples(*[kids[k] for k in keys]).map(lambda vals: dict(zip(keys, vals, strict=True)))
    )


BODIES = st.sampled_from(sorted(oracle.OUTPUT_LIMITS)).flatmap(
    lambda p: st.tuples(st.just(p), _bodies(oracle.OUTPUT_LIMITS[p]))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODIES, st.sampled_from([None, 1]), st.lists(st.integers(0, 300), max_size=6))
def test_any_values_agree_with_json_loads(provider_body, indent, cuts):
    """Any values at the limit's keys, in any order: both backends give what json.loads of the same bytes
    implies; the fallback's scan gives the same under random splits."""
    provider, body = provider_body
    raw = json.dumps(body, indent=indent).encode()
    want = oracle.max_output_tokens(json.loads(raw), provider)
    got = [llmtally.parse_request(raw, provider, backend=b).max_output_tokens for b in BACKENDS]
    assert got == [want, want]
    sc = json_scan.JsonScanner(resolve(provider, "").request)
    c = fallback_request._Collect()
    at = 0
    for cut in sorted(min(cut, len(raw)) for cut in cuts) + [len(raw)]:
        sc.feed(raw[at:cut], c)
        at = cut
    sc.end_doc(c)
    c.finish()
    assert (c.max_output if c.max_output is not None else c.max_output_alt) == want
