"""llmtally's OTLP span encoding (otlp_wire) against the SDK's: the same ExportTraceServiceRequest for every
kind of span llmtally makes and every attribute type."""

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from llmtally import otlp_wire

RESOURCE = Resource({"service.name": "llmtally", "service.version": "0.1.0", "n": 3}, "https://schema/1")
SCOPE = InstrumentationScope("llmtally", "0.1.0", "https://opentelemetry.io/schemas/1.44.0")


def span(i=0, parent=True, remote=True, status=None, events=(), attrs=None, state=None, resource=RESOURCE):
    ctx = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736 + i,
        0x00F067AA0BA902B7 + i,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=state,
    )
    par = SpanContext(ctx.trace_id, 0x1234 + i, is_remote=remote) if parent else None
    return ReadableSpan(
        name=f"chat model-{i} é",
        context=ctx,
        parent=par,
        resource=resource,
        attributes=attrs
        if attrs is not None
        else {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 21 + i,
            "gen_ai.request.stream": i % 2 == 0,
            "ratio": 0.25,
            "neg": -5,
            "http.request.header.x-request-id": [f"req-{i}"],
            "gen_ai.response.finish_reasons": ["stop", "length"],
            "big": 2**62,
            "unicode": "模型 \U0001f600",
        },
        events=events,
        kind=SpanKind.CLIENT,
        status=status or Status(StatusCode.UNSET),
        start_time=1_700_000_000_000_000_000 + i,
        end_time=1_700_000_002_500_000_000 + i,
        instrumentation_scope=SCOPE,
    )


CASES = {
    "plain": [span()],
    "many": [span(i) for i in range(20)],
    "root": [span(parent=False)],
    "local parent": [span(remote=False)],
    "error": [span(status=Status(StatusCode.ERROR, "429"))],
    "error without a description": [span(status=Status(StatusCode.ERROR))],
    "events": [
        span(
            events=[
                Event("llmtally.prompt", {"llmtally.body": '{"model": "x"}', "llmtally.truncated": False}, 10),
                Event("llmtally.completion", {"llmtally.body": "data: hi", "llmtally.truncated": True}, 20),
            ]
        )
    ],
    "trace state": [span(state=TraceState([("k", "v"), ("vendor", "x1")]))],
    "no attributes": [span(attrs={})],
    "two resources": [span(0), span(1, resource=Resource({"service.name": "other"})), span(2)],
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_request_as_the_sdks(name):
    spans = CASES[name]
    ours = ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(spans))
    assert ours == sdk_encode(spans)


def test_repeated_attributes_are_encoded_once_and_bounded(monkeypatch):
    monkeypatch.setattr(otlp_wire, "_cache", {})
    monkeypatch.setattr(otlp_wire, "MAX_CACHED", 5)
    for i in range(50):
        otlp_wire.encode_spans([span(i)])
    assert len(otlp_wire._cache) == 5
    # what is cached still encodes what the SDK does
    spans = [span(i) for i in range(3)]
    assert ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(spans)) == sdk_encode(spans)


def test_equal_values_of_other_types_are_not_confused():
    """True == 1 == 1.0 in Python: the cache must not hand one's encoding to another."""
    spans = [span(i, attrs={"x": v}) for i, v in enumerate((1, True, 1.0, "1", 0, False, 0.0))]
    assert ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(spans)) == sdk_encode(spans)
