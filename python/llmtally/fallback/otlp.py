"""OTLP trace spans in the protobuf wire format, the fallback's `encode_spans`: the same bytes as the
native extension's (rust/core/src/otlp.rs). Field numbers are those of opentelemetry/proto/trace/v1/
trace.proto and common/v1/common.proto. Attributes repeat across calls (provider, model, team): each
(key, value) pair is encoded once and kept, up to `MAX_CACHED` pairs."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

#: encoded (key, value) attribute pairs kept
MAX_CACHED = 10_000

_STATUS_CODE = {"UNSET": 0, "OK": 1, "ERROR": 2}
#: Span.flags: the parent's remoteness is known (HAS_IS_REMOTE), and the parent is remote (IS_REMOTE)
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
#: SpanKind enum values of the proto
_KIND = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}

_cache: dict[tuple[str, type, object], bytes] = {}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


#: the deepest list of lists an attribute value may be (llmtally's are flat), as in the native writer
MAX_VALUE_DEPTH = 32


def _any_value(v: Any, depth: int = 0) -> bytes:
    """AnyValue: string 1, bool 2, int 3, double 4, array 5 (ArrayValue: values 1)."""
    t = type(v)
    if t is str:
        return _field(1, v.encode("utf-8", "replace"))
    if t is bool:
        return b"\x10\x01" if v else b"\x10\x00"
    if t is int:
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)  # int64, two's complement
    if t is float:
        return b"\x21" + struct.pack("<d", v)
    if t in (list, tuple):
        if depth >= MAX_VALUE_DEPTH:
            raise ValueError("an attribute value nests lists too deeply")
        return _field(5, b"".join(_field(1, _any_value(x, depth + 1)) for x in v))
    return _field(1, str(v).encode("utf-8", "replace"))


#: the value types whose encodings are cached: exact str, int and bool (a float is not: 0.0 == -0.0, nor a
#: tuple: (1,) == (1.0,), and either could hand one value's bytes to another)
_CACHED_TYPES = (str, int, bool)


def _key_value(number: int, k: str, v: Any) -> bytes:
    """A KeyValue (key 1, value 2) as field `number` of its message."""
    cached = number == 9 and type(v) in _CACHED_TYPES
    if cached:
        got = _cache.get((k, type(v), v))
        if got is not None:
            return got
    out = _field(number, _field(1, k.encode("utf-8", "replace")) + _field(2, _any_value(v)))
    if cached and len(_cache) < MAX_CACHED:
        _cache[(k, type(v), v)] = out  # typed: True == 1 as keys
    return out


def _attributes(number: int, attrs: Any) -> bytes:
    if not attrs:
        return b""
    return b"".join(_key_value(number, k, v) for k, v in attrs.items())


def _span(sp: Any) -> bytes:
    """Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6, start 7, end 8,
    attributes 9, events 11, status 15, flags 16."""
    ctx = sp.context
    parts = [_field(1, ctx.trace_id.to_bytes(16, "big")), _field(2, ctx.span_id.to_bytes(8, "big"))]
    state = ctx.trace_state
    if state:
        parts.append(_field(3, ",".join(f"{k}={v}" for k, v in state.items()).encode()))
    parent = sp.parent
    flags = _HAS_IS_REMOTE
    if parent is not None:
        parts.append(_field(4, parent.span_id.to_bytes(8, "big")))
        if parent.is_remote:
            flags |= _IS_REMOTE
    parts.append(_field(5, sp.name.encode("utf-8", "replace")))
    parts.append(b"\x30" + _varint(_KIND[sp.kind.name]))
    parts.append(b"\x39" + struct.pack("<Q", sp.start_time))
    parts.append(b"\x41" + struct.pack("<Q", sp.end_time))
    parts.append(_attributes(9, sp.attributes))
    for e in sp.events:  # Event: time 1, name 2, attributes 3
        parts.append(
            _field(
                11, b"\x09" + struct.pack("<Q", e.timestamp) + _field(2, e.name.encode()) + _attributes(3, e.attributes)
            )
        )
    code = _STATUS_CODE[sp.status.status_code.name]  # Status: message 2, code 3; present even when unset
    message = (sp.status.description or "").encode("utf-8", "replace") if code else b""
    parts.append(_field(15, (_field(2, message) if message else b"") + (bytes([0x18, code]) if code else b"")))
    parts.append(b"\x85\x01" + struct.pack("<I", flags))
    return b"".join(parts)


def encode_spans(spans: Sequence[Any]) -> bytes:
    """The spans as the `spans` fields (2) of their ScopeSpans message."""
    return b"".join(_field(2, _span(sp)) for sp in spans)
