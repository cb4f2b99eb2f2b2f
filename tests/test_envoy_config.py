"""`llmtally envoy-config` for real deployments: upstreams by URL (DNS clusters,
TLS with SNI and a CA bundle, the Host header rewritten), several providers on
their own routes with the provider set per route, JWT from a local or a remote
JWKS or none, the admin address, the access log's fields. Every bootstrap
rendered here passes `envoy --mode validate` on the real Envoy (which resolves
no name: checked in a network namespace without a network where one can be
made). One run end to end: Envoy in front of the mock upstream over TLS with a
CA of the test's own, two providers, llmtally counting."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.request

import pytest

import oracle
from certs import Certs, make_certs
from helpers import metric_samples
from llmtally import gateway
from llmtally.demo import SEED_BODY, SEED_PROMPT, Stack, free_port, keys, upstream
from llmtally.demo.envoy_runner import Envoy, envoy_binary

TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
JWT_FILTER = "envoy.filters.http.jwt_authn"
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
#: the access log: the seed's fields, every field llmtally writes, the whole duration (one list, test_e2e's)
from test_e2e import ACCESS_LOG_FIELDS  # noqa: E402


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def jwks(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(keys.SigningKey().jwks())
    return path


def run_cli(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "envoy-config", *flags],
        capture_output=True,
        text=True,
        env={**os.environ, **env} if env else None,
    )


def validate(cfg: dict, path: pathlib.Path, *, offline: bool = False) -> None:
    path.write_text(json.dumps(cfg))
    cmd = [envoy_binary(), "--mode", "validate", "-c", str(path)]
    if offline:
        cmd = ["unshare", "--map-root-user", "--net", *cmd]
    v = subprocess.run(cmd, capture_output=True, text=True)
    assert v.returncode == 0, v.stdout[-3000:] + v.stderr[-3000:]
    assert f"configuration '{path}' OK" in v.stdout + v.stderr
    assert "Deprecated field" not in v.stdout + v.stderr  # nothing Envoy is about to remove


def render(tmp_path: pathlib.Path, *flags: str, env: dict[str, str] | None = None) -> dict:
    """`llmtally envoy-config FLAGS`, checked by `envoy --mode validate`."""
    r = run_cli(*flags, env=env)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    validate(cfg, tmp_path / f"envoy-{len(list(tmp_path.glob('envoy-*.json')))}.json")
    return cfg


def hcm_of(cfg: dict) -> dict:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def filters_of(cfg: dict) -> dict[str, dict]:
    return {f["name"]: f["typed_config"] for f in hcm_of(cfg)["http_filters"]}


def routes_of(cfg: dict) -> list[dict]:
    return hcm_of(cfg)["route_config"]["virtual_hosts"][0]["routes"]


def clusters_of(cfg: dict) -> dict[str, dict]:
    return {c["name"]: c for c in cfg["static_resources"]["clusters"]}


def provider_of(route: dict) -> str:
    """The provider the route tells llmtally, in the ext_proc stream's gRPC initial metadata."""
    override = route["typed_per_filter_config"][EXT_PROC_FILTER]
    assert override["@type"].endswith("ext_proc.v3.ExtProcPerRoute")
    (md,) = override["overrides"]["grpc_initial_metadata"]
    assert md["key"] == "x-llm-provider"
    return md["value"]


def tls_socket(host: str, ca: str, *, ip: bool = False) -> dict:
    """The transport socket to an LLM API over TLS, spelled out: the CA, the host as SAN, SNI for a name."""
    ctx: dict = {"@type": TLS_TYPE}
    if not ip:
        ctx["sni"] = host
    ctx["common_tls_context"] = {
        "validation_context": {
            "trusted_ca": {"filename": ca},
            "match_typed_subject_alt_names": [{"san_type": "IP_ADDRESS" if ip else "DNS", "matcher": {"exact": host}}],
        }
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def endpoint(cluster: dict) -> dict:
    (lb,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return lb["endpoint"]["address"]["socket_address"]


# -- upstreams by URL, several providers --


def test_openai_and_anthropic_over_tls(tmp_path, certs, jwks):
    cfg = render(
        tmp_path,
        "--route",
        "/openai=openai=https://api.openai.com",
        "--route",
        "/anthropic=anthropic=https://api.anthropic.com",
        "--upstream-ca",
        str(certs.ca),
        "--jwks",
        str(jwks),
    )
    clusters = clusters_of(cfg)
    assert list(clusters) == ["llm_api_openai_com_443", "llm_api_anthropic_com_443", "llmtally"]
    assert clusters["llm_api_openai_com_443"] == {
        "name": "llm_api_openai_com_443",
        "type": "LOGICAL_DNS",
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": {
            "cluster_name": "llm_api_openai_com_443",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "api.openai.com", "port_value": 443}}}}
                    ]
                }
            ],
        },
        "transport_socket": tls_socket("api.openai.com", str(certs.ca)),
    }
    assert clusters["llm_api_anthropic_com_443"]["transport_socket"] == tls_socket("api.anthropic.com", str(certs.ca))
    routes = {r["match"]["path_separated_prefix"]: r for r in routes_of(cfg)}
    assert list(routes) == ["/anthropic", "/openai"]  # the longer prefix first
    assert routes["/openai"]["route"] == {
        "cluster": "llm_api_openai_com_443",
        # /openai/v1/chat/completions -> /v1/chat/completions; /openai -> /
        "regex_rewrite": {"pattern": {"regex": "^/openai/?"}, "substitution": "/"},
        "host_rewrite_literal": "api.openai.com",
        "timeout": "300s",
    }
    assert routes["/anthropic"]["route"]["host_rewrite_literal"] == "api.anthropic.com"
    assert {p: provider_of(r) for p, r in routes.items()} == {"/openai": "openai", "/anthropic": "anthropic"}
    # the ext_proc filter itself names no provider: only the routes do
    assert "initial_metadata" not in filters_of(cfg)[EXT_PROC_FILTER]["grpc_service"]
    # per team rate limits on every route (the JWT's team)
    for r in routes.values():
        limits = r["typed_per_filter_config"][RATELIMIT_FILTER]["rate_limits"]
        assert [lim["actions"][0]["metadata"]["metadata_key"]["path"] for lim in limits] == [
            [{"key": "principal"}, {"key": "team"}]
        ] * 2


#: prefix=provider=URL -> (cluster, type, endpoint host, port, SNI/SAN host or None, Host header, rewrite)
CLOUD_ROUTES = {
    "/bedrock=bedrock=https://bedrock-runtime.us-east-1.amazonaws.com": (
        "llm_bedrock_runtime_us_east_1_amazonaws_com_443",
        "LOGICAL_DNS",
        "bedrock-runtime.us-east-1.amazonaws.com",
        443,
        "bedrock-runtime.us-east-1.amazonaws.com",
        "bedrock-runtime.us-east-1.amazonaws.com",
        {"regex_rewrite": {"pattern": {"regex": "^/bedrock/?"}, "substitution": "/"}},
    ),
    "/vertex=vertex-ai=https://us-central1-aiplatform.googleapis.com/v1": (
        "llm_us_central1_aiplatform_googleapis_com_443",
        "LOGICAL_DNS",
        "us-central1-aiplatform.googleapis.com",
        443,
        "us-central1-aiplatform.googleapis.com",
        "us-central1-aiplatform.googleapis.com",
        {"prefix_rewrite": "/v1"},  # /vertex/projects/... -> /v1/projects/...
    ),
    "/azure=azure=https://myres.openai.azure.com/openai": (
        "llm_myres_openai_azure_com_443",
        "LOGICAL_DNS",
        "myres.openai.azure.com",
        443,
        "myres.openai.azure.com",
        "myres.openai.azure.com",
        {"prefix_rewrite": "/openai"},
    ),
    "/v1=openai=http://vllm:8000/v1": (  # the prefix is the upstream's path: nothing to rewrite
        "llm_vllm_8000",
        "STRICT_DNS",
        "vllm",
        8000,
        None,
        "vllm:8000",
        {},
    ),
    "/ollama=ollama=http://10.0.0.7": ("llm_10_0_0_7_80", "STATIC", "10.0.0.7", 80, None, "10.0.0.7", None),
    "/private=openai=https://10.0.0.8:8443": (
        "llm_10_0_0_8_8443",
        "STATIC",
        "10.0.0.8",
        8443,
        "10.0.0.8",
        "10.0.0.8:8443",
        None,
    ),
    "/gemini=gemini=https://generativelanguage.googleapis.com/": (
        "llm_generativelanguage_googleapis_com_443",
        "LOGICAL_DNS",
        "generativelanguage.googleapis.com",
        443,
        "generativelanguage.googleapis.com",
        "generativelanguage.googleapis.com",
        {"regex_rewrite": {"pattern": {"regex": "^/gemini/?"}, "substitution": "/"}},
    ),
}


def test_bedrock_vertex_azure_vllm_and_ip_upstreams(tmp_path, certs, jwks):
    flags = [f for spec in CLOUD_ROUTES for f in ("--route", spec)]
    cfg = render(tmp_path, *flags, "--upstream-ca", str(certs.ca), "--jwks", str(jwks))
    clusters = clusters_of(cfg)
    routes = {r["match"]["path_separated_prefix"]: r for r in routes_of(cfg)}
    assert len(routes) == len(CLOUD_ROUTES)
    for spec, (name, kind, host, port, tls_host, host_header, rewrite) in CLOUD_ROUTES.items():
        prefix, provider, _ = spec.split("=", 2)
        c = clusters[name]
        assert (c["type"], endpoint(c)) == (kind, {"address": host, "port_value": port}), spec
        assert ("dns_lookup_family" in c) == (kind != "STATIC"), spec
        if tls_host is None:
            assert "transport_socket" not in c, spec
        else:
            assert c["transport_socket"] == tls_socket(tls_host, str(certs.ca), ip=kind == "STATIC"), spec
        action = routes[prefix]["route"]
        assert (action["cluster"], action["host_rewrite_literal"]) == (name, host_header), spec
        got_rewrite = {k: v for k, v in action.items() if k in ("prefix_rewrite", "regex_rewrite")}
        if rewrite is not None:
            assert got_rewrite == rewrite, spec
        assert provider_of(routes[prefix]) == provider, spec
    # an IP upstream at the root is the same rule: /ollama/api/chat -> /api/chat
    assert routes["/ollama"]["route"]["regex_rewrite"] == {"pattern": {"regex": "^/ollama/?"}, "substitution": "/"}
    assert routes["/private"]["route"]["regex_rewrite"]["pattern"]["regex"] == "^/private/?"


def test_routes_share_a_cluster_per_upstream_and_take_the_longest_prefix_first(tmp_path, certs):
    cfg = render(
        tmp_path,
        "--route",
        "/=openai=http://vllm:8000/v1",
        "--route",
        "/mistral=mistral=http://vllm:8000",
        "--route",
        "/a/b=openai=http://vllm:8000/x",
        "--route",
        "/a=anthropic=https://api.anthropic.com",
        "--upstream-ca",
        str(certs.ca),
    )
    assert [r["match"] for r in routes_of(cfg)] == [
        {"path_separated_prefix": "/mistral"},
        {"path_separated_prefix": "/a/b"},
        {"path_separated_prefix": "/a"},
        {"prefix": "/"},  # last: it matches everything
    ]
    assert [provider_of(r) for r in routes_of(cfg)] == ["mistral", "openai", "anthropic", "openai"]
    assert list(clusters_of(cfg)) == ["llm_vllm_8000", "llm_api_anthropic_com_443", "llmtally"]
    assert routes_of(cfg)[-1]["route"]["prefix_rewrite"] == "/v1/"  # /chat/completions -> /v1/chat/completions
    assert routes_of(cfg)[1]["route"]["prefix_rewrite"] == "/x"


def test_the_ca_bundle_defaults_to_the_systems(tmp_path, certs):
    """Without --upstream-ca the bundle is the one found where envoy-config runs (SSL_CERT_FILE first)."""
    found = gateway.system_ca_bundle()
    if found is None:
        pytest.skip("this machine has no system CA bundle")
    route = ("--route", "/openai=openai=https://api.openai.com")
    cfg = render(tmp_path, *route)
    tls = clusters_of(cfg)["llm_api_openai_com_443"]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": found}
    cfg = render(tmp_path, *route, env={"SSL_CERT_FILE": str(certs.ca)})
    tls = clusters_of(cfg)["llm_api_openai_com_443"]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": str(certs.ca)}


def test_no_ca_bundle_is_an_error_that_names_the_flag(monkeypatch):
    monkeypatch.setattr(gateway, "system_ca_bundle", lambda: None)
    route = gateway.Route.parse("/openai=openai=https://api.openai.com")
    with pytest.raises(ValueError, match="no system CA bundle found.*--upstream-ca FILE"):
        gateway.bootstrap(listen_port=1, admin_port=2, llmtally_addr="127.0.0.1:3", access_log="x", routes=[route])
    # plain HTTP needs none
    plain = gateway.Route.parse("/openai=openai=http://vllm:8000")
    gateway.bootstrap(listen_port=1, admin_port=2, llmtally_addr="127.0.0.1:3", access_log="x", routes=[plain])


def test_the_single_upstream_forms(tmp_path, certs, jwks):
    """--upstream HOST:PORT is what it was (plain HTTP, the client's Host header, the built-in routes);
    a name becomes STRICT_DNS (the Kubernetes manifest's llm-upstream.ai.svc:80); a URL gets TLS and the
    Host header like a --route."""
    cfg = render(tmp_path, "--jwks", str(jwks), "--upstream", "10.0.0.1:80")
    (c,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "llm_upstream"]
    assert c == {
        "name": "llm_upstream",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "llm_upstream",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}}}
                    ]
                }
            ],
        },
    }
    assert [(r["match"], r["route"]) for r in routes_of(cfg)] == [
        ({"prefix": p}, {"cluster": "llm_upstream", "prefix_rewrite": rw, "timeout": "300s"})
        for p, rw, _ in gateway.ROUTES
    ]
    assert [provider_of(r) for r in routes_of(cfg)] == [p for _, _, p in gateway.ROUTES]
    cfg = render(tmp_path, "--jwks", str(jwks), "--upstream", "llm-upstream.ai.svc:80")
    assert clusters_of(cfg)["llm_upstream"]["type"] == "STRICT_DNS"
    cfg = render(tmp_path, "--upstream", "https://llm-gateway.example.com/base", "--upstream-ca", str(certs.ca))
    c = clusters_of(cfg)["llm_upstream"]
    assert (c["type"], endpoint(c)) == ("LOGICAL_DNS", {"address": "llm-gateway.example.com", "port_value": 443})
    assert c["transport_socket"] == tls_socket("llm-gateway.example.com", str(certs.ca))
    assert routes_of(cfg)[0]["route"] == {
        "cluster": "llm_upstream",
        "prefix_rewrite": "/base/v1/chat/completions",
        "timeout": "300s",
        "host_rewrite_literal": "llm-gateway.example.com",
    }


def test_validate_mode_resolves_no_name(tmp_path, certs, jwks):
    """The public hostnames above pass validation without any network: Envoy's validate mode resolves
    nothing (checked in a network namespace of its own, only loopback, where one can be made)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--map-root-user", "--net", "true"]).returncode:
        pytest.skip("no network namespace can be made here")
    r = run_cli(
        "--route",
        "/openai=openai=https://api.openai.com",
        "--route",
        "/x=openai=https://no-such-host.invalid",
        "--jwks-uri",
        "https://idp.example.invalid/jwks.json",
        "--upstream-ca",
        str(certs.ca),
    )
    assert r.returncode == 0, r.stderr
    validate(json.loads(r.stdout), tmp_path / "offline.json", offline=True)


# -- JWT --


def test_jwt_with_a_local_jwks_issuer_audiences_header_and_claims(tmp_path, jwks):
    cfg = render(
        tmp_path,
        "--route",
        "/openai=openai=http://vllm:8000",
        "--jwks",
        str(jwks),
        "--jwt-issuer",
        "https://idp.example.com/",
        "--jwt-audience",
        "llm-gateway",
        "--jwt-audience",
        "api://llm",
        "--jwt-header",
        "x-llm-token",
        "--jwt-user-claim",
        "email",
        "--jwt-team-claim",
        "groups",
    )
    jwt = filters_of(cfg)[JWT_FILTER]
    assert jwt["providers"] == {
        "llmtally": {
            "issuer": "https://idp.example.com/",
            "audiences": ["llm-gateway", "api://llm"],
            "local_jwks": {"inline_string": jwks.read_text()},
            "from_headers": [{"name": "x-llm-token"}],
            "payload_in_metadata": "principal",
        }
    }
    assert jwt["rules"] == [{"match": {"prefix": "/"}, "requires": {"provider_name": "llmtally"}}]
    fmt = hcm_of(cfg)["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert fmt["user"] == "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:principal:email)%"
    assert fmt["team"] == "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:principal:groups)%"
    limits = routes_of(cfg)[0]["typed_per_filter_config"][RATELIMIT_FILTER]["rate_limits"]
    assert {json.dumps(lim["actions"]) for lim in limits} == {
        json.dumps(
            [
                {
                    "metadata": {
                        "descriptor_key": "team",
                        "source": "DYNAMIC",
                        "metadata_key": {
                            "key": "envoy.filters.http.jwt_authn",
                            "path": [{"key": "principal"}, {"key": "groups"}],
                        },
                    }
                }
            ]
        )
    }
    # with the defaults: no iss or aud check, the token in Authorization: Bearer
    cfg = render(tmp_path, "--route", "/openai=openai=http://vllm:8000", "--jwks", str(jwks))
    assert filters_of(cfg)[JWT_FILTER]["providers"]["llmtally"] == {
        "local_jwks": {"inline_string": jwks.read_text()},
        "payload_in_metadata": "principal",
    }


@pytest.mark.parametrize(
    "uri, cluster",
    [
        (
            "https://login.example.com/.well-known/jwks.json",
            ("LOGICAL_DNS", {"address": "login.example.com", "port_value": 443}, True),
        ),
        (
            "http://keycloak.auth.svc:8080/realms/ai/certs",
            ("STRICT_DNS", {"address": "keycloak.auth.svc", "port_value": 8080}, False),
        ),
    ],
    ids=["https", "http-in-cluster"],
)
def test_jwt_with_a_remote_jwks(tmp_path, certs, uri, cluster):
    cfg = render(
        tmp_path,
        "--route",
        "/openai=openai=http://vllm:8000",
        "--jwks-uri",
        uri,
        "--jwks-cache-seconds",
        "600",
        "--jwt-issuer",
        "https://login.example.com/",
        "--upstream-ca",
        str(certs.ca),
    )
    assert filters_of(cfg)[JWT_FILTER]["providers"]["llmtally"] == {
        "issuer": "https://login.example.com/",
        "remote_jwks": {
            "http_uri": {"uri": uri, "cluster": "jwks", "timeout": "5s"},
            "cache_duration": "600s",
            "async_fetch": {},
            "retry_policy": {"num_retries": 3, "retry_back_off": {"base_interval": "0.5s", "max_interval": "5s"}},
        },
        "payload_in_metadata": "principal",
    }
    kind, address, tls = cluster
    c = clusters_of(cfg)["jwks"]
    assert (c["type"], endpoint(c), "transport_socket" in c) == (kind, address, tls)
    if tls:
        assert c["transport_socket"] == tls_socket(address["address"], str(certs.ca))
    # the default cache duration
    cfg = render(
        tmp_path, "--route", "/openai=openai=http://vllm:8000", "--jwks-uri", uri, "--upstream-ca", str(certs.ca)
    )
    assert filters_of(cfg)[JWT_FILTER]["providers"]["llmtally"]["remote_jwks"]["cache_duration"] == "300s"


@pytest.mark.parametrize("no_jwt", [[], ["--no-jwt"]], ids=["no-jwt-flag", "--no-jwt"])
def test_without_a_jwt_there_is_no_jwt_filter_and_no_rate_limit_filter(tmp_path, no_jwt):
    cfg = render(tmp_path, "--route", "/openai=openai=http://vllm:8000", *no_jwt)
    assert list(filters_of(cfg)) == [EXT_PROC_FILTER, "envoy.filters.http.router"]
    assert all(RATELIMIT_FILTER not in r["typed_per_filter_config"] for r in routes_of(cfg))
    assert list(clusters_of(cfg)) == ["llm_vllm_8000", "llmtally"]
    # the same fields (user and team stay, null)
    fmt = hcm_of(cfg)["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert set(fmt) == ACCESS_LOG_FIELDS
    cfg_old = render(tmp_path, "--upstream", "10.0.0.1:80", *no_jwt)
    assert list(filters_of(cfg_old)) == [EXT_PROC_FILTER, "envoy.filters.http.router"]


def test_the_help_says_what_no_jwt_means():
    r = subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "envoy-config", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "2000"},  # no line breaks inside words (rate-\nlimit)
    )
    text = " ".join(r.stdout.split())
    assert "Without --jwks or --jwks-uri there is no jwt_authn filter" in text
    assert "the per-team rate-limit filter is left out" in text


# -- the admin address, TLS to llmtally, the access log --


@pytest.mark.parametrize(
    "flags, address",
    [
        ([], ("127.0.0.1", 9901)),
        (["--admin-port", "9902"], ("127.0.0.1", 9902)),
        (["--admin-address", "0.0.0.0:9903"], ("0.0.0.0", 9903)),
        (["--admin-address", "[::]:9904"], ("::", 9904)),
    ],
    ids=["default", "port", "any-v4", "any-v6"],
)
def test_the_admin_address(tmp_path, flags, address):
    cfg = render(tmp_path, "--route", "/openai=openai=http://vllm:8000", *flags)
    sock = cfg["admin"]["address"]["socket_address"]
    assert (sock["address"], sock["port_value"]) == address


def test_tls_to_llmtally_with_url_upstreams(tmp_path, certs, jwks):
    cfg = render(
        tmp_path,
        "--route",
        "/openai=openai=https://api.openai.com",
        "--route",
        "/anthropic=anthropic=https://api.anthropic.com",
        "--upstream-ca",
        str(certs.ca),
        "--jwks",
        str(jwks),
        "--llmtally",
        "llmtally.ai.svc:18080",
        "--rate-limit-service",
        "llmtally.ai.svc:18081",
        "--llmtally-ca",
        str(certs.ca),
        "--llmtally-cert",
        str(certs.client_cert),
        "--llmtally-key",
        str(certs.client_key),
        "--admin-address",
        "0.0.0.0:9901",
    )
    clusters = clusters_of(cfg)
    assert list(clusters) == ["llm_api_openai_com_443", "llm_api_anthropic_com_443", "llmtally", "llmtally_ratelimit"]
    for name, port in (("llmtally", 18080), ("llmtally_ratelimit", 18081)):
        c = clusters[name]
        assert (c["type"], endpoint(c)) == ("STRICT_DNS", {"address": "llmtally.ai.svc", "port_value": port})
        ctx = c["transport_socket"]["typed_config"]
        assert ctx["sni"] == "llmtally.ai.svc" and ctx["common_tls_context"]["alpn_protocols"] == ["h2"]
        assert ctx["common_tls_context"]["tls_certificates"] == [
            {
                "certificate_chain": {"filename": str(certs.client_cert)},
                "private_key": {"filename": str(certs.client_key)},
            }
        ]
    rl = filters_of(cfg)[RATELIMIT_FILTER]
    assert rl["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"] == "llmtally_ratelimit"


def test_the_access_log_has_every_field_llmtally_writes(tmp_path):
    cfg = render(tmp_path, "--route", "/openai=openai=http://vllm:8000", "--access-log", str(tmp_path / "a.log"))
    (log,) = hcm_of(cfg)["access_log"]
    assert log["typed_config"]["path"] == str(tmp_path / "a.log")
    fmt = log["typed_config"]["log_format"]["json_format"]
    assert set(fmt) == ACCESS_LOG_FIELDS
    for key in (
        "model",
        "provider",
        "provider_model",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "usage_source",
        "cost_usd",
        "cost_microusd",
        "total_tokens",
        "prompt_tokens",
        "completion_tokens",
        "streaming",
    ):
        assert fmt[key] == f"%DYNAMIC_METADATA(ai.gateway.kgateway.dev:{key})%", key
    assert (fmt["duration"], fmt["target_duration"]) == ("%DURATION%", "%RESPONSE_DURATION%")
    assert gateway.ACCESS_LOG_FORMAT == fmt  # the demo's is the same


# -- what envoy-config refuses --

VLLM = "/openai=openai=http://vllm:8000"


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "give --upstream HOST:PORT|URL or one --route"),
        (["--upstream", "10.0.0.1:80", "--route", VLLM], "give --upstream HOST:PORT|URL or one --route"),
        (["--route", "/openai=gpt=https://api.openai.com"], "unknown provider 'gpt'; known: bedrock, "),
        (["--route", "/openai=auto=https://api.openai.com"], "unknown provider 'auto'"),
        (["--route", "/openai=https://api.openai.com"], "is not PREFIX=PROVIDER=URL"),
        (["--route", "/openai=openai=api.openai.com:443"], "the upstream must be a URL"),
        (["--route", "openai=openai=https://api.openai.com"], "a path beginning with /"),
        (["--route", "/open ai=openai=https://api.openai.com"], "a path beginning with /"),
        (["--route", "/openai=openai=ftp://api.openai.com"], "the scheme must be http or https"),
        (["--route", "/openai=openai=https://user:sk-secret@api.openai.com"], "no credentials in the URL"),
        (["--route", "/openai=openai=https://api.openai.com/v1?x=1"], "no query or fragment"),
        (["--route", "/openai=openai=https://api.openai.com:99999"], "the port is not a number"),
        (["--route", VLLM, "--route", "/openai/=anthropic=http://x:1"], "two routes with the prefix /openai"),
        (["--route", VLLM, "--jwks", "J", "--jwks-uri", "https://idp/jwks"], "--jwks and --jwks-uri exclude"),
        (["--route", VLLM, "--no-jwt", "--jwks", "J"], "--no-jwt excludes --jwks"),
        (["--route", VLLM, "--no-jwt", "--jwt-issuer", "x"], "--no-jwt excludes --jwt-issuer"),
        (["--route", VLLM, "--jwt-issuer", "x"], "--jwt-issuer: these go with the JWT's keys"),
        (["--route", VLLM, "--jwks", "J", "--jwks-cache-seconds", "60"], "--jwks-cache-seconds goes with --jwks-uri"),
        (["--route", VLLM, "--jwks-uri", "https://idp/jwks", "--jwks-cache-seconds", "0"], "must be a positive"),
        (["--route", VLLM, "--jwks-uri", "idp/jwks"], "--jwks-uri 'idp/jwks' is not an http:// or https:// URL"),
        (["--route", VLLM, "--jwks", "J", "--jwt-team-claim", "a:b"], "--jwt-team-claim 'a:b'"),
        (["--route", VLLM, "--jwks", "J", "--jwt-header", "x y"], "--jwt-header 'x y' is not a header name"),
        (["--route", VLLM, "--jwks", "NOTJSON"], "the JWKS is not JSON"),
        (["--route", VLLM, "--jwks", "NOKEYS"], "the JWKS has no keys"),
        (["--route", VLLM, "--rate-limit-service", "127.0.0.1:1"], "needs --jwks or --jwks-uri"),
        (["--route", VLLM, "--rate-limit-domain", "x"], "needs --jwks or --jwks-uri"),
        (["--route", VLLM, "--admin-address", "0.0.0.0"], "'0.0.0.0' is not host:port"),
        (["--route", VLLM, "--admin-address", "0.0.0.0:1", "--admin-port", "2"], "exclude each other"),
    ],
)
def test_envoy_config_refuses(tmp_path, jwks, flags, message):
    (tmp_path / "NOTJSON").write_text("{")
    (tmp_path / "NOKEYS").write_text('{"keys": []}')
    names = {"J": str(jwks), "NOTJSON": str(tmp_path / "NOTJSON"), "NOKEYS": str(tmp_path / "NOKEYS")}
    r = run_cli(*[names.get(f, f) for f in flags])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("llmtally: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr, r.stderr


# -- end to end: Envoy to the mock upstream over TLS, two providers --

#: what the mock upstream read, line by line (request lines and headers), in order
UPSTREAM_SAW: list[bytes] = []


class _Recording:
    """The mock's stream reader, keeping what it reads."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader

    async def readline(self) -> bytes:
        line = await self.reader.readline()
        UPSTREAM_SAW.append(line)
        return line

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)


def last_request_head() -> tuple[str, dict[str, str]]:
    """The request line and headers of the last request the mock upstream read."""
    i = max(n for n, ln in enumerate(UPSTREAM_SAW) if ln.startswith(b"POST "))
    headers: dict[str, str] = {}
    for ln in UPSTREAM_SAW[i + 1 :]:
        if ln in (b"\r\n", b"\n"):
            break
        k, _, v = ln.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return UPSTREAM_SAW[i].decode().strip(), headers


class TlsUpstreamStack(Stack):
    """The mock upstream behind TLS (the test CA's certificate for localhost), `llmtally serve` (the demo's
    configuration: per-team labels, prices, budgets it enforces itself), and Envoys from `envoy-config`."""

    def __init__(self, workdir: str, certs: Certs):
        super().__init__(workdir)
        self.certs = certs
        self.jwks = pathlib.Path(workdir) / "jwks.json"
        self.jwks.write_text(self.key.jwks())

    def start(self) -> TlsUpstreamStack:
        self._start_mock()
        self.start_serve()
        return self

    def _start_mock(self) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        ready = threading.Event()

        async def recording_handle(reader, writer):
            await handle(_Recording(reader), writer)

        handle = upstream.handle

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            upstream.handle = recording_handle  # start() serves the module's handle: ours, for this server
            try:
                self._mock = self._loop.run_until_complete(upstream.start("127.0.0.1", self.upstream_port, ssl=ctx))
            finally:
                upstream.handle = handle
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="tls-mock-upstream", daemon=True).start()
        assert ready.wait(10)

    def gateway(self, name: str, *flags: str) -> Envoy:
        workdir = os.path.join(self.workdir, name)
        os.makedirs(workdir)
        self.listen_port, self.admin_port = free_port(), free_port()
        self.access_log = os.path.join(workdir, "access.log")
        r = run_cli(
            "--llmtally",
            f"127.0.0.1:{self.grpc_port}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.listen_port),
            "--admin-address",
            f"127.0.0.1:{self.admin_port}",
            "--access-log",
            self.access_log,
            *flags,
        )
        assert r.returncode == 0, r.stderr
        cfg = json.loads(r.stdout)
        validate(cfg, pathlib.Path(workdir) / "validated.json")
        self.envoy = Envoy(cfg, workdir, self.admin_port)
        self.envoy.wait_ready()
        return self.envoy

    def envoy_stats(self, prefix: str) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.admin_port}/stats?filter=^{prefix}"
        out = {}
        for ln in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
            k, _, v = ln.partition(": ")
            if v.isdigit():
                out[k] = int(v)
        return out


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory, certs):
    s = TlsUpstreamStack(str(tmp_path_factory.mktemp("tls-upstream")), certs).start()
    yield s
    s.stop()


def test_openai_and_anthropic_through_envoy_to_a_tls_upstream(tls_stack, certs):
    """Envoy reaches the mock over TLS (SNI localhost, the test CA); the route tells llmtally the provider,
    whatever the client's x-llm-provider says (a Mistral route on an OpenAI-shaped path is Mistral, which
    only the route can tell); the JWT comes in a header of its own and is removed, the client's API key in
    Authorization reaches the upstream with the Host header rewritten; the access log has every field with
    exact numbers, the metrics grow per provider and team by exactly those."""
    s = tls_stack
    port = s.upstream_port
    s.gateway(
        "two-providers",
        "--route",
        f"/openai=openai=https://localhost:{port}",
        "--route",
        f"/anthropic=anthropic=https://localhost:{port}/v1",
        "--route",
        f"/mistral=mistral=https://localhost:{port}/v1",
        "--upstream-ca",
        str(certs.ca),
        "--jwks",
        str(s.jwks),
        "--jwt-issuer",
        "solo.io",
        "--jwt-header",
        "x-llm-token",
        "--no-rate-limit",  # llmtally enforces the demo's budgets itself
    )
    cluster = f"llm_localhost_{port}"
    alice = s.key.token(keys.ALICE)
    m0 = metric_samples(s.metrics_text())
    client = {"x-llm-token": alice, "x-llm-provider": "anthropic"}  # the client's provider header is ignored
    status, _, body = s.request("/openai/v1/chat/completions", "sk-client-key", SEED_BODY, client)
    assert status == 200, body
    completion = oracle.count(upstream.ANSWERS[SEED_PROMPT], "cl100k_base")
    assert json.loads(body)["usage"] == {
        "prompt_tokens": 21,
        "completion_tokens": completion,
        "total_tokens": 21 + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    line, headers = last_request_head()
    assert line == "POST /v1/chat/completions HTTP/1.1"
    assert headers["host"] == f"localhost:{port}"
    assert headers["authorization"] == "Bearer sk-client-key" and "x-llm-token" not in headers
    (log,) = s.access_lines(1)
    assert set(log) == ACCESS_LOG_FIELDS
    assert isinstance(log["duration"], int) and log["duration"] >= log["target_duration"] >= 0
    cost = 21 * 0.5 + completion * 1.5  # micro-dollars by the demo's prices (0.5 and 1.5 USD per million)
    micro = int(cost + 0.5)
    volatile = ("request_id", "system_time", "target_duration", "duration")
    assert {k: v for k, v in log.items() if k not in volatile} == {
        "http_method": "POST",
        "path": "/openai/v1/chat/completions",
        "user": "alice",
        "team": "dev",
        "response_code": 200,
        "upstream_name": cluster,
        "total_tokens": 21 + completion,
        "prompt_tokens": 21,
        "completion_tokens": completion,
        "rate_limited_tokens": 21 + completion,
        "streaming": False,
        "model": "gpt-3.5-turbo",
        "provider": "OpenAI",
        "provider_model": "gpt-3.5-turbo-0125",
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "usage_source": "provider",
        "cost_usd": micro / 1_000_000,
        "cost_microusd": micro,
    }

    # Anthropic, streaming, on its own route: /anthropic/messages -> /v1/messages
    anthropic = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": SEED_PROMPT}],
    }
    status, _, body = s.request("/anthropic/messages", "sk-ant-key", anthropic, {"x-llm-token": alice})
    assert status == 200, body
    docs = list(oracle.sse_docs(body))
    prompt = next(d for d in docs if d["type"] == "message_start")["message"]["usage"]["input_tokens"]
    output = [d for d in docs if d["type"] == "message_delta"][-1]["usage"]["output_tokens"]
    text = "".join(d["delta"]["text"] for d in docs if d["type"] == "content_block_delta")
    assert output == oracle.count(text, "o200k_base") > 0
    assert last_request_head()[0] == "POST /v1/messages HTTP/1.1"
    log = s.access_lines(2)[1]
    micro = int(prompt * 3 + output * 15 + 0.5)  # claude-sonnet-4-5: 3 and 15 USD per million
    assert {k: v for k, v in log.items() if k not in volatile} == {
        "http_method": "POST",
        "path": "/anthropic/messages",
        "user": "alice",
        "team": "dev",
        "response_code": 200,
        "upstream_name": cluster,  # one cluster for both routes: the same host and port
        "total_tokens": prompt + output,
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "rate_limited_tokens": prompt + output,
        "streaming": True,
        "model": "claude-sonnet-4-5",
        "provider": "Anthropic",
        "provider_model": "claude-sonnet-4-5-20250929",
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "usage_source": "provider",
        "cost_usd": micro / 1_000_000,
        "cost_microusd": micro,
    }
    # Mistral's API is OpenAI's Chat Completions: only the route makes it Mistral
    status, _, body = s.request("/mistral/chat/completions", "sk-mistral", SEED_BODY, client)
    assert status == 200, body
    assert last_request_head()[0] == "POST /v1/chat/completions HTTP/1.1"
    log = s.access_lines(3)[2]
    assert (log["provider"], log["path"], log["total_tokens"]) == (
        "Mistral",
        "/mistral/chat/completions",
        21 + completion,
    )
    # the metrics, per provider and team (the demo's team label), by exactly what the access log says
    m1 = metric_samples(s.metrics_text())
    for llm, model, prompt_n, completion_n in [
        ("openai", "gpt-3.5-turbo", 21, completion),
        ("anthropic", "claude-sonnet-4-5", prompt, output),
        ("mistral", "gpt-3.5-turbo", 21, completion),
    ]:
        labels = (("llm", llm), ("model", model), ("team", "dev"))
        for name, n in (("ai_prompt_tokens_total", prompt_n), ("ai_completion_tokens_total", completion_n)):
            assert m1.get((name, labels), 0) - m0.get((name, labels), 0) == n, (name, labels)
    # a request without the JWT never reaches the upstream
    status, _, _ = s.request("/openai/v1/chat/completions", alice, SEED_BODY)  # the token in the wrong header
    assert status == 401
    stats = s.envoy_stats(f"cluster\\.{cluster}\\.")
    assert stats[f"cluster.{cluster}.ssl.handshake"] >= 1, stats
    assert stats[f"cluster.{cluster}.upstream_rq_total"] == 3, stats
    assert stats.get(f"cluster.{cluster}.ssl.fail_verify_error", 0) == 0, stats
    s.envoy.stop()


def test_an_upstream_whose_certificate_the_ca_does_not_sign_is_refused(tls_stack):
    """With the system bundle (which does not hold the test CA), Envoy refuses the mock's certificate: 503,
    nothing reaches the upstream."""
    s = tls_stack
    if gateway.system_ca_bundle() is None:
        pytest.skip("this machine has no system CA bundle")
    port = s.upstream_port
    s.gateway("system-ca", "--route", f"/openai=openai=https://localhost:{port}")
    cluster = f"llm_localhost_{port}"
    seen = len(UPSTREAM_SAW)
    status, _, _ = s.request("/openai/v1/chat/completions", "sk-client-key", SEED_BODY)
    assert status == 503
    assert len(UPSTREAM_SAW) == seen
    stats = s.envoy_stats(f"cluster\\.{cluster}\\.")
    assert stats[f"cluster.{cluster}.ssl.fail_verify_error"] >= 1, stats
    s.envoy.stop()


def test_a_remote_jwks_over_tls_checks_issuer_audience_and_signature(tls_stack, certs):
    """Envoy fetches the JWKS from https://localhost (the test CA) through its own cluster, and lets through
    only tokens it signs, from the issuer, for the audience; llmtally counts the one let through."""
    import http.server

    s = tls_stack
    fetched: list[str] = []

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            fetched.append(self.path)
            body = s.jwks.read_bytes()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s.gateway(
            "remote-jwks",
            "--route",
            f"/openai=openai=https://localhost:{s.upstream_port}",
            "--upstream-ca",
            str(certs.ca),
            "--jwks-uri",
            f"https://localhost:{server.server_address[1]}/.well-known/jwks.json",
            "--jwks-cache-seconds",
            "60",
            "--jwt-issuer",
            "https://idp.example.com/",
            "--jwt-audience",
            "llm-gateway",
            "--no-rate-limit",
        )
        claims = {"iss": "https://idp.example.com/", "aud": "llm-gateway", "sub": "erin", "team": "dev"}
        path = "/openai/v1/chat/completions"
        refused = [
            s.key.token({**claims, "aud": "another-service"}),
            s.key.token({**claims, "iss": "solo.io"}),
            keys.SigningKey().token(claims),  # another key
        ]
        # Envoy's answers: 403 for a valid token for another audience, 401 for the others
        assert [s.request(path, bad, SEED_BODY)[0] for bad in refused] == [403, 401, 401]
        status, _, body = s.request(path, s.key.token(claims), SEED_BODY)
        assert status == 200, body
        assert fetched and set(fetched) == {"/.well-known/jwks.json"}
        lines = s.access_lines(4)
        assert [ln["response_code"] for ln in lines] == [403, 401, 401, 200]
        # refused by jwt_authn before the upstream: no user, no tokens (llmtally sees Envoy's local reply go by)
        assert all(ln["user"] is None and not ln["total_tokens"] for ln in lines[:3])
        completion = oracle.count(upstream.ANSWERS[SEED_PROMPT], "cl100k_base")
        ok = lines[3]
        assert (ok["user"], ok["team"], ok["provider"], ok["total_tokens"]) == (
            "erin",
            "dev",
            "OpenAI",
            21 + completion,
        )
        assert s.envoy_stats("cluster\\.jwks\\.")["cluster.jwks.ssl.handshake"] >= 1
    finally:
        s.envoy.stop()
        server.shutdown()
        server.server_close()
