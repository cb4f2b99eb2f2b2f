"""`llmtally serve`: the Envoy external processor (ext_proc) over gRPC.

One `Exchange` per gRPC stream (= one HTTP request through Envoy) reads the
request (path, provider, body, forwarded metadata), scans the response as it
streams, and answers every ProcessingRequest with a response of the matching
kind that changes nothing in the traffic; dynamic metadata rides on the
request-body response (the estimate) and on the end-of-stream response (the
usage). An exception in a stream is logged once, counted, and the rest of
that stream passes through untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from . import _api
from .config import Config
from .metadata import custom_labels, final_metadata, request_metadata
from .metrics import Metrics

log = logging.getLogger("llmtally")

PROVIDER_KEY = "x-llm-provider"
SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
MAX_GRPC_MESSAGE = 64 << 20

# Responses that change nothing, built once and reused.
PASS = {
    "request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()),
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}
_EMPTY_OF = {"request_headers": pb.HeadersResponse, "response_headers": pb.HeadersResponse,
             "request_body": pb.BodyResponse, "response_body": pb.BodyResponse,
             "request_trailers": pb.TrailersResponse, "response_trailers": pb.TrailersResponse}


def with_metadata(kind: str, struct) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(**{kind: _EMPTY_OF[kind]()}, dynamic_metadata=struct)


def headers_of(http_headers, wanted: tuple[str, ...]) -> dict[str, str]:
    """Only the named headers (Envoy sends lowercase keys, values in raw_value)."""
    out = {}
    for h in http_headers.headers.headers:
        if h.key in wanted:
            out[h.key] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


class Host:
    """What all streams share: configuration, metrics, the fault-injection hook."""

    def __init__(self, config: Config, metrics: Metrics, fault_model: str | None = None):
        self.config = config
        self.metrics = metrics
        self.backend = config.backend or _api.backend()  # resolved once, not per call
        self.fault_model = fault_model

    def fault(self, stage: str, ex: "Exchange") -> None:
        self.metrics.exceptions.labels(stage).inc()
        log.warning("exception in %s (provider %s, path %s); the stream passes through", stage, ex.provider,
                    ex.path.split("?", 1)[0], exc_info=True)


class Exchange:
    """The state of one HTTP request; bounded whatever the body sizes."""

    __slots__ = ("host", "provider", "path", "labels", "body", "body_over", "request", "scanner", "t0", "t_first",
                 "done", "broken", "saw_request", "sent_changes", "t_meta", "llm")

    def __init__(self, host: Host, provider_hint: str | None):
        self.host = host
        self.provider = provider_hint
        self.path = ""
        self.labels = None
        self.body = bytearray()
        self.body_over = False
        self.request = None
        self.scanner = None
        self.t0 = time.monotonic()
        self.t_first = None
        self.done = False
        self.broken = False
        self.saw_request = False
        self.sent_changes = 0
        self.t_meta = 0.0
        self.llm = None

    def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse | None:
        """The response to one message (None for a message with nothing in it)."""
        kind = req.WhichOneof("request")
        if kind is None:
            return None
        if self.broken or self.done:
            return PASS[kind]
        try:
            if self.labels is None and req.HasField("metadata_context"):
                self.labels = custom_labels(self.host.config, req.metadata_context)
            return getattr(self, kind)(req)
        except Exception:
            self.broken = True
            self.host.fault(kind, self)
            return PASS[kind]

    # -- request --

    def request_headers(self, req):
        self.saw_request = True
        h = headers_of(req.request_headers, (":path", PROVIDER_KEY))
        self.path = h.get(":path", "")
        if self.provider is None:
            self.provider = h.get(PROVIDER_KEY) or "auto"
        if req.request_headers.end_of_stream:  # no body: nothing more will come
            return self._request_done("request_headers")
        return PASS["request_headers"]

    def request_body(self, req):
        self.saw_request = True
        b = req.request_body
        if not self.body_over:
            room = self.host.config.max_request_body_bytes - len(self.body)
            self.body += b.body[:room]
            self.body_over = len(b.body) > room
        if b.end_of_stream:
            return self._request_done("request_body")
        return PASS["request_body"]

    def request_trailers(self, req):
        if self.request is None:
            return self._request_done("request_trailers")
        return PASS["request_trailers"]

    def _parse(self) -> None:
        info = _api.parse_request(bytes(self.body), self.provider or "auto", self.path, backend=self.host.backend)
        if self.host.fault_model is not None and info.model == self.host.fault_model:
            raise RuntimeError("fault injected for testing (LLMTALLY_FAULT_MODEL)")
        self.request = info
        self.body = bytearray()

    def _request_done(self, kind: str):
        self._parse()
        return with_metadata(kind, request_metadata(self.host.config, self._llm(), self.request))

    # -- response --

    def _scanner(self, status=200, content_type="", content_encoding=""):
        if self.request is None and (self.body or self.path):
            self._parse()  # the request body was cut or never ended: read what came
        c = self.host.config
        self.scanner = _api.ResponseScanner(
            self.provider or "auto", self.request, content_type=content_type, content_encoding=content_encoding,
            status=status, path=self.path, backend=self.host.backend, max_decoded_bytes=c.max_decoded_bytes,
            max_event_bytes=c.max_event_bytes)

    def response_headers(self, req):
        h = headers_of(req.response_headers, (":status", "content-type", "content-encoding"))
        status = h.get(":status", "200")
        self._scanner(int(status) if status.isdigit() and int(status) < 65536 else 0, h.get("content-type", ""),
                      h.get("content-encoding", ""))
        if req.response_headers.end_of_stream:
            return self._finish("response_headers")
        return PASS["response_headers"]

    def response_body(self, req):
        b = req.response_body
        if self.scanner is None:
            self._scanner()
        if b.body:
            if self.t_first is None:
                self.t_first = self.t_meta = time.monotonic()
            self.scanner.feed(b.body)
        if b.end_of_stream:
            return self._finish("response_body")
        return self._mid_stream()

    def _mid_stream(self):
        """Metadata as soon as numbers are known, so an access log written for a
        stream cut short still has them: when the provider's usage changed, and
        for streams without it, tokenizer counts at most every
        `midStreamMetadataSeconds`."""
        changes = self.scanner.usage_changes()
        if changes != self.sent_changes:
            self.sent_changes = changes
            u = self.scanner.snapshot()
        else:
            period = self.host.config.mid_stream_metadata_seconds
            now = time.monotonic()
            if not period or now - self.t_meta < period:
                return PASS["response_body"]
            self.t_meta = now
            u = self.scanner.snapshot()
        if u.source == "none":
            return PASS["response_body"]
        return with_metadata("response_body", final_metadata(self.host.config, self._llm(), u))

    def response_trailers(self, req):
        if self.scanner is None:
            self._scanner()
        return self._finish("response_trailers")

    def _llm(self) -> str:
        """The `llm` label: the provider id, resolved when `auto` (once the path is known)."""
        if self.llm is None:
            p = (self.provider or "auto").strip().lower()
            if p in ("", "auto"):
                p = _api.resolve_provider("auto", self.path, backend=self.host.backend)
            self.llm = p
        return self.llm

    def _finish(self, kind: str):
        u = self._record()
        return with_metadata(kind, final_metadata(self.host.config, self._llm(), u))

    def _record(self, aborted: bool = False) -> _api.Usage:
        """Finish the scan, record the metrics once, return the usage. A
        response whose request never reached llmtally (a local reply, such as
        Envoy's own 429 from an earlier filter) is not an LLM call: no metrics."""
        self.done = True
        u = self.scanner.finish()
        if not self.saw_request:
            return u
        s = self._series(u.model)
        if aborted:
            s.aborted.inc()
        s.prompt.inc(u.prompt_tokens)
        s.completion.inc(u.completion_tokens)
        s.cached.inc(u.cached_tokens)
        s.reasoning.inc(u.reasoning_tokens)
        s.rate_limited.inc(u.total_tokens)
        s.requests[u.source].inc()
        now = time.monotonic()
        s.duration.observe(now - self.t0)
        if self.t_first is not None:
            s.ttft.observe(self.t_first - self.t0)
            if u.streaming and u.completion_tokens > 1:
                s.tpot.observe((now - self.t_first) / (u.completion_tokens - 1))
        self._anomalies(self._llm())
        return u

    def _series(self, model):
        m = self.host.metrics
        labels = self.labels if self.labels is not None else custom_labels(self.host.config, _NO_METADATA)
        return m.series(m.label_values(self._llm(), model, labels))

    def _anomalies(self, llm: str) -> None:
        st = self.scanner.stats()
        seen = {k: int(st[k]) for k in ("broken_docs", "corrupt_frames", "oversized_events", "decode_capped",
                                        "decode_failed", "undecodable") if st[k]}
        for k, n in seen.items():
            self.host.metrics.anomalies.labels(llm, k).inc(n)
        if seen:
            log.warning("odd response body (provider %s, path %s): %s; traffic passed through unchanged",
                        llm, self.path.split("?", 1)[0], seen)

    def close(self) -> None:
        """The gRPC stream ended. A stream cut short (client gone, upstream
        reset) is counted as aborted, with its usage so far recorded."""
        if self.done or self.broken or not self.saw_request:
            return
        try:
            if self.scanner is not None:
                self._record(aborted=True)
            else:  # cut before any response: nothing was billed
                self.done = True
                self._series(self.request.model if self.request else None).aborted.inc()
        except Exception:
            self.host.fault("close", self)


class _NoMetadata:
    filter_metadata: dict = {}


_NO_METADATA = _NoMetadata()


class Processor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, host: Host):
        self.host = host

    async def Process(self, request_iterator, context):
        hint = None
        for key, value in context.invocation_metadata() or ():
            if key == PROVIDER_KEY and value:
                hint = value
        ex = Exchange(self.host, hint)
        try:
            async for req in request_iterator:
                resp = ex.handle(req)
                if resp is not None:
                    yield resp
        finally:
            ex.close()


def _start_metrics_http(config: Config, registry):
    import prometheus_client

    mhost, _, mport = config.metrics_addr.rpartition(":")
    http, _ = prometheus_client.start_http_server(int(mport), addr=mhost.strip("[]"), registry=registry)
    return http


def run(config: Config, *, fault_model: str | None = None) -> None:
    """`llmtally serve`: one process, or `workers` processes sharing the port."""
    if config.workers == 1:
        asyncio.run(serve(config, fault_model=fault_model))
        return
    import multiprocessing
    import shutil
    import tempfile

    mp_dir = tempfile.mkdtemp(prefix="llmtally-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir  # before any worker imports prometheus_client
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=mp_dir)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(config, fault_model, i), name=f"llmtally-worker-{i}")
             for i in range(config.workers)]
    for p in procs:
        p.start()
    http = _start_metrics_http(config, registry)
    log.info("llmtally: %d workers on %s, metrics on http://%s/metrics", config.workers, config.listen,
             config.metrics_addr)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and all(p.is_alive() for p in procs):
        stop.wait(0.5)
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join(config.shutdown_grace_seconds + 5)
    http.shutdown()
    shutil.rmtree(mp_dir, ignore_errors=True)
    log.info("stopped")


def _worker(config: Config, fault_model: str | None, index: int) -> None:
    logging.basicConfig(level=config.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s[w{index}]: %(message)s")
    asyncio.run(serve(config, fault_model=fault_model, worker=True))


async def serve(config: Config, *, fault_model: str | None = None, ready=None, worker: bool = False) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting and give open streams
    `shutdown_grace_seconds` to finish. A worker shares the port with its
    siblings and leaves /metrics to its parent."""
    import prometheus_client

    prometheus_client.disable_created_metrics()
    metrics = Metrics(config)
    host = Host(config, metrics, fault_model)
    if config.default_encoding:
        _api.set_default_encoding(config.default_encoding)
    _api.count_tokens("warm up", encoding="o200k_base", backend=host.backend)  # load vocabularies before traffic
    _api.count_tokens("warm up", encoding="cl100k_base", backend=host.backend)

    server = grpc.aio.server(maximum_concurrent_rpcs=config.max_concurrent_streams, options=[("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
                                      ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
                                      ("grpc.so_reuseport", 1 if worker else 0)])
    pb_grpc.add_ExternalProcessorServicer_to_server(Processor(host), server)
    if config.rate_limit is not None:
        from envoy.service.ratelimit.v3 import rls_pb2_grpc

        from .ratelimit import Budgets, RateLimitService

        rl = config.rate_limit
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            RateLimitService(rl.domain, Budgets(rl.limits, rl.window_seconds)), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(config.listen) == 0 and not config.listen.startswith("unix"):
        raise OSError(f"cannot listen on {config.listen}")
    http = None if worker else _start_metrics_http(config, metrics.registry)
    await server.start()
    if config.listen.startswith("unix:"):
        os.chmod(config.listen[5:], int(config.unix_socket_mode, 8))
    for svc in ("", SERVICE):
        await health.set(svc, health_pb2.HealthCheckResponse.SERVING)
    if not worker:
        log.info("llmtally %s backend: ext_proc on %s, metrics on http://%s/metrics", host.backend, config.listen,
                 config.metrics_addr)
    if ready is not None:
        ready()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining open streams for up to %ss", config.shutdown_grace_seconds)
    for svc in ("", SERVICE):
        await health.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(config.shutdown_grace_seconds)
    if http is not None:
        http.shutdown()
        log.info("stopped")
