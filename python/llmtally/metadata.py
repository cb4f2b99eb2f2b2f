"""What the sidecar hands back to Envoy: dynamic metadata, and custom label
values read from the metadata Envoy forwards. Never a header value."""

from __future__ import annotations

import struct as _wire
from collections.abc import Mapping, MutableMapping
from typing import Protocol, cast

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf.struct_pb2 import Struct, Value

from ._api import display_name
from ._types import RequestInfo, Usage
from .config import Config

#: a metadata value as Struct holds it
Scalar = str | int | float | bool


class MetadataContext(Protocol):
    """What `custom_labels` reads of `ProcessingRequest.metadata_context` (envoy.config.core.v3.Metadata)."""

    @property
    def filter_metadata(self) -> Mapping[str, Struct]: ...


def _struct(namespaces: Mapping[str, Mapping[str, Scalar]]) -> Struct:
    """A Struct built by direct field writes (protobuf's Struct.update is pure Python and slow)."""
    s = Struct()
    for ns, values in namespaces.items():
        fields = s.fields[ns].struct_value.fields
        for k, v in values.items():
            if isinstance(v, bool):
                fields[k].bool_value = v
            elif isinstance(v, (int, float)):
                fields[k].number_value = v
            else:
                fields[k].string_value = v
    return s


def request_metadata(config: Config, provider: str, info: RequestInfo) -> Struct:
    """On the request body response: what is known before the response, and
    the prompt estimate as `hits_addend` (see docs/envoy.md, "Token rate limiting")."""
    ai: dict[str, Scalar] = {
        "provider": display_name(provider),
        "streaming": info.streaming,
        "prompt_tokens": info.prompt_tokens,
    }
    if info.model is not None:
        ai["model"] = info.model
    return _struct({config.metadata_namespace: ai, config.ratelimit_namespace: {"hits_addend": info.prompt_tokens}})


def final_metadata(config: Config, provider: str, u: Usage, cost_microusd: int | None = None) -> Struct:
    """At the end of the response: the usage, and `hits_addend` = total tokens; with a price, the cost
    (`cost_usd`, and `cost_microusd`: an integer a rate limit can take as its addend)."""
    ai: dict[str, Scalar] = {
        "total_tokens": u.total_tokens,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "provider": display_name(provider),
        "streaming": u.streaming,
        "usage_source": u.source,
    }
    if u.model is not None:
        ai["model"] = u.model
    if u.provider_model is not None:
        ai["provider_model"] = u.provider_model
    if cost_microusd is not None:
        ai["cost_usd"] = cost_microusd / 1_000_000
        ai["cost_microusd"] = cost_microusd
    return _struct({config.metadata_namespace: ai, config.ratelimit_namespace: {"hits_addend": u.total_tokens}})


def _numbers(u: Usage, cost_microusd: int | None) -> tuple[float, ...]:
    """The numbers of the final metadata, in the order `FinalMetadata` writes them."""
    n: tuple[float, ...] = (u.total_tokens, u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens)
    n += (u.reasoning_tokens, u.total_tokens)  # the last: hits_addend
    if cost_microusd is not None:
        n += (cost_microusd / 1_000_000, cost_microusd)
    return n


#: stand-ins for the numbers while a wire template is made: doubles whose encodings hold 0xFF, which no
#: UTF-8 text (a model name, a key) can hold, each found exactly once in the template or none is made
_SENTINELS = tuple(_wire.unpack("<d", bytes((0xFF, i, 0xFE, 0xC3, 0x3C, 0x96, 0x69, 0x7F)))[0] for i in range(9))


class FinalMetadata:
    """One stream's final metadata, kept between its chunks: while the names stay the same (provider,
    models, streaming, usage source, whether a price applies), a later call rewrites only the numbers in
    the kept Struct, which costs a tenth of building one field by field (every chunk that changes the
    counts carries this metadata). What it returns is always what `final_metadata` would build; the
    caller hands it to a ProcessingResponse, which copies it.

    `response_body` goes further for the mid-stream answers: it keeps the serialized answer (a
    ProcessingResponse with an empty `response_body` and this metadata) with the places of its numbers
    (a Value's number is a fixed 8-byte double on the wire), and rewrites those bytes alone."""

    __slots__ = ("key", "struct", "ai", "rl", "wire_key", "wire", "at")

    def __init__(self) -> None:
        self.key: tuple[object, ...] | None = None
        self.struct = Struct()
        self.ai: MutableMapping[str, Value] = {}
        self.rl: MutableMapping[str, Value] = {}
        self.wire_key: tuple[object, ...] | None = None
        self.wire = bytearray()
        self.at: tuple[int, ...] = ()

    def build(self, config: Config, provider: str, u: Usage, cost_microusd: int | None = None) -> Struct:
        key = (provider, u.model, u.provider_model, u.streaming, u.source, cost_microusd is None)
        if key != self.key:
            self.struct = final_metadata(config, provider, u, cost_microusd)
            self.ai = self.struct.fields[config.metadata_namespace].struct_value.fields
            self.rl = self.struct.fields[config.ratelimit_namespace].struct_value.fields
            self.key = key
            return self.struct
        ai = self.ai
        ai["total_tokens"].number_value = u.total_tokens
        ai["prompt_tokens"].number_value = u.prompt_tokens
        ai["completion_tokens"].number_value = u.completion_tokens
        ai["cached_tokens"].number_value = u.cached_tokens
        ai["cache_write_tokens"].number_value = u.cache_write_tokens
        ai["reasoning_tokens"].number_value = u.reasoning_tokens
        if cost_microusd is not None:
            ai["cost_usd"].number_value = cost_microusd / 1_000_000
            ai["cost_microusd"].number_value = cost_microusd
        self.rl["hits_addend"].number_value = u.total_tokens
        return self.struct

    def response_body(self, config: Config, provider: str, u: Usage, cost_microusd: int | None = None) -> bytes:
        """The serialized answer to a response-body chunk that carries this metadata."""
        key = (provider, u.model, u.provider_model, u.streaming, u.source, cost_microusd is None)
        if key != self.wire_key:
            self.wire_key = key
            self.at = ()
            struct = self.build(config, provider, u, cost_microusd)
            numbers = self._fields(config)
            n = len(_numbers(u, cost_microusd))
            for v, x in zip(numbers, _SENTINELS[:n], strict=True):
                v.number_value = x
            out = pb.ProcessingResponse(response_body=pb.BodyResponse(), dynamic_metadata=struct)
            self.wire = bytearray(out.SerializeToString())
            self.key = None  # the kept Struct holds the stand-ins now: the next build makes it anew
            at = []
            for x in _SENTINELS[:n]:
                b = _wire.pack("<d", x)
                if self.wire.count(b) != 1:
                    break
                at.append(self.wire.index(b))
            else:
                self.at = tuple(at)
        if not self.at:  # no template (never seen: the stand-ins' bytes found elsewhere): built as a message
            md = self.build(config, provider, u, cost_microusd)
            out = pb.ProcessingResponse(response_body=pb.BodyResponse(), dynamic_metadata=md)
            return cast(bytes, out.SerializeToString())
        wire = self.wire
        for off, x in zip(self.at, _numbers(u, cost_microusd), strict=True):
            _wire.pack_into("<d", wire, off, x)
        return bytes(wire)

    def _fields(self, config: Config) -> list[Value]:
        """The kept Struct's number Values, in `_numbers`' order."""
        ai = self.ai
        names = ["total_tokens", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens"]
        out = [ai[k] for k in names] + [ai["reasoning_tokens"], self.rl["hits_addend"]]
        if "cost_microusd" in ai:
            out += [ai["cost_usd"], ai["cost_microusd"]]
        return out


def _scalar(v: Value) -> str | None:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        n = v.number_value
        return str(int(n)) if n.is_integer() else repr(n)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    return None


def metadata_values(config: Config, metadata_context: MetadataContext) -> dict[str, str]:
    """Values of the configured labels from `ProcessingRequest.metadata_context`, as forwarded (a missing
    or non-scalar value gets `missingLabelValue`); budgets use them as they are, labels after `clean`."""
    out: dict[str, str] = {}
    fm = metadata_context.filter_metadata
    for lab in config.custom_labels:
        value = None
        if lab.metadata_namespace in fm:
            node = fm[lab.metadata_namespace]
            *heads, last = lab.path()
            for key in heads:
                if key not in node.fields or node.fields[key].WhichOneof("kind") != "struct_value":
                    break
                node = node.fields[key].struct_value
            else:
                if last in node.fields:
                    value = _scalar(node.fields[last])
        out[lab.name] = config.missing_label_value if value in (None, "") else value
    return out


def custom_labels(config: Config, metadata_context: MetadataContext) -> dict[str, str]:
    """The custom label values of a request: `metadata_values`, cleaned for /metrics."""
    missing = config.missing_label_value
    return {k: v if v == missing else clean(config, v) for k, v in metadata_values(config, metadata_context).items()}


def clean(config: Config, value: str) -> str:
    """A label value as exported: a longer one than `labelValueMaxLength`, or one with a control character,
    becomes `overflowValue` (a client's claim must not grow /metrics, nor break its lines)."""
    if len(value) > config.label_value_max_length or not value.isprintable():
        return config.overflow_value
    return value
