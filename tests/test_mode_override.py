"""A response body of a known, bounded length in one ext_proc message (issue #19 item 2): the response headers'
answer carries `mode_override` with response_body_mode BUFFERED, which Envoy honours with the filter's
`allow_mode_override` (the generated bootstrap sets it). Streams, bodies without a content-length and bodies
past `bufferResponseBodyBytes` stay STREAMED, chunk by chunk."""

from __future__ import annotations

import json
import urllib.request

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

import oracle
from llmtally.config import Config
from llmtally.demo import SEED_BODY, SEED_PROMPT, SEED_STREAM_BODY, Stack, keys, rate_limit_settings, upstream
from llmtally.exchange import Exchange, Host
from llmtally.gateway import bootstrap
from llmtally.metrics import Metrics

ANSWER = upstream.ANSWERS[SEED_PROMPT]


def hv(k: str, v: str) -> base_pb2.HeaderValue:
    return base_pb2.HeaderValue(key=k, raw_value=v.encode())


def answer_to_headers(config: Config, body: dict, headers: list[tuple[str, str]]) -> pb.ProcessingResponse:
    host = Host(config, Metrics(config))
    ex = Exchange(host, None)
    h = base_pb2.HeaderMap(headers=[hv(":method", "POST"), hv(":path", "/v1/chat/completions")])
    ex.handle(pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=h)))
    ex.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=json.dumps(body).encode(), end_of_stream=True)))
    rh = base_pb2.HeaderMap(headers=[hv(":status", "200"), *(hv(k, v) for k, v in headers)])
    return ex.handle(pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=rh)))


JSON = [("content-type", "application/json"), ("content-length", "65536")]


@pytest.mark.parametrize(
    "config, body, headers, buffered",
    [
        ({}, SEED_BODY, JSON, True),
        ({}, SEED_BODY, [("content-type", "application/json; charset=utf-8"), ("content-length", "1048576")], True),
        ({}, SEED_BODY, [("content-type", "application/json"), ("content-length", "1048577")], False),  # past 1 MiB
        ({}, SEED_BODY, [("content-type", "application/json")], False),  # no length: it may be a stream
        ({}, SEED_BODY, [("content-type", "application/json"), ("content-length", "16384")], False),  # one read
        ({}, SEED_BODY, [("content-type", "application/json"), ("content-length", "16385")], True),
        ({}, SEED_BODY, [("content-type", "application/json"), ("content-length", "+65536")], False),
        ({}, SEED_BODY, [("content-type", "application/json"), ("content-length", "9" * 5000)], False),  # no int()
        ({}, SEED_BODY, [("content-type", "application/json"), ("content-length", "６５５３６")], False),  # not ASCII
        ({}, SEED_BODY, [("content-type", "text/event-stream"), ("content-length", "65536")], False),
        ({}, SEED_BODY, [("content-type", "application/x-ndjson"), ("content-length", "65536")], False),
        ({}, SEED_BODY, [("content-type", "application/vnd.amazon.eventstream"), ("content-length", "65536")], False),
        ({}, SEED_STREAM_BODY, JSON, False),  # the request asked for a stream
        ({"buffer_response_body_bytes": 0}, SEED_BODY, JSON, False),
        ({"buffer_response_body_bytes": 65535}, SEED_BODY, JSON, False),
        ({"observe": True}, SEED_BODY, JSON, False),
    ],
)
def test_which_response_bodies_are_asked_for_in_one_message(config, body, headers, buffered):
    resp = answer_to_headers(Config(**config), body, headers)
    assert resp.WhichOneof("response") == "response_headers" or resp == pb.ProcessingResponse()
    assert resp.HasField("mode_override") is buffered
    if buffered:
        assert resp.mode_override == ProcessingMode(
            request_header_mode=ProcessingMode.SEND,
            response_header_mode=ProcessingMode.SEND,
            request_body_mode=ProcessingMode.BUFFERED_PARTIAL,
            response_body_mode=ProcessingMode.BUFFERED,
            request_trailer_mode=ProcessingMode.SKIP,
            response_trailer_mode=ProcessingMode.SKIP,
        )


def test_a_large_answer_in_one_message_is_counted_as_the_provider_reports_it(stack):
    """About 700 KB of JSON, within the default bound and Envoy's 4 MiB buffer, written in 8 pieces."""
    token = stack.key.token(keys.ALICE)
    before, lines = messages_sent(stack), len(stack.access_lines(0))
    status, headers, body = stack.request("/openai", token, SEED_BODY, {**EIGHT_WRITES, "x-mock-repeat": "3000"})
    assert status == 200 and 600_000 < len(body) < 1 << 20
    assert "x-ratelimit-limit-tokens" in headers
    usage = json.loads(body)["usage"]
    line = stack.access_lines(lines + 1)[lines]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert messages_sent(stack) - before == 4


def test_the_override_keeps_the_configured_request_body_mode():
    resp = answer_to_headers(Config(request_body_mode="STREAMED"), SEED_BODY, JSON)
    assert resp.mode_override.request_body_mode == ProcessingMode.STREAMED


def test_the_bootstrap_allows_the_override_except_in_observe_mode():
    def ext(**kw):
        cfg = bootstrap(
            listen_port=1,
            admin_port=2,
            llmtally_addr="127.0.0.1:3",
            access_log="/dev/null",
            upstream_addr="127.0.0.1:4",
            jwks=keys.SigningKey().jwks(),
            **kw,
        )
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return next(f["typed_config"] for f in hcm["http_filters"] if f["name"].endswith("ext_proc"))

    assert ext()["allow_mode_override"] is True
    assert "allow_mode_override" not in ext(observe=True)


# -- behind a real Envoy --


#: budgets that hold the large answer (enforced, with x-ratelimit-* headers added to the response headers' answer:
#: the override rides on that answer's copy)
ROOMY = rate_limit_settings(budgets={"dev": 10**9, "ops": 10**9}, spend={})


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(str(tmp_path_factory.mktemp("override")), rate_limit=ROOMY).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    s = Stack(
        str(tmp_path_factory.mktemp("override-small")), rate_limit=ROOMY, config={"bufferResponseBodyBytes": 100}
    ).start()
    yield s
    s.stop()


def messages_sent(s: Stack) -> int:
    url = f"http://127.0.0.1:{s.admin_port}/stats?filter=ext_proc.stream_msgs_sent$"
    return int(urllib.request.urlopen(url, timeout=5).read().decode().rpartition(": ")[2])


#: the mock writes the JSON answer (about 32 KB: over the 16 KiB below which nothing is asked) in 8 pieces
#: 20 ms apart: Envoy reads each on its own
EIGHT_WRITES = {"x-mock-json-writes": "8", "x-mock-delay-ms": "20", "x-mock-repeat": "150"}


@pytest.mark.parametrize(
    "which, headers, messages",
    [
        # request headers, request body, response headers, the whole body
        ("stack", EIGHT_WRITES, 4),
        # no content-length: chunk by chunk, then the end of the stream
        ("stack", {**EIGHT_WRITES, "x-mock-json-chunked": "1"}, 3 + 8 + 1),
        # a length past bufferResponseBodyBytes: chunk by chunk, then the end (as before the override: 12)
        ("small_stack", EIGHT_WRITES, 3 + 8 + 1),
    ],
)
def test_messages_per_request_and_the_same_counts_behind_envoy(request, which, headers, messages):
    s = request.getfixturevalue(which)
    token = s.key.token(keys.ALICE)
    before, lines = messages_sent(s), len(s.access_lines(0))
    status, body = s.post("/openai", token, SEED_BODY, headers)
    assert status == 200 and 16 << 10 < len(body) < 64 << 10
    doc = json.loads(body)
    assert doc["choices"][0]["message"]["content"].startswith(ANSWER)  # the client gets the upstream's bytes
    usage = doc["usage"]
    assert usage["completion_tokens"] > 150 * oracle.count(ANSWER, "cl100k_base") // 2
    line = s.access_lines(lines + 1)[lines]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert messages_sent(s) - before == messages
