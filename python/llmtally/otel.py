"""OpenTelemetry export (the `otel:` section, or the standard `OTEL_*` variables): GenAI semantic-convention
metrics and one span per LLM call, over OTLP gRPC or HTTP/protobuf. Off unless configured; Prometheus stays.

Names and attributes follow the OpenTelemetry semantic conventions `SEMCONV` (the GenAI conventions, status
"development"). Everything here runs once per call, when it ends (a span is made with the call's start time
then, not opened at its start), and leaves the process in batches: nothing is done per ext_proc message.
"""

from __future__ import annotations

import bisect
import collections
import functools
import logging
import math
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .logs import printable

if TYPE_CHECKING:
    from ._types import Usage
    from .config import Config, OtelConfig
    from .metrics import LabelValues

log = logging.getLogger("llmtally.otel")

#: the semantic-conventions version the names follow
SEMCONV = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV}"

TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"
TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"

#: the bucket boundaries the conventions advise
TOKEN_BOUNDARIES = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BOUNDARIES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BOUNDARIES = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BOUNDARIES = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

#: provider registry id -> `gen_ai.provider.name` (every OpenAI-compatible server is `openai`: the format is
#: all llmtally knows of it, unless the operator names the provider per route)
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex-ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "cohere": "cohere",
    "mistral": "mistral_ai",
    "ollama": "ollama",
}
#: the longest client-supplied string kept in an attribute (a model name); longer ones are cut
MAX_ATTRIBUTE = 256
#: W3C trace context: the longest traceparent and tracestate headers read
MAX_TRACEPARENT = 512  # a later version may be longer than version 00's 55 characters
MAX_TRACESTATE = 512
#: the headers a stream reads for tracing and log lines
TRACE_HEADERS = ("traceparent", "tracestate", "x-request-id")

#: the variables that turn OTLP export on without an `otel:` section
ENDPOINT_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
PROTOCOLS = ("grpc", "http/protobuf")


def operation(path: str) -> str:
    """`gen_ai.operation.name` of a request path."""
    p = path.split("?", 1)[0].lower()
    if "embed" in p:  # /v1/embeddings, :embedContent, :batchEmbedContents, Cohere's /v2/embed
        return "embeddings"
    if p.endswith("/completions") and not p.endswith("/chat/completions"):
        return "text_completion"
    if ":generatecontent" in p or ":streamgeneratecontent" in p:
        return "generate_content"
    return "chat"


def clip(value: str | None) -> str | None:
    """A client's (or an upstream's) name as an attribute: at most MAX_ATTRIBUTE characters, printable."""
    return None if value is None else printable(value[:MAX_ATTRIBUTE])


@dataclass(frozen=True, slots=True)
class Settings:
    """What `Telemetry` exports and where, resolved from `otel:` and the environment."""

    #: the traces' protocol (grpc or http/protobuf) and the metrics'
    protocol: str
    metrics_protocol: str
    #: the base URL (the signal's path is added for HTTP); empty: the exporters read `OTEL_*` themselves
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    metrics: bool
    traces: bool
    #: milliseconds between metric exports; 0: `OTEL_METRIC_EXPORT_INTERVAL` or the SDK's 60 s
    interval_ms: int
    service_name: str
    certificate_file: str
    capture_bytes: int  # 0: no prompt or completion text
    #: attribute sets kept per histogram (the Prometheus series bound, `stats.seriesMax`, times the token types)
    max_points: int = 2000


def settings(config: Config, environ: Mapping[str, str] | None = None) -> Settings | None:
    """The export's settings, or None when it is off: no `otel:` section (or `enabled: false`) and no
    `OTEL_EXPORTER_OTLP_*ENDPOINT` variable, or `OTEL_SDK_DISABLED=true`. Without a section, a signal is on
    when the common endpoint variable or its own is set. Raises ValueError for a protocol that is not grpc
    or http/protobuf."""
    env = os.environ if environ is None else environ
    oc: OtelConfig | None = config.otel
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if oc is None and not any(env.get(v) for v in ENDPOINT_VARS):
        return None
    if oc is not None and not oc.enabled:
        return None

    def protocol(signal: str) -> str:
        var = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
        p = (oc.protocol if oc is not None else "") or env.get(var, "") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        p = p.strip() or "http/protobuf"
        if p not in PROTOCOLS:
            raise ValueError(f"{var} or OTEL_EXPORTER_OTLP_PROTOCOL: {p!r} is not grpc or http/protobuf")
        return p

    def wanted(signal: str) -> bool:
        if env.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
            return False
        if oc is not None:
            return oc.metrics if signal == "METRICS" else oc.traces
        return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))

    for var in ENDPOINT_VARS:
        if holds_credentials(env.get(var, "")):
            raise ValueError(f"{var}: {redact(env[var])!r} has user information or a query: {CREDENTIALS_HINT}")
    traces = wanted("TRACES")
    return Settings(
        protocol=protocol("TRACES"),
        metrics_protocol=protocol("METRICS"),
        endpoint=oc.endpoint if oc is not None else "",
        headers=oc.headers if oc is not None else (),
        metrics=wanted("METRICS"),
        traces=traces,
        interval_ms=round(oc.export_interval_seconds * 1000) if oc is not None else 0,
        service_name=oc.service_name if oc is not None else "",
        certificate_file=oc.certificate_file if oc is not None else "",
        # the text goes to span events: nothing to keep without spans
        capture_bytes=oc.capture_content_bytes if oc is not None and oc.capture_content and traces else 0,
        max_points=2 * config.series_max,
    )


def redact(url: str) -> str:
    """`url` without its user information, query and fragment (credentials are put there): for log lines."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    host, slash, path = rest.partition("/")
    host = host.rpartition("@")[2]
    return f"{head}{sep}{host}{slash}{path}"


def holds_credentials(url: str) -> bool:
    """Whether `url` has user information or a query: the OTLP exporters would neither send these as
    credentials (gRPC takes the user information for part of the host, HTTP appends its path after the
    query) nor keep them out of their own log lines."""
    rest = url.partition("://")[2] or url
    authority = rest.split("/", 1)[0]
    return "@" in authority or "?" in rest or "#" in rest


CREDENTIALS_HINT = "put credentials in otel.headers (or OTEL_EXPORTER_OTLP_HEADERS), not in the URL"


def check_installed() -> str | None:
    """None when the OpenTelemetry SDK and exporters import, else what to do."""
    try:
        import opentelemetry.exporter.otlp.proto.grpc
        import opentelemetry.exporter.otlp.proto.http
        import opentelemetry.proto
        import opentelemetry.sdk  # noqa: F401
    except ImportError as e:
        return f"OpenTelemetry export needs {e.name}: pip install 'llmtally[otel]', or remove the otel: section"
    # before anything imports the exporters' encoders, which fail on the old copy with a bare ImportError
    return proto_clobbered()


def proto_clobbered() -> str | None:
    """What to do when xds-protos's old copy of the OTLP protos replaced opentelemetry-proto's, else None.

    Both distributions install files under `opentelemetry/proto/`; xds-protos (1.85 and earlier) ships a
    2020 revision without `InstrumentationScope`, and whichever is installed last owns the files
    (grpc/grpc#42926). One `pip install` of both installs xds-protos last.
    """
    from opentelemetry.proto.common.v1 import common_pb2

    if hasattr(common_pb2, "InstrumentationScope"):
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        pin = f"=={version('opentelemetry-proto')}"
    except PackageNotFoundError:
        pin = ""
    return (
        "OpenTelemetry export: xds-protos overwrote opentelemetry-proto's modules with an older copy; "
        f"reinstall it: pip install --force-reinstall --no-deps 'opentelemetry-proto{pin}'"
    )


@dataclass(slots=True)
class Call:
    """One finished LLM call, as the exchange saw it."""

    llm: str
    #: the label values of the Prometheus series (capped): llm, model, then the custom labels
    values: tuple[str, ...]
    path: str
    status: str
    usage: Usage | None
    request_model: str | None
    #: monotonic seconds: request headers, first response body bytes (None: none came), end
    t0: float
    t_first: float | None
    t_end: float
    aborted: bool = False
    timed_out: bool = False
    traceparent: str = ""
    tracestate: str = ""
    request_id: str = ""
    prompt: bytes = b""
    completion: bytes = b""
    completion_encoding: str = ""


class Telemetry:
    """The OTLP pipeline of one process: the four GenAI histograms (`Histograms`) and the span queue
    (`SpanQueue`). `record` is the one way in."""

    def __init__(
        self,
        s: Settings,
        custom: list[str],
        models: LabelValues,
        *,
        span_exporter: Any = None,
        metric_exporter: Any = None,
    ):
        """`span_exporter`, `metric_exporter`: instead of OTLP's (the tests' in-memory ones)."""
        from opentelemetry.sdk.resources import Resource

        self.settings = s
        self.custom = custom
        self.models = models  # the model label's cap (metrics.Metrics.model_values)
        from . import __version__

        # ours are defaults: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over them, serviceName over those
        env = Resource.create({"service.name": s.service_name} if s.service_name else {})
        # the SDK gives each process a service.instance.id of its own (a UUID): workers are told apart
        defaults: dict[str, Any] = {"service.version": __version__}
        if "service.instance.id" not in env.attributes:
            defaults["service.instance.id"] = f"{socket.gethostname()}-{os.getpid()}"
        if str(env.attributes.get("service.name", "")).startswith("unknown_service"):  # the SDK's default
            defaults["service.name"] = "llmtally"
            env = Resource({k: v for k, v in env.attributes.items() if k != "service.name"}, env.schema_url)
        merged = Resource(defaults).merge(env)
        resource = _resource_type()(merged.attributes, merged.schema_url)
        self.histograms: Histograms | None = None
        self.spans: SpanQueue | None = None
        if s.metrics:
            self._metrics(resource, metric_exporter)
        if s.traces:
            self._traces(resource, span_exporter)

    def _exporter_kwargs(self, signal: str) -> dict[str, Any]:
        s = self.settings
        protocol = s.protocol if signal == "traces" else s.metrics_protocol
        kw: dict[str, Any] = {}
        if s.endpoint:
            if protocol == "grpc":
                kw["endpoint"] = s.endpoint
                kw["insecure"] = s.endpoint.startswith("http://")
            else:
                kw["endpoint"] = s.endpoint.rstrip("/") + f"/v1/{signal}"
        if s.headers:
            kw["headers"] = dict(s.headers)
        if s.certificate_file:
            if protocol == "grpc":
                from grpc import ssl_channel_credentials

                with open(s.certificate_file, "rb") as f:
                    kw["credentials"] = ssl_channel_credentials(f.read())
            else:
                kw["certificate_file"] = s.certificate_file
        return kw

    def _metrics(self, resource: Any, exporter: Any) -> None:
        if exporter is None:
            if self.settings.metrics_protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                    OTLPMetricExporter,
                )
            exporter = OTLPMetricExporter(**self._exporter_kwargs("metrics"))
        interval = self.settings.interval_ms or _env_ms("OTEL_METRIC_EXPORT_INTERVAL", 60_000)
        self.histograms = Histograms(resource, exporter, interval / 1000, self.settings.max_points)

    def _traces(self, resource: Any, exporter: Any) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import DEFAULT_ON
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from . import __version__
        from .otlp_wire import Encoder, grpc_exporter, http_exporter

        if exporter is None:  # the SDK's exporters, sending the requests llmtally writes (otlp_wire)
            make = grpc_exporter if self.settings.protocol == "grpc" else http_exporter
            exporter = make(**self._exporter_kwargs("traces"))
        # the sampler: OTEL_TRACES_SAMPLER (and _ARG), else parent based, always on for a root (the SDK's
        # provider reads the variables; nothing else of it is used)
        self.sampler: Any = TracerProvider(resource=resource, shutdown_on_exit=False).sampler
        #: the SDK's default sampler (OTEL_TRACES_SAMPLER unset or parentbased_always_on): `_emit` decides
        #: as it would, without its calls
        self.default_sampler = self.sampler is DEFAULT_ON
        # small batches: an export holds the GIL while it writes the spans, and the event loop waits for it
        batch = _env_ms("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", SPAN_BATCH)
        queue = _env_ms("OTEL_BSP_MAX_QUEUE_SIZE", SPAN_QUEUE)
        cap = self.settings.capture_bytes
        if cap:  # captured text: batches under a collector's 4 MiB message limit, a queue of at most 64 MiB
            batch = max(1, min(SPAN_BATCH, CAPTURE_BATCH_BYTES // (6 * cap)))  # UTF-8: 3 bytes a replaced byte, 2 texts
            queue = max(batch, min(SPAN_QUEUE, CAPTURE_QUEUE_BYTES // (8 * cap)))  # str: up to 4 bytes a character
        batch = min(batch, queue)  # a batch larger than the queue would never fill (the SDK refuses it)
        self.resource = resource
        self.scope = InstrumentationScope("llmtally", __version__, SCHEMA_URL)
        self.spans = SpanQueue(
            Encoder(resource, self.scope), exporter, batch, queue, _env_ms("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        )

    # -- the one way in --

    def record(self, c: Call) -> None:
        op = operation(c.path)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": PROVIDER_NAMES.get(c.llm, c.llm),
        }
        for name, value in zip(self.custom, c.values[2:], strict=True):
            attrs[name] = value
        err = error_type(c)
        if err:
            attrs["error.type"] = err
        if self.histograms is not None:
            self._record_metrics(c, self.histograms, attrs)
        if self.spans is not None:
            self._span(c, op, attrs, err)

    def _record_metrics(self, c: Call, h: Histograms, common: dict[str, Any]) -> None:
        """The histograms; the model attributes are capped as the model label is (a name the label has not
        admitted is its overflow value), so a client cannot grow the series."""
        u = c.usage
        cap = self.models
        attrs = dict(common)
        if c.values[1]:  # the Prometheus model label: the request's name, or the provider's, capped
            attrs["gen_ai.request.model"] = c.values[1]
        # the provider's name where the label has admitted it (never admitted here: the cap is the label's)
        if u is not None and u.provider_model and cap.admit(u.provider_model, False) == u.provider_model:
            attrs["gen_ai.response.model"] = u.provider_model
        key = tuple(attrs.items())
        with h.lock:
            h.observe(OPERATION_DURATION, key, c.t_end - c.t0)
            if u is None or u.source == "none":  # no usage reported or counted: no token measurement
                return
            h.observe(TOKEN_USAGE, (*key, INPUT), u.prompt_tokens)
            h.observe(TOKEN_USAGE, (*key, OUTPUT), u.completion_tokens)
            # the timings of successful streamed answers only, as the conventions define them
            if u.streaming and c.t_first is not None and "error.type" not in attrs:
                h.observe(TIME_TO_FIRST_TOKEN, key, c.t_first - c.t0)
                if u.completion_tokens > 1:
                    h.observe(TIME_PER_OUTPUT_TOKEN, key, (c.t_end - c.t_first) / (u.completion_tokens - 1))

    def _span(self, c: Call, op: str, attrs: dict[str, Any], err: str | None) -> None:
        u = c.usage
        a = dict(attrs)
        if c.request_model:
            a["gen_ai.request.model"] = clip(c.request_model)
        if u is not None:
            if u.provider_model:
                a["gen_ai.response.model"] = clip(u.provider_model)
            a["gen_ai.usage.input_tokens"] = u.prompt_tokens
            a["gen_ai.usage.output_tokens"] = u.completion_tokens
            # present when not zero (each attribute is a good part of a span's encoding cost)
            if u.cached_tokens:
                a["gen_ai.usage.cache_read.input_tokens"] = u.cached_tokens
            if u.cache_write_tokens:
                a["gen_ai.usage.cache_creation.input_tokens"] = u.cache_write_tokens
            if u.reasoning_tokens:
                a["gen_ai.usage.reasoning.output_tokens"] = u.reasoning_tokens
            a["gen_ai.request.stream"] = u.streaming
            rid = getattr(u, "response_id", None)
            if rid:
                a["gen_ai.response.id"] = rid
            reasons = getattr(u, "finish_reasons", ())
            if reasons:
                a["gen_ai.response.finish_reasons"] = tuple(reasons)  # tuples of str: untracked by the gc
            a["llmtally.usage_source"] = u.source
        else:
            a["llmtally.usage_source"] = "none"
        if c.status:
            a["http.response.status_code"] = int(c.status) if c.status.isdigit() else c.status
        if c.request_id:
            a["http.request.header.x-request-id"] = (c.request_id,)
        if c.aborted:
            a["llmtally.aborted"] = True
        self._emit(c, op, a, err)

    def _emit(self, c: Call, op: str, a: dict[str, Any], err: str | None) -> None:
        """The call's span, as a row for the span queue (`llmtally.fallback.otlp.encode_spans` says what a
        row holds): sampled as the configured sampler decides, its new ids drawn when the batch is written.
        No span is opened and closed through a Tracer: the call is over, and the SDK's span objects would
        cost more than the rest of the call's accounting."""
        trace_id = parent_id = trace_state = ""
        flags = "01"
        m = _TRACEPARENT.match(c.traceparent) if c.traceparent and len(c.traceparent) <= MAX_TRACEPARENT else None
        if m is not None:
            version, tid, pid, flags, more = m.groups()
            if tid != ZERO_TRACE_ID and pid != ZERO_SPAN_ID and version != "ff" and not (version == "00" and more):
                trace_id, parent_id = tid, pid
        model = a.get("gen_ai.request.model")
        name = f"{op} {model}" if model else op
        if self.default_sampler:  # ParentBased(ALWAYS_ON), decided here: what the SDK's would decide
            if parent_id and not int(flags, 16) & 1:  # the parent is not sampled
                return
            if parent_id and c.tracestate:
                trace_state = _trace_state(c.tracestate)
        else:
            from opentelemetry import trace

            parent = remote_parent(c.traceparent, c.tracestate) if parent_id else None
            tid_int = parent.trace_id if parent is not None else int.from_bytes(os.urandom(16), "big") or 1
            parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else None
            sampled = self.sampler.should_sample(parent_ctx, tid_int, name, _client_kind(), a)
            if not sampled.decision.is_sampled():
                return
            if sampled.attributes:
                a.update(sampled.attributes)
            trace_id = format(tid_int, "032x")
            trace_state = _state_header(sampled.trace_state)
        # the span's wall-clock times, from the call's monotonic ones
        now_ns, now = time.time_ns(), time.monotonic()
        start_ns = now_ns - int((now - c.t0) * 1e9)
        end_ns = now_ns - int((now - c.t_end) * 1e9)
        events: tuple[tuple[str, int, dict[str, Any]], ...] = ()
        cap = self.settings.capture_bytes
        if cap:
            got = []
            if c.prompt:
                got.append((PROMPT_EVENT, start_ns, _content(c.prompt, cap, len(c.prompt) > cap)))
            text = _decoded(c.completion, c.completion_encoding, cap)
            if text is not None:
                cut = len(text) > cap or len(c.completion) > cap
                got.append((COMPLETION_EVENT, end_ns, _content(text, cap, cut)))
            events = tuple(got)
        assert self.spans is not None
        self.spans.add((name, trace_id, parent_id, trace_state, start_ns, end_ns, err or None, a, events))

    def shutdown(self, timeout: float = 5.0) -> None:
        """Export what is left, then stop, within `timeout` seconds (a daemon thread: what is not exported by
        then is dropped, and never holds the process's exit)."""
        t = threading.Thread(target=self._shutdown, name="llmtally-otel-shutdown", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            log.warning("OpenTelemetry: the last export did not finish in %ss; dropped", timeout)

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Export the spans queued so far (metrics: at their interval); False when that took over `timeout`."""
        return self.spans.force_flush(timeout) if self.spans is not None else True

    def _shutdown(self) -> None:
        for p in (self.spans, self.histograms):
            if p is not None:
                try:
                    p.shutdown()
                except Exception:
                    log.warning("OpenTelemetry shutdown failed", exc_info=True)


#: W3C trace context's traceparent: version, trace id, parent id, flags; a later version may add fields
#: (`$`, as the SDK's propagator has it, also allows one final newline)
_TRACEPARENT = re.compile(r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")


def remote_parent(traceparent: str, tracestate: str = "") -> Any:
    """The SpanContext of a request's traceparent (and tracestate) header, or None when it is not valid
    (W3C trace context: an all-zero id, version ff, or version 00 with more fields), as the SDK's
    TraceContextTextMapPropagator reads it."""
    SpanContext, TraceFlags, TraceState = _trace_types()
    m = _TRACEPARENT.match(traceparent) if len(traceparent) <= MAX_TRACEPARENT else None
    if m is None:
        return None
    version, trace_id, span_id, flags, more = m.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16 or version == "ff" or (version == "00" and more):
        return None
    state = TraceState.from_header([tracestate]) if tracestate and len(tracestate) <= MAX_TRACESTATE else None
    return SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16)), state)


ZERO_TRACE_ID = "0" * 32
ZERO_SPAN_ID = "0" * 16


def _state_header(state: Any) -> str:
    """A TraceState as the tracestate header writes it ("" when empty)."""
    return ",".join(f"{k}={v}" for k, v in state.items()) if state else ""


def _trace_state(header: str) -> str:
    """A client's tracestate header as the SDK's propagator keeps it (malformed: none), "" without one."""
    if len(header) > MAX_TRACESTATE:
        return ""
    return _state_header(_trace_types()[2].from_header([header]))


@functools.cache
def _client_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.CLIENT


@functools.cache
def _trace_types() -> tuple[Any, Any, Any]:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    return SpanContext, TraceFlags, TraceState


def _resource_type() -> type:
    """The SDK's Resource with its hash computed once: the OTLP span encoder groups every span by its resource,
    and Resource hashes its attributes as JSON each time (about as much as the rest of a span's encoding)."""
    from opentelemetry.sdk.resources import Resource

    class OneResource(Resource):
        _hash: int | None = None

        def __hash__(self) -> int:
            if self._hash is None:
                self._hash = super().__hash__()
            return self._hash

    return OneResource


INPUT = ("gen_ai.token.type", "input")
OUTPUT = ("gen_ai.token.type", "output")
#: name -> (unit, description, bucket boundaries)
HISTOGRAMS = {
    TOKEN_USAGE: ("{token}", "Number of input and output tokens used.", TOKEN_BOUNDARIES),
    OPERATION_DURATION: (
        "s",
        "GenAI operation duration (request headers to the end of the response, at the gateway).",
        DURATION_BOUNDARIES,
    ),
    TIME_TO_FIRST_TOKEN: ("s", "Time to the first response body bytes of a streamed response.", TTFT_BOUNDARIES),
    TIME_PER_OUTPUT_TOKEN: ("s", "Time per output token after the first, of a streamed response.", TPOT_BOUNDARIES),
}
#: spans per export, unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says otherwise (the SDK's default: an export call costs
#: about 0.5 ms of CPU in grpcio whatever its size, and the spans are written natively, ~3 µs each)
SPAN_BATCH = 512
#: spans waiting for export at most, unless OTEL_BSP_MAX_QUEUE_SIZE says otherwise (as the SDK's)
SPAN_QUEUE = 2048
#: with capture on: the most captured text in one span export, and in the span queue
CAPTURE_BATCH_BYTES = 3 << 20
CAPTURE_QUEUE_BYTES = 64 << 20
#: the attribute set that takes the measurements of new sets past the bound (as the SDK names it)
OVERFLOW = (("otel.metric.overflow", True),)


class SpanQueue:
    """Finished calls' span rows on their way to the exporter: at most `max_queue` wait (past it a new row is
    dropped and counted), written and sent `batch` at a time by a thread of its own, when `batch` are
    waiting or every `delay` seconds. The event loop's part is a deque append."""

    def __init__(self, encoder: Any, exporter: Any, batch: int, max_queue: int, delay: float):
        self.encoder = encoder
        self.exporter = exporter
        self.batch = batch
        self.max_queue = max_queue
        self.delay = delay
        self.rows: collections.deque[tuple[Any, ...]] = collections.deque()
        self.dropped = 0
        self.sent = 0
        self.wake = threading.Event()
        self.flushes: list[threading.Event] = []
        self.stopping = False
        self._logged = -math.inf
        self._dropped_logged = 0
        self.thread = threading.Thread(target=self._run, name="llmtally-otel-spans", daemon=True)
        self.thread.start()

    def add(self, row: tuple[Any, ...]) -> None:
        rows = self.rows
        if len(rows) >= self.max_queue:
            self.dropped += 1
            return
        rows.append(row)
        if len(rows) == self.batch:
            self.wake.set()

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Wait until what is queued now is exported (or dropped on an exporter's failure)."""
        if not self.thread.is_alive():
            return not self.rows
        done = threading.Event()
        self.flushes.append(done)
        self.wake.set()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            self.wake.wait(self.delay)
            self.wake.clear()
            flushes, self.flushes = self.flushes, []
            self._drain()
            for done in flushes:
                done.set()
            if len(self.rows) >= self.batch:  # more came while sending: go on without waiting
                self.wake.set()
            if self.dropped != self._dropped_logged and time.monotonic() - self._logged >= 60:
                log.warning(
                    "OpenTelemetry: %d spans dropped, the span queue (%d) was full; the collector is slow or "
                    "away, or raise OTEL_BSP_MAX_QUEUE_SIZE (logged once a minute)",
                    self.dropped - self._dropped_logged,
                    self.max_queue,
                )
                self._dropped_logged, self._logged = self.dropped, time.monotonic()
            if self.stopping:
                return

    def _drain(self) -> None:
        """Send the rows waiting now (not those that come meanwhile: a collector slower than the traffic
        must not keep this loop from its flushes and its log line)."""
        rows = self.rows
        left = len(rows)
        while left:
            take = [rows.popleft() for _ in range(min(self.batch, left))]
            left -= len(take)
            try:
                self.exporter.export(self.encoder.encode(take))  # the exporter logs its own failures
                self.sent += len(take)
            except Exception:  # a bug here must not end the thread
                log.warning("OpenTelemetry span export failed", exc_info=True)

    def shutdown(self) -> None:
        """The last export, then the exporter's shutdown."""
        self.stopping = True
        self.wake.set()
        self.thread.join()
        self.exporter.shutdown()


class Point:
    """One cumulative explicit-bucket histogram point."""

    __slots__ = ("bounds", "counts", "count", "sum", "min", "max")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1  # buckets hold (previous bound, bound]
        self.count += 1
        self.sum += v
        if v < self.min:
            self.min = v
        if v > self.max:
            self.max = v


class Histograms:
    """The four GenAI histograms, aggregated here (a few dictionary and list operations per call: the SDK's
    instruments cost several times the rest of a call) and handed to the OTLP metric exporter, as the SDK's
    data points, every `interval` seconds by a thread of their own. At most `max_points` attribute sets per
    histogram; measurements of new ones past it go to the `otel.metric.overflow` set."""

    def __init__(self, resource: Any, exporter: Any, interval: float, max_points: int):
        self.resource = resource
        self.exporter = exporter
        self.interval = interval
        self.max_points = max_points
        self.lock = threading.Lock()
        self.points: dict[str, dict[tuple[tuple[str, Any], ...], Point]] = {name: {} for name in HISTOGRAMS}
        self.start_ns = time.time_ns()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="llmtally-otel-metrics", daemon=True)
        self.thread.start()

    def observe(self, name: str, key: tuple[tuple[str, Any], ...], v: float) -> None:
        """Under `lock`."""
        pts = self.points[name]
        p = pts.get(key)
        if p is None:
            if len(pts) >= self.max_points:
                key = OVERFLOW
                p = pts.get(key)
            if p is None:
                p = pts[key] = Point(HISTOGRAMS[name][2])
        p.observe(v)

    def collect(self) -> Any:
        """What has been measured, as the SDK's MetricsData (None before the first measurement)."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            MetricsData,
            ResourceMetrics,
            ScopeMetrics,
        )
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from . import __version__

        now = time.time_ns()
        metrics = []
        with self.lock:
            snapshot = {
                name: [(k, p.count, p.sum, list(p.counts), p.min, p.max) for k, p in pts.items()]
                for name, pts in self.points.items()
            }
        for name, rows in snapshot.items():
            if not rows:
                continue
            unit, description, bounds = HISTOGRAMS[name]
            points = [
                HistogramDataPoint(
                    attributes=dict(k),
                    start_time_unix_nano=self.start_ns,
                    time_unix_nano=now,
                    count=n,
                    sum=total,
                    bucket_counts=counts,
                    explicit_bounds=bounds,
                    min=lo,
                    max=hi,
                )
                for k, n, total, counts, lo, hi in rows
            ]
            data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
            metrics.append(Metric(name=name, description=description, unit=unit, data=data))
        if not metrics:
            return None
        scope = InstrumentationScope("llmtally", __version__, SCHEMA_URL)
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=self.resource,
                    scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics, schema_url=SCHEMA_URL)],
                    schema_url=SCHEMA_URL,
                )
            ]
        )

    def export(self) -> None:
        data = self.collect()
        if data is not None:
            self.exporter.export(data)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.export()
            except Exception:  # the exporter logs its own failures; a bug here must not end the thread
                log.warning("OpenTelemetry metrics export failed", exc_info=True)

    def shutdown(self) -> None:
        """The last export, then the exporter's shutdown."""
        self.stopping.set()
        self.thread.join(self.interval + 1)
        try:
            self.export()
        finally:
            self.exporter.shutdown()


def _env_ms(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    return int(v) if v.isdigit() and int(v) > 0 else default


def error_type(c: Call) -> str | None:
    """`error.type` of a call: the response status when it is not 2xx, else `aborted` or `timeout` for a cut
    stream, else None."""
    if c.status and not c.status.startswith("2"):
        return c.status if c.status.isdigit() and len(c.status) == 3 else "_OTHER"
    if c.timed_out:
        return "timeout"
    if c.aborted:
        return "aborted"
    return None


#: the capture's span events: the bodies as sent and received, not the conventions' structured messages
#: (`gen_ai.input.messages`), which would need the messages parsed out of every provider's format
PROMPT_EVENT = "llmtally.prompt"
COMPLETION_EVENT = "llmtally.completion"


def _content(data: bytes, cap: int, cut: bool) -> dict[str, Any]:
    return {"llmtally.body": data[:cap].decode("utf-8", "replace"), "llmtally.truncated": cut}


def _decoded(data: bytes, encoding: str, cap: int) -> bytes | None:
    """The first `cap` bytes (and one more, to tell a cut) of a captured response body, inflated for gzip and
    deflate; None for other encodings (not captured)."""
    enc = encoding.strip().lower()
    if not data:
        return None
    if enc in ("", "identity"):
        return data
    if enc not in ("gzip", "x-gzip", "deflate"):
        return None
    try:
        if enc == "deflate" and data[:1] != b"\x78":  # raw deflate, as some servers send it
            d = zlib.decompressobj(-zlib.MAX_WBITS)
        else:
            d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
        return d.decompress(data, cap + 1)
    except zlib.error:
        return None
