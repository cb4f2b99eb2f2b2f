"""An OTLP gRPC sink for the benchmarks: accepts the collector's trace and metrics exports and drops them
without decoding (an empty response is an empty protobuf message), so that what is measured is llmtally's
side of the export."""

from __future__ import annotations

from concurrent import futures

import grpc

SERVICES = (
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
)


class Sink:
    def __init__(self) -> None:
        self.exports = 0
        handlers = [
            grpc.method_handlers_generic_handler(svc, {"Export": grpc.unary_unary_rpc_method_handler(self._export)})
            for svc in SERVICES
        ]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), handlers=handlers)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: bytes, context: object) -> bytes:
        self.exports += 1
        return b""

    def stop(self) -> None:
        self.server.stop(0)
