"""An OTLP receiver for the tests: the collector's trace and metrics export services over gRPC (from the
opentelemetry-proto package's generated modules), and OTLP/HTTP protobuf on /v1/traces and /v1/metrics.
Loopback only. It keeps what arrives; `spans()` and `points()` read it."""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value_of(v):
    """An OTLP AnyValue as a Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs_of(kvs) -> dict:
    return {kv.key: value_of(kv.value) for kv in kvs}


class Receiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.trace_requests: list = []
        self.metric_requests: list = []
        self.http_paths: list[str] = []
        self.grpc_server = None
        self.http_server = None

    # -- servers --

    def start_grpc(self) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                with receiver.lock:
                    receiver.trace_requests.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                with receiver.lock:
                    receiver.metric_requests.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.grpc_server = server
        return port

    def start_http(self) -> int:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding", "") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    msg = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    out = trace_service_pb2.ExportTraceServiceResponse()
                    target = receiver.trace_requests
                elif self.path == "/v1/metrics":
                    msg = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    out = metrics_service_pb2.ExportMetricsServiceResponse()
                    target = receiver.metric_requests
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                with receiver.lock:
                    target.append(msg)
                    receiver.http_paths.append(self.path)
                data = out.SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http_server.serve_forever, daemon=True).start()
        return self.http_server.server_address[1]

    def stop(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(0)
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()

    # -- what arrived --

    def spans(self) -> list[tuple[dict, str, object]]:
        """(resource attributes, scope name, span) of every span received."""
        with self.lock:
            reqs = list(self.trace_requests)
        out = []
        for req in reqs:
            for rs in req.resource_spans:
                res = attrs_of(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        out.append((res, ss.scope.name, sp))
        return out

    def metrics(self) -> dict[str, object]:
        """The latest received Metric of each name (exports are cumulative: the latest holds every point)."""
        with self.lock:
            reqs = list(self.metric_requests)
        out = {}
        for req in reqs:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        out[m.name] = m
        return out

    def resources_of_metrics(self) -> list[dict]:
        with self.lock:
            reqs = list(self.metric_requests)
        return [attrs_of(rm.resource.attributes) for req in reqs for rm in req.resource_metrics]

    def wait(self, ready, timeout: float = 20.0, what: str = "OTLP data"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = ready()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")


def histogram_points(metric) -> dict[frozenset, tuple[int, float]]:
    """{attributes as a frozenset of items: (count, sum)} of a histogram metric."""
    out = {}
    for p in metric.histogram.data_points:
        a = attrs_of(p.attributes)
        out[frozenset((k, tuple(v) if isinstance(v, list) else v) for k, v in a.items())] = (p.count, p.sum)
    return out
