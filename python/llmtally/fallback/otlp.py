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

#: Span.flags: the parent's remoteness is known (HAS_IS_REMOTE), and the parent is remote (IS_REMOTE)
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

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


_HEX = frozenset("0123456789abcdef")


def _id(hex_id: str, random: bytes, size: int) -> bytes:
    """An id from lowercase hex, or, when `hex_id` is empty, the `size` random bytes (all zero: the last byte
    made 1, an all-zero id being invalid)."""
    if not hex_id:
        return random if any(random) else random[:-1] + b"\x01"
    if len(hex_id) != 2 * size or not _HEX.issuperset(hex_id):
        raise ValueError("an id is not lowercase hex of its length")
    return bytes.fromhex(hex_id)


def _span(row: tuple[Any, ...], random: bytes) -> bytes:
    """Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6, start 7, end 8,
    attributes 9, events 11, status 15, flags 16."""
    if type(row) is not tuple or len(row) != 9:
        raise ValueError("a span row has 9 fields")
    name, trace_id, parent_id, state, start_ns, end_ns, error, attrs, events = row
    parts = [_field(1, _id(trace_id, random[:16], 16)), _field(2, _id("", random[16:24], 8))]
    if state:
        parts.append(_field(3, state.encode("utf-8", "replace")))
    flags = _HAS_IS_REMOTE
    if parent_id:
        parts.append(_field(4, _id(parent_id, b"", 8)))
        flags |= _IS_REMOTE
    parts.append(_field(5, name.encode("utf-8", "replace")))
    parts.append(b"\x30\x03")  # kind: CLIENT
    parts.append(b"\x39" + struct.pack("<Q", start_ns))
    parts.append(b"\x41" + struct.pack("<Q", end_ns))
    parts.append(_attributes(9, attrs))
    for e_name, e_time, e_attrs in events:  # Event: time 1, name 2, attributes 3
        event = b"\x09" + struct.pack("<Q", e_time) + _field(2, e_name.encode("utf-8", "replace"))
        parts.append(_field(11, event + _attributes(3, e_attrs)))
    # Status: message 2, code 3 (ERROR 2); present even when unset
    status = b""
    if error is not None:
        status = (_field(2, error.encode("utf-8", "replace")) if error else b"") + b"\x18\x02"
    parts.append(_field(15, status))
    parts.append(b"\x85\x01" + struct.pack("<I", flags))
    return b"".join(parts)


def encode_spans(spans: Sequence[tuple[Any, ...]], random: bytes) -> bytes:
    """The span rows as the `spans` fields (2) of their ScopeSpans message; `random`: 24 bytes a span (its
    trace id when it has none, and its span id). A row: name, trace id and parent span id (lowercase hex,
    "" for none), tracestate header, start and end (ns since the epoch), the error (the status message;
    None: status unset), the attributes (a dict), events ((name, time_ns, attributes), ...)."""
    if len(random) < 24 * len(spans):
        raise ValueError("random: 24 bytes a span")
    return b"".join(_field(2, _span(sp, random[24 * i : 24 * i + 24])) for i, sp in enumerate(spans))
