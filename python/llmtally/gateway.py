"""The Envoy bootstrap that goes with llmtally (rendered as JSON), for
`llmtally envoy-config` and the demo (`llmtally.demo.envoy_runner` runs Envoy).

Listener: routes per provider, either the built-in ones to one upstream
(`/openai`, `/anthropic`, `/mistral`, `/gemini/...`, `/vertex/...`,
`/bedrock/...`, rewritten to the provider's API paths) or the operator's own
(`Route`: a path prefix, a provider id, an upstream URL; a cluster per
upstream, TLS with SNI and the system CA bundle for `https://`, the Host
header rewritten to the upstream's). Each route tells llmtally its provider in
the ext_proc stream's gRPC initial metadata (`x-llm-provider`), so the
operator chooses the parser, never the client. Filters: `jwt_authn` when a
`Jwt` is given (a local or a remote JWKS, the claims in metadata under
`principal`), `ratelimit` (token budgets per team, two-phase; it needs the
JWT's team), `ext_proc` (llmtally, fail-open), `router`; a JSON access log
with the seed's fields and every field llmtally writes. With `LlmtallyTls`,
Envoy reaches llmtally (the ext_proc and the rate-limit service clusters)
over TLS, or mutual TLS with a client certificate.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

EXT_PROC = "envoy.filters.http.ext_proc"
#: the request body buffered for the prompt estimate, as llmtally's maxRequestBodyBytes default
REQUEST_BUFFER_BYTES = 4 << 20
RATELIMIT = "envoy.filters.http.ratelimit"
JWT_NS = "envoy.filters.http.jwt_authn"
#: llmtally's metadata namespace (its `metadataNamespace` default)
AI_NS = "ai.gateway.kgateway.dev"
#: where jwt_authn puts the token's payload in its metadata (`payload_in_metadata`)
PAYLOAD_KEY = "principal"
#: the gRPC initial metadata key that tells llmtally the route's provider
PROVIDER_KEY = "x-llm-provider"
#: the cluster of the built-in routes' single upstream (`upstream_addr`)
UPSTREAM_CLUSTER = "llm_upstream"
#: the cluster of a remote JWKS's host
JWKS_CLUSTER = "jwks"
#: the route timeout: a whole response, streamed or not, must be done within it
ROUTE_TIMEOUT = "300s"
TLS_SOCKET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

#: (client prefix, upstream prefix, provider id)
ROUTES = [
    ("/openai", "/v1/chat/completions", "openai"),
    ("/anthropic", "/v1/messages", "anthropic"),
    ("/mistral", "/v1/chat/completions", "mistral"),
    ("/gemini/", "/v1beta/", "gemini"),
    ("/vertex/", "/v1/", "vertex-ai"),
    ("/bedrock/", "/", "bedrock"),
]

#: CA bundles of the common Linux distributions (Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE) and macOS
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)

#: what the access log's fields read from llmtally's metadata, beyond the seed's (keys as llmtally writes them)
LLMTALLY_FIELDS = (
    "model",
    "provider",
    "provider_model",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_usd",
    "cost_microusd",
)


def access_log_format(user_claim: str = "sub", team_claim: str = "team") -> dict[str, str]:
    """The JSON access log: the seed document's fields (user and team from the JWT's claims), every
    field llmtally writes (the cost ones only where the model has a price: null otherwise) and
    `duration`, the whole request in milliseconds (`target_duration` is until the response began)."""
    fmt = {
        "http_method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "user": f"%DYNAMIC_METADATA({JWT_NS}:{PAYLOAD_KEY}:{user_claim})%",
        "team": f"%DYNAMIC_METADATA({JWT_NS}:{PAYLOAD_KEY}:{team_claim})%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "response_code": "%RESPONSE_CODE%",
        "system_time": "%START_TIME%",
        "target_duration": "%RESPONSE_DURATION%",
        "upstream_name": "%UPSTREAM_CLUSTER%",
        "total_tokens": f"%DYNAMIC_METADATA({AI_NS}:total_tokens)%",
        "prompt_tokens": f"%DYNAMIC_METADATA({AI_NS}:prompt_tokens)%",
        "completion_tokens": f"%DYNAMIC_METADATA({AI_NS}:completion_tokens)%",
        "rate_limited_tokens": "%DYNAMIC_METADATA(envoy.ratelimit:hits_addend)%",
        "streaming": f"%DYNAMIC_METADATA({AI_NS}:streaming)%",
    }
    for key in LLMTALLY_FIELDS:
        fmt[key] = f"%DYNAMIC_METADATA({AI_NS}:{key})%"
    fmt["duration"] = "%DURATION%"
    return fmt


#: the access log of the default claims (`sub`, `team`)
ACCESS_LOG_FORMAT = access_log_format()


def _team_descriptor(team_claim: str) -> list[dict[str, object]]:
    return [
        {
            "metadata": {
                "descriptor_key": "team",
                "source": "DYNAMIC",
                "metadata_key": {"key": JWT_NS, "path": [{"key": PAYLOAD_KEY}, {"key": team_claim}]},
            }
        }
    ]


TEAM_DESCRIPTOR = _team_descriptor("team")

#: the cluster of the rate-limit service when it has an address of its own (`rateLimit.listen`)
RATELIMIT_CLUSTER = "llmtally_ratelimit"


@dataclass(frozen=True)
class LlmtallyTls:
    """TLS from Envoy to llmtally (`tlsCertFile`/`tlsKeyFile` on llmtally's side). Paths are as
    Envoy sees them. `server_name`: the name llmtally's certificate must carry (a DNS SAN, also
    sent as SNI); empty: the host of the llmtally address (an IP literal is matched against the
    certificate's IP SANs and no SNI is sent). `cert_file` and `key_file`: Envoy's client
    certificate, for llmtally's `tlsClientCaFile` (mutual TLS)."""

    ca_file: str
    server_name: str = ""
    cert_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        if not self.ca_file:
            raise ValueError("TLS to llmtally needs the CA that signed its certificate (--llmtally-ca)")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("give both --llmtally-cert and --llmtally-key, or neither")


def _split(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{addr!r} is not host:port or unix:/path")
    return host.strip("[]"), int(port)


def _ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(addr: str) -> dict[str, object]:
    if addr.startswith("unix:"):
        return {"pipe": {"path": addr[5:]}}
    host, port = _split(addr)
    return {"socket_address": {"address": host, "port_value": port}}


def host_port(addr: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 address in brackets) as (host, port); ValueError otherwise."""
    if addr.startswith("unix:"):
        raise ValueError(f"{addr!r}: give HOST:PORT")
    return _split(addr)


def system_ca_bundle() -> str | None:
    """The system's CA bundle on this machine: `SSL_CERT_FILE`, else the one Python's OpenSSL
    was built to use, else the first of `CA_BUNDLES` that exists; None when there is none."""
    candidates = [os.environ.get("SSL_CERT_FILE", ""), ssl.get_default_verify_paths().cafile or "", *CA_BUNDLES]
    return next((p for p in candidates if p and os.path.isfile(p)), None)


@dataclass(frozen=True)
class Upstream:
    """Where an LLM API (or a JWKS) lives, from its URL: `https://api.openai.com`,
    `http://vllm:8000/v1`. `path`: the URL's path without its trailing `/` (the API root that
    replaces a route's prefix)."""

    host: str
    port: int
    tls: bool = False
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Upstream:
        if "://" not in text:
            raise ValueError(f"upstream {text!r} is not a URL (http://HOST[:PORT][/PATH] or https://...)")
        u = urlsplit(text)
        scheme = u.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"upstream {text!r}: the scheme must be http or https")
        if u.username is not None or u.password is not None:
            raise ValueError(f"upstream {text!r}: no credentials in the URL (they would land in the bootstrap)")
        if u.query or u.fragment:
            raise ValueError(f"upstream {text!r}: no query or fragment (give the API's base URL)")
        if not u.hostname:
            raise ValueError(f"upstream {text!r}: no host")
        try:
            port = u.port
        except ValueError:
            raise ValueError(f"upstream {text!r}: the port is not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError(f"upstream {text!r}: the port is not a number from 1 to 65535")
        path = u.path.rstrip("/")
        if path and not re.fullmatch(r"[A-Za-z0-9/_.~:@%+-]*", path):
            raise ValueError(f"upstream {text!r}: the path has characters Envoy would need escaped")
        tls = scheme == "https"
        return cls(u.hostname, port or (443 if tls else 80), tls, path)

    @property
    def authority(self) -> str:
        """The Host header for it: the host, with the port when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        return _ip(self.host)

    def cluster_name(self) -> str:
        """`llm_api_openai_com_443`: the host and port with every other character as `_` (a dot
        would split Envoy's stat names)."""
        return "llm_" + re.sub(r"[^a-z0-9]+", "_", self.host.lower()).strip("_") + f"_{self.port}"


@dataclass(frozen=True)
class Route:
    """A route of the operator's: requests under `prefix` go to `upstream` with the prefix
    replaced by the upstream URL's path, and llmtally reads them as `provider` (a registry id,
    told in the gRPC initial metadata, whatever the client sends). `/openai` matches `/openai`
    and `/openai/...` (not `/openaix`); `/` matches every path."""

    prefix: str
    provider: str
    upstream: Upstream

    def __post_init__(self) -> None:
        if not re.fullmatch(r"/[A-Za-z0-9/_.~-]*", self.prefix) or "//" in self.prefix:
            raise ValueError(
                f"route prefix {self.prefix!r}: a path beginning with / (letters, digits and / _ . ~ - only)"
            )
        if self.prefix != "/" and self.prefix.endswith("/"):
            object.__setattr__(self, "prefix", self.prefix.rstrip("/"))
        from . import providers

        known = [p.id for p in providers()]
        if self.provider not in known:
            raise ValueError(f"route {self.prefix}: unknown provider {self.provider!r}; known: {', '.join(known)}")

    @classmethod
    def parse(cls, spec: str) -> Route:
        """`PREFIX=PROVIDER=URL`, e.g. `/openai=openai=https://api.openai.com`."""
        prefix, sep1, rest = spec.partition("=")
        provider, sep2, url = rest.partition("=")
        if not (sep1 and sep2 and prefix and provider and url):
            raise ValueError(
                f"--route {spec!r} is not PREFIX=PROVIDER=URL (e.g. /openai=openai=https://api.openai.com)"
            )
        if "://" not in url:
            raise ValueError(f"--route {spec!r}: the upstream must be a URL (http:// or https://)")
        return cls(prefix, provider.strip().lower(), Upstream.parse(url))

    def match(self) -> dict[str, object]:
        return {"prefix": "/"} if self.prefix == "/" else {"path_separated_prefix": self.prefix}

    def rewrite(self) -> dict[str, object]:
        """The RouteAction's path rewrite: none where the prefix is the upstream's path already."""
        base = self.upstream.path
        if self.prefix == "/":
            return {"prefix_rewrite": base + "/"} if base else {}
        if base == self.prefix:
            return {}
        if base:
            return {"prefix_rewrite": base}
        # to the upstream's root: /openai/v1/x -> /v1/x, /openai -> / (a prefix_rewrite of "/" would give //v1/x)
        pattern = "^" + self.prefix.replace(".", "\\.") + "/?"
        return {"regex_rewrite": {"pattern": {"regex": pattern}, "substitution": "/"}}


@dataclass(frozen=True)
class Jwt:
    """The `jwt_authn` filter: every request needs a valid token. `jwks` (a JWKS document, put
    inline into the bootstrap) or `jwks_uri` (fetched by Envoy, kept `cache_seconds`, through a
    cluster of its own). `issuer`: the `iss` tokens must carry (empty: not checked); `audiences`:
    `aud` must name one of them (empty: not checked). `header`: the request header the token comes
    in, bare (default: `Authorization: Bearer`); Envoy removes it before the upstream either way.
    The payload goes to metadata under `principal`; `user_claim` and `team_claim` name the claims
    the access log (`user`, `team`) and the rate-limit descriptor (the team) read."""

    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks: str = ""
    jwks_uri: str = ""
    cache_seconds: int = 300
    header: str = ""
    user_claim: str = "sub"
    team_claim: str = "team"

    def __post_init__(self) -> None:
        if bool(self.jwks) == bool(self.jwks_uri):
            raise ValueError("a JWT needs its keys: --jwks FILE or --jwks-uri URL (one of them)")
        if self.jwks:
            try:
                doc = json.loads(self.jwks)
            except ValueError as e:
                raise ValueError(f"the JWKS is not JSON ({e})") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
                raise ValueError('the JWKS has no keys (a JSON object {"keys": [...]})')
        if self.jwks_uri:
            if "://" not in self.jwks_uri:
                raise ValueError(f"--jwks-uri {self.jwks_uri!r} is not an http:// or https:// URL")
            Upstream.parse(self.jwks_uri)
        if self.cache_seconds <= 0:
            raise ValueError("--jwks-cache-seconds must be a positive number of seconds")
        for flag, claim in (("--jwt-user-claim", self.user_claim), ("--jwt-team-claim", self.team_claim)):
            if not claim or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", claim):
                raise ValueError(f"{flag} {claim!r}: a top-level claim name (letters, digits, _ . - /)")
        if self.header and not re.fullmatch(r"[A-Za-z0-9-]+", self.header):
            raise ValueError(f"--jwt-header {self.header!r} is not a header name")
        if any(not a for a in self.audiences):
            raise ValueError("an empty --jwt-audience")

    def jwks_upstream(self) -> Upstream | None:
        return Upstream.parse(self.jwks_uri) if self.jwks_uri else None

    def provider(self) -> dict[str, object]:
        p: dict[str, object] = {}
        if self.issuer:
            p["issuer"] = self.issuer
        if self.audiences:
            p["audiences"] = list(self.audiences)
        if self.jwks:
            p["local_jwks"] = {"inline_string": self.jwks}
        else:
            p["remote_jwks"] = {
                "http_uri": {"uri": self.jwks_uri, "cluster": JWKS_CLUSTER, "timeout": "5s"},
                "cache_duration": f"{self.cache_seconds}s",
                # fetched when Envoy starts, not by the first request; retried with backoff
                "async_fetch": {},
                "retry_policy": {
                    "num_retries": 3,
                    "retry_back_off": {"base_interval": "0.5s", "max_interval": "5s"},
                },
            }
        if self.header:
            p["from_headers"] = [{"name": self.header}]
        p["payload_in_metadata"] = PAYLOAD_KEY
        return p


#: the JWT of the demo and of the older `bootstrap(jwks=...)`: a local JWKS, issuer solo.io (the seed's)
DEMO_ISSUER = "solo.io"


def _tls_socket(tls: LlmtallyTls, addr: str) -> dict[str, object]:
    """The UpstreamTlsContext for a cluster at `addr`: llmtally's certificate checked against
    the CA and the server name, ALPN h2 (gRPC), Envoy's client certificate when given."""
    name = tls.server_name
    if not name:
        if addr.startswith("unix:"):
            raise ValueError(f"--llmtally-server-name is needed with TLS to {addr} (no host name to check)")
        name = _split(addr)[0]
    san_type = "IP_ADDRESS" if _ip(name) else "DNS"
    common: dict[str, object] = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": tls.ca_file},
            "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": name}}],
        },
    }
    if tls.cert_file:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": tls.cert_file}, "private_key": {"filename": tls.key_file}}
        ]
    context: dict[str, object] = {"@type": TLS_SOCKET}
    if san_type == "DNS":  # SNI carries host names only (RFC 6066)
        context["sni"] = name
    context["common_tls_context"] = common
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _upstream_tls_socket(up: Upstream, ca_file: str) -> dict[str, object]:
    """TLS to an LLM API (or a JWKS host): its certificate must chain to `ca_file` and carry the
    host (a DNS SAN, wildcards as the certificate has them; an IP address: an IP SAN), SNI = the
    host (none for an IP address)."""
    san_type = "IP_ADDRESS" if up.is_ip else "DNS"
    context: dict[str, object] = {"@type": TLS_SOCKET}
    if san_type == "DNS":
        context["sni"] = up.host
    context["common_tls_context"] = {
        "validation_context": {
            "trusted_ca": {"filename": ca_file},
            "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": up.host}}],
        }
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


#: concurrent gRPC streams Envoy opens to llmtally (its circuit breaker): maxConcurrentStreams' default
MAX_STREAMS_TO_LLMTALLY = 10000


def _cluster(name: str, addr: str, http2: bool = False, tls: LlmtallyTls | None = None) -> dict[str, object]:
    by_name = not addr.startswith("unix:") and not _ip(_split(addr)[0])
    c: dict[str, object] = {
        "name": name,
        # a host name (a Kubernetes Service, say) is resolved by Envoy; STATIC takes IP addresses only
        "type": "STRICT_DNS" if by_name else "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(addr)}}]}],
        },
    }
    if http2:
        # one gRPC stream per request: Envoy's default circuit breaker (1024 concurrent requests per
        # cluster) would fail open past 1024 live streams, and those requests would go uncounted
        c["circuit_breakers"] = {"thresholds": [{"max_requests": MAX_STREAMS_TO_LLMTALLY}]}
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if tls is not None:
        c["transport_socket"] = _tls_socket(tls, addr)
    return c


def _url_cluster(name: str, up: Upstream, ca_file: str) -> dict[str, object]:
    """The cluster of an upstream given by URL: STATIC for an IP address; for a name, LOGICAL_DNS
    over TLS (a public API behind DNS with many changing addresses: one at a time, as Envoy
    advises for large web services) and STRICT_DNS in plain HTTP (a Service in the cluster, every
    address it resolves to balanced)."""
    kind = "STATIC" if up.is_ip else ("LOGICAL_DNS" if up.tls else "STRICT_DNS")
    c: dict[str, object] = {
        "name": name,
        "type": kind,
        "connect_timeout": "5s",
    }
    if kind != "STATIC":
        c["dns_lookup_family"] = "V4_PREFERRED"
    c["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": up.host, "port_value": up.port}}}}
                ]
            }
        ],
    }
    if up.tls:
        c["transport_socket"] = _upstream_tls_socket(up, ca_file)
    return c


def _per_route(provider: str, rate_limits: list[dict[str, object]] | None) -> dict[str, object]:
    per_filter: dict[str, object] = {
        EXT_PROC: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
            "overrides": {"grpc_initial_metadata": [{"key": PROVIDER_KEY, "value": provider}]},
        }
    }
    if rate_limits is not None:
        per_filter[RATELIMIT] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
            "rate_limits": rate_limits,
        }
    return per_filter


def bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    llmtally_addr: str,
    access_log: str,
    upstream_addr: str | None = None,
    jwks: str | None = None,
    rate_limit_domain: str | None = "llmtally",
    listen_host: str = "127.0.0.1",
    ext_proc: bool = True,
    request_buffer_bytes: int = REQUEST_BUFFER_BYTES,
    llmtally_tls: LlmtallyTls | None = None,
    rate_limit_addr: str | None = None,
    routes: Sequence[Route] = (),
    jwt: Jwt | None = None,
    admin_host: str = "127.0.0.1",
    upstream_ca: str = "",
    observe: bool = False,
) -> dict[str, object]:
    """The Envoy configuration.

    Routes: `upstream_addr` (`HOST:PORT`, plain HTTP, or a URL) with the built-in `ROUTES`, or
    `routes` (one cluster per distinct upstream); one of the two. `upstream_ca`: the CA bundle
    that `https://` upstreams (and a remote JWKS's host) must chain to; empty: the system's,
    found on this machine (`system_ca_bundle`).

    JWT: `jwt`, or `jwks` (a JWKS document: the demo's JWT, issuer solo.io); neither: no
    `jwt_authn` filter and no rate-limit filter (its descriptor is the JWT's team).
    `rate_limit_domain` None leaves rate limiting out; `ext_proc` False leaves llmtally out (for
    benchmarks). `request_buffer_bytes` is how much of a request body Envoy buffers for llmtally's
    prompt estimate (the connection buffer limit); a larger body passes with the rest unread
    (BUFFERED_PARTIAL). `llmtally_tls`: TLS on the clusters to llmtally. `rate_limit_addr`: the
    rate-limit service's address when it is not `llmtally_addr` (llmtally's `rateLimit.listen`), a
    cluster of its own. `admin_host`: the admin interface's address (loopback by default: it can
    stop Envoy). `observe`: ext_proc in observability mode (Envoy waits for no answer and ignores
    them: llmtally's `observe: true`), bodies streamed, and no rate-limit filter (it would charge
    the metadata that never comes)."""
    if jwt is not None and jwks is not None:
        raise ValueError("give the JWT as jwt or as jwks, not both")
    if jwks is not None:
        jwt = Jwt(issuer=DEMO_ISSUER, jwks=jwks)
    if bool(upstream_addr) == bool(routes):
        raise ValueError("give the upstream (--upstream) or routes (--route), one of the two")
    if observe and rate_limit_addr:
        raise ValueError("a rate-limit service address in observe mode (Envoy ignores llmtally's answers, the charges)")
    rate_limiting = bool(rate_limit_domain) and jwt is not None and not observe
    rls_cluster = "llmtally"
    if rate_limit_addr and rate_limit_addr != llmtally_addr:
        if not rate_limit_domain:
            raise ValueError("a rate-limit service address without rate limiting (drop --no-rate-limit)")
        if jwt is None:
            raise ValueError("a rate-limit service address without a JWT (the rate limits are per team, from the JWT)")
        rls_cluster = RATELIMIT_CLUSTER

    team_claim = jwt.team_claim if jwt is not None else "team"
    rate_limits: list[dict[str, object]] | None = None
    if rate_limiting:
        descriptor = _team_descriptor(team_claim)
        rate_limits = [
            # phase 1, on the request: refuse once the team's budget is spent (adds nothing)
            {"actions": descriptor, "hits_addend": {"number": 0}},
            # phase 2, when the stream is done: charge the tokens llmtally counted
            {
                "actions": descriptor,
                "apply_on_stream_done": True,
                "hits_addend": {"format": "%DYNAMIC_METADATA(envoy.ratelimit:hits_addend)%"},
            },
        ]

    # the upstreams: the clusters and the routes to them
    upstream_clusters: list[tuple[str, Upstream]] = []
    route_entries: list[dict[str, object]] = []
    if upstream_addr:
        # HOST:PORT (or unix:/path) as before: plain HTTP, the client's Host header
        up = Upstream.parse(upstream_addr) if "://" in upstream_addr else None
        if up is not None:
            upstream_clusters.append((UPSTREAM_CLUSTER, up))
        for prefix, rewrite, provider in ROUTES:
            action: dict[str, object] = {
                "cluster": UPSTREAM_CLUSTER,
                "prefix_rewrite": (up.path if up else "") + rewrite,
                "timeout": ROUTE_TIMEOUT,
            }
            if up is not None:
                action["host_rewrite_literal"] = up.authority
            route_entries.append(
                {
                    "match": {"prefix": prefix},
                    "route": action,
                    "typed_per_filter_config": _per_route(provider, rate_limits),
                }
            )
    else:
        prefixes = [r.prefix for r in routes]
        dup = next((p for p in prefixes if prefixes.count(p) > 1), None)
        if dup is not None:
            raise ValueError(f"two routes with the prefix {dup}")
        names: dict[Upstream, str] = {}  # a cluster per host, port and scheme, in the order given
        for r in routes:
            key = Upstream(r.upstream.host, r.upstream.port, r.upstream.tls)
            if key not in names:
                name = key.cluster_name()
                if name in names.values():  # http and https on one port: apart
                    name += "_tls" if key.tls else "_plain"
                names[key] = name
                upstream_clusters.append((name, r.upstream))
        # the longest prefix first: /openai/v2 before /openai, / last (Envoy takes the first match)
        for r in sorted(routes, key=lambda r: (r.prefix == "/", -len(r.prefix))):
            name = names[Upstream(r.upstream.host, r.upstream.port, r.upstream.tls)]
            action = {"cluster": name, **r.rewrite(), "host_rewrite_literal": r.upstream.authority}
            action["timeout"] = ROUTE_TIMEOUT
            route_entries.append(
                {"match": r.match(), "route": action, "typed_per_filter_config": _per_route(r.provider, rate_limits)}
            )

    jwks_up = jwt.jwks_upstream() if jwt is not None else None
    ca_file = upstream_ca
    if not ca_file and (any(u.tls for _, u in upstream_clusters) or (jwks_up is not None and jwks_up.tls)):
        found = system_ca_bundle()
        if found is None:
            raise ValueError(
                "no system CA bundle found on this machine (tried SSL_CERT_FILE, "
                f"{', '.join(CA_BUNDLES)}): give --upstream-ca FILE"
            )
        ca_file = found

    filters: list[dict[str, object]] = []
    if jwt is not None:
        filters.append(
            {
                "name": JWT_NS,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                    "providers": {"llmtally": jwt.provider()},
                    "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "llmtally"}}],
                },
            }
        )
    if rate_limiting:
        filters.append(
            {
                "name": RATELIMIT,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": rate_limit_domain,
                    "timeout": "1s",
                    "failure_mode_deny": False,
                    "rate_limit_service": {
                        "transport_api_version": "V3",
                        "grpc_service": {"envoy_grpc": {"cluster_name": rls_cluster}},
                    },
                },
            }
        )
    if ext_proc:
        mode = {
            "request_header_mode": "SEND",
            # the body up to the buffer limit in one message; a larger one passes on with the
            # rest unread (BUFFERED would stall it behind the rate-limit filter until the route
            # timeout: a 408 after 300 s for 8 MB)
            "request_body_mode": "BUFFERED_PARTIAL",
            "response_header_mode": "SEND",
            "response_body_mode": "STREAMED",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        }
        ext: dict[str, object] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "llmtally"}, "timeout": "5s"},
            "failure_mode_allow": True,
            # llmtally's messageTimeoutSeconds (default 2) must match: it tells these drops from aborts
            "message_timeout": "2s",
            "processing_mode": mode,
            # llmtally asks for a response body of a known, bounded length in one message
            # (bufferResponseBodyBytes: BUFFERED in the response headers' answer)
            "allow_mode_override": True,
            "metadata_options": {
                "forwarding_namespaces": {"untyped": [JWT_NS]},
                "receiving_namespaces": {"untyped": [AI_NS, "envoy.ratelimit"]},
            },
        }
        if observe:
            # Envoy sends each message and goes on; observability mode streams bodies (no buffering), and
            # keeps the gRPC stream open this long after the request so that llmtally reads its end
            del ext["message_timeout"], ext["allow_mode_override"]
            ext["observability_mode"] = True
            ext["deferred_close_timeout"] = "30s"
            ext["processing_mode"] = {**mode, "request_body_mode": "STREAMED"}
            ext["metadata_options"] = {"forwarding_namespaces": {"untyped": [JWT_NS]}}
        filters.append({"name": EXT_PROC, "typed_config": ext})
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    log_format = ACCESS_LOG_FORMAT if jwt is None else access_log_format(jwt.user_claim, jwt.team_claim)
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "ai_gateway",
        "access_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log,
                    "log_format": {"json_format": log_format},
                },
            }
        ],
        "route_config": {
            "name": "ai",
            "virtual_hosts": [{"name": "ai", "domains": ["*"], "routes": route_entries}],
        },
        "http_filters": filters,
    }
    clusters = [_url_cluster(name, u, ca_file) for name, u in upstream_clusters]
    if upstream_addr and "://" not in upstream_addr:
        clusters.append(_cluster(UPSTREAM_CLUSTER, upstream_addr))
    clusters.append(_cluster("llmtally", llmtally_addr, True, llmtally_tls))
    if rls_cluster != "llmtally" and rate_limiting:
        assert rate_limit_addr is not None
        clusters.append(_cluster(rls_cluster, rate_limit_addr, True, llmtally_tls))
    if jwks_up is not None:
        clusters.append(_url_cluster(JWKS_CLUSTER, jwks_up, ca_file))
    return {
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ai_gateway",
                    "address": {"socket_address": {"address": listen_host, "port_value": listen_port}},
                    "per_connection_buffer_limit_bytes": request_buffer_bytes,
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": clusters,
        },
    }
