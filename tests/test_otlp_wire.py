"""llmtally's OTLP span encoding (otlp_wire: span rows, written by either backend) against the SDK's encoder of
the same spans as ReadableSpans: the same ExportTraceServiceRequest for every kind of span llmtally makes and
every attribute type."""

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


ATTRS = {
    "gen_ai.operation.name": "chat",
    "ratio": 0.25,
    "neg": -5,
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "big": 2**62,
    "unicode": "模型 \U0001f600",
}


def row(i=0, parent=True, trace=True, error=None, events=(), attrs=None, state=""):
    """A span row (`llmtally.fallback.otlp.encode_spans`)."""
    if attrs is None:
        attrs = {
            **ATTRS,
            "gen_ai.usage.input_tokens": 21 + i,
            "gen_ai.request.stream": i % 2 == 0,
            "http.request.header.x-request-id": [f"req-{i}"],
        }
    trace_id = format(0x4BF92F3577B34DA6A3CE929D0E0E4736 + i, "032x") if trace else ""
    parent_id = format(0x1234 + i, "016x") if parent else ""
    start = 1_700_000_000_000_000_000 + i
    return (f"chat model-{i} é", trace_id, parent_id, state, start, start + 2_500_000_000, error, attrs, events)


def random_ids(n, seed=7):
    return bytes((seed * 31 + k * 17) % 256 for k in range(24 * n))


def sdk_span(r, random):
    """The SDK's ReadableSpan of a row: what it means, for the SDK's encoder."""
    name, trace_id, parent_id, state, start, end, error, attrs, events = r
    tid = int(trace_id, 16) if trace_id else int.from_bytes(random[:16], "big") or 1
    sid = int.from_bytes(random[16:24], "big") or 1
    trace_state = TraceState([tuple(kv.split("=", 1)) for kv in state.split(",")]) if state else None
    ctx = SpanContext(tid, sid, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=trace_state)
    return ReadableSpan(
        name=name,
        context=ctx,
        parent=SpanContext(tid, int(parent_id, 16), is_remote=True) if parent_id else None,
        resource=RESOURCE,
        attributes=attrs,
        events=[Event(n, a, t) for n, t, a in events],
        kind=SpanKind.CLIENT,
        status=Status(StatusCode.UNSET) if error is None else Status(StatusCode.ERROR, error),
        start_time=start,
        end_time=end,
        instrumentation_scope=SCOPE,
    )


def encode(rows, backend, random=None):
    random = random_ids(len(rows)) if random is None else random
    return otlp_wire.Encoder(RESOURCE, SCOPE, backend).encode(rows, random).data


def sdk_encode_rows(rows, random=None):
    random = random_ids(len(rows)) if random is None else random
    return sdk_encode([sdk_span(r, random[24 * i : 24 * i + 24]) for i, r in enumerate(rows)])


CASES = {
    "plain": [row()],
    "many": [row(i) for i in range(20)],
    "root": [row(parent=False, trace=False)],
    "root of a trace the sampler named": [row(parent=False)],
    "error": [row(error="429")],
    "error without a description": [row(error="")],
    "events": [
        row(
            events=(
                ("llmtally.prompt", 10, {"llmtally.body": '{"model": "x"}', "llmtally.truncated": False}),
                ("llmtally.completion", 20, {"llmtally.body": "data: hi", "llmtally.truncated": True}),
            )
        )
    ],
    "trace state": [row(state="k=v,vendor=x1")],
    "no attributes": [row(attrs={})],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_the_same_request_as_the_sdks(name, backend):
    rows = CASES[name]
    assert ExportTraceServiceRequest.FromString(encode(rows, backend)) == sdk_encode_rows(rows)


@pytest.mark.parametrize("name", list(CASES))
def test_both_backends_write_the_same_bytes(name):
    rows = CASES[name]
    assert encode(rows, "native") == encode(rows, "python")


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_ids_come_from_the_random_bytes_and_are_never_zero(backend):
    rows = [row(0, parent=False, trace=False), row(1, parent=False, trace=False)]
    random = bytes(range(1, 25)) + bytes(24)
    (first, second) = (
        ExportTraceServiceRequest.FromString(encode(rows, backend, random)).resource_spans[0].scope_spans[0].spans
    )
    assert (first.trace_id, first.span_id) == (bytes(range(1, 17)), bytes(range(17, 25)))
    assert (second.trace_id, second.span_id) == (bytes(15) + b"\x01", bytes(7) + b"\x01")
    with pytest.raises(ValueError, match="24 bytes a span"):
        encode(rows, backend, random[:47])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", ["ABCDEF0123456789", "0123456789abcdeg", "0123456789abcde", "0123456789abcdef0"])
def test_a_parent_id_not_lowercase_hex_of_its_length_is_refused_alike(backend, bad):
    name, trace_id, _, *rest = row()
    with pytest.raises(ValueError, match="lowercase hex"):
        encode([(name, trace_id, bad, *rest)], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_row_of_another_shape_is_refused(backend):
    with pytest.raises((ValueError, TypeError)):
        encode([row()[:8]], backend)


def test_repeated_attributes_are_encoded_once_and_bounded(monkeypatch):
    monkeypatch.setattr(fallback_otlp, "_cache", {})
    monkeypatch.setattr(fallback_otlp, "MAX_CACHED", 5)
    for i in range(50):
        encode([row(i)], "python")
    assert len(fallback_otlp._cache) == 5
    # what is cached still encodes what the SDK does
    rows = [row(i) for i in range(3)]
    assert ExportTraceServiceRequest.FromString(encode(rows, "python")) == sdk_encode_rows(rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_values_of_other_types_are_not_confused(backend):
    """True == 1 == 1.0 in Python: the cache must not hand one's encoding to another."""
    values = (1, True, 1.0, "1", 0, False, 0.0, -0.0, (1,), (1.0,), (True,), (1, 2), (True, 2), [1], [1.0])
    rows = [row(i, attrs={"x": v}) for i, v in enumerate(values)]
    assert encode(rows, "native") == encode(rows, "python")  # a warm cache too
    assert ExportTraceServiceRequest.FromString(encode(rows, backend)) == sdk_encode_rows(rows)


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
    rows = [row(attrs={key: ODD[key]}, error="bad \udcff")]
    native = encode(rows, "native")
    assert native == encode(rows, "python")
    ExportTraceServiceRequest.FromString(native)  # well formed


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_nested_too_deep_are_refused_alike(backend):
    ok, deep, loop = [1], [1], []
    for _ in range(31):
        ok = [ok]
    for _ in range(32):
        deep = [deep]
    loop.append(loop)
    assert ExportTraceServiceRequest.FromString(encode([row(attrs={"x": ok})], backend))
    for bad in (deep, loop):
        with pytest.raises(ValueError, match="nests lists too deeply"):
            encode([row(attrs={"x": bad})], backend)
