"""`llmtally serve`: the Envoy external processor (ext_proc) over gRPC.

The lifecycle only: the grpc.aio server with its `Processor` servicer (one
`exchange.Exchange` per gRPC stream, where the per-request work happens), the
gRPC health service, the optional rate-limit service, signals and graceful
drain, worker processes sharing the port, and the /metrics HTTP endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, cast

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from . import _api
from .config import Config
from .exchange import PROVIDER_KEY, Exchange, Host
from .metrics import Metrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
    from prometheus_client import CollectorRegistry

log = logging.getLogger("llmtally")

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
MAX_GRPC_MESSAGE = 64 << 20


# xds-protos has no type stubs: the generated servicer base class is Any
class Processor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, host: Host):
        self.host = host

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext[pb.ProcessingRequest, pb.ProcessingResponse],
    ) -> AsyncIterator[pb.ProcessingResponse]:
        hint = None
        for key, value in context.invocation_metadata() or ():
            if key == PROVIDER_KEY and value:
                hint = value
        ex = Exchange(self.host, cast("str | None", hint))  # a key without the -bin suffix has a str value
        try:
            async for req in request_iterator:
                resp = ex.handle(req)
                if resp is not None:
                    yield resp
        finally:
            ex.close()


def _start_metrics_http(config: Config, registry: CollectorRegistry) -> WSGIServer:
    import prometheus_client

    mhost, _, mport = config.metrics_addr.rpartition(":")
    http, _ = prometheus_client.start_http_server(int(mport), addr=mhost.strip("[]"), registry=registry)
    return http


def run(config: Config) -> None:
    """`llmtally serve`: one process, or `workers` processes sharing the port."""
    if config.workers == 1:
        asyncio.run(serve(config))
        return
    import multiprocessing
    import shutil
    import tempfile

    mp_dir = tempfile.mkdtemp(prefix="llmtally-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir  # before any worker imports prometheus_client
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=mp_dir)  # type: ignore[no-untyped-call]  # not annotated in prometheus-client
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(config, i), name=f"llmtally-worker-{i}") for i in range(config.workers)]
    for p in procs:
        p.start()
    http = _start_metrics_http(config, registry)
    log.info(
        "llmtally: %d workers on %s, metrics on http://%s/metrics", config.workers, config.listen, config.metrics_addr
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and all(p.is_alive() for p in procs):
        stop.wait(0.5)
    for p in procs:
        if p.is_alive() and p.pid is not None:  # started, so it has a pid
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join(config.shutdown_grace_seconds + 5)
    http.shutdown()
    shutil.rmtree(mp_dir, ignore_errors=True)
    log.info("stopped")


def _worker(config: Config, index: int) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), format=f"%(asctime)s %(levelname)s %(name)s[w{index}]: %(message)s"
    )
    asyncio.run(serve(config, worker=True))


async def serve(config: Config, *, ready: Callable[[], object] | None = None, worker: bool = False) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting and give open streams
    `shutdown_grace_seconds` to finish. A worker shares the port with its
    siblings and leaves /metrics to its parent."""
    import prometheus_client

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # not annotated in prometheus-client
    metrics = Metrics(config)
    host = Host(config, metrics)
    if config.default_encoding:
        _api.set_default_encoding(config.default_encoding)
    for enc in _api.ENCODINGS:  # load vocabularies before traffic
        _api.count_tokens("warm up", encoding=enc, backend=host.backend)

    server = grpc.aio.server(
        maximum_concurrent_rpcs=config.max_concurrent_streams,
        options=[
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
            ("grpc.so_reuseport", 1 if worker else 0),
        ],
    )
    pb_grpc.add_ExternalProcessorServicer_to_server(Processor(host), server)
    if config.rate_limit is not None:
        from envoy.service.ratelimit.v3 import rls_pb2_grpc

        from .ratelimit import Budgets, RateLimitService

        rl = config.rate_limit
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            RateLimitService(rl.domain, Budgets(rl.limits, rl.window_seconds)), server
        )
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
        log.info(
            "llmtally %s backend: ext_proc on %s, metrics on http://%s/metrics",
            host.backend,
            config.listen,
            config.metrics_addr,
        )
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
