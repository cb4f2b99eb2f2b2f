"""Hostile message orders against the host (`Exchange` and `Processor._end` in-process, with budgets, prices
and the body budget on): whatever messages come, in whatever order and size, nothing raises, every answer
matches its message, the shared body budget returns to zero, and no budget counter goes negative or keeps a
reservation after its stream ended."""

import asyncio
import json

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtally.budgets import Budgets, Limit, MemoryStore
from llmtally.config import Config, CustomLabel, RateLimitConfig
from llmtally.exchange import Exchange, Host
from llmtally.metrics import Metrics
from llmtally.pricing import parse_table
from llmtally.server import Processor

BODY = json.dumps({"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi " * 40}]})
SSE = b'data: {"choices":[{"delta":{"content":"hello"}}],"model":"gpt-4o"}\n\n' + (
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}\n\ndata: [DONE]\n\n'
)


def headers(*pairs):
    return pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v) for k, v in pairs])
    )


def _jwt(team: str) -> base_pb2.Metadata:
    from google.protobuf.struct_pb2 import Struct

    s = Struct()
    s.update({"principal": {"team": team}})
    return base_pb2.Metadata(filter_metadata={"envoy.filters.http.jwt_authn": s})


def message(kind: str, data: bytes, eos: bool, team: str) -> pb.ProcessingRequest:
    md = {"metadata_context": _jwt(team)}
    if kind == "request_headers":
        h = headers((":path", b"/v1/chat/completions"), (":method", b"POST"))
        return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=h.headers, end_of_stream=eos), **md)
    if kind == "response_headers":
        h = headers((":status", b"200"), ("content-type", b"text/event-stream"))
        return pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=h.headers, end_of_stream=eos), **md)
    if kind == "request_body":
        return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=eos), **md)
    if kind == "response_body":
        return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=eos), **md)
    if kind == "request_trailers":
        return pb.ProcessingRequest(request_trailers=pb.HttpTrailers(), **md)
    return pb.ProcessingRequest(response_trailers=pb.HttpTrailers(), **md)


KINDS = [
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "response_trailers",
]
pieces = st.sampled_from([BODY.encode(), BODY.encode()[:50], SSE, SSE[:40], b"", b"\xff" * 70_000, b"{"])
messages = st.lists(
    st.tuples(st.sampled_from(KINDS), pieces, st.booleans(), st.sampled_from(["ops", "dev", "x" * 300])),
    max_size=12,
)


LIMITS = (Limit(("team",), tokens=500, requests=5, window=3600), Limit(("team", "model"), microusd=10_000, window=60))


def _host() -> tuple[Host, Processor, MemoryStore]:
    config = Config(
        custom_labels=(CustomLabel("team", "principal:team"),),
        max_buffered_body_bytes=200_000,
        max_request_body_bytes=100_000,
        pricing=parse_table({"models": {"gpt-4o": {"input": 2.5, "output": 10}}}),
        rate_limit=RateLimitConfig(enforce=True, limits=LIMITS, default_max_output_tokens=50),
    ).validate()
    host = Host(config, Metrics(config))
    store = MemoryStore()
    host.budgets = Budgets(LIMITS, store)
    assert host.enforce
    return host, Processor(host, pool=None), store  # type: ignore[arg-type]  # no heavy work is offloaded here


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=4))
def test_any_message_order_keeps_every_bound(streams):
    host, processor, store = _host()

    async def run():
        for msgs in streams:
            ex = Exchange(host, "openai")
            for kind, data, eos, team in msgs:
                req = message(kind, data, eos, team)
                resp = ex.handle(req)
                if ex.reserve_tokens is not None and resp is not None:
                    resp = await host.admit(ex, resp)
                assert resp is not None
                if isinstance(resp, bytes):  # a mid-stream answer, serialized already
                    resp = pb.ProcessingResponse.FromString(resp)
                answered = resp.WhichOneof("response")
                assert answered in (kind, "immediate_response")
            processor._end(ex)
        await host.budgets.drain()

    asyncio.run(run())
    assert host.buffered == 0  # every stream gave its request-body bytes back
    assert all(v >= 0 for v, _ in store.counts.values()), store.counts
    assert store.records == {}  # every reservation was settled or never made
    assert sum(host.metrics.exceptions._metrics[k]._value.get() for k in host.metrics.exceptions._metrics) == 0


_numbers = st.fixed_dictionaries(
    {
        "prompt_tokens": st.integers(0, 10**7),
        "completion_tokens": st.integers(0, 10**7),
        "total_tokens": st.integers(0, 2 * 10**7),
        "cached_tokens": st.integers(0, 100),
        "cache_write_tokens": st.integers(0, 100),
        "reasoning_tokens": st.integers(0, 100),
    }
)
_names = st.fixed_dictionaries(
    {
        "model": st.sampled_from((None, "gpt-4o")),
        "provider_model": st.sampled_from((None, "gpt-4o-2024-08-06")),
        "streaming": st.booleans(),
        "source": st.sampled_from(("provider", "tokenizer")),
    }
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_kept_final_metadata_is_always_what_a_fresh_build_gives(data):
    """A stream's metadata is rewritten in place while its names stay (FinalMetadata): every result equals
    final_metadata's, whatever changed between calls (mostly the numbers, sometimes a name or the price)."""
    from llmtally._types import Usage
    from llmtally.metadata import FinalMetadata, final_metadata

    config = Config()
    kept = FinalMetadata()
    names, provider, cost = data.draw(_names), "openai", data.draw(st.none() | st.integers(0, 10**9))
    for _ in range(data.draw(st.integers(1, 12))):
        change = data.draw(st.sampled_from(("numbers", "numbers", "numbers", "names", "provider", "price")))
        if change == "names":
            names = data.draw(_names)
        elif change == "provider":
            provider = data.draw(st.sampled_from(("openai", "anthropic")))
        elif change == "price":
            cost = data.draw(st.none() | st.integers(0, 10**9))
        elif cost is not None:
            cost = data.draw(st.integers(0, 10**9))
        u = Usage(**names, **data.draw(_numbers))
        assert kept.build(config, provider, u, cost) == final_metadata(config, provider, u, cost)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), clash=st.booleans())
def test_wire_answers_are_always_what_a_fresh_message_gives(data, clash):
    """Answers that carry metadata are kept serialized by shape and only their numbers rewritten
    (WireAnswers): each one parses to the message a fresh build gives, for every kind, request and final
    metadata, whatever changed between calls, any model name (any Unicode), and, with `clash`, stand-ins
    that cannot be placed (the answer is then serialized from its message)."""
    from unittest import mock

    from llmtally import metadata
    from llmtally._types import RequestInfo, Usage
    from llmtally.metadata import WireAnswers, answer_message, final_metadata, request_metadata

    config = Config(metadata_namespace=data.draw(st.sampled_from(("ai.gateway.kgateway.dev", "x"))))
    wire = WireAnswers(config, limit=data.draw(st.sampled_from((0, 2, 1024))))
    model = st.none() | st.text(max_size=12) | st.sampled_from(("gpt-4o", "\xff\xfe"))
    kinds = st.sampled_from(("request_body", "request_trailers", "response_headers", "response_body"))
    sentinels = (metadata._SENTINELS[0],) * 9 if clash else metadata._SENTINELS
    names, provider, cost = data.draw(_names), "openai", data.draw(st.none() | st.integers(0, 10**9))
    with mock.patch.object(metadata, "_SENTINELS", sentinels):
        for _ in range(data.draw(st.integers(1, 12))):
            change = data.draw(st.sampled_from(("numbers", "numbers", "numbers", "names", "model", "price")))
            if change == "names":
                names = dict(data.draw(_names), model=names["model"])
            elif change == "model":
                names["model"] = data.draw(model)
            elif change == "price":
                cost = data.draw(st.none() | st.integers(0, 10**9))
            elif cost is not None:
                cost = data.draw(st.integers(0, 10**9))
            kind = data.draw(kinds)
            if data.draw(st.booleans()):
                u = Usage(**names, **data.draw(_numbers))
                got, want = wire.final(kind, provider, u, cost), final_metadata(config, provider, u, cost)
            else:
                n = data.draw(st.integers(0, 10**7))
                info = RequestInfo(model=names["model"], streaming=names["streaming"], prompt_tokens=n)
                got, want = wire.request(kind, provider, info), request_metadata(config, provider, info)
            assert pb.ProcessingResponse.FromString(got) == answer_message(kind, want)
    assert len(wire.shapes) <= wire.limit
    placed = [packer is not None for packer, _, _ in wire.shapes.values()]
    assert not any(placed) if clash else all(placed)
