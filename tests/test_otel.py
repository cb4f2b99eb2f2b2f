"""OpenTelemetry export: `llmtally serve` behind a real Envoy sends GenAI metrics and one span per call to a
real OTLP receiver (gRPC, and HTTP/protobuf configured by OTEL_* variables alone), with names checked
against the semantic-conventions package; and the export's pieces in process (settings, attributes, capture,
hostile trace headers, capped model attributes) with the SDK's in-memory exporters."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GA
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as GM
from opentelemetry.semconv.attributes import error_attributes, http_attributes
from opentelemetry.semconv.schemas import Schemas

import llmtally
import oracle
from llmtally import otel
from llmtally._types import Usage
from llmtally.config import Config, ConfigError, OtelConfig, load
from llmtally.demo import SEED_BODY, SEED_PROMPT, SEED_STREAM_BODY, Stack, keys, upstream
from llmtally.metrics import LabelValues
from otlp_receiver import Receiver, attrs_of, histogram_points

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
COMPLETION = oracle.count(upstream.ANSWERS[SEED_PROMPT], "cl100k_base")

#: the semantic-conventions names llmtally uses, from the package (not typed in)
METRIC_NAMES = {
    GM.GEN_AI_CLIENT_TOKEN_USAGE,
    GM.GEN_AI_CLIENT_OPERATION_DURATION,
    GM.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
    GM.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
}


def test_the_names_are_the_semantic_conventions():
    assert {otel.TOKEN_USAGE, otel.OPERATION_DURATION, otel.TIME_TO_FIRST_TOKEN, otel.TIME_PER_OUTPUT_TOKEN} == (
        METRIC_NAMES
    )
    assert otel.SCHEMA_URL in {s.value for s in Schemas}
    providers = {v.value for v in GA.GenAiProviderNameValues}
    # every provider id maps to a well-known value, except Ollama, which the conventions do not list
    assert {k: v in providers for k, v in otel.PROVIDER_NAMES.items()} == {
        k: k != "ollama" for k in otel.PROVIDER_NAMES
    }
    ops = {v.value for v in GA.GenAiOperationNameValues}
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1beta/models/g:generateContent"):
        assert otel.operation(path) in ops


def send(stack, path, token, body, headers=None):
    before = len(stack.access_lines(0))
    status, _, data = stack.request(path, token, body, headers)
    lines = stack.access_lines(before + 1)
    assert len(lines) == before + 1
    return status, data, lines[-1]


def spans_by_request_id(receiver, n):
    def ready():
        spans = receiver.spans()
        return spans if len(spans) >= n else None

    spans = receiver.wait(ready, what=f"{n} spans")
    out = {}
    for res, scope, sp in spans:
        a = attrs_of(sp.attributes)
        out[a["http.request.header.x-request-id"][0]] = (res, scope, sp, a)
    return out


def run_traffic(stack):
    """Four calls: Alice non-streaming with a traceparent, Bob streaming without one, a 404, a Gemini stream.
    Returns their access log lines."""
    alice, bob = stack.key.token(keys.ALICE), stack.key.token(keys.BOB)
    st, _, a = send(stack, "/openai", alice, SEED_BODY, {"traceparent": TRACEPARENT, "tracestate": "k=v"})
    assert st == 200
    st, _, b = send(stack, "/openai", bob, SEED_STREAM_BODY)
    assert st == 200
    st, _, c = send(stack, "/openai/nothing", alice, SEED_BODY)
    assert st == 404
    gemini = {"contents": [{"role": "user", "parts": [{"text": SEED_PROMPT}]}]}
    st, _, d = send(stack, "/gemini/models/gemini-2.5-flash:streamGenerateContent?alt=sse", alice, gemini)
    assert st == 200
    return a, b, c, d


@pytest.fixture
def grpc_stack(tmp_path):
    r = Receiver()
    port = r.start_grpc()
    otel_section = {"endpoint": f"http://127.0.0.1:{port}", "protocol": "grpc", "exportIntervalSeconds": 0.2}
    stack = Stack(
        str(tmp_path),
        config={"otel": otel_section, "logFormat": "json", "logLevel": "debug"},
        env={"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test"},
    )
    try:
        stack.start()
        yield stack, r
    finally:
        stack.stop()
        r.stop()


def test_spans_and_metrics_over_otlp_grpc_behind_envoy(grpc_stack):
    stack, receiver = grpc_stack
    t_start = time.time_ns()
    a, b, c, d = run_traffic(stack)
    t_end = time.time_ns()
    got = spans_by_request_id(receiver, 4)
    assert set(got) == {a["request_id"], b["request_id"], c["request_id"], d["request_id"]}

    res, scope, sp, attrs = got[a["request_id"]]
    assert scope == "llmtally"
    assert res["service.name"] == "llmtally" and res["deployment.environment.name"] == "test"
    assert len(res["service.instance.id"]) >= 8  # one per process
    assert sp.name == "chat gpt-3.5-turbo" and sp.kind == sp.SPAN_KIND_CLIENT
    # the parent is the request's traceparent: the span joins the caller's trace
    assert (sp.trace_id.hex(), sp.parent_span_id.hex(), sp.trace_state) == (TRACE_ID, PARENT_ID, "k=v")
    assert t_start <= sp.start_time_unix_nano < sp.end_time_unix_nano <= t_end
    assert sp.status.code == sp.status.STATUS_CODE_UNSET
    expected = {
        GA.GEN_AI_OPERATION_NAME: "chat",
        GA.GEN_AI_PROVIDER_NAME: "openai",
        GA.GEN_AI_REQUEST_MODEL: "gpt-3.5-turbo",
        GA.GEN_AI_RESPONSE_MODEL: "gpt-3.5-turbo-0125",
        GA.GEN_AI_USAGE_INPUT_TOKENS: 21,
        GA.GEN_AI_USAGE_OUTPUT_TOKENS: COMPLETION,
        GA.GEN_AI_REQUEST_STREAM: False,
        http_attributes.HTTP_RESPONSE_STATUS_CODE: 200,
        "http.request.header.x-request-id": [a["request_id"]],
        "llmtally.usage_source": "provider",
        "team": "dev",
    }
    expected[GA.GEN_AI_RESPONSE_ID] = "chatcmpl-mock1"
    expected[GA.GEN_AI_RESPONSE_FINISH_REASONS] = ["stop"]
    assert attrs == expected

    _, _, sp, attrs = got[b["request_id"]]
    assert sp.parent_span_id == b"" and len(sp.trace_id) == 16  # no traceparent: a trace of its own
    assert (attrs[GA.GEN_AI_REQUEST_STREAM], attrs["team"], attrs[GA.GEN_AI_USAGE_OUTPUT_TOKENS]) == (
        True,
        "ops",
        COMPLETION,
    )
    _, _, sp, attrs = got[c["request_id"]]
    assert attrs[error_attributes.ERROR_TYPE] == "404" and attrs[http_attributes.HTTP_RESPONSE_STATUS_CODE] == 404
    assert sp.status.code == sp.status.STATUS_CODE_ERROR
    _, _, sp, attrs = got[d["request_id"]]
    assert sp.name == "generate_content gemini-2.5-flash"
    assert (attrs[GA.GEN_AI_PROVIDER_NAME], attrs[GA.GEN_AI_USAGE_INPUT_TOKENS]) == ("gcp.gemini", d["prompt_tokens"])

    # metrics: the four histograms, cumulative, with the token types and the custom label
    def all_four():
        m = receiver.metrics()
        return m if set(m) == METRIC_NAMES else None

    def settled():  # the latest export holds all four calls
        m = all_four()
        if m is None:
            return None
        pts = histogram_points(m[GM.GEN_AI_CLIENT_OPERATION_DURATION])
        return m if sum(n for n, _ in pts.values()) == 4 else None

    m = receiver.wait(settled, what="the four calls' metrics")
    assert m[GM.GEN_AI_CLIENT_TOKEN_USAGE].unit == "{token}"
    assert {m[n].unit for n in METRIC_NAMES - {GM.GEN_AI_CLIENT_TOKEN_USAGE}} == {"s"}
    usage = histogram_points(m[GM.GEN_AI_CLIENT_TOKEN_USAGE])
    # the provider's dated name is no value of the model label: not a metric attribute
    base = {
        GA.GEN_AI_OPERATION_NAME: "chat",
        GA.GEN_AI_PROVIDER_NAME: "openai",
        GA.GEN_AI_REQUEST_MODEL: "gpt-3.5-turbo",
    }

    def point(team, token_type):
        return usage[frozenset({**base, "team": team, GA.GEN_AI_TOKEN_TYPE: token_type}.items())]

    assert point("dev", "input") == (1, 21.0) and point("dev", "output") == (1, float(COMPLETION))
    assert point("ops", "input") == (1, 21.0) and point("ops", "output") == (1, float(COMPLETION))
    ttft = histogram_points(m[GM.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN])
    # streams only: Bob's and the Gemini one
    assert sorted(dict(k)["team"] for k in ttft) == ["dev", "ops"]
    assert {dict(k)[GA.GEN_AI_PROVIDER_NAME] for k in ttft} == {"openai", "gcp.gemini"}
    durations = histogram_points(m[GM.GEN_AI_CLIENT_OPERATION_DURATION])
    errors = [dict(k) for k in durations if error_attributes.ERROR_TYPE in dict(k)]
    assert [e[error_attributes.ERROR_TYPE] for e in errors] == ["404"]
    # every attribute name is a semantic-conventions one, or a custom label
    names = {k for pts in (usage, ttft, durations) for key in pts for k, _ in key}
    known = {getattr(GA, n) for n in dir(GA) if n.startswith("GEN_AI_")} | {error_attributes.ERROR_TYPE}
    assert names - known == {"team"}

    # json log lines: a stream's lines carry its request id and trace id
    lines = [json.loads(ln) for ln in open(stack.serve_log) if ln.startswith("{")]
    calls = [ln for ln in lines if ln["message"].startswith("call: ")]
    assert {ln.get("request_id") for ln in calls} == {
        a["request_id"],
        b["request_id"],
        c["request_id"],
        d["request_id"],
    }
    traced = [ln for ln in calls if ln.get("request_id") == a["request_id"]]
    assert [ln.get("trace_id") for ln in traced] == [TRACE_ID]
    assert all(set(ln) >= {"time", "level", "logger", "message"} for ln in lines)
    assert all(ln["time"].endswith("Z") and ln["level"] in ("debug", "info", "warning") for ln in lines)


def test_otlp_http_from_the_environment_alone(tmp_path):
    """No otel: section: OTEL_EXPORTER_OTLP_ENDPOINT and _PROTOCOL turn the export on, over HTTP/protobuf."""
    r = Receiver()
    port = r.start_http()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "gateway-a",
    }
    stack = Stack(str(tmp_path), env=env)
    try:
        stack.start()
        alice = stack.key.token(keys.ALICE)
        st, _, line = send(stack, "/openai", alice, SEED_STREAM_BODY, {"traceparent": TRACEPARENT})
        assert st == 200
        got = spans_by_request_id(r, 1)
        res, _, sp, attrs = got[line["request_id"]]
        assert res["service.name"] == "gateway-a"
        assert sp.trace_id.hex() == TRACE_ID and sp.parent_span_id.hex() == PARENT_ID
        assert (attrs[GA.GEN_AI_USAGE_INPUT_TOKENS], attrs[GA.GEN_AI_USAGE_OUTPUT_TOKENS]) == (21, COMPLETION)
        m = r.wait(lambda: (x := r.metrics()) and set(x) == METRIC_NAMES and x, what="metrics over HTTP")
        usage = histogram_points(m[GM.GEN_AI_CLIENT_TOKEN_USAGE])
        assert sorted((dict(k)[GA.GEN_AI_TOKEN_TYPE], v) for k, v in usage.items()) == [
            ("input", (1, 21.0)),
            ("output", (1, float(COMPLETION))),
        ]
        assert set(r.http_paths) == {"/v1/traces", "/v1/metrics"}
    finally:
        stack.stop()
        r.stop()


# -- in process: the SDK's in-memory exporters --


def settings(**kw) -> otel.Settings:
    base = dict(
        protocol="grpc",
        metrics_protocol="grpc",
        endpoint="",
        headers=(),
        metrics=True,
        traces=True,
        interval_ms=0,
        service_name="",
        certificate_file="",
        capture_bytes=0,
    )
    return otel.Settings(**{**base, **kw})


class KeptMetrics:
    """A metric exporter that keeps what it is given."""

    def __init__(self):
        self.exported = []
        self.shut = False

    def export(self, data, **kw):
        self.exported.append(data)

    def shutdown(self, **kw):
        self.shut = True


class KeptSpans:
    """A span exporter that keeps the export requests it is given (otlp_wire.Batch)."""

    def __init__(self):
        self.batches = []
        self.shut = False

    def export(self, batch):
        self.batches.append(batch)

    def shutdown(self):
        self.shut = True

    def spans(self):
        """The spans of every request so far, read back by the protobuf runtime, as SDK-like objects."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for b in self.batches:
            req = ExportTraceServiceRequest.FromString(b.data)
            spans = [sp for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]
            assert b.count == len(spans)
            out += [readable(sp) for sp in spans]
        return tuple(out)


def readable(sp):
    """An OTLP Span as an object with the SDK's ReadableSpan attribute names the tests read."""
    trace_id = int.from_bytes(sp.trace_id, "big")
    state = dict(kv.split("=", 1) for kv in sp.trace_state.split(",")) if sp.trace_state else {}
    parent = (
        SimpleNamespace(span_id=int.from_bytes(sp.parent_span_id, "big"), is_remote=bool(sp.flags & 0x200))
        if sp.parent_span_id
        else None
    )
    return SimpleNamespace(
        name=sp.name,
        context=SimpleNamespace(trace_id=trace_id, span_id=int.from_bytes(sp.span_id, "big"), trace_state=state),
        parent=parent,
        attributes=attrs_of(sp.attributes),
        events=tuple(
            SimpleNamespace(name=e.name, timestamp=e.time_unix_nano, attributes=attrs_of(e.attributes))
            for e in sp.events
        ),
        start_time=sp.start_time_unix_nano,
        end_time=sp.end_time_unix_nano,
        kind=sp.kind,
        status=sp.status,
    )


class Local:
    def __init__(self, cap=10, custom=("team",), **kw):
        self.spans = KeptSpans()
        self.exporter = KeptMetrics()
        self.models = LabelValues(cap, "overflow", "")
        self.t = otel.Telemetry(
            settings(**kw), list(custom), self.models, span_exporter=self.spans, metric_exporter=self.exporter
        )

    def finished(self):
        assert self.t.force_flush(5)
        return self.spans.spans()

    def points(self, name):
        data = self.t.histograms.collect()
        out = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            out[frozenset(p.attributes.items())] = (p.count, p.sum)
        return out


def call(**kw) -> otel.Call:
    u = Usage(
        prompt_tokens=5,
        completion_tokens=3,
        total_tokens=8,
        model="m1",
        provider_model="m1-2025",
        streaming=True,
        source="provider",
    )
    base = dict(
        llm="anthropic",
        values=("anthropic", "m1", "dev"),
        path="/v1/messages",
        status="200",
        usage=u,
        request_model="m1",
        t0=100.0,
        t_first=100.5,
        t_end=102.5,
    )
    return otel.Call(**{**base, **kw})


def test_a_call_in_process_has_exact_timings_and_attributes():
    lo = Local()
    lo.models.admit("m1")
    lo.t.record(call())
    (sp,) = lo.finished()
    assert sp.name == "chat m1" and (sp.end_time - sp.start_time) == 2_500_000_000
    assert sp.parent is None
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "team": "dev"}
    ttft = lo.points(otel.TIME_TO_FIRST_TOKEN)
    # the provider's dated name is not in the model label's cap: not an attribute of the metrics (only the
    # label's values are, so OTel never grows the label's cap)
    key = frozenset({**attrs, "gen_ai.request.model": "m1"}.items())
    assert ttft == {key: (1, 0.5)}
    assert lo.models.seen == {"", "overflow", "m1"}
    lo.models.admit("m1-2025")  # admitted by Prometheus's label (a response named so)
    lo.t.record(call())
    key2 = frozenset({**attrs, "gen_ai.request.model": "m1", "gen_ai.response.model": "m1-2025"}.items())
    assert lo.points(otel.TIME_TO_FIRST_TOKEN) == {key: (1, 0.5), key2: (1, 0.5)}
    lo.t.record(call(status="429"))  # an error: its duration, no time to first token
    assert lo.points(otel.TIME_TO_FIRST_TOKEN) == {key: (1, 0.5), key2: (1, 0.5)}
    assert lo.points(otel.TIME_PER_OUTPUT_TOKEN) == {key: (1, 1.0), key2: (1, 1.0)}  # (102.5 - 100.5) / (3 - 1)
    assert lo.points(otel.OPERATION_DURATION)[key] == (1, 2.5)


def test_histogram_buckets_are_exact_and_attribute_sets_bounded():
    lo = Local(max_points=3)
    for tokens in (1, 4, 5, 16, 17, 100_000_000):
        u = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens, model="m1", source="provider")
        lo.t.record(call(usage=u))
    (m,) = [
        m for m in lo.t.histograms.collect().resource_metrics[0].scope_metrics[0].metrics if m.name == otel.TOKEN_USAGE
    ]
    inputs = [p for p in m.data.data_points if p.attributes.get("gen_ai.token.type") == "input"]
    (p,) = inputs
    assert list(p.explicit_bounds) == list(otel.TOKEN_BOUNDARIES)
    # (.., 1], (1, 4], (4, 16], (16, 64] ... and past the last bound
    assert p.bucket_counts[:4] == [1, 1, 2, 1] and p.bucket_counts[-1] == 1 and sum(p.bucket_counts) == 6
    assert (p.count, p.sum, p.min, p.max) == (6, 100_000_043.0, 1, 100_000_000)
    assert m.data.aggregation_temporality.name == "CUMULATIVE"
    # a fourth attribute set of a histogram goes to the overflow set
    for team in ("a", "b", "c"):
        lo.t.record(call(values=("anthropic", "m1", team)))
    pts = lo.points(otel.OPERATION_DURATION)
    assert len(pts) == 4 and pts[frozenset({("otel.metric.overflow", True)})][0] == 1  # 3 and the overflow
    lo.t.shutdown()
    assert lo.exporter.shut and len(lo.exporter.exported) == 1  # the last export at shutdown


def test_non_streamed_answers_have_no_time_to_first_token():
    lo = Local()
    u = Usage(prompt_tokens=5, completion_tokens=3, total_tokens=8, model="m1", streaming=False, source="provider")
    lo.t.record(call(usage=u))
    assert lo.points(otel.TIME_TO_FIRST_TOKEN) == {} and lo.points(otel.TIME_PER_OUTPUT_TOKEN) == {}
    assert sum(n for n, _ in lo.points(otel.OPERATION_DURATION).values()) == 1


def test_model_attributes_of_metrics_are_capped_like_the_model_label():
    """A client naming a new model on every request cannot grow the metric attribute sets; spans keep the name
    (cut at MAX_ATTRIBUTE)."""
    lo = Local(cap=2)
    for i in range(50):
        name = f"m{i}-" + "x" * 400
        lo.t.record(call(request_model=name, values=("anthropic", "overflow", "dev"), status="400", usage=None))
    models = {dict(k)["gen_ai.request.model"] for k in lo.points(otel.OPERATION_DURATION)}
    assert models == {"overflow"} and lo.models.seen == {"", "overflow"}
    spans = lo.finished()
    assert len(spans) == 50
    assert {len(s.attributes["gen_ai.request.model"]) for s in spans} == {otel.MAX_ATTRIBUTE}
    assert {s.attributes["error.type"] for s in spans} == {"400"}


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-" + "0" * 32 + "-" + PARENT_ID + "-01",  # an invalid (zero) trace id
        "zz-" + TRACE_ID + "-" + PARENT_ID + "-01",
        "00-" + TRACE_ID + "-" + PARENT_ID,
        "garbage",
    ],
)
def test_a_malformed_traceparent_starts_a_trace_of_its_own(traceparent):
    lo = Local()
    lo.t.record(call(traceparent=traceparent))
    (sp,) = lo.finished()
    assert sp.parent is None and format(sp.context.trace_id, "032x") != TRACE_ID


def test_a_sampled_out_parent_records_no_span_but_metrics():
    lo = Local()
    lo.t.record(call(traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00"))
    assert lo.finished() == ()
    assert sum(n for n, _ in lo.points(otel.OPERATION_DURATION).values()) == 1


def test_aborted_and_timed_out_calls_are_errors():
    lo = Local()
    lo.t.record(call(aborted=True, request_id="r1"))
    lo.t.record(call(timed_out=True, request_id="r2"))
    lo.t.record(call(status="503", aborted=True, request_id="r3"))
    spans = {s.attributes["http.request.header.x-request-id"][0]: s for s in lo.finished()}
    assert {k: s.attributes["error.type"] for k, s in spans.items()} == {"r1": "aborted", "r2": "timeout", "r3": "503"}
    assert spans["r1"].attributes["llmtally.aborted"] is True


def test_content_capture_is_off_by_default_and_capped():
    lo = Local()
    lo.t.record(call(prompt=b'{"messages": []}', completion=b"data: hi\n\n"))
    (sp,) = lo.finished()
    assert sp.events == ()
    lo = Local(capture_bytes=8)
    body = b'{"model":"m1","messages":[{"role":"user","content":"hello"}]}'
    lo.t.record(call(prompt=body[:9], completion=gzip.compress(b"data: {hello world}\n\n"), completion_encoding="gzip"))
    (sp,) = lo.finished()
    assert [(e.name, dict(e.attributes)) for e in sp.events] == [
        ("llmtally.prompt", {"llmtally.body": '{"model"', "llmtally.truncated": True}),
        ("llmtally.completion", {"llmtally.body": "data: {h", "llmtally.truncated": True}),
    ]
    # a gzip body cut before its end inflates to less than the cap: still truncated
    raw = gzip.compress(bytes(range(256)) * 4)  # incompressible enough
    lo = Local(capture_bytes=200)
    lo.t.record(call(prompt=b"p", completion=raw[:201], completion_encoding="gzip"))
    (sp,) = lo.finished()
    assert sp.events[1].attributes["llmtally.truncated"] is True
    lo = Local(capture_bytes=100)
    lo.t.record(call(prompt=b"short", completion=b"\x00\x01", completion_encoding="br"))
    (sp,) = lo.finished()  # br is not inflated here: no completion event
    assert [(e.name, dict(e.attributes)) for e in sp.events] == [
        ("llmtally.prompt", {"llmtally.body": "short", "llmtally.truncated": False})
    ]


# -- settings --


def test_settings_from_the_config_and_the_environment():
    assert otel.settings(Config(), {}) is None
    env_only = otel.settings(Config(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert env_only is not None and (env_only.protocol, env_only.endpoint, env_only.metrics) == (
        "http/protobuf",
        "",
        True,
    )
    # per signal: the endpoint of one turns on that one; its own protocol variable wins over the common one
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    s = otel.settings(Config(), env)
    assert s is not None and (s.traces, s.metrics, s.protocol, s.metrics_protocol) == (
        True,
        False,
        "grpc",
        "http/protobuf",
    )
    with pytest.raises(ValueError, match="'http/json' is not grpc or http/protobuf"):
        otel.settings(Config(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    # capture needs spans
    cfg = Config(otel=OtelConfig(traces=False, capture_content=True))
    assert otel.settings(cfg, {}).capture_bytes == 0
    cfg = Config(otel=OtelConfig(endpoint="http://c:4317", protocol="grpc"))
    s = otel.settings(cfg, {"OTEL_TRACES_EXPORTER": "none"})
    assert s is not None and (s.protocol, s.endpoint, s.metrics, s.traces) == ("grpc", "http://c:4317", True, False)
    assert otel.settings(cfg, {"OTEL_SDK_DISABLED": "true"}) is None
    assert otel.settings(Config(otel=OtelConfig(enabled=False)), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}) is None
    s = otel.settings(Config(otel=OtelConfig(capture_content=True, capture_content_bytes=100)), {})
    assert s is not None and s.capture_bytes == 100


def test_endpoints_are_redacted_for_log_lines():
    assert otel.redact("https://user:glc_SECRET@otlp.example:443/otlp?api_key=K#x") == "https://otlp.example:443/otlp"
    assert otel.redact("http://c:4317") == "http://c:4317"
    assert otel.redact("u:p@collector:4317?k=v") == "collector:4317"


def test_an_environment_endpoint_with_credentials_is_refused_without_printing_them():
    for var in otel.ENDPOINT_VARS:
        with pytest.raises(ValueError) as e:
            otel.settings(Config(), {var: "http://user:SECRET@collector:4317"})
        assert str(e.value) == (
            f"{var}: 'http://collector:4317' has user information or a query: put credentials in otel.headers "
            "(or OTEL_EXPORTER_OTLP_HEADERS), not in the URL"
        )
    assert otel.settings(Config(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317/"}) is not None


def test_the_resource_takes_the_environments_names_over_llmtallys(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=payments-gw,service.version=2.3.1,k=v")
    lo = Local()
    attrs = dict(lo.t.resource.attributes)
    assert (attrs["service.name"], attrs["service.version"], attrs["k"]) == ("payments-gw", "2.3.1", "v")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-b")
    assert dict(Local().t.resource.attributes)["service.name"] == "gw-b"
    assert dict(Local(service_name="mine").t.resource.attributes)["service.name"] == "mine"  # serviceName wins
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    attrs = dict(Local().t.resource.attributes)
    assert attrs["service.name"] == "llmtally" and attrs["service.version"] == llmtally.__version__
    assert attrs["service.instance.id"]  # the SDK's, one per process


def test_capture_batches_stay_under_a_collectors_message_limit():
    lo = Local(capture_bytes=65536)
    q = lo.t.spans
    assert (q.batch, q.max_queue) == (8, 128)
    q = Local().t.spans  # without capture: the SDK's batch and queue
    assert (q.batch, q.max_queue) == (512, 2048)
    assert 8 * 6 * 65536 <= 3 << 20


def test_the_otel_section_is_validated(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "otel:\n  endpoint: https://collector:4317\n  protocol: grpc\n  headers: {X-Api-Key: k}\n"
        "  exportIntervalSeconds: 5\n  captureContent: true\n"
    )
    oc = load(str(f), {}, {}).otel
    assert oc == OtelConfig(
        endpoint="https://collector:4317",
        protocol="grpc",
        headers=(("x-api-key", "k"),),
        export_interval_seconds=5.0,
        capture_content=True,
    )
    for text, message in [
        ("otel:\n  protocol: thrift\n", "otel.protocol: 'thrift' is not grpc or http/protobuf"),
        ("otel:\n  endpoint: collector:4317\n", "otel.endpoint: 'collector:4317' is not an http:// or https:// URL"),
        ("otel:\n  bogus: 1\n", "otel: expected a mapping with captureContent"),
        (
            "otel:\n  headers: {'a b': c}\n",
            "otel.headers: a header name or value has a character HTTP and gRPC do not allow",
        ),
        ("otel:\n  captureContentBytes: 0\n", "otel.captureContentBytes: must be an integer from 1 to 65536"),
        ("otel:\n  headers: {k: 'caf\u00e9'}\n", "otel.headers: a header name or value has a character"),
        (
            "otel:\n  endpoint: 'ftp://u:SECRET@c'\n",
            "otel.endpoint: 'ftp://c' is not an http:// or https:// URL",
        ),
        ("logFormat: xml\n", "logFormat: 'xml' is not one of text, json"),
        # credentials in the URL: the exporters would print them in their own log lines, and send neither
        (
            "otel:\n  endpoint: 'https://u:SECRET@c:4317'\n",
            "otel.endpoint: 'https://c:4317' has user information or a query: put credentials in otel.headers",
        ),
        (
            "otel:\n  endpoint: 'https://c:4318/?token=SECRET'\n",
            "otel.endpoint: 'https://c:4318/' has user information or a query: put credentials in otel.headers",
        ),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            load(str(f), {}, {})
        assert str(e.value).startswith(message)


# -- a collector that is down --


@pytest.mark.parametrize("collector", ["refusing", "silent"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_collector_that_is_down_costs_the_traffic_nothing(tmp_path, collector, protocol):
    """Every answer as without the export; the exporters' failures are logged once a minute, not per export;
    the sidecar stops within its grace and the 5 s bound on the last export, also when the collector
    accepts connections and never answers."""
    import socket

    from llmtally.demo import free_port
    from test_serve import SEED_STREAM, Sidecar, case_messages, expected_final, md_of

    silent = None
    if collector == "refusing":
        port = free_port()  # nothing listens there
    else:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # connections complete in the kernel's backlog; nothing is ever read or written
        port = silent.getsockname()[1]
    extra = (
        f"shutdownGraceSeconds: 1\notel:\n  endpoint: http://127.0.0.1:{port}\n  protocol: {protocol}\n"
        "  exportIntervalSeconds: 0.2\n"
    )
    s = Sidecar(tmp_path, extra=extra)
    try:
        for _ in range(20):
            resps = s.process(case_messages(SEED_STREAM), provider="openai")
            assert md_of(resps[-1]) == expected_final(SEED_STREAM["usage"], "openai")
        time.sleep(2)  # ten metric exports, a few span batches: all failing
    finally:
        t0 = time.monotonic()
        s.stop()
        took = time.monotonic() - t0
        if silent is not None:
            silent.close()
    log = s.log.read_text()
    assert "Traceback" not in log
    lines = [ln for ln in log.splitlines() if " WARNING " in ln or " ERROR " in ln]
    assert len(lines) <= 6, log  # once a minute per logger, not once per export
    assert took < 1 + 5 + 3, log  # shutdownGraceSeconds, the export bound, the process's own exit


def test_cache_and_reasoning_tokens_are_span_attributes_when_not_zero():
    lo = Local()
    u = Usage(
        prompt_tokens=50,
        completion_tokens=30,
        total_tokens=80,
        cached_tokens=20,
        cache_write_tokens=10,
        reasoning_tokens=12,
        model="m1",
        source="provider",
    )
    lo.t.record(call(usage=u))
    lo.t.record(call())  # zeros: left out
    first, second = lo.finished()
    usage = {k: v for k, v in first.attributes.items() if k.startswith("gen_ai.usage.")}
    assert usage == {
        GA.GEN_AI_USAGE_INPUT_TOKENS: 50,
        GA.GEN_AI_USAGE_OUTPUT_TOKENS: 30,
        GA.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 20,
        GA.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 10,
        GA.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 12,
    }
    assert {k for k in second.attributes if k.startswith("gen_ai.usage.")} == {
        GA.GEN_AI_USAGE_INPUT_TOKENS,
        GA.GEN_AI_USAGE_OUTPUT_TOKENS,
    }


def test_a_streams_end_called_back_from_a_thread_names_the_stream_in_json_lines(restore_logging):
    """A stream cancelled while a worker thread had its message ends in a callback from that thread, outside
    the stream task's context: its log lines name the stream all the same."""
    import contextvars
    import io
    import logging

    from llmtally import logs
    from llmtally.exchange import Exchange, Host
    from llmtally.metrics import Metrics
    from llmtally.offload import Offload
    from llmtally.server import Processor

    host = Host(Config(log_format="json"), Metrics(Config()))
    processor = Processor(host, Offload(1))

    class Loud(Exchange):
        def close(self):  # the line the end writes
            logging.getLogger("llmtally").warning("closing")

    ex = Loud(host, "openai")
    ex.request_id, ex.traceparent = "REQ-42", TRACEPARENT
    logs.setup("info", "json")
    out = io.StringIO()
    logging.getLogger().handlers[0].setStream(out)
    contextvars.Context().run(processor._end, ex)  # a context with no stream in it
    (line,) = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert (line["message"], line["request_id"], line["trace_id"]) == ("closing", "REQ-42", TRACE_ID)


@pytest.mark.parametrize("budget", [1 << 20, 100])
def test_capture_comes_out_of_the_body_memory_budget_and_goes_back(budget):
    import conftest
    from llmtally.exchange import Exchange, Host
    from llmtally.metrics import Metrics
    from test_serve import SEED_STREAM, case_messages

    cfg = Config(max_buffered_body_bytes=budget)
    host = Host(cfg, Metrics(cfg))
    lo = Local(capture_bytes=4096, custom=())
    host.set_telemetry(lo.t)
    ex = Exchange(host, "openai")
    for m in case_messages(SEED_STREAM):
        ex.handle(m)
    ex.close()
    assert host.buffered == 0 and ex.captured_taken == 0
    (sp,) = lo.finished()
    bodies = {e.name: e.attributes["llmtally.body"].encode() for e in sp.events}
    if budget > 8192:
        request, response = conftest.load(SEED_STREAM["request"]), conftest.load(SEED_STREAM["response"])
        assert len(request) < 4096 and len(response) < 4096
        assert bodies == {"llmtally.prompt": request, "llmtally.completion": response}
    else:  # the request body's buffer and the captures share the budget: they get what is left
        assert sum(len(b) for b in bodies.values()) <= budget


def test_a_clients_malformed_tracestate_is_logged_once_a_minute(caplog):
    """The SDK logs a warning for each malformed tracestate member: a client could write one line per request."""
    from llmtally import server
    from llmtally.metrics import Metrics

    cfg = Config(otel=OtelConfig(endpoint="http://127.0.0.1:9", protocol="grpc", metrics=False))
    t = server._telemetry(cfg, Metrics(cfg))
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(5):
                t.record(call(values=("anthropic", "m1"), traceparent=TRACEPARENT, tracestate=f"INJECTED {i} <x>"))
        lines = [r for r in caplog.records if r.name.startswith("opentelemetry.trace")]
        assert len(lines) == 1
    finally:
        t.shutdown(0.5)


def test_an_overwritten_opentelemetry_proto_is_a_one_line_startup_error(monkeypatch, tmp_path):
    """xds-protos ships an old copy of the OTLP modules over opentelemetry-proto's (grpc/grpc#42926);
    the exporters would fail with a bare ImportError, so the preflight names the fix."""
    from importlib.metadata import version

    from opentelemetry.proto.common.v1 import common_pb2

    from llmtally.server import StartupError, preflight

    assert otel.check_installed() is None  # the README's install order leaves opentelemetry-proto's files
    monkeypatch.delattr(common_pb2, "InstrumentationScope")
    f = tmp_path / "c.yaml"
    f.write_text("otel:\n  endpoint: http://127.0.0.1:1\n")
    with pytest.raises(StartupError) as e:
        preflight(load(str(f), {}, {}))
    assert str(e.value) == (
        "OpenTelemetry export: xds-protos overwrote opentelemetry-proto's modules with an older copy; "
        f"reinstall it: pip install --force-reinstall --no-deps 'opentelemetry-proto=={version('opentelemetry-proto')}'"
    )


HEX = "0123456789abcdefABCDEF"


@st.composite
def traceparents(draw):
    """Near-valid traceparent headers: each part right, or off by one character, case or length."""

    def hexes(n):
        k = draw(st.sampled_from((n, n, n, n - 1, n + 1, 0)))
        return draw(st.text(st.sampled_from(HEX[:16] if draw(st.booleans()) else HEX), min_size=k, max_size=k))

    version = draw(st.sampled_from(("00", "00", "01", "cc", "ff", "0", "0g"))) if draw(st.booleans()) else hexes(2)
    trace_id = draw(st.sampled_from(("0" * 32, TRACE_ID))) if draw(st.booleans()) else hexes(32)
    span_id = draw(st.sampled_from(("0" * 16, PARENT_ID))) if draw(st.booleans()) else hexes(16)
    flags = draw(st.sampled_from(("00", "01", "03", "ff", "1"))) if draw(st.booleans()) else hexes(2)
    extra = draw(st.sampled_from(("", "", "-", "-x", "-00-00", " ", "\t", " \t ", "x", "\n", " \n", "-x\n", "\n\n")))
    lead = draw(st.sampled_from(("", "", " ", "\t", "  ")))
    sep = draw(st.sampled_from(("-", "-", "-", "_")))
    return lead + sep.join((version, trace_id, span_id, flags)) + extra


@settings_h(max_examples=400, deadline=None)
@given(tp=traceparents(), ts=st.sampled_from(("", "k=v", "a=1,b=2", "bad state", "k=v,,x=y")))
def test_the_traceparent_is_read_as_the_sdks_propagator_reads_it(tp, ts):
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": tp, **({"tracestate": ts} if ts else {})}
    sdk = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    ours = otel.remote_parent(tp, ts)
    if not sdk.is_valid:
        assert ours is None
    else:
        assert ours == sdk  # ids, remoteness, flags
        assert ours.trace_state == sdk.trace_state


@pytest.mark.parametrize(
    ("sampler", "arg", "parent_flags", "spans"),
    [
        ("always_off", "", "01", 0),
        ("always_on", "", "00", 1),  # always on ignores the parent's decision
        ("traceidratio", "0", None, 0),
        ("parentbased_always_off", "", None, 0),
        ("parentbased_always_off", "", "01", 1),
        ("parentbased_always_on", "", "00", 0),
        ("parentbased_always_on", "", None, 1),
        ("always_on", "", None, 1),  # a root, its trace id drawn for the sampler
    ],
)
def test_spans_follow_the_configured_sampler(monkeypatch, sampler, arg, parent_flags, spans):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    lo = Local()
    assert lo.t.default_sampler is (sampler == "parentbased_always_on")
    tp = f"00-{TRACE_ID}-{PARENT_ID}-{parent_flags}" if parent_flags else ""
    lo.t.record(call(traceparent=tp, tracestate="k=v"))
    got = lo.finished()
    assert len(got) == spans
    if spans and parent_flags:
        (sp,) = got
        assert sp.parent.span_id == int(PARENT_ID, 16) and sp.parent.is_remote
        assert format(sp.context.trace_id, "032x") == TRACE_ID and dict(sp.context.trace_state) == {"k": "v"}


def test_a_root_span_of_another_sampler_has_a_trace_of_its_own(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    lo = Local()
    lo.t.record(call())
    lo.t.record(call())
    first, second = lo.finished()
    assert first.parent is None and second.parent is None
    assert len({first.context.trace_id, second.context.trace_id, 0}) == 3


class SlowSpans(KeptSpans):
    """An exporter that waits for `release` before each export: a collector that is slow or away."""

    def __init__(self):
        super().__init__()
        import threading

        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, batch):
        self.entered.set()
        self.release.wait(10)
        super().export(batch)


def queue(exporter, batch=4, max_queue=8, delay=30.0):
    from llmtally.otlp_wire import Encoder

    t = Local().t
    return otel.SpanQueue(Encoder(t.resource, t.scope), exporter, batch, max_queue, delay)


def test_the_span_queue_sends_a_full_batch_without_waiting_for_its_delay():
    kept = KeptSpans()
    q = queue(kept, batch=4, delay=30)
    rows = [("chat", "", "", "", 1, 2, None, {"i": i}, ()) for i in range(4)]
    for r in rows[:3]:
        q.add(r)
    time.sleep(0.2)
    assert kept.batches == []  # three of four: they wait for the delay
    q.add(rows[3])
    deadline = time.monotonic() + 5
    while not kept.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [b.count for b in kept.batches] == [4]
    assert [s.attributes["i"] for s in kept.spans()] == [0, 1, 2, 3]
    q.shutdown()
    assert kept.shut


def test_the_span_queue_sends_what_waits_at_its_delay_and_at_shutdown():
    kept = KeptSpans()
    q = queue(kept, batch=100, delay=0.05)
    q.add(("chat", "", "", "", 1, 2, None, {}, ()))
    deadline = time.monotonic() + 5
    while not kept.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [b.count for b in kept.batches] == [1]
    q2 = queue(kept2 := KeptSpans(), batch=100, delay=30)
    q2.add(("chat", "", "", "", 1, 2, None, {}, ()))
    q2.shutdown()
    assert [b.count for b in kept2.batches] == [1] and kept2.shut
    q.shutdown()


def test_a_full_span_queue_drops_new_spans_counts_and_logs_them_once_a_minute(caplog):
    slow = SlowSpans()
    q = queue(slow, batch=4, max_queue=8, delay=30)
    row = ("chat", "", "", "", 1, 2, None, {}, ())
    for _ in range(4):
        q.add(row)
    assert slow.entered.wait(5)  # the first batch is out of the queue, its export held
    with caplog.at_level(logging.WARNING, logger="llmtally.otel"):
        for _ in range(8 + 5):
            q.add(row)
        assert (len(q.rows), q.dropped) == (8, 5)
        slow.release.set()
        assert q.force_flush(5)
        for _ in range(8 + 3):  # more dropped within the minute: not logged again
            q.add(row)
        assert q.dropped == 5 + 3
        assert q.force_flush(5)
    assert q.sent == 4 + 8 + 8
    lines = [r.getMessage() for r in caplog.records if r.name == "llmtally.otel"]
    assert lines == [
        "OpenTelemetry: 5 spans dropped, the span queue (8) was full; the collector is slow or away, or raise "
        "OTEL_BSP_MAX_QUEUE_SIZE (logged once a minute)"
    ]
    q.shutdown()


def test_a_failing_export_loses_its_batch_not_the_queue(caplog):
    class Failing(KeptSpans):
        def export(self, batch):
            if not self.batches and not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("boom")
            super().export(batch)

    f = Failing()
    q = queue(f, batch=2, delay=30)
    row = ("chat", "", "", "", 1, 2, None, {}, ())
    with caplog.at_level(logging.WARNING, logger="llmtally.otel"):
        q.add(row)
        q.add(row)
        assert q.force_flush(5)
        q.add(row)
        assert q.force_flush(5)
    assert [b.count for b in f.batches] == [1] and q.sent == 1
    assert any("span export failed" in r.getMessage() for r in caplog.records)
    q.shutdown()


def test_a_collector_slower_than_the_traffic_still_gets_the_drops_logged(caplog):
    """The export loop sends what waits when it starts, not what comes meanwhile: otherwise a slow
    collector keeps it sending for ever, and the drops it causes are never logged."""

    class Slow(KeptSpans):
        def export(self, batch):
            time.sleep(0.05)
            super().export(batch)

    slow = Slow()
    q = queue(slow, batch=4, max_queue=8, delay=30)
    row = ("chat", "", "", "", 1, 2, None, {}, ())
    with caplog.at_level(logging.WARNING, logger="llmtally.otel"):
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:  # ~500 spans a second, the exporter takes ~80
            for _ in range(5):
                q.add(row)
            time.sleep(0.01)
        lines = [r.getMessage() for r in caplog.records if "spans dropped" in r.getMessage()]
    assert q.dropped > 0 and len(lines) == 1
    q.shutdown()


def test_a_batch_larger_than_the_queue_is_cut_to_the_queue(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "256")
    q = Local().t.spans
    assert (q.batch, q.max_queue) == (256, 256)


def test_with_the_export_off_no_opentelemetry_module_is_loaded(tmp_path):
    """Off costs nothing of OpenTelemetry: the server makes no Telemetry, the host holds none (so a call's end
    skips the export), and after a whole stream through the host no opentelemetry module is loaded. In a
    process of its own, so that no other test's import counts."""
    script = """
import json, os, sys
for v in [k for k in os.environ if k.startswith("OTEL_")]:
    del os.environ[v]
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.config.core.v3 import base_pb2
from llmtally import server
from llmtally.config import Config
from llmtally.exchange import Exchange, Host
from llmtally.metrics import Metrics
config = Config()
metrics = Metrics(config)
host = Host(config, metrics)
hv = lambda k, v: base_pb2.HeaderValue(key=k, raw_value=v.encode())
ex = Exchange(host, None)
body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
answer = json.dumps({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
heads = lambda *kv: pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[hv(k, v) for k, v in kv]))
for req in (
    pb.ProcessingRequest(request_headers=heads((":path", "/v1/chat/completions"))),
    pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
    pb.ProcessingRequest(response_headers=heads((":status", "200"), ("content-type", "application/json"))),
    pb.ProcessingRequest(response_body=pb.HttpBody(body=answer.encode(), end_of_stream=True)),
):
    ex.handle(req)
ex.close()
print(server._telemetry(config, metrics), host.telemetry, ex.done)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["None None True", "[]"]
