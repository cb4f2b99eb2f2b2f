"""OTLP trace export requests written straight in the protobuf wire format: the span encoder of the gRPC
OTLP exporter (`SpanExporter`), many times cheaper per span than the SDK's, which builds every attribute as
a protobuf message. The spans themselves are written by the native extension (`_native.encode_spans`; the
fallback's writes the same bytes). The bytes are read back into the OTLP request message
by the protobuf runtime (so a mistake here fails the export, it never sends malformed data), and the
exporter sends that as usual.

Field numbers are those of opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto and
resource/v1/resource.proto. `llmtally.fallback.otlp` holds the pure-Python span writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _api
from .fallback.otlp import _attributes, _field


def encode_spans(spans: Sequence[Any], backend: str | None = None) -> bytes:
    """An ExportTraceServiceRequest: resource_spans 1 (resource 1, scope_spans 2, schema_url 3), one per
    resource and scope, in the order the spans came. `backend`: `native` or `python` (the fallback's
    encoder), by default the process's (`llmtally.backend()`)."""
    write = _api._impl(backend).encode_spans
    groups: dict[tuple[int, int], tuple[Any, Any, list[Any]]] = {}
    for sp in spans:
        key = (id(sp.resource), id(sp.instrumentation_scope))
        g = groups.get(key)
        if g is None:
            g = groups[key] = (sp.resource, sp.instrumentation_scope, [])
        g[2].append(sp)
    out = []
    for resource, scope, members in groups.values():
        encoded = write(members)
        scope_part = b""
        if scope is not None:  # InstrumentationScope: name 1, version 2
            scope_part = _field(
                1, _field(1, scope.name.encode()) + (_field(2, scope.version.encode()) if scope.version else b"")
            )
        scope_spans = scope_part + encoded
        if scope is not None and scope.schema_url:
            scope_spans += _field(3, scope.schema_url.encode())
        rs = _field(1, _attributes(1, resource.attributes)) + _field(2, scope_spans)
        if resource.schema_url:
            rs += _field(3, resource.schema_url.encode())
        out.append(_field(1, rs))
    return b"".join(out)


def span_exporter(**kwargs: Any) -> Any:
    """The SDK's OTLP gRPC span exporter, translating spans with `encode_spans` (its `_translate_data`, the
    method its subclasses give the request with)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    class Exporter(OTLPSpanExporter):
        def _translate_data(self, data: Sequence[Any]) -> ExportTraceServiceRequest:
            return ExportTraceServiceRequest.FromString(encode_spans(data))

    return Exporter(**kwargs)
