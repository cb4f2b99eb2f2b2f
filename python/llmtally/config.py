"""Sidecar configuration: a YAML file, environment variables, command-line
flags (in rising precedence), validated at start with clear messages."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ._api import DEFAULT_ENCODING, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_EVENT_BYTES, ENCODINGS

if TYPE_CHECKING:
    from .budgets import Limit
    from .pricing import PriceTable

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = {"llm", "model", "le", "stage", "kind", "source", "status_class"}
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: integer settings: (least, greatest); the greatest are far past any real use and below what would break
INT_RANGES: dict[str, tuple[int, int]] = {
    "label_values_max": (1, 100_000),
    "label_value_max_length": (1, 4096),
    "max_request_body_bytes": (1, 1 << 30),
    "buffer_response_body_bytes": (0, 1 << 30),
    "max_decoded_bytes": (1, 1 << 40),
    "max_event_bytes": (1, 1 << 30),
    "max_concurrent_streams": (1, 1_000_000),
    "max_buffered_body_bytes": (1, 1 << 40),
    "series_max": (1, 10_000_000),
    "workers": (1, 1024),
    "observe_queue_calls": (1, 1_000_000),
}
#: durations in seconds: finite, (least, greatest)
SECONDS_RANGES: dict[str, tuple[float, float]] = {
    "shutdown_grace_seconds": (0.0, 3600.0),
    "mid_stream_metadata_seconds": (0.0, 3600.0),
    "message_timeout_seconds": (0.0, 3600.0),
    "stream_idle_seconds": (0.0, 86400.0),
}
#: rateLimit.limits[].tokens: Envoy's requests_per_unit is a uint32
MAX_TOKENS_PER_WINDOW = (1 << 32) - 1
#: the address settings; a port alone (9092 or :9092) means 127.0.0.1, loopback only
ADDRESSES = ("listen", "metrics_addr")
# numbers as text (environment, flags, quoted YAML): ASCII digits only
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PORT = re.compile(r"[0-9]{1,5}")
_PORT_ONLY = re.compile(r":?([0-9]{1,5})")


class ConfigError(ValueError):
    """An invalid configuration; the message says which setting and why.
    `setting`: the Config field at fault, when there is one."""

    def __init__(self, problem: str, setting: str | None = None):
        super().__init__(f"{_camel(setting)}: {problem}" if setting else problem)
        self.problem = problem
        self.setting = setting


@dataclass(frozen=True)
class CustomLabel:
    name: str
    metadata_key: str
    metadata_namespace: str = "envoy.filters.http.jwt_authn"
    key_delimiter: str = ":"

    def path(self) -> list[str]:
        return self.metadata_key.split(self.key_delimiter)


@dataclass(frozen=True)
class RateLimitConfig:
    #: must equal the `domain` of Envoy's ratelimit filter
    domain: str = "llmtally"
    #: the window of a limit that names none
    window_seconds: int = 60
    limits: tuple[Limit, ...] = ()
    #: serve the rate-limit service on its own gRPC address (same TLS settings); empty: on `listen`
    listen: str = ""
    #: the shared store: redis://, rediss:// or unix:// (empty: in this process's memory)
    redis: str = ""
    redis_cluster: bool = False
    #: every store operation's deadline
    redis_timeout_ms: int = 50
    #: when the store fails: "open" (requests pass, uncharged) or "closed" (refused with 503)
    failure_mode: str = "open"
    #: llmtally reserves each request's tokens when its body is read and answers 429 itself
    enforce: bool = False
    #: output tokens reserved for a request that sets no output limit
    default_max_output_tokens: int = 4096
    #: x-ratelimit-* headers on responses (with enforce)
    headers: bool = False


@dataclass(frozen=True)
class OtelConfig:
    """The `otel:` section (see otel.py): what is not set here comes from the `OTEL_*` variables."""

    enabled: bool = True
    #: the collector's base URL: http://host:4317 (gRPC, plaintext), https://... (TLS), http://host:4318 (HTTP)
    endpoint: str = ""
    #: grpc or http/protobuf; empty: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf
    protocol: str = ""
    #: sent with every export (credentials: never logged)
    headers: tuple[tuple[str, str], ...] = ()
    metrics: bool = True
    traces: bool = True
    #: seconds between metric exports; 0: OTEL_METRIC_EXPORT_INTERVAL, else 60
    export_interval_seconds: float = 0.0
    service_name: str = ""
    #: CA bundle for an https:// endpoint (else the system's)
    certificate_file: str = ""
    #: prompt and completion text as span events (request and response bodies, at most captureContentBytes each)
    capture_content: bool = False
    capture_content_bytes: int = 8192


#: the most of each body captured per call (otel.captureContentBytes)
MAX_CAPTURE_BYTES = 64 << 10
_OTEL_KEYS = {
    "enabled": "enabled",
    "endpoint": "endpoint",
    "protocol": "protocol",
    "headers": "headers",
    "metrics": "metrics",
    "traces": "traces",
    "exportIntervalSeconds": "export_interval_seconds",
    "serviceName": "service_name",
    "certificateFile": "certificate_file",
    "captureContent": "capture_content",
    "captureContentBytes": "capture_content_bytes",
}


def _otel(doc: object) -> OtelConfig:
    if doc is None:
        return OtelConfig()
    if not isinstance(doc, dict) or set(doc) - set(_OTEL_KEYS):
        raise ConfigError(f"otel: expected a mapping with {', '.join(sorted(_OTEL_KEYS))}")
    kw: dict[str, Any] = {}
    for key, name in _OTEL_KEYS.items():
        if key not in doc:
            continue
        v = doc[key]
        where = f"otel.{key}"
        if name in ("enabled", "metrics", "traces", "capture_content"):
            if not isinstance(v, bool):
                raise ConfigError(f"{where}: {v!r} is not true or false")
        elif name == "headers":
            if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
                raise ConfigError(f"{where}: must map header names to string values")
            if any(not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", k) for k in v) or any(
                not (x.isascii() and x.isprintable()) for x in v.values()
            ):
                raise ConfigError(f"{where}: a header name or value has a character HTTP and gRPC do not allow")
            v = tuple(sorted((k.lower(), x) for k, x in v.items()))  # gRPC metadata keys are lowercase
        elif name == "export_interval_seconds":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 3600:
                raise ConfigError(f"{where}: must be a number of seconds from 0 to 3600, not {v!r}")
            v = float(v)
        elif name == "capture_content_bytes":
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_CAPTURE_BYTES:
                raise ConfigError(f"{where}: must be an integer from 1 to {MAX_CAPTURE_BYTES}, not {v!r}")
        elif not isinstance(v, str):
            raise ConfigError(f"{where}: {v!r} is not a string")
        kw[name] = v
    oc = OtelConfig(**kw)
    if oc.protocol not in ("", "grpc", "http/protobuf"):
        raise ConfigError(f"otel.protocol: {oc.protocol!r} is not grpc or http/protobuf")
    if oc.endpoint and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", oc.endpoint):
        from .otel import redact

        raise ConfigError(f"otel.endpoint: {redact(oc.endpoint)!r} is not an http:// or https:// URL")
    if oc.endpoint:
        from .otel import CREDENTIALS_HINT, holds_credentials, redact

        if holds_credentials(oc.endpoint):
            raise ConfigError(
                f"otel.endpoint: {redact(oc.endpoint)!r} has user information or a query: {CREDENTIALS_HINT}"
            )
    return oc


@dataclass(frozen=True)
class Config:
    #: gRPC listen address: host:port, unix:/path or unix-abstract:name
    listen: str = "127.0.0.1:18080"
    #: Prometheus /metrics address host:port
    metrics_addr: str = "0.0.0.0:9092"
    log_level: str = "info"
    #: text, or json: one object per line with time, level, logger, message, and for a stream's lines its
    #: x-request-id and trace id
    log_format: str = "text"
    #: namespace of the token metadata
    metadata_namespace: str = "ai.gateway.kgateway.dev"
    #: namespace of hits_addend
    ratelimit_namespace: str = "envoy.ratelimit"
    custom_labels: tuple[CustomLabel, ...] = ()
    #: distinct values kept per custom label; more fold into `overflow_value`
    label_values_max: int = 100
    #: longest label value kept (characters); a longer one, or one with a control character, is `overflow_value`
    label_value_max_length: int = 128
    missing_label_value: str = "unknown"
    overflow_value: str = "overflow"
    #: request body bytes gathered for parse_request (the rest passes unread)
    max_request_body_bytes: int = 4 << 20
    #: Envoy's ext_proc request_body_mode: BUFFERED_PARTIAL (the generated bootstrap's: one message, the body or
    #: its first buffer's worth), BUFFERED or STREAMED (chunks); with budgets, a BUFFERED_PARTIAL message without
    #: end_of_stream is decided on at once, as the rest never comes through llmtally
    request_body_mode: str = "BUFFERED_PARTIAL"
    #: a response whose content-length is over 16 KiB and at most this, not a stream, is read in one message: the
    #: response-headers answer asks Envoy for BUFFERED (its mode_override, honoured with allow_mode_override:
    #: true, as the generated bootstrap has); it must stay under Envoy's buffer limit. 0: never
    buffer_response_body_bytes: int = 1 << 20
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    #: encoding for models without a public tokenizer
    default_encoding: str = DEFAULT_ENCODING
    #: seconds open streams may take to finish on SIGTERM/SIGINT
    shutdown_grace_seconds: float = 10.0
    #: scanning backend: native, python, or empty for the default
    backend: str = ""
    #: the token-budget rate-limit service; None: not served
    rate_limit: RateLimitConfig | None = None
    #: processes sharing the listen port (SO_REUSEPORT); /metrics reports all of them
    workers: int = 1
    #: tokenizer counts sent as metadata mid-stream at most this often (0: with every chunk that changed them)
    mid_stream_metadata_seconds: float = 0.0
    #: Envoy's ext_proc `message_timeout` (the generated bootstrap's): a stream that closes right after an answer
    #: that took this long was dropped by Envoy, not by the client (0: never assume so)
    message_timeout_seconds: float = 2.0
    #: concurrent ext_proc streams per worker; more are refused (Envoy fails open: that traffic is not counted);
    #: health checks and rate-limit calls are never refused
    max_concurrent_streams: int = 10000
    #: request body bytes buffered across all streams of a worker; past it a body is estimated from what was
    #: buffered (the rest passes unread), so memory stays bounded whatever the streams
    max_buffered_body_bytes: int = 256 << 20
    #: an ext_proc stream that receives no message for this long is released, counted as aborted (0: never);
    #: keep it above the longest a provider may take between two chunks (Envoy's stream_idle_timeout: 300 s)
    stream_idle_seconds: float = 900.0
    #: time series kept per metric; label combinations past it fold into the overflow value
    series_max: int = 500
    #: model names always admitted to the model label; others only after a provider answered 2xx reporting
    #: a model for them, so names in failing requests cannot fill the label
    models: tuple[str, ...] = ()
    #: TLS for the gRPC listener(s): a certificate chain and its key (PEM files); both or neither
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: mutual TLS: CA bundle that client certificates must chain to (needs tlsCertFile)
    tls_client_ca_file: str = ""
    #: permissions of a unix socket (octal)
    unix_socket_mode: str = "0660"

    def __post_init__(self) -> None:
        for name in ADDRESSES:  # a port alone: loopback
            m = _PORT_ONLY.fullmatch(getattr(self, name)) if isinstance(getattr(self, name), str) else None
            if m:
                object.__setattr__(self, name, f"127.0.0.1:{m[1]}")

    #: prices per model (the `pricing:` section): cost in metadata and metrics; None: no cost
    pricing: PriceTable | None = None

    #: OpenTelemetry export (the `otel:` section); None: only the OTEL_* variables can turn it on
    otel: OtelConfig | None = None

    #: let the client's own `x-llm-provider` request header pick the parser when Envoy sets none (off: a client
    #: could pick a parser that reads zero from its provider's responses)
    trust_provider_header: bool = False
    #: observe only: Envoy's ext_proc runs in observability_mode (it sends every message without waiting and
    #: ignores every answer), so llmtally answers nothing and builds no metadata; metrics and OpenTelemetry
    #: only (no access-log fields, no budgets); bodies arrive STREAMED whatever requestBodyMode says
    observe: bool = False
    #: observe only: calls gRPC keeps waiting for the event loop before it refuses them, uncounted (gRPC's own
    #: default refuses past 1,000 at random, past 3,000 always); each holds what Envoy sent on it
    observe_queue_calls: int = 3000

    def validate(self) -> Config:
        for name in (
            "listen",
            "metrics_addr",
            "log_level",
            "log_format",
            "default_encoding",
            "backend",
            "unix_socket_mode",
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
            "request_body_mode",
        ):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{getattr(self, name)!r} is not a string", name)
        _addr("listen", self.listen, unix=True)
        _addr("metrics_addr", self.metrics_addr, unix=False)
        if self.listen == self.metrics_addr and not self.listen.endswith(":0"):
            raise ConfigError(
                f"{self.metrics_addr!r} is the listen address too; give /metrics its own port", "metrics_addr"
            )
        if not isinstance(self.trust_provider_header, bool):
            raise ConfigError(f"{self.trust_provider_header!r} is not true or false", "trust_provider_header")
        if not isinstance(self.observe, bool):
            raise ConfigError(f"{self.observe!r} is not true or false", "observe")
        if self.observe and self.rate_limit is not None:
            raise ConfigError(
                "Envoy ignores every answer in observability mode, so budgets can neither refuse nor charge; "
                "remove rateLimit, or observe",
                "observe",
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"{self.log_format!r} is not one of {', '.join(LOG_FORMATS)}", "log_format")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"{self.log_level!r} is not one of {', '.join(LOG_LEVELS)}", "log_level")
        for name in ("metadata_namespace", "ratelimit_namespace", "missing_label_value", "overflow_value"):
            if not getattr(self, name) or not isinstance(getattr(self, name), str):
                raise ConfigError("must be a non-empty string", name)
        if self.metadata_namespace == self.ratelimit_namespace:  # one Struct key: the usage would be lost
            raise ConfigError(
                f"{self.metadata_namespace!r} is also ratelimitNamespace; give the two different names",
                "metadata_namespace",
            )
        if not re.fullmatch(r"0?[0-7]{3}", self.unix_socket_mode):
            raise ConfigError(f"{self.unix_socket_mode!r} is not an octal mode such as '0660'", "unix_socket_mode")
        for name, (lo, hi) in INT_RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"must be an integer from {lo} to {hi}, not {v!r}", name)
        for name, (flo, fhi) in SECONDS_RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not flo <= v <= fhi:
                raise ConfigError(f"must be a number of seconds from {flo:g} to {fhi:g}, not {v!r}", name)
        if self.request_body_mode not in ("BUFFERED_PARTIAL", "BUFFERED", "STREAMED"):
            raise ConfigError(
                f"{self.request_body_mode!r} is not BUFFERED_PARTIAL, BUFFERED or STREAMED (Envoy's ext_proc mode)",
                "request_body_mode",
            )
        if self.default_encoding not in ENCODINGS:
            raise ConfigError(f"{self.default_encoding!r} is not one of {', '.join(ENCODINGS)}", "default_encoding")
        if self.workers > 1 and self.listen.startswith("unix"):
            raise ConfigError("several workers cannot share a unix socket; listen on host:port", "workers")
        if self.workers > 1 and self.listen.rsplit(":", 1)[1] == "0":
            raise ConfigError("several workers need a fixed port, not :0", "workers")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("give both tlsCertFile and tlsKeyFile, or neither", "tls_cert_file")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("mutual TLS needs the server's tlsCertFile and tlsKeyFile too", "tls_client_ca_file")
        if not isinstance(self.models, tuple) or not all(isinstance(m, str) and m for m in self.models):
            raise ConfigError("must be a list of non-empty model names", "models")
        if self.rate_limit is not None and self.rate_limit.listen:
            try:
                _addr("rate_limit", self.rate_limit.listen, unix=True)
            except ConfigError as e:
                raise ConfigError(f"rateLimit.listen: {e.problem}") from None
            if self.rate_limit.listen in (self.listen, self.metrics_addr):
                raise ConfigError(
                    f"rateLimit.listen: {self.rate_limit.listen!r} is taken by listen or metricsAddr; give its own"
                )
        if self.workers > 1 and self.rate_limit is not None and not self.rate_limit.redis:
            raise ConfigError(
                "rateLimit budgets live in one process without rateLimit.redis; run one worker, or share them in Redis",
                "workers",
            )
        if self.rate_limit is not None:
            from .budgets import BUILTIN_KEYS

            known = {lab.name for lab in self.custom_labels} | set(BUILTIN_KEYS)
            if self.rate_limit.enforce and not self.rate_limit.limits:
                raise ConfigError("rateLimit.enforce: true needs limits; add rateLimit.limits, or leave enforce out")
            seen_limits: dict[tuple[object, ...], int] = {}
            for i, lim in enumerate(self.rate_limit.limits):
                same = (lim.name, lim.window)
                if same in seen_limits:
                    raise ConfigError(
                        f"rateLimit.limits[{i}]: the same keys, match and window as limits[{seen_limits[same]}] "
                        "(they would share counters and charge twice); merge them into one limit"
                    )
                seen_limits[same] = i
                for k, v in lim.match:
                    if k == "llm" and v not in _api_provider_ids():
                        raise ConfigError(
                            f"rateLimit.limits[{i}].match.llm: {v!r} is not a provider id "
                            f"({', '.join(_api_provider_ids())})"
                        )
                if lim.microusd is not None and not self.rate_limit.enforce:
                    raise ConfigError(
                        f"rateLimit.limits[{i}].usd: spend limits are held by llmtally's reservation only; "
                        "set rateLimit.enforce: true (Envoy's rate-limit filter path charges tokens)"
                    )
                if lim.microusd is not None and self.pricing is None:
                    raise ConfigError(f"rateLimit.limits[{i}].usd: a spend limit needs prices; add a pricing: section")
                unknown = [k for k in lim.by if k not in known]
                if unknown:
                    raise ConfigError(
                        f"rateLimit.limits[{i}].by: {unknown} are neither custom labels (stats.customLabels) nor "
                        f"{' or '.join(BUILTIN_KEYS)}"
                    )
        if self.backend not in ("", "native", "python"):
            raise ConfigError(f"{self.backend!r} is not native or python", "backend")
        seen = set()
        for i, lab in enumerate(self.custom_labels):
            where = f"stats.customLabels[{i}]"
            if not LABEL_NAME.match(lab.name) or lab.name.startswith("__"):
                raise ConfigError(f"{where}.name: {lab.name!r} is not a valid Prometheus label name")
            if lab.name in RESERVED_LABELS:
                raise ConfigError(f"{where}.name: {lab.name!r} is reserved by llmtally's own labels")
            if lab.name in seen:
                raise ConfigError(f"{where}.name: {lab.name!r} appears twice")
            seen.add(lab.name)
            if not lab.metadata_key or not lab.key_delimiter or not lab.metadata_namespace:
                raise ConfigError(f"{where}: metadataKey, metadataNamespace and keyDelimiter must not be empty")
        return self


def _api_provider_ids() -> list[str]:
    from ._api import providers

    return [p.id for p in providers()]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _addr(name: str, value: str, *, unix: bool) -> None:
    if unix and (value.startswith("unix:") or value.startswith("unix-abstract:")):
        if value.split(":", 1)[1]:
            return
        raise ConfigError(f"{value!r} has an empty socket name", name)
    host, sep, port = value.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or int(port) > 65535 or not host:
        form = "host:port, unix:/path or unix-abstract:name" if unix else "host:port"
        raise ConfigError(f"{value!r} is not {form} (a port alone means 127.0.0.1)", name)


# YAML keys (camelCase, as kgateway spells them) -> Config fields
_KEYS = {
    _camel(f.name): f.name
    for f in dataclasses.fields(Config)
    if f.name not in ("custom_labels", "rate_limit", "series_max", "models", "pricing", "otel")
}
#: settings under `stats:` -> Config fields
_STATS_KEYS = {
    "labelValuesMax": "label_values_max",
    "labelValueMaxLength": "label_value_max_length",
    "seriesMax": "series_max",
}
_ENV = {
    "LLMTALLY_LISTEN": "listen",
    "LLMTALLY_METRICS_ADDR": "metrics_addr",
    "LLMTALLY_LOG_LEVEL": "log_level",
    "LLMTALLY_LOG_FORMAT": "log_format",
    "LLMTALLY_BACKEND": "backend",
    "LLMTALLY_DEFAULT_ENCODING": "default_encoding",
    "LLMTALLY_WORKERS": "workers",
}


def _coerce(name: str, value: Any) -> Any:
    """A YAML scalar (anything) or a string (environment, flags) as the setting's type:
    numbers written as text are read (ASCII digits only); validate() checks types and ranges."""
    kind = {f.name: f.type for f in dataclasses.fields(Config)}[name]
    if kind in ("int", "float") and isinstance(value, str):
        text = value.strip()
        if kind == "int" and _INT_TEXT.fullmatch(text):
            return int(text)
        if kind == "float" and _FLOAT_TEXT.fullmatch(text):
            return float(text)
        raise ConfigError(f"{value!r} is not {'an integer' if kind == 'int' else 'a number'}", name)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and not isinstance(value, str):
        if name in ADDRESSES and isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # metricsAddr: 9092, a port alone
        if name == "unix_socket_mode":
            raise ConfigError(f"{value!r} is not a string; quote the mode: unixSocketMode: '0660'", name)
        raise ConfigError(f"{value!r} is not a string", name)
    return value


def _from_mapping(doc: object) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError("the configuration file must hold a mapping")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "stats":
            out.update(_stats(value))
        elif key == "otel":
            out["otel"] = _otel(value)
        elif key == "rateLimit":
            out["rate_limit"] = _rate_limit(value)
        elif key == "pricing":
            from .pricing import PricingError, table_of

            try:
                out["pricing"] = table_of(value)
            except PricingError as e:
                raise ConfigError(str(e)) from None
        elif key in _KEYS:
            out[_KEYS[key]] = _coerce(_KEYS[key], value)
        else:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"unknown setting {key!r} (known: otel, pricing, rateLimit, stats, {known})")
    return out


def _stats(stats: object) -> dict[str, Any]:
    known = {"customLabels", "models", *_STATS_KEYS}
    if not isinstance(stats, dict) or set(stats) - known:
        raise ConfigError(f"stats: expected a mapping with {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for key, name in _STATS_KEYS.items():
        if key in stats:
            out[name] = _coerce(name, stats[key])
    if "models" in stats:
        models = stats["models"]
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise ConfigError("stats.models: must be a list of non-empty model names")
        out["models"] = tuple(models)
    labels = []
    for i, item in enumerate(stats.get("customLabels") or []):
        if not isinstance(item, dict) or "name" not in item or "metadataKey" not in item:
            raise ConfigError(f"stats.customLabels[{i}]: needs name and metadataKey")
        unknown = set(item) - {"name", "metadataKey", "metadataNamespace", "keyDelimiter"}
        if unknown:
            raise ConfigError(f"stats.customLabels[{i}]: unknown keys {sorted(unknown)}")
        kw = {"name": item["name"], "metadata_key": item["metadataKey"]}
        if "metadataNamespace" in item:
            kw["metadata_namespace"] = item["metadataNamespace"]
        if "keyDelimiter" in item:
            kw["key_delimiter"] = item["keyDelimiter"]
        if not all(isinstance(v, str) for v in kw.values()):
            raise ConfigError(f"stats.customLabels[{i}]: values must be strings")
        labels.append(CustomLabel(**kw))
    out["custom_labels"] = tuple(labels)
    return out


_RATE_LIMIT_KEYS = {
    "domain",
    "windowSeconds",
    "limits",
    "listen",
    "redis",
    "redisCluster",
    "redisTimeoutMs",
    "failureMode",
    "enforce",
    "defaultMaxOutputTokens",
    "headers",
}
_LIMIT_KEYS = {"by", "descriptorKey", "value", "match", "tokens", "requests", "usd", "per", "windowSeconds"}


def _count(where: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_TOKENS_PER_WINDOW:
        raise ConfigError(f"{where}: must be an integer from 1 to {MAX_TOKENS_PER_WINDOW}, not {v!r}")
    return v


def _window(where: str, v: object) -> int:
    from .budgets import PERIODS

    if isinstance(v, str) and v in PERIODS:
        return PERIODS[v]
    if isinstance(v, bool) or not isinstance(v, int) or v not in PERIODS.values():
        raise ConfigError(f"{where}: {v!r} is not one of {sorted(PERIODS.values())} (or {', '.join(PERIODS)})")
    return v


def _limit(where: str, item: object, window: int) -> Limit:
    from .budgets import Limit

    if not isinstance(item, dict) or set(item) - _LIMIT_KEYS:
        raise ConfigError(f"{where}: expected a mapping with {', '.join(sorted(_LIMIT_KEYS))}")
    if ("by" in item) == ("descriptorKey" in item):
        raise ConfigError(f"{where}: give by (a list of keys) or descriptorKey (one key)")
    by = item["by"] if "by" in item else [item["descriptorKey"]]
    if isinstance(by, str):
        by = [by]
    if not isinstance(by, list) or not by or not all(isinstance(k, str) and k for k in by) or len(set(by)) < len(by):
        raise ConfigError(f"{where}.by: must be a list of distinct key names")
    match = item.get("match", {})
    if not isinstance(match, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in match.items()):
        raise ConfigError(f"{where}.match: must map keys to string values")
    if "value" in item:
        if not isinstance(item["value"], str) or len(by) != 1:
            raise ConfigError(f"{where}.value: a string, with one key (else use match)")
        match = {**match, by[0]: item["value"]}
    if set(match) - set(by):
        raise ConfigError(f"{where}.match: keys {sorted(set(match) - set(by))} are not in by")
    if "tokens" not in item and "requests" not in item and "usd" not in item:
        raise ConfigError(f"{where}: needs tokens, requests or usd (or several)")
    microusd = None
    if "usd" in item:
        usd = item["usd"]
        if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not 0 < usd <= 1_000_000_000:
            raise ConfigError(f"{where}.usd: must be a number of US dollars from 0 to 1000000000, not {usd!r}")
        microusd = round(usd * 1_000_000)
        if microusd < 1:
            raise ConfigError(f"{where}.usd: {usd!r} is less than one micro-dollar")
    tokens = _count(f"{where}.tokens", item["tokens"]) if "tokens" in item else None
    requests = _count(f"{where}.requests", item["requests"]) if "requests" in item else None
    if "per" in item and "windowSeconds" in item:
        raise ConfigError(f"{where}: give per or windowSeconds, not both")
    if "per" in item:
        window = _window(f"{where}.per", item["per"])
    elif "windowSeconds" in item:
        window = _window(f"{where}.windowSeconds", item["windowSeconds"])
    return Limit(tuple(by), tokens, requests, window, tuple(sorted(match.items())), microusd)


def _redacted_url(url: str) -> str:
    """`url` for an error line: without user information or query, and without anything before an `@` even
    when the URL is mistyped (`redis:/:secret@host`)."""
    from .otel import redact

    shown = redact(url)
    if "://" not in shown:
        return shown.rpartition("@")[2]
    scheme, _, rest = shown.partition("://")
    authority, slash, path = rest.partition("/")
    host, colon, port = authority.rpartition(":")
    if colon and not port.isdigit() and "]" not in port:  # a password typed where the port goes
        authority = f"{host}:***"
    return f"{scheme}://{authority}{slash}{path}"


def _host_of(rest: str) -> str:
    return rest.split("/", 1)[0].rpartition("@")[2].split(":", 1)[0]


def _check_redis_url(url: str) -> None:
    """Read the URL as redis-py will, so that a port or an option it cannot read, a database that is not a
    number, or a CA file that is not there stops the start with one line naming `rateLimit.redis`, not every
    request later (the password never shown)."""
    import os
    from urllib.parse import urlsplit

    try:
        from redis.connection import parse_url
    except ImportError:  # without the serve extra the store cannot start anyway: it says so
        return
    shown = _redacted_url(url)
    try:
        opts: dict[str, object] = cast(Any, parse_url)(url)  # redis-py leaves it unannotated
        path = urlsplit(url).path.strip("/")
    except (ValueError, TypeError) as e:
        # redis-py's message may quote a part of the authority (a password typed where the port goes): each
        # part of it but the host is masked
        msg = str(e)
        rest = url.partition("://")[2] or url
        for part in re.split(r"[:@/?&=\[\]]+", rest.split("/", 1)[0]):
            if len(part) >= 3 and not part.isdigit() and part != _host_of(rest):
                msg = msg.replace(part, "***")
        raise ConfigError(f"rateLimit.redis: {shown!r}: {msg}") from None
    if url.startswith(("redis://", "rediss://")) and path and not path.isdigit():
        raise ConfigError(f"rateLimit.redis: {shown!r}: the path {path!r} is not a database number (redis://host/0)")
    ca = opts.get("ssl_ca_certs")
    if isinstance(ca, str) and ca and not os.path.isfile(ca):
        raise ConfigError(f"rateLimit.redis: {shown!r}: ssl_ca_certs {ca}: no such file; give the CA bundle's path")


def _rate_limit(doc: object) -> RateLimitConfig:
    if not isinstance(doc, dict) or set(doc) - _RATE_LIMIT_KEYS:
        raise ConfigError(f"rateLimit: expected a mapping with {', '.join(sorted(_RATE_LIMIT_KEYS))}")
    window = _window("rateLimit.windowSeconds", doc.get("windowSeconds", 60))
    items = doc.get("limits") or []
    if not isinstance(items, list):
        raise ConfigError("rateLimit.limits: must be a list")
    limits = tuple(_limit(f"rateLimit.limits[{i}]", item, window) for i, item in enumerate(items))
    domain = doc.get("domain", "llmtally")
    if not isinstance(domain, str) or not domain:
        raise ConfigError("rateLimit.domain: must be a non-empty string")
    listen = doc.get("listen", "")
    if isinstance(listen, int) and not isinstance(listen, bool):
        listen = f"127.0.0.1:{listen}"
    if not isinstance(listen, str):
        raise ConfigError(f"rateLimit.listen: {listen!r} is not an address")
    m = _PORT_ONLY.fullmatch(listen)
    if m:
        listen = f"127.0.0.1:{m[1]}"
    redis = doc.get("redis", "")
    if not isinstance(redis, str) or (redis and not re.match(r"(rediss?|unix|redis\+sentinel)://", redis)):
        shown = _redacted_url(redis) if isinstance(redis, str) else redis  # never the URL's password
        raise ConfigError(f"rateLimit.redis: {shown!r} is not a redis://, rediss://, unix:// or redis+sentinel:// URL")
    if redis and not redis.startswith("redis+sentinel://"):
        _check_redis_url(redis)
    if redis.startswith("redis+sentinel://"):
        from .budgets import parse_sentinel_url

        try:
            parse_sentinel_url(redis)
        except ValueError as e:
            raise ConfigError(f"rateLimit.redis: {e}") from None
        if doc.get("redisCluster"):
            raise ConfigError("rateLimit.redisCluster: a Sentinel URL names one master, not a cluster")
    for key in ("redisCluster", "enforce", "headers"):
        if not isinstance(doc.get(key, False), bool):
            raise ConfigError(f"rateLimit.{key}: {doc[key]!r} is not true or false")
    timeout = doc.get("redisTimeoutMs", 50)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 60_000:
        raise ConfigError(f"rateLimit.redisTimeoutMs: must be an integer from 1 to 60000, not {timeout!r}")
    failure = doc.get("failureMode", "open")
    if failure not in ("open", "closed"):
        raise ConfigError(f"rateLimit.failureMode: {failure!r} is not open or closed")
    default_out = doc.get("defaultMaxOutputTokens", 4096)
    if isinstance(default_out, bool) or not isinstance(default_out, int) or not 0 <= default_out <= 10_000_000:
        raise ConfigError(
            f"rateLimit.defaultMaxOutputTokens: must be an integer from 0 to 10000000, not {default_out!r}"
        )
    if doc.get("headers") and not doc.get("enforce"):
        raise ConfigError("rateLimit.headers: the x-ratelimit-* headers need enforce: true")
    return RateLimitConfig(
        domain=domain,
        window_seconds=window,
        limits=limits,
        listen=listen,
        redis=redis,
        redis_cluster=bool(doc.get("redisCluster", False)),
        redis_timeout_ms=timeout,
        failure_mode=failure,
        enforce=bool(doc.get("enforce", False)),
        default_max_output_tokens=default_out,
        headers=bool(doc.get("headers", False)),
    )


def load(
    path: str | None = None, flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Defaults < the YAML file < environment variables < flags."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = path or environ.get("LLMTALLY_CONFIG")
    if path:
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                values.update(_from_mapping(yaml.safe_load(f)))
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        except yaml.YAMLError as e:  # PyYAML's message spans lines: one line of it
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8 text") from None
    origin: dict[str, str] = {}  # settings from the environment or a flag: where they came from
    try:
        for var, name in _ENV.items():
            if environ.get(var):
                origin[name] = var
                values[name] = _coerce(name, environ[var])
        for name, value in (flags or {}).items():
            if value is not None:
                origin[name] = "--" + name.replace("_", "-")
                values[name] = _coerce(name, value) if isinstance(value, str) else value
        return Config(**values).validate()
    except ConfigError as e:
        if e.setting is not None and e.setting in origin:
            raise ConfigError(f"{_camel(e.setting)} (from {origin[e.setting]}): {e.problem}") from None
        raise
