"""One ext_proc stream (= one HTTP request through Envoy) as a state machine.

An `Exchange` reads the request (path, provider, body, forwarded metadata),
scans the response as it streams, and answers every ProcessingRequest with a
response of the matching kind that changes nothing in the traffic; dynamic
metadata rides on the request-body response (the estimate) and on the
end-of-stream response (the usage). An exception in a stream is logged once,
counted, and the rest of that stream passes through untouched. What all
streams share (configuration, metrics, the backend) is the `Host`. No gRPC
server here: see `server.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, TypeAlias, cast

from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf.struct_pb2 import Struct

from . import _api
from ._types import RequestInfo, Usage
from .config import Config
from .logs import trace_id_of
from .metadata import FinalMetadata, WireAnswers, answer_message, custom_labels, metadata_values
from .metrics import Metrics
from .otel import MAX_TRACEPARENT, MAX_TRACESTATE, TRACE_HEADERS, Call
from .throttle import OncePerMinute

if TYPE_CHECKING:
    from .budgets import Budgets, Counter, Reservation
    from .otel import Telemetry

log = logging.getLogger("llmtally")

PROVIDER_KEY = "x-llm-provider"
#: the response headers read: the framing's, and those a provider reports usage in (never a credential)
RESPONSE_HEADERS = (
    ":status",
    "content-type",
    "content-encoding",
    "content-length",
    *sorted(_api.usage_headers()),
)
#: a message this large is worth handing to a thread (see `Exchange.heavy`)
HEAVY_BYTES = 64 << 10
#: a compressed chunk weighs this many times its size (a deflate stream inflates up to ~1000x)
COMPRESSION_WEIGHT = 64
#: the longest x-request-id kept (Envoy's are UUIDs)
MAX_REQUEST_ID = 128
#: what `Host.shed` counts: a stream refused at the cap, released when idle, a request body not buffered
SHED_REASONS = ("stream_cap", "idle", "body_memory", "body_mode")

# Responses that change nothing, built once and reused.
PASS = {
    "request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()),
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}


#: the answers Envoy takes dynamic metadata from
METADATA_KINDS = frozenset(
    ("request_body", "request_trailers", "response_headers", "response_body", "response_trailers")
)


def _ends_stream(kind: str, req: pb.ProcessingRequest) -> bool:
    """The message is the last of the response (the one the access log follows)."""
    if kind == "response_trailers":
        return True
    if kind == "response_body":
        return bool(req.response_body.end_of_stream)
    if kind == "response_headers":
        return bool(req.response_headers.end_of_stream)
    return False


def pass_buffered(request_body_mode: str) -> pb.ProcessingResponse:
    """The response headers' answer that asks for the response body in one message from here on: BUFFERED,
    which Envoy honours with the filter's allow_mode_override. An override replaces the whole mode: the rest
    is the generated bootstrap's (the request body's as configured)."""
    mode = ProcessingMode(
        request_header_mode=ProcessingMode.SEND,
        response_header_mode=ProcessingMode.SEND,
        request_body_mode=ProcessingMode.BodySendMode.Value(request_body_mode),
        response_body_mode=ProcessingMode.BUFFERED,
        request_trailer_mode=ProcessingMode.SKIP,
        response_trailer_mode=ProcessingMode.SKIP,
    )
    return pb.ProcessingResponse(response_headers=pb.HeadersResponse(), mode_override=mode)


#: bodies this small are left STREAMED: Envoy reads up to 16 KiB at a time, so they come in one message
#: anyway, and asking costs a little (about 1.5-6% of a request's CPU, side by side, on one-piece JSON)
BUFFER_MIN = 16 << 10
#: media types never buffered whole: streams, whatever their length
STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "application/vnd.amazon.eventstream", "application/jsonl")


#: an answer to one message: a ProcessingResponse, or one serialized already (every answer that carries
#: metadata: metadata.WireAnswers); the server's response serializer takes both
Answer: TypeAlias = "pb.ProcessingResponse | bytes"


def serialize(answer: Answer) -> bytes:
    """gRPC's response serializer for Process."""
    return answer if isinstance(answer, bytes) else cast(bytes, answer.SerializeToString())


def immediate(status: int, body: bytes, headers: list[tuple[str, str]], metadata: Struct) -> pb.ProcessingResponse:
    """Envoy answers the client with this instead of calling the upstream."""
    from envoy.config.core.v3 import base_pb2
    from envoy.type.v3 import http_status_pb2

    r = pb.ImmediateResponse(status=http_status_pb2.HttpStatus(code=status), body=body, details="llmtally_budget")
    for k, v in headers:
        r.headers.set_headers.add(header=base_pb2.HeaderValue(key=k, raw_value=v.encode()))
    out = pb.ProcessingResponse(immediate_response=r)
    out.dynamic_metadata.CopyFrom(metadata)
    return out


def headers_of(http_headers: pb.HttpHeaders, wanted: tuple[str, ...]) -> dict[str, str]:
    """Only the named headers (Envoy sends lowercase keys, values in raw_value)."""
    out: dict[str, str] = {}
    for h in http_headers.headers.headers:
        if h.key in wanted:
            out[h.key] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


class Host:
    """What all streams share: configuration, metrics, the backend."""

    def __init__(self, config: Config, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        #: answers that carry metadata, kept serialized by their shape (metadata.WireAnswers)
        self.wire = WireAnswers(config)
        self.backend = config.backend or _api.backend()  # resolved once, not per call
        #: what is logged at most once a minute (per reason, stage, provider)
        self.quiet = OncePerMinute()
        self.unpriced_seen: set[str] = set()
        #: request body bytes buffered by all streams, within `maxBufferedBodyBytes`
        self.buffered = 0
        self.lock = threading.Lock()  # exchanges run in the offload threads too
        #: the token budgets, when rateLimit is configured (set by the server)
        self.budgets: Budgets | None = None
        rl = config.rate_limit
        self.enforce = rl is not None and rl.enforce and bool(rl.limits)
        #: a request body message without end_of_stream is all llmtally gets of it (Envoy's BUFFERED_PARTIAL)
        self.partial_bodies = config.request_body_mode == "BUFFERED_PARTIAL" and not config.observe
        #: Envoy ignores the answers (observability_mode): none is built, nor its metadata
        self.observe = config.observe
        #: the response headers' answer for a body read in one message (bufferResponseBodyBytes)
        self.pass_buffered = pass_buffered(config.request_body_mode)
        #: the OpenTelemetry export (set by the server when configured)
        self.telemetry: Telemetry | None = None
        #: prompt and completion bytes kept per stream for span events (0: none)
        self.capture_bytes = 0
        #: the request headers a stream reads (the trace context and request id too: set_telemetry)
        self.request_header_names: tuple[str, ...] = (":path", PROVIDER_KEY)
        self.trace_headers = config.log_format == "json"
        if self.trace_headers:
            self.request_header_names += TRACE_HEADERS

    def set_telemetry(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.capture_bytes = telemetry.settings.capture_bytes
        self.request_header_names = (":path", PROVIDER_KEY, *TRACE_HEADERS)
        self.trace_headers = True

    async def admit(self, ex: Exchange, resp: Answer) -> Answer:
        """The request body is read: reserve its tokens on every budget that applies, all or none. Returns
        `resp` when they fit (or no limit applies), else a 429 in the provider's shape; with the store
        failing, `resp` or a 503, by `failureMode`."""
        from .budgets import rate_limit_headers, refusal

        budgets, rl = cast("Budgets", self.budgets), self.config.rate_limit
        assert rl is not None
        tokens, ex.reserve_tokens = ex.reserve_tokens, None
        r = await budgets.reserve(ex.budget_keys(), cast(int, tokens), ex.reserve_microusd)
        if r is None:
            return resp
        ex.reservation = r
        d = r.decision
        now = budgets.clock()
        if d.allowed:
            if rl.headers and d.used:
                ex.response_headers_added = rate_limit_headers(d, now)
            return resp
        ex.done = True  # Envoy answers the client itself: nothing more comes on this stream
        if d.store_failed:
            status, message, extra = 503, "llmtally: the token budget store is unavailable; retry later", []
        else:
            c = cast("Counter", d.denied)
            wait = max(c.reset_at - now, 0.0)
            if c.kind == "microusd":
                what, need = f"{c.cap / 1e6:.6f} USD", f"{c.amount / 1e6:.6f} USD"
            else:
                what, need = str(c.cap), f"{c.amount} {c.kind}"
            message = (
                f"llmtally: the {'spend' if c.kind == 'microusd' else c.kind} budget of {c.limit.name} ({what} per "
                f"{c.limit.window} s) has no room for this request ({need}); retry in {int(-(-wait // 1))} s"
            )
            status, extra = 429, [("retry-after", str(int(-(-wait // 1)))), *rate_limit_headers(d, now)]
        body, headers = refusal(ex._llm(), status, message, d.denied.kind if d.denied is not None else "tokens")
        if isinstance(resp, bytes):  # the request's answer, serialized (WireAnswers): its metadata goes on the refusal
            resp = pb.ProcessingResponse.FromString(resp)
        out = immediate(status, body, headers + extra, resp.dynamic_metadata)
        # the access log's rate_limited_tokens: nothing was charged for a refused request
        out.dynamic_metadata.fields[self.config.ratelimit_namespace].struct_value.fields["hits_addend"].number_value = 0
        ex.hits = 0
        return out

    def warn_unpriced(self, model: str | None, llm: str) -> None:
        """One line per model without a price, not one per request (the names remembered are bounded)."""
        key = f"{llm}/{model}"
        if key in self.unpriced_seen or len(self.unpriced_seen) >= 1000:
            return
        self.unpriced_seen.add(key)
        log.warning(
            "model %r (provider %s) has no price in the pricing table: its calls have no cost "
            "(ai_unpriced_requests_total); add it to pricing.models or pricing.aliases",
            (model or "")[:128],
            llm,
        )

    def take_body(self, n: int) -> int:
        """Reserve up to `n` bytes of the request-body budget; returns those granted."""
        with self.lock:
            granted = max(0, min(n, self.config.max_buffered_body_bytes - self.buffered))
            self.buffered += granted
        return granted

    def give_body(self, n: int) -> None:
        with self.lock:
            self.buffered -= n

    def shed(self, reason: str) -> None:
        """A stream refused, released or not buffered: counted, and logged at most once a minute per reason."""
        self.metrics.record_shed(reason)
        if self.quiet.due(("shed", reason)):
            log.warning("%s (ai_shed_total{reason=%r}); %s", _SHED_WHY[reason], reason, _SHED_ADVICE[reason])

    def warn_timeout(self, ex: Exchange, seconds: float) -> None:
        """Rate-limited: at most one line a minute."""
        if self.quiet.due("timeout"):
            log.warning(
                "an answer took %.1f s, past Envoy's message timeout (provider %s, path %s): Envoy went on "
                "without llmtally, so the rest of that response was not counted (ai_message_timeouts_total)",
                seconds,
                ex._llm(),
                ex.path.split("?", 1)[0],
            )

    def fault(self, stage: str, ex: Exchange) -> None:
        """Counted always; logged with its traceback at most once a minute per stage (at debug otherwise), so
        that input that breaks every stream cannot flood the log."""
        self.metrics.record_exception(stage)
        loud = self.quiet.due(("fault", stage))
        log.log(
            logging.WARNING if loud else logging.DEBUG,
            "exception in %s (provider %s, path %s); the stream passes through (ai_exception_raised_total; "
            "logged once a minute per stage)",
            stage,
            ex.provider,
            ex.path.split("?", 1)[0],
            exc_info=True,
        )


_SHED_WHY = {
    "stream_cap": "an ext_proc stream was refused: maxConcurrentStreams streams are open, and Envoy passes that "
    "request through uncounted",
    "idle": "an ext_proc stream received nothing for streamIdleSeconds and was released, counted as aborted",
    "body_memory": "a request body was estimated from its first bytes: the streams' buffered bodies reached "
    "maxBufferedBodyBytes",
    "body_mode": "a request body came in several messages although requestBodyMode is BUFFERED_PARTIAL (one "
    "message): it was estimated from its first",
}
_SHED_ADVICE = {
    "stream_cap": "raise maxConcurrentStreams, or add workers",
    "idle": "raise streamIdleSeconds above the longest pause between a provider's chunks",
    "body_memory": "raise maxBufferedBodyBytes, or lower maxRequestBodyBytes",
    "body_mode": "set requestBodyMode to the ext_proc filter's request_body_mode",
}


class Exchange:
    """The state of one HTTP request; bounded whatever the body sizes."""

    __slots__ = (
        "host",
        "provider",
        "path",
        "labels",
        "body",
        "body_over",
        "request",
        "scanner",
        "t0",
        "t_first",
        "done",
        "broken",
        "saw_request",
        "sent_changes",
        "sent_texts",
        "sent_usage",
        "final_md",
        "known",
        "t_meta",
        "t_last",
        "last_answer_seconds",
        "status",
        "raw_keys",
        "reserve_tokens",
        "reservation",
        "response_headers_added",
        "hits",
        "charged",
        "budget_checked",
        "encoded",
        "reserve_microusd",
        "charged_microusd",
        "request_id",
        "traceparent",
        "tracestate",
        "captured_in",
        "captured_out",
        "captured_taken",
        "response_encoding",
    )

    def __init__(self, host: Host, provider_hint: str | None):
        self.host = host
        self.provider = provider_hint
        self.path = ""
        self.labels: dict[str, str] | None = None
        self.body = bytearray()
        self.body_over = False
        self.request: RequestInfo | None = None
        self.scanner: _api.ResponseScanner | None = None
        self.t0 = time.monotonic()
        self.t_first: float | None = None
        self.done = False
        self.broken = False
        self.saw_request = False
        self.sent_changes = 0
        self.sent_texts = 0
        self.sent_usage: Usage | None = None
        self.final_md = FinalMetadata()  # the last metadata built, whose numbers later chunks rewrite
        self.known: Usage | None = None
        self.last_answer_seconds = 0.0  # how long the latest answer took
        self.t_meta = 0.0
        self.t_last = self.t0  # when the latest message came (idle streams are released)
        self.status = ""  # the response's :status
        self.raw_keys: dict[str, str] | None = None  # the forwarded metadata's values, for budgets
        self.reserve_tokens: int | None = None  # set when the request is read: the server reserves them
        self.reservation: Reservation | None = None
        self.response_headers_added: list[tuple[str, str]] = []
        self.hits = 0  # the latest hits_addend sent
        self.charged: int | None = None  # the tokens recorded at the end
        self.budget_checked = False  # the reservation was asked for
        self.encoded = False  # the response has a content encoding (its chunks inflate)
        self.reserve_microusd: int | None = None  # the reservation's cost (None: unpriced)
        self.charged_microusd: int | None = None  # the call's cost at the end
        self.request_id = ""  # Envoy's x-request-id (read with json logs or telemetry)
        self.traceparent = ""  # the W3C trace context the request came with (telemetry)
        self.tracestate = ""
        self.captured_in = b""  # the first capture_bytes of the request and response bodies (telemetry)
        self.captured_out = bytearray()
        self.captured_taken = 0  # the bytes of the captures, taken from the request-body memory budget
        self.response_encoding = ""

    @property
    def trace_id(self) -> str:
        """The trace id of the request's traceparent ("" without one): for log lines."""
        return trace_id_of(self.traceparent) if self.traceparent else ""

    def handle(self, req: pb.ProcessingRequest) -> Answer | None:
        """The answer to one message (None for a message with nothing in it): a ProcessingResponse, or its
        serialized bytes for an answer that carries metadata."""
        kind = req.WhichOneof("request")
        if kind is None:
            return None
        t_in = self.t_last = time.monotonic()
        try:
            return self._handle(kind, req)
        finally:
            self.last_answer_seconds = time.monotonic() - t_in

    def heavy(self, req: pb.ProcessingRequest) -> int:
        """How heavy the message is, if it may cost milliseconds of CPU (a large body's prompt estimate, a
        large response chunk, any compressed chunk worth decoding: a few KiB can inflate to megabytes), else
        0: the server hands a heavy one to a worker thread (the smallest and the oldest in turn: `offload`),
        so that other streams' answers are not delayed."""
        kind = req.WhichOneof("request")
        if kind == "response_body":
            n = len(req.response_body.body)
            if self.encoded:
                n *= COMPRESSION_WEIGHT
            return n if n > HEAVY_BYTES else 0
        if kind == "request_body":
            b = req.request_body
            n = len(self.body) + len(b.body)
            last = b.end_of_stream or n >= self.host.config.max_request_body_bytes or self.host.partial_bodies
            return n if n > HEAVY_BYTES and last else 0
        # a request cut before its end is parsed when the response starts
        n = len(self.body)
        return n if self.request is None and n > HEAVY_BYTES else 0

    def _handle(self, kind: str, req: pb.ProcessingRequest) -> Answer:
        if self.done:
            return PASS[kind]
        if self.broken:
            return self._known_reply(kind, req)
        try:
            if self.labels is None and req.HasField("metadata_context"):
                self.labels = custom_labels(self.host.config, req.metadata_context)
                if self.host.enforce:
                    self.raw_keys = metadata_values(self.host.config, req.metadata_context)
            return getattr(self, kind)(req)
        except Exception:
            self.broken = True
            self.host.fault(kind, self)
            self.known = self._known_usage()
            return self._known_reply(kind, req, now=True)

    # -- after an exception: what was known before it still reaches Envoy --

    def _known_usage(self) -> Usage | None:
        """The usage known when the stream broke: the scanner's snapshot if it still
        answers, else the last metadata sent, else the request's estimate."""
        try:
            if self.scanner is not None:
                u = self.scanner.snapshot()
                if u.source != "none":
                    return u
        except Exception:  # the scanner may be what failed
            log.debug("no snapshot after the exception", exc_info=True)
        if self.sent_usage is not None:
            return self.sent_usage
        r = self.request
        if r is None:
            return None
        return Usage(
            prompt_tokens=r.prompt_tokens,
            total_tokens=r.prompt_tokens,
            model=r.model,
            streaming=r.streaming,
            source="tokenizer",
        )

    def _known_reply(self, kind: str, req: pb.ProcessingRequest, now: bool = False) -> pb.ProcessingResponse:
        """Pass the message; the known usage rides on the answer to the failing message
        and on the end of the stream (Envoy keeps the last write)."""
        u = self.known
        if u is None or self.host.observe or kind not in METADATA_KINDS or not (now or _ends_stream(kind, req)):
            return PASS[kind]
        try:
            return answer_message(kind, self._final_md(u))
        except Exception:
            return PASS[kind]

    # -- request --

    def request_headers(self, req: pb.ProcessingRequest) -> Answer:
        self.saw_request = True
        h = headers_of(req.request_headers, self.host.request_header_names)
        self.path = h.get(":path", "")
        if self.host.trace_headers:  # json logs, telemetry
            self._trace_headers(h)
        if self.provider is None:
            # the client's own header only where the operator trusts it: else auto detection
            self.provider = (h.get(PROVIDER_KEY) if self.host.config.trust_provider_header else None) or "auto"
        if req.request_headers.end_of_stream:  # no body: nothing more will come
            return self._request_done("request_headers")
        return PASS["request_headers"]

    def _trace_headers(self, h: dict[str, str]) -> None:
        """Client-supplied: kept only when short and printable (a malformed traceparent starts a new trace)."""
        rid = h.get("x-request-id", "")
        if rid and len(rid) <= MAX_REQUEST_ID and rid.isprintable():
            self.request_id = rid
        tp = h.get("traceparent", "")
        if tp and len(tp) <= MAX_TRACEPARENT and tp.isascii() and tp.isprintable():
            self.traceparent = tp
            ts = h.get("tracestate", "")
            if ts and len(ts) <= MAX_TRACESTATE and ts.isascii() and ts.isprintable():
                self.tracestate = ts

    def request_body(self, req: pb.ProcessingRequest) -> Answer:
        self.saw_request = True
        b = req.request_body
        cap = self.host.capture_bytes
        if cap and len(self.captured_in) <= cap and b.body:
            got = self.host.take_body(min(len(b.body), cap + 1 - len(self.captured_in)))
            self.captured_in += b.body[:got]
            self.captured_taken += got
        if self.request is not None:
            # read already, its bytes given back (a BUFFERED_PARTIAL message, or the cap): the rest passes
            # unheld. A second message means Envoy streams the body against requestBodyMode: said once a minute
            if b.body and self.host.partial_bodies and not self.body_over:
                self.body_over = True
                self.host.shed("body_mode")
        elif not self.body_over and b.body:
            want = min(len(b.body), self.host.config.max_request_body_bytes - len(self.body))
            got = self.host.take_body(want)
            self.body += b.body[:got]
            self.body_over = len(b.body) > got
            if got < want:
                self.host.shed("body_memory")
        if b.end_of_stream:
            return self._request_done("request_body")
        if self.request is None and (self.body_over or self.host.partial_bodies):
            # the rest of the body passes unread (Envoy's BUFFERED_PARTIAL sends one message, its buffer's worth;
            # maxRequestBodyBytes, the memory budget): it is read now, and its bytes given back to the memory
            # budget (kept until the response, a caller trickling the rest of large bodies to the upstream held
            # the budget for streamIdleSeconds, and everyone else's prompts read as nothing); a budget decides
            # now, on what was read, before the upstream is called
            return self._request_done("request_body")
        return PASS["request_body"]

    def request_trailers(self, req: pb.ProcessingRequest) -> Answer:
        if self.request is None:
            return self._request_done("request_trailers")
        return PASS["request_trailers"]

    def _parse(self) -> None:
        self.request = _api.parse_request(
            bytes(self.body), self.provider or "auto", self.path, backend=self.host.backend
        )
        self._drop_body()

    def _drop_body(self) -> None:
        if self.body:
            self.host.give_body(len(self.body))
            self.body = bytearray()

    def _request_done(self, kind: str) -> Answer:
        if self.request is None:
            self._parse()
        info = cast(RequestInfo, self.request)  # set by _parse()
        self.hits = info.prompt_tokens
        if self.host.enforce and not self.budget_checked and kind == "request_headers":
            # no body (GET /v1/models, a file download): not a generation, nothing to reserve; charged at the
            # end if a response reports usage after all
            pass
        elif self.host.enforce and not self.budget_checked:
            self.budget_checked = True
            rl = self.host.config.rate_limit
            assert rl is not None
            out = info.max_output_tokens if info.max_output_tokens is not None else rl.default_max_output_tokens
            self.reserve_tokens = info.prompt_tokens + out
            # what that would cost (spend limits): the estimate at the input price, the output limit at the output's
            worst = Usage(
                prompt_tokens=info.prompt_tokens,
                completion_tokens=out,
                total_tokens=info.prompt_tokens + out,
                model=info.model,
                source="tokenizer",
            )
            self.reserve_microusd = self._cost(worst)
        if self.host.observe:
            return PASS[kind]
        return self.host.wire.request(kind, self._llm(), info)

    def budget_keys(self) -> dict[str, str]:
        """What a budget may be by: the custom labels' values as forwarded (not capped: a budget is
        never shared by overflow), the model the request names, the provider."""
        missing = self.host.config.missing_label_value
        keys = dict(self.raw_keys) if self.raw_keys is not None else dict(self._labels())
        # where the path names the model (Azure's deployment, Gemini's, Vertex's and Bedrock's model), that is
        # what is served: a model field the client adds to the body must not pick another budget
        model = _api.parse_request(b"", self.provider or "auto", self.path, backend=self.host.backend).model
        if model is None and self.request is not None:
            model = self.request.model
        keys["model"] = model or missing
        keys["llm"] = self._llm()
        return keys

    def _final_md(self, u: Usage) -> Struct:
        self.hits = u.total_tokens
        return self.final_md.build(self.host.config, self._llm(), u, self._cost(u))

    def _spend(self, u: Usage) -> tuple[int | None, bool]:
        """What the metrics record of the cost: (micro-dollars, no price applied); warned once per model."""
        if self.host.config.pricing is None or u.source == "none":
            return None, False
        cost = self._cost(u)
        if cost is None:
            self.host.warn_unpriced(u.provider_model or u.model, self._llm())
            return None, True
        return cost, False

    def _cost(self, u: Usage) -> int | None:
        """Whole micro-dollars of the call, None if no price applies (see pricing.py)."""
        table = self.host.config.pricing
        if table is None or u.source == "none":
            return None
        try:
            found = table.cost(u, self._llm())
        except Exception:  # a price must never cost a call its usage
            log.warning("could not price a call of %r", (u.model or "")[:128], exc_info=True)
            return None
        return None if found is None else found[1]

    # -- response --

    def _scanner(
        self, content_type: str = "", content_encoding: str = "", headers: dict[str, str] | None = None
    ) -> _api.ResponseScanner:
        if self.request is None and (self.body or self.path):
            self._parse()  # the request body was cut or never ended: read what came
        c = self.host.config
        self.scanner = scanner = _api.ResponseScanner(
            self.provider or "auto",
            self.request,
            content_type=content_type,
            content_encoding=content_encoding,
            path=self.path,
            headers=headers or (),
            backend=self.host.backend,
            max_decoded_bytes=c.max_decoded_bytes,
            max_event_bytes=c.max_event_bytes,
        )
        return scanner

    def response_headers(self, req: pb.ProcessingRequest) -> Answer:
        h = headers_of(req.response_headers, RESPONSE_HEADERS)
        self.status = h.pop(":status", "")
        encoding = h.pop("content-encoding", "")
        self.encoded = encoding.strip().lower() not in ("", "identity")
        self.response_encoding = encoding
        length = h.pop("content-length", "")
        content_type = h.pop("content-type", "")
        scanner = self._scanner(content_type, encoding, h)
        if req.response_headers.end_of_stream:
            return self._finish("response_headers", scanner)
        if self._buffer_whole(length, content_type):
            return self._add_headers("response_headers", self.host.pass_buffered)  # x-ratelimit-*: onto a copy
        return self._add_headers("response_headers", PASS["response_headers"])

    def _buffer_whole(self, length: str, content_type: str) -> bool:
        """Whether to ask Envoy for the response body in one message: a body of a known length over 16 KiB
        and within `bufferResponseBodyBytes` (a streamed one has no content-length, so Envoy never holds back
        a stream's chunks), of a request that asked for no stream, whose media type is no stream's."""
        limit = self.host.config.buffer_response_body_bytes
        if not limit or self.host.observe or not (0 < len(length) <= 15 and length.isascii() and length.isdigit()):
            return False
        if not BUFFER_MIN < int(length) <= limit:
            return False
        if self.request is not None and self.request.streaming:
            return False
        media = content_type.split(";", 1)[0].strip().lower()
        return media not in STREAM_TYPES

    def response_body(self, req: pb.ProcessingRequest) -> Answer:
        b = req.response_body
        scanner = self.scanner
        if scanner is None:
            scanner = self._scanner()
        if b.body:
            if self.t_first is None:
                self.t_first = self.t_meta = time.monotonic()
            scanner.feed(b.body)
            cap = self.host.capture_bytes
            if cap and len(self.captured_out) <= cap:
                got = self.host.take_body(min(len(b.body), cap + 1 - len(self.captured_out)))
                self.captured_out += b.body[:got]
                self.captured_taken += got
        if b.end_of_stream:
            return self._finish("response_body", scanner)
        return self._mid_stream(scanner)

    def _mid_stream(self, scanner: _api.ResponseScanner) -> Answer:
        """Metadata whenever the numbers changed with this chunk, so that the last
        metadata Envoy holds (what the access log and the rate limit see if the
        stream is cut) is never behind the text delivered: Envoy forwards a chunk
        only after this answer. `midStreamMetadataSeconds` > 0 sends tokenizer
        counts at most that often instead (provider usage still at once)."""
        if self.host.observe:
            return PASS["response_body"]
        changes, texts = scanner.usage_changes(), scanner.text_changes()
        if changes == self.sent_changes and texts == self.sent_texts:
            return PASS["response_body"]
        if changes == self.sent_changes:  # only text arrived
            period = self.host.config.mid_stream_metadata_seconds
            if period:
                now = time.monotonic()
                if now - self.t_meta < period:
                    return PASS["response_body"]
                self.t_meta = now
        self.sent_changes, self.sent_texts = changes, texts
        u = scanner.snapshot()
        if u.source == "none" or u == self.sent_usage:
            return PASS["response_body"]
        self.sent_usage = u
        self.hits = u.total_tokens
        return self.host.wire.final("response_body", self._llm(), u, self._cost(u))

    def response_trailers(self, req: pb.ProcessingRequest) -> Answer:
        scanner = self.scanner
        if scanner is None:
            scanner = self._scanner()
        return self._finish("response_trailers", scanner)

    def _llm(self) -> str:
        """The `llm` label and `provider` metadata: the provider whose format the
        scanner reads (resolved with the response's content type); before the
        response, the one the id or the path names. Always a registry id."""
        if self.scanner is not None:
            return self.scanner.provider
        return _api.resolve_provider(self.provider or "auto", self.path, backend=self.host.backend)

    def _finish(self, kind: str, scanner: _api.ResponseScanner) -> Answer:
        u = self._record(scanner)
        if self.host.observe:
            return PASS[kind]
        if kind == "response_headers" and self.response_headers_added:
            return self._add_headers(kind, answer_message(kind, self._final_md(u)))
        self.hits = u.total_tokens
        return self.host.wire.final(kind, self._llm(), u, self._cost(u))

    def _add_headers(self, kind: str, resp: pb.ProcessingResponse) -> pb.ProcessingResponse:
        """The x-ratelimit-* headers, on the response headers' answer (configured: rateLimit.headers)."""
        if kind != "response_headers" or not self.response_headers_added:
            return resp
        out = pb.ProcessingResponse()
        out.CopyFrom(resp)
        mutation = out.response_headers.response.header_mutation
        from envoy.config.core.v3 import base_pb2

        for k, v in self.response_headers_added:
            mutation.set_headers.add(header=base_pb2.HeaderValue(key=k, raw_value=v.encode()))
        return out

    def _record(self, scanner: _api.ResponseScanner, aborted: bool = False, timed_out: bool = False) -> Usage:
        """Finish the scan, record the metrics once, return the usage. A
        response whose request never reached llmtally (a local reply, such as
        Envoy's own 429 from an earlier filter) is not an LLM call: no metrics."""
        self.done = True
        u = scanner.finish()
        self.charged = u.total_tokens
        self.charged_microusd = self._cost(u)
        if not self.saw_request:
            return u
        now = time.monotonic()
        first = self.t_first
        llm = self._llm()
        m = self.host.metrics
        model, admit = self._label_model(u)
        values = m.record(
            llm,
            model,
            self._labels(),
            u,
            aborted=aborted,
            timed_out=timed_out,
            duration=now - self.t0,
            ttft=None if first is None else first - self.t0,
            tpot_span=None if first is None else now - first,
            admit_model=admit,
            spend=self._spend(u),
            status=self.status,
        )
        if self.host.telemetry is not None:
            self._export(llm, values, u, now, aborted, timed_out)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "call: provider %s, path %s, status %s, model %r, %d+%d tokens (%s)%s",
                llm,
                self.path.split("?", 1)[0][:200],
                self.status or "none",
                (u.model or "")[:200],
                u.prompt_tokens,
                u.completion_tokens,
                u.source,
                ", aborted" if aborted else ", timed out" if timed_out else "",
            )
        seen = m.record_anomalies(llm, scanner.stats())
        if seen and self.host.quiet.due(("odd", llm)):
            log.warning(
                "odd response body (provider %s, path %s): %s; traffic passed through unchanged "
                "(ai_scan_anomalies_total; logged once a minute per provider)",
                llm,
                self.path.split("?", 1)[0],
                seen,
            )
        return u

    def _export(
        self,
        llm: str,
        values: tuple[str, ...],
        u: Usage | None,
        now: float,
        aborted: bool = False,
        timed_out: bool = False,
    ) -> None:
        """The call to OpenTelemetry (its metrics and span); a failure there never loses the call's accounting."""
        telemetry = self.host.telemetry
        assert telemetry is not None
        r = self.request
        try:
            telemetry.record(
                Call(
                    llm=llm,
                    values=values,
                    path=self.path,
                    status=self.status,
                    usage=u,
                    request_model=(r.model if r is not None else None) or (u.model if u is not None else None),
                    t0=self.t0,
                    t_first=self.t_first,
                    t_end=now,
                    aborted=aborted,
                    timed_out=timed_out,
                    traceparent=self.traceparent,
                    tracestate=self.tracestate,
                    request_id=self.request_id,
                    prompt=self.captured_in,
                    completion=bytes(self.captured_out),
                    completion_encoding=self.response_encoding,
                )
            )
        except Exception:
            self.host.fault("telemetry", self)

    def _label_model(self, u: Usage) -> tuple[str | None, bool]:
        """The `model` label of a call, and whether it may be a name the label has not seen. The request
        names the model, so a new name needs the provider's word: a 2xx response whose own model name is
        the request's (or a dated or versioned form of it, `gpt-4o` -> `gpt-4o-2024-08-06`), or, where a
        provider names none (Bedrock, Cohere), its usage. A server that answers any name with its own model
        (llama.cpp) is labelled with the name it gave."""
        if not self.status.startswith("2"):
            return u.model, False
        pm, model = u.provider_model, u.model
        if not pm:
            return model, u.source.startswith("provider")
        if model is None or pm == model or pm.startswith((model + "-", model + "@", model + ":")):
            return model, True
        return pm, True

    def _labels(self) -> dict[str, str]:
        return self.labels if self.labels is not None else custom_labels(self.host.config, _NO_METADATA)

    def close(self) -> None:
        """The gRPC stream ended. A stream cut short (client gone, upstream
        reset) is counted as aborted, with its usage so far recorded; one that
        broke on an exception is recorded with the usage known before it."""
        try:
            self._close()
        finally:
            self._drop_body()
            if self.captured_taken:
                self.host.give_body(self.captured_taken)
                self.captured_taken = 0
                self.captured_in, self.captured_out = b"", bytearray()

    def _close(self) -> None:
        if self.done or not self.saw_request:
            return
        if self.broken:
            self.done = True
            if self.known is not None:
                self.charged = self.known.total_tokens
                self.charged_microusd = self._cost(self.known)
                try:
                    u = self.known
                    model, admit = self._label_model(u)
                    llm = self._llm()
                    values = self.host.metrics.record(
                        llm, model, self._labels(), u, admit_model=admit, spend=self._spend(u), status=self.status
                    )
                    if self.host.telemetry is not None:
                        self._export(llm, values, u, time.monotonic())
                except Exception:
                    log.warning("could not record the usage of a broken stream", exc_info=True)
            return
        try:
            scanner = self.scanner
            if scanner is not None:
                # in observability mode Envoy waits for no answer: a stream cut short was cut by its peers
                timeout = 0 if self.host.observe else self.host.config.message_timeout_seconds
                timed_out = bool(timeout) and self.last_answer_seconds >= timeout
                if timed_out:
                    self.host.warn_timeout(self, self.last_answer_seconds)
                self._record(scanner, aborted=not timed_out, timed_out=timed_out)
            else:  # cut before any response: nothing was billed
                self.done = True
                llm = self._llm()
                values = self.host.metrics.record(
                    llm, self.request.model if self.request else None, self._labels(), None, aborted=True
                )
                if self.host.telemetry is not None:
                    self._export(llm, values, None, time.monotonic(), aborted=True)
        except Exception:
            self.host.fault("close", self)


class _NoMetadata:
    filter_metadata: dict[str, Struct] = {}


_NO_METADATA = _NoMetadata()
