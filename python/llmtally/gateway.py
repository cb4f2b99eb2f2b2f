"""The Envoy bootstrap that goes with llmtally (rendered as JSON), for
`llmtally envoy-config` and the demo (`llmtally.demo.envoy_runner` runs Envoy).

Listener: routes per provider (`/openai`, `/anthropic`, `/mistral`,
`/gemini/...`, `/vertex/...`, `/bedrock/...`) rewritten to the provider's
API paths; filters `jwt_authn` (local JWKS, claims in metadata under
`principal`), `ratelimit` (token budgets per team, two-phase), `ext_proc`
(llmtally, fail-open), `router`; a JSON access log with the seed's fields.
With `LlmtallyTls`, Envoy reaches llmtally (the ext_proc and the rate-limit
service clusters) over TLS, or mutual TLS with a client certificate.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

EXT_PROC = "envoy.filters.http.ext_proc"
#: the request body buffered for the prompt estimate, as llmtally's maxRequestBodyBytes default
REQUEST_BUFFER_BYTES = 4 << 20
RATELIMIT = "envoy.filters.http.ratelimit"
JWT_NS = "envoy.filters.http.jwt_authn"

#: (client prefix, upstream prefix, provider id)
ROUTES = [
    ("/openai", "/v1/chat/completions", "openai"),
    ("/anthropic", "/v1/messages", "anthropic"),
    ("/mistral", "/v1/chat/completions", "mistral"),
    ("/gemini/", "/v1beta/", "gemini"),
    ("/vertex/", "/v1/", "vertex-ai"),
    ("/bedrock/", "/", "bedrock"),
]

#: the seed document's access log fields, and the cost
ACCESS_LOG_FORMAT = {
    "http_method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "user": f"%DYNAMIC_METADATA({JWT_NS}:principal:sub)%",
    "team": f"%DYNAMIC_METADATA({JWT_NS}:principal:team)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "response_code": "%RESPONSE_CODE%",
    "system_time": "%START_TIME%",
    "target_duration": "%RESPONSE_DURATION%",
    "upstream_name": "%UPSTREAM_CLUSTER%",
    "total_tokens": "%DYNAMIC_METADATA(ai.gateway.kgateway.dev:total_tokens)%",
    "prompt_tokens": "%DYNAMIC_METADATA(ai.gateway.kgateway.dev:prompt_tokens)%",
    "completion_tokens": "%DYNAMIC_METADATA(ai.gateway.kgateway.dev:completion_tokens)%",
    "rate_limited_tokens": "%DYNAMIC_METADATA(envoy.ratelimit:hits_addend)%",
    "streaming": "%DYNAMIC_METADATA(ai.gateway.kgateway.dev:streaming)%",
    # beyond the seed: the spend, where the model has a price (llmtally's pricing section)
    "cost_usd": "%DYNAMIC_METADATA(ai.gateway.kgateway.dev:cost_usd)%",
}

TEAM_DESCRIPTOR = [
    {
        "metadata": {
            "descriptor_key": "team",
            "source": "DYNAMIC",
            "metadata_key": {"key": JWT_NS, "path": [{"key": "principal"}, {"key": "team"}]},
        }
    }
]


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
    context: dict[str, object] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    }
    if san_type == "DNS":  # SNI carries host names only (RFC 6066)
        context["sni"] = name
    context["common_tls_context"] = common
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


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
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if tls is not None:
        c["transport_socket"] = _tls_socket(tls, addr)
    return c


def bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    upstream_addr: str,
    llmtally_addr: str,
    access_log: str,
    jwks: str,
    rate_limit_domain: str | None = "llmtally",
    listen_host: str = "127.0.0.1",
    ext_proc: bool = True,
    request_buffer_bytes: int = REQUEST_BUFFER_BYTES,
    llmtally_tls: LlmtallyTls | None = None,
    rate_limit_addr: str | None = None,
) -> dict[str, object]:
    """The Envoy configuration. `rate_limit_domain` None leaves rate limiting
    out; `ext_proc` False leaves llmtally out (for benchmarks).
    `request_buffer_bytes` is how much of a request body Envoy buffers for
    llmtally's prompt estimate (the connection buffer limit); a larger body
    passes with the rest unread (BUFFERED_PARTIAL). `llmtally_tls`: TLS on the
    clusters to llmtally. `rate_limit_addr`: the rate-limit service's address
    when it is not `llmtally_addr` (llmtally's `rateLimit.listen`), a cluster
    of its own."""
    rls_cluster = "llmtally"
    if rate_limit_addr and rate_limit_addr != llmtally_addr:
        if not rate_limit_domain:
            raise ValueError("a rate-limit service address without rate limiting (drop --no-rate-limit)")
        rls_cluster = RATELIMIT_CLUSTER
    routes = []
    for prefix, rewrite, provider in ROUTES:
        per_filter: dict[str, object] = {
            EXT_PROC: {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "overrides": {"grpc_initial_metadata": [{"key": "x-llm-provider", "value": provider}]},
            }
        }
        if rate_limit_domain:
            per_filter[RATELIMIT] = {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
                "rate_limits": [
                    # phase 1, on the request: refuse once the team's budget is spent (adds nothing)
                    {"actions": TEAM_DESCRIPTOR, "hits_addend": {"number": 0}},
                    # phase 2, when the stream is done: charge the tokens llmtally counted
                    {
                        "actions": TEAM_DESCRIPTOR,
                        "apply_on_stream_done": True,
                        "hits_addend": {"format": "%DYNAMIC_METADATA(envoy.ratelimit:hits_addend)%"},
                    },
                ],
            }
        routes.append(
            {
                "match": {"prefix": prefix},
                "route": {"cluster": "llm_upstream", "prefix_rewrite": rewrite, "timeout": "300s"},
                "typed_per_filter_config": per_filter,
            }
        )
    filters = [
        {
            "name": JWT_NS,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {
                    "demo": {
                        "issuer": "solo.io",
                        "local_jwks": {"inline_string": jwks},
                        "payload_in_metadata": "principal",
                    }
                },
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}],
            },
        },
    ]
    if rate_limit_domain:
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
        filters.append(
            {
                "name": EXT_PROC,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "llmtally"}, "timeout": "5s"},
                    "failure_mode_allow": True,
                    # llmtally's messageTimeoutSeconds (default 2) must match: it tells these drops from aborts
                    "message_timeout": "2s",
                    "processing_mode": {
                        "request_header_mode": "SEND",
                        # the body up to the buffer limit in one message; a larger one passes on
                        # with the rest unread (BUFFERED would stall it behind the rate-limit
                        # filter until the route timeout: a 408 after 300 s for 8 MB)
                        "request_body_mode": "BUFFERED_PARTIAL",
                        "response_header_mode": "SEND",
                        "response_body_mode": "STREAMED",
                        "request_trailer_mode": "SKIP",
                        "response_trailer_mode": "SKIP",
                    },
                    "metadata_options": {
                        "forwarding_namespaces": {"untyped": [JWT_NS]},
                        "receiving_namespaces": {"untyped": ["ai.gateway.kgateway.dev", "envoy.ratelimit"]},
                    },
                },
            }
        )
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
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
                    "log_format": {"json_format": ACCESS_LOG_FORMAT},
                },
            }
        ],
        "route_config": {"name": "ai", "virtual_hosts": [{"name": "ai", "domains": ["*"], "routes": routes}]},
        "http_filters": filters,
    }
    clusters = [_cluster("llm_upstream", upstream_addr), _cluster("llmtally", llmtally_addr, True, llmtally_tls)]
    if rls_cluster != "llmtally":
        assert rate_limit_addr is not None
        clusters.append(_cluster(rls_cluster, rate_limit_addr, True, llmtally_tls))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
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
