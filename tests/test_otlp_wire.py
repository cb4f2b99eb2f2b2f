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
from llmtally.fallback import otlp as fallback_otlp

BACKENDS = ("native", "python")

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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_the_same_request_as_the_sdks(name, backend):
    spans = CASES[name]
    ours = ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(spans, backend))
    assert ours == sdk_encode(spans)


@pytest.mark.parametrize("name", list(CASES))
def test_both_backends_write_the_same_bytes(name):
    spans = CASES[name]
    assert otlp_wire.encode_spans(spans, "native") == otlp_wire.encode_spans(spans, "python")


def test_repeated_attributes_are_encoded_once_and_bounded(monkeypatch):
    monkeypatch.setattr(fallback_otlp, "_cache", {})
    monkeypatch.setattr(fallback_otlp, "MAX_CACHED", 5)
    for i in range(50):
        otlp_wire.encode_spans([span(i)], "python")
    assert len(fallback_otlp._cache) == 5
    # what is cached still encodes what the SDK does
    spans = [span(i) for i in range(3)]
    assert ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(spans, "python")) == sdk_encode(spans)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_values_of_other_types_are_not_confused(backend):
    """True == 1 == 1.0 in Python: the cache must not hand one's encoding to another."""
    values = (1, True, 1.0, "1", 0, False, 0.0, -0.0, (1,), (1.0,), (True,), (1, 2), (True, 2), [1], [1.0])
    spans = [span(i, attrs={"x": v}) for i, v in enumerate(values)]
    assert otlp_wire.encode_spans(spans, "native") == otlp_wire.encode_spans(spans, "python")  # a warm cache too
    assert ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(spans, backend)) == sdk_encode(spans)


class Label(str):
    """A str subclass: written as its str(), not as a str."""

    def __str__(self):
        return "label!"


ODD = {
    "huge": 2**70 + 3,
    "int64 min": -(2**63),
    "below int64": -(2**63) - 1,
    "uint64 max": 2**64 - 1,
    "lone surrogate": "a\ud800b",
    "str subclass": Label("x"),
    "none": None,
    "tuple": ("a", 1, True, 2.5),
    "nested": [[1, 2], ["x"], []],
    "tuple of lists": ([], [1]),
    "bytearray": bytearray(b"ab"),
    "dict": {"a": 1},
    "nan": float("nan"),
    "empty": "",
}


@pytest.mark.parametrize("key", list(ODD))
def test_values_outside_what_llmtally_sets_are_written_alike(key):
    spans = [span(attrs={key: ODD[key]}, status=Status(StatusCode.ERROR, "bad \udcff"))]
    native = otlp_wire.encode_spans(spans, "native")
    assert native == otlp_wire.encode_spans(spans, "python")
    ExportTraceServiceRequest.FromString(native)  # well formed


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_nested_too_deep_are_refused_alike(backend):
    ok, deep, loop = [1], [1], []
    for _ in range(31):
        ok = [ok]
    for _ in range(32):
        deep = [deep]
    loop.append(loop)
    assert ExportTraceServiceRequest.FromString(otlp_wire.encode_spans([span(attrs={"x": ok})], backend))
    for bad in (deep, loop):
        with pytest.raises(ValueError, match="nests lists too deeply"):
            otlp_wire.encode_spans([span(attrs={"x": bad})], backend)
