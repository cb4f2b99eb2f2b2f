"""What the sidecar hands back to Envoy: dynamic metadata, and custom label
values read from the metadata Envoy forwards. Never a header value."""

from __future__ import annotations

import struct as _wire
from collections.abc import Callable, Mapping, MutableMapping
from operator import itemgetter
from typing import Protocol, cast

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf.struct_pb2 import Struct, Value

from ._api import display_name
from ._types import RequestInfo, Usage
from .config import Config
from .logs import printable

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
        ai["model"] = printable(info.model)
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
        ai["model"] = printable(u.model)
    if u.provider_model is not None:
        ai["provider_model"] = printable(u.provider_model)
    if cost_microusd is not None:
        ai["cost_usd"] = cost_microusd / 1_000_000
        ai["cost_microusd"] = cost_microusd
    return _struct({config.metadata_namespace: ai, config.ratelimit_namespace: {"hits_addend": u.total_tokens}})


class FinalMetadata:
    """One stream's final metadata, kept between its chunks: while the names stay the same (provider,
    models, streaming, usage source, whether a price applies), a later call rewrites only the numbers in
    the kept Struct, which costs a tenth of building one field by field (every chunk that changes the
    counts carries this metadata). What it returns is always what `final_metadata` would build; the
    caller hands it to a ProcessingResponse, which copies it."""

    __slots__ = ("key", "struct", "ai", "rl")

    def __init__(self) -> None:
        self.key: tuple[object, ...] | None = None
        self.struct = Struct()
        self.ai: MutableMapping[str, Value] = {}
        self.rl: MutableMapping[str, Value] = {}

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


#: stand-ins for the numbers while a wire template is made: doubles whose encodings hold 0xFF, which no
#: UTF-8 text (a model name, a key) can hold; each must be found exactly once in the template, or none is kept
_SENTINELS = tuple(_wire.unpack("<d", bytes((0xFF, i, 0xFE, 0xC3, 0x3C, 0x96, 0x69, 0x7F)))[0] for i in range(9))
#: the empty answer of each kind that carries metadata
_EMPTY = {
    "request_body": pb.BodyResponse,
    "request_trailers": pb.TrailersResponse,
    "request_headers": pb.HeadersResponse,
    "response_headers": pb.HeadersResponse,
    "response_body": pb.BodyResponse,
    "response_trailers": pb.TrailersResponse,
}

#: an answer's serialized form: a Struct that packs its fixed byte runs and its numbers in turn, the runs,
#: and what puts the numbers in the order of their places; (None, (the answer,), tuple) when they could
#: not be placed
_Template = tuple["_wire.Struct | None", tuple[bytes, ...], Callable[[tuple[float, ...]], tuple[float, ...]]]


class WireAnswers:
    """Serialized answers that carry metadata (an empty answer of a kind, with `request_metadata`'s or
    `final_metadata`'s Struct), kept by their shape: the kind and every name and flag in the metadata. A
    Struct's number is a fixed 8-byte double on the wire, so an answer of a shape seen before is its
    template with the numbers written in at their places, found once by serializing stand-ins; it parses
    to the message `answer_message` builds. Model names are the client's: past `limit` shapes an answer is
    serialized from its message, as without templates. Shared by the streams (and the worker threads: a
    shape made twice at once is made twice, nothing worse)."""

    def __init__(self, config: Config, limit: int = 1024):
        self.config = config
        self.limit = limit
        self.shapes: dict[tuple[object, ...], _Template] = {}

    def request(self, kind: str, provider: str, info: RequestInfo) -> bytes:
        """The answer that ends the request: `request_metadata`."""
        key = (kind, provider, info.model, info.streaming)
        n = info.prompt_tokens
        return self._answer(key, (n, n), lambda: request_metadata(self.config, provider, info))

    def final(self, kind: str, provider: str, u: Usage, cost_microusd: int | None = None) -> bytes:
        """An answer carrying the usage: `final_metadata`."""
        key = (kind, provider, u.model, u.provider_model, u.streaming, u.source, cost_microusd is None)
        numbers: tuple[float, ...] = (u.total_tokens, u.prompt_tokens, u.completion_tokens, u.cached_tokens)
        numbers += (u.cache_write_tokens, u.reasoning_tokens, u.total_tokens)
        if cost_microusd is not None:
            numbers += (cost_microusd / 1_000_000, cost_microusd)
        return self._answer(key, numbers, lambda: final_metadata(self.config, provider, u, cost_microusd))

    def _answer(self, key: tuple[object, ...], numbers: tuple[float, ...], struct: Callable[[], Struct]) -> bytes:
        t = self.shapes.get(key)
        if t is None:
            if len(self.shapes) >= self.limit:
                return _serialized(key[0], struct())
            t = self.shapes[key] = self._template(cast(str, key[0]), struct(), len(numbers))
        packer, runs, placed = t
        if packer is None:
            return _serialized(key[0], struct())
        args: list[object] = [b""] * (2 * len(runs) - 1)
        args[0::2] = runs
        args[1::2] = placed(numbers)
        return packer.pack(*args)

    def _template(self, kind: str, struct: Struct, n: int) -> _Template:
        """The answer with stand-ins for its n numbers, cut at their places (uncut if one is not found once)."""
        for v, x in zip(_number_values(self.config, struct), _SENTINELS[:n], strict=True):
            v.number_value = x
        wire = _serialized(kind, struct)
        at = []
        for x in _SENTINELS[:n]:
            b = _wire.pack("<d", x)
            if wire.count(b) != 1:
                return None, (wire,), tuple
            at.append(wire.index(b))
        order = sorted(range(n), key=at.__getitem__)  # a map's entries need not be in the numbers' order
        runs, start = [], 0
        for i in order:
            runs.append(wire[start : at[i]])
            start = at[i] + 8
        runs.append(wire[start:])
        placed = itemgetter(*order) if n > 1 else tuple  # (itemgetter of one index gives the number alone)
        return _wire.Struct("<" + "d".join(f"{len(r)}s" for r in runs)), tuple(runs), placed


def _number_values(config: Config, struct: Struct) -> list[Value]:
    """The number Values of a request or final metadata Struct, in `WireAnswers`' order."""
    ai = struct.fields[config.metadata_namespace].struct_value.fields
    rl = struct.fields[config.ratelimit_namespace].struct_value.fields["hits_addend"]
    if "total_tokens" not in ai:  # request_metadata
        return [ai["prompt_tokens"], rl]
    names = ("total_tokens", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens")
    out = [ai[k] for k in names] + [ai["reasoning_tokens"], rl]
    if "cost_microusd" in ai:
        out += [ai["cost_usd"], ai["cost_microusd"]]
    return out


def answer_message(kind: str, struct: Struct) -> pb.ProcessingResponse:
    """The empty answer of `kind` carrying `struct`."""
    return pb.ProcessingResponse(**{kind: _EMPTY[kind]()}, dynamic_metadata=struct)


def _serialized(kind: object, struct: Struct) -> bytes:
    return cast(bytes, answer_message(cast(str, kind), struct).SerializeToString())


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
