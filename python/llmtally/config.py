"""Sidecar configuration: a YAML file, environment variables, command-line
flags (in rising precedence), validated at start with clear messages."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._api import DEFAULT_ENCODING, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_EVENT_BYTES, ENCODINGS

if TYPE_CHECKING:
    from .ratelimit import TokenLimit

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = {"llm", "model", "le", "stage", "kind", "source"}
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """An invalid configuration; the message says which setting and why."""


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
    window_seconds: int = 60
    #: (descriptor key, tokens per window, optional value)
    limits: tuple[TokenLimit, ...] = ()


@dataclass(frozen=True)
class Config:
    #: gRPC listen address: host:port, unix:/path or unix-abstract:name
    listen: str = "127.0.0.1:18080"
    #: Prometheus /metrics address host:port
    metrics_addr: str = "0.0.0.0:9092"
    log_level: str = "info"
    #: namespace of the token metadata
    metadata_namespace: str = "ai.gateway.kgateway.dev"
    #: namespace of hits_addend
    ratelimit_namespace: str = "envoy.ratelimit"
    custom_labels: tuple[CustomLabel, ...] = ()
    #: distinct values kept per custom label; more fold into `overflow_value`
    label_values_max: int = 100
    missing_label_value: str = "unknown"
    overflow_value: str = "overflow"
    #: request body bytes gathered for parse_request (the rest passes unread)
    max_request_body_bytes: int = 4 << 20
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
    #: streams without provider usage: tokenizer counts sent as metadata at most this often (0: never mid-stream)
    mid_stream_metadata_seconds: float = 1.0
    #: concurrent gRPC streams per worker; more are refused (Envoy fails open: that traffic is not counted)
    max_concurrent_streams: int = 10000
    #: permissions of a unix socket (octal)
    unix_socket_mode: str = "0660"

    def validate(self) -> Config:
        _addr("listen", self.listen, unix=True)
        _addr("metricsAddr", self.metrics_addr, unix=False)
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"logLevel: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        for name in ("metadata_namespace", "ratelimit_namespace", "missing_label_value", "overflow_value"):
            if not getattr(self, name):
                raise ConfigError(f"{_camel(name)}: must not be empty")
        if not re.fullmatch(r"0?[0-7]{3}", self.unix_socket_mode):
            raise ConfigError(f"unixSocketMode: {self.unix_socket_mode!r} is not an octal mode such as 0660")
        for name in (
            "label_values_max",
            "max_request_body_bytes",
            "max_decoded_bytes",
            "max_event_bytes",
            "max_concurrent_streams",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_camel(name)}: must be a positive integer")
        if self.mid_stream_metadata_seconds < 0:
            raise ConfigError("midStreamMetadataSeconds: must be >= 0")
        if self.shutdown_grace_seconds < 0:
            raise ConfigError("shutdownGraceSeconds: must be >= 0")
        if self.default_encoding not in ENCODINGS:
            raise ConfigError(f"defaultEncoding: {self.default_encoding!r} is not one of {', '.join(ENCODINGS)}")
        if self.workers < 1:
            raise ConfigError("workers: must be a positive integer")
        if self.workers > 1 and self.listen.startswith("unix"):
            raise ConfigError("workers: several workers cannot share a unix socket; listen on host:port")
        if self.workers > 1 and self.listen.rsplit(":", 1)[1] == "0":
            raise ConfigError("workers: several workers need a fixed port, not :0")
        if self.workers > 1 and self.rate_limit is not None:
            raise ConfigError(
                "workers: rateLimit budgets live in one process; run one worker, or an external rate-limit service"
            )
        if self.backend not in ("", "native", "python"):
            raise ConfigError(f"backend: {self.backend!r} is not native or python")
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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _addr(what: str, value: str, *, unix: bool) -> None:
    if unix and (value.startswith("unix:") or value.startswith("unix-abstract:")):
        if value.split(":", 1)[1]:
            return
        raise ConfigError(f"{what}: {value!r} has an empty socket name")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        form = "host:port, unix:/path or unix-abstract:name" if unix else "host:port"
        raise ConfigError(f"{what}: {value!r} is not {form}")


# YAML keys (camelCase, as kgateway spells them) -> Config fields
_KEYS = {_camel(f.name): f.name for f in dataclasses.fields(Config) if f.name not in ("custom_labels", "rate_limit")}
_ENV = {
    "LLMTALLY_LISTEN": "listen",
    "LLMTALLY_METRICS_ADDR": "metrics_addr",
    "LLMTALLY_LOG_LEVEL": "log_level",
    "LLMTALLY_BACKEND": "backend",
    "LLMTALLY_DEFAULT_ENCODING": "default_encoding",
    "LLMTALLY_WORKERS": "workers",
}


def _coerce(name: str, value: Any) -> int | float | str:
    # `value`: a YAML scalar (anything) or an environment string; int() and float() judge it
    kind = {f.name: f.type for f in dataclasses.fields(Config)}[name]
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{_camel(name)}: {value!r} is not a number") from None
    if not isinstance(value, str):
        raise ConfigError(f"{_camel(name)}: {value!r} is not a string")
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
        elif key == "rateLimit":
            out["rate_limit"] = _rate_limit(value)
        elif key in _KEYS:
            out[_KEYS[key]] = _coerce(_KEYS[key], value)
        else:
            raise ConfigError(f"unknown setting {key!r} (known: rateLimit, stats, {', '.join(sorted(_KEYS))})")
    return out


def _stats(stats: object) -> dict[str, Any]:
    if not isinstance(stats, dict) or set(stats) - {"customLabels", "labelValuesMax"}:
        raise ConfigError("stats: expected a mapping with customLabels and labelValuesMax")
    out: dict[str, Any] = {}
    if "labelValuesMax" in stats:
        out["label_values_max"] = _coerce("label_values_max", stats["labelValuesMax"])
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


def _rate_limit(doc: object) -> RateLimitConfig:
    from .ratelimit import UNITS, TokenLimit

    if not isinstance(doc, dict) or set(doc) - {"domain", "windowSeconds", "limits"}:
        raise ConfigError("rateLimit: expected a mapping with domain, windowSeconds and limits")
    window = doc.get("windowSeconds", 60)
    if window not in UNITS:
        raise ConfigError(f"rateLimit.windowSeconds: {window!r} is not one of {sorted(UNITS)}")
    limits: list[TokenLimit] = []
    for i, item in enumerate(doc.get("limits") or []):
        where = f"rateLimit.limits[{i}]"
        if (
            not isinstance(item, dict)
            or set(item) - {"descriptorKey", "value", "tokens"}
            or not isinstance(item.get("descriptorKey"), str)
            or not item.get("descriptorKey")
        ):
            raise ConfigError(f"{where}: needs descriptorKey and tokens (and optionally value)")
        tokens = item.get("tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise ConfigError(f"{where}.tokens: must be a positive integer")
        value = item.get("value")
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}.value: must be a string")
        limits.append(TokenLimit(item["descriptorKey"], tokens, value))
    domain = doc.get("domain", "llmtally")
    if not isinstance(domain, str) or not domain:
        raise ConfigError("rateLimit.domain: must be a non-empty string")
    return RateLimitConfig(domain=domain, window_seconds=window, limits=tuple(limits))


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
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    for var, name in _ENV.items():
        if environ.get(var):
            values[name] = _coerce(name, environ[var])
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    return Config(**values).validate()
