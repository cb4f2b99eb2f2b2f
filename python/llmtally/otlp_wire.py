"""OTLP trace export requests written straight in the protobuf wire format, and the exporters that send
them as they are. A finished call is a span row (a tuple: see `llmtally.fallback.otlp.encode_spans`); the
native extension writes a batch of rows as OTLP `Span` messages (`_native.encode_spans`; the fallback
writes the same bytes), and this module adds the resource and scope around them. No SDK span object and
no protobuf message is made on the way: the bytes go to the collector as written.

Field numbers are those of opentelemetry/proto/collector/trace/v1/trace_service.proto, trace/v1/
trace.proto, common/v1/common.proto and resource/v1/resource.proto.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import _api
from .fallback.otlp import _attributes, _field

TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass(frozen=True, slots=True)
class Batch:
    """One export request (ExportTraceServiceRequest, written) and the number of spans in it."""

    data: bytes
    count: int


class Encoder:
    """Writes batches of span rows of one resource and scope as ExportTraceServiceRequest bytes:
    resource_spans 1 (resource 1, scope_spans 2 (scope 1, spans 2, schema_url 3), schema_url 3)."""

    def __init__(self, resource: Any, scope: Any, backend: str | None = None):
        """`backend`: `native` or `python` (the fallback's span writer), by default the process's."""
        self.write = _api._impl(backend).encode_spans
        # the fixed parts around the spans, written once: InstrumentationScope (name 1, version 2), Resource
        # (attributes 1), and the schema urls
        version = _field(2, scope.version.encode()) if scope.version else b""
        self.scope_head = _field(1, _field(1, scope.name.encode()) + version)
        self.scope_tail = _field(3, scope.schema_url.encode()) if scope.schema_url else b""
        self.resource_head = _field(1, _attributes(1, resource.attributes))
        self.resource_tail = _field(3, resource.schema_url.encode()) if resource.schema_url else b""

    def encode(self, rows: Sequence[tuple[Any, ...]], random: bytes | None = None) -> Batch:
        """`random`: 24 bytes a row for the new ids (by default from `os.urandom`)."""
        if random is None:
            random = os.urandom(24 * len(rows))
        spans = self.write(rows, random)
        scope_spans = _field(2, self.scope_head + spans + self.scope_tail)
        return Batch(_field(1, self.resource_head + scope_spans + self.resource_tail), len(rows))


def grpc_exporter(**kwargs: Any) -> Any:
    """The SDK's OTLP gRPC span exporter (its channel, headers, TLS, timeout, retries and `OTEL_*` variables),
    sending a `Batch`'s bytes as they are written."""
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    class RawStub:
        """The trace service's client stub, without a request serializer: the request is its bytes."""

        def __init__(self, channel: grpc.Channel):
            self.Export: Any = channel.unary_unary(
                TRACE_EXPORT_METHOD, response_deserializer=ExportTraceServiceResponse.FromString
            )

    class Exporter(OTLPSpanExporter):
        def __init__(self, **kw: Any):
            super().__init__(**kw)
            me: Any = self  # the SDK's private fields, typed for its own stub
            me._stub = RawStub  # kept by the SDK's reconnect, which makes a new client with it
            me._client = RawStub(me._channel)

        def _translate_data(self, data: Batch) -> bytes:  # type: ignore[override]
            return data.data

        def _count_data(self, data: Batch) -> int:  # type: ignore[override]
            return data.count

    return Exporter(**kwargs)


def http_exporter(**kwargs: Any) -> Any:
    """The SDK's OTLP HTTP/protobuf span exporter (its session, headers, TLS, compression, retries and
    `OTEL_*` variables), posting a `Batch`'s bytes as they are written."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    class Exporter(OTLPSpanExporter):
        def export(self, spans: Batch) -> SpanExportResult:  # type: ignore[override]
            if self._shutdown:
                return SpanExportResult.FAILURE
            with self._metrics.export_operation(spans.count) as op:  # the exporter's own metrics, as the SDK's
                result = self._client.export(spans.data)
                if not result.success:
                    op.error = result.error
                    return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

    return Exporter(**kwargs)
