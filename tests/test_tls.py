"""TLS and mutual TLS between Envoy and llmtally: the `envoy-config` TLS
variants pass Envoy's own validation, a request through a real Envoy over
mutual TLS is counted (and charged to the rate-limit service on its own
listener), llmtally refuses clients without TLS or without a certificate,
and unreadable TLS files stop `llmtally serve` with one line."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import oracle
from certs import Certs, make_certs
from helpers import metric_samples
from llmtally.demo import SEED_BODY, SEED_PROMPT, Stack, free_port, keys, upstream
from llmtally.demo.envoy_runner import Envoy, envoy_binary

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#: team budgets of the llmtally under test (tokens per minute)
BUDGETS = {"dev": 100_000, "qa": 100}


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def jwks(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(keys.SigningKey().jwks())
    return path


def envoy_config(jwks: pathlib.Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "llmtally.cli",
            "envoy-config",
            "--jwks",
            str(jwks),
            "--upstream",
            "10.0.0.1:80",
            *flags,
        ],
        capture_output=True,
        text=True,
    )


def expected_tls(certs: Certs, name: str, *, client: bool, sni: bool = True) -> dict:
    """The transport socket `envoy-config` must write, spelled out here."""
    common: dict = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": str(certs.ca)},
            "match_typed_subject_alt_names": [{"san_type": "DNS" if sni else "IP_ADDRESS", "matcher": {"exact": name}}],
        },
    }
    if client:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": str(certs.client_cert)},
                "private_key": {"filename": str(certs.client_key)},
            }
        ]
    context: dict = {"@type": TLS_TYPE, "common_tls_context": common}
    if sni:
        context["sni"] = name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def clusters_of(cfg: dict) -> dict[str, dict]:
    return {c["name"]: c for c in cfg["static_resources"]["clusters"]}


def http_filter(cfg: dict, name: str) -> dict | None:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return next((f["typed_config"] for f in hcm["http_filters"] if f["name"] == name), None)


def rls_cluster_of(cfg: dict) -> str:
    rl = http_filter(cfg, "envoy.filters.http.ratelimit")
    assert rl is not None
    return rl["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]


# -- envoy-config: the TLS variants, checked by Envoy --

#: id -> (flags, {cluster: (server name, SNI sent, cluster type)}, client certificate, rate-limit cluster)
VARIANTS = {
    "ca-ip": (["--llmtally-ca", "{ca}"], {"llmtally": ("127.0.0.1", False, "STATIC")}, False, "llmtally"),
    "ca-server-name": (
        ["--llmtally-ca", "{ca}", "--llmtally-server-name", "localhost"],
        {"llmtally": ("localhost", True, "STATIC")},
        False,
        "llmtally",
    ),
    "mutual": (
        ["--llmtally-ca", "{ca}", "--llmtally-cert", "{cert}", "--llmtally-key", "{key}"],
        {"llmtally": ("127.0.0.1", False, "STATIC")},
        True,
        "llmtally",
    ),
    "mutual-own-rls": (
        ["--llmtally-ca", "{ca}", "--llmtally-cert", "{cert}", "--llmtally-key", "{key}"]
        + ["--rate-limit-service", "127.0.0.1:18081"],
        {"llmtally": ("127.0.0.1", False, "STATIC"), "llmtally_ratelimit": ("127.0.0.1", False, "STATIC")},
        True,
        "llmtally_ratelimit",
    ),
    "mutual-dns-name": (
        ["--llmtally", "llmtally.example.svc:18080", "--llmtally-ca", "{ca}"]
        + ["--llmtally-cert", "{cert}", "--llmtally-key", "{key}", "--rate-limit-service", "10.0.0.9:18081"],
        {
            "llmtally": ("llmtally.example.svc", True, "STRICT_DNS"),
            "llmtally_ratelimit": ("10.0.0.9", False, "STATIC"),
        },
        True,
        "llmtally_ratelimit",
    ),
    "mutual-no-rate-limit": (
        ["--llmtally-ca", "{ca}", "--llmtally-cert", "{cert}", "--llmtally-key", "{key}", "--no-rate-limit"],
        {"llmtally": ("127.0.0.1", False, "STATIC")},
        True,
        None,
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tls_variants_pass_envoy_validate(variant, certs, jwks, tmp_path):
    flags, tls_clusters, client, rls_cluster = VARIANTS[variant]
    paths = {"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)}
    r = envoy_config(jwks, *(f.format(**paths) for f in flags))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    cfg = json.loads(r.stdout)
    clusters = clusters_of(cfg)
    assert sorted(clusters) == sorted(["llm_upstream", *tls_clusters])
    assert "transport_socket" not in clusters["llm_upstream"]  # the LLM upstream is untouched
    for name, (server_name, sni, kind) in tls_clusters.items():
        c = clusters[name]
        assert c["transport_socket"] == expected_tls(certs, server_name, client=client, sni=sni), name
        assert c["type"] == kind
        assert c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
            "explicit_http_config"
        ] == {"http2_protocol_options": {}}
    if rls_cluster is None:
        assert http_filter(cfg, "envoy.filters.http.ratelimit") is None
    else:
        assert rls_cluster_of(cfg) == rls_cluster
    path = tmp_path / "envoy.json"
    path.write_text(r.stdout)
    v = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    assert f"configuration '{path}' OK" in v.stdout + v.stderr


def test_validate_reads_the_tls_files(certs, jwks, tmp_path):
    """Envoy's validation opens the files: a CA path that does not exist fails it (so the
    variants above are checked against real files, not just the schema)."""
    r = envoy_config(jwks, "--llmtally-ca", str(tmp_path / "missing-ca.pem"))
    assert r.returncode == 0, r.stderr
    path = tmp_path / "envoy.json"
    path.write_text(r.stdout)
    v = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True)
    assert v.returncode != 0
    assert f"Invalid path: {tmp_path / 'missing-ca.pem'}" in v.stdout + v.stderr


def test_no_tls_flag_leaves_the_config_as_before(jwks):
    plain = envoy_config(jwks)
    assert plain.returncode == 0, plain.stderr
    cfg = json.loads(plain.stdout)
    assert "transport_socket" not in plain.stdout
    assert sorted(clusters_of(cfg)) == ["llm_upstream", "llmtally"]
    assert clusters_of(cfg)["llmtally"]["type"] == "STATIC"
    assert rls_cluster_of(cfg) == "llmtally"
    # the rate-limit service at the ext_proc address is the default, written the same way
    same = envoy_config(jwks, "--rate-limit-service", "127.0.0.1:18080")
    assert same.returncode == 0 and same.stdout == plain.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--llmtally-cert", "c.pem", "--llmtally-key", "k.pem"], "need --llmtally-ca"),
        (["--llmtally-server-name", "localhost"], "need --llmtally-ca"),
        (["--llmtally-ca", "ca.pem", "--llmtally-cert", "c.pem"], "give both --llmtally-cert and --llmtally-key"),
        (["--llmtally-ca", "ca.pem", "--llmtally-key", "k.pem"], "give both --llmtally-cert and --llmtally-key"),
        (["--llmtally", "unix:/run/llmtally.sock", "--llmtally-ca", "ca.pem"], "--llmtally-server-name is needed"),
        (["--rate-limit-service", "127.0.0.1:18081", "--no-rate-limit"], "exclude each other"),
        (["--rate-limit-service", "127.0.0.1"], "is not host:port"),
    ],
)
def test_envoy_config_refuses_incomplete_tls_flags(flags, message, jwks):
    r = envoy_config(jwks, *flags)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("llmtally: error: "), r.stderr
    assert message in r.stderr


def test_a_unix_socket_with_a_server_name(certs, jwks, tmp_path):
    r = envoy_config(jwks, "--llmtally", "unix:/run/llmtally.sock", "--llmtally-ca", str(certs.ca))
    assert r.returncode == 2
    r = envoy_config(
        jwks,
        "--llmtally",
        "unix:/run/llmtally.sock",
        "--llmtally-ca",
        str(certs.ca),
        "--llmtally-server-name",
        "localhost",
    )
    assert r.returncode == 0, r.stderr
    c = clusters_of(json.loads(r.stdout))["llmtally"]
    assert c["transport_socket"] == expected_tls(certs, "localhost", client=False)
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": "/run/llmtally.sock"}
    }
    path = tmp_path / "envoy.json"
    path.write_text(r.stdout)
    v = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr


# -- llmtally serve with mutual TLS and the rate-limit service on its own listener --


class TlsStack(Stack):
    """The mock upstream and `llmtally serve` with tlsCertFile, tlsKeyFile, tlsClientCaFile and
    rateLimit.listen; Envoys started per test from `envoy-config` output."""

    def __init__(self, workdir: str, certs: Certs):
        super().__init__(workdir)
        self.certs = certs
        self.jwks = pathlib.Path(workdir) / "jwks.json"
        self.jwks.write_text(self.key.jwks())  # the key the stack signs its tokens with
        self.rls_port = free_port()

    def start(self) -> TlsStack:
        self._start_mock()
        self.start_serve()
        return self

    def start_serve(self) -> None:
        limits = "".join(f"  - descriptorKey: team\n    value: {t}\n    tokens: {n}\n" for t, n in BUDGETS.items())
        cfg = os.path.join(self.workdir, "llmtally.yaml")
        with open(cfg, "w") as f:
            f.write(
                f"listen: 127.0.0.1:{self.grpc_port}\nmetricsAddr: 127.0.0.1:{self.metrics_port}\n"
                f"tlsCertFile: {self.certs.server_cert}\ntlsKeyFile: {self.certs.server_key}\n"
                f"tlsClientCaFile: {self.certs.ca}\n"
                "stats:\n  customLabels:\n  - name: team\n    metadataKey: principal:team\n"
                f"rateLimit:\n  domain: llmtally\n  windowSeconds: 60\n  listen: 127.0.0.1:{self.rls_port}\n"
                f"  limits:\n{limits}"
            )
        self.serve = subprocess.Popen(
            [*self.serve_command, "serve", "--config", cfg], stdout=open(self.serve_log, "ab"), stderr=subprocess.STDOUT
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.serve.poll() is not None:
                raise RuntimeError(f"llmtally serve exited:\n{open(self.serve_log).read()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).read()
                for port in (self.grpc_port, self.rls_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("llmtally serve did not start")

    @contextlib.contextmanager
    def gateway(self, name: str, *flags: str):
        """An Envoy on fresh ports from `llmtally envoy-config --llmtally 127.0.0.1:PORT FLAGS`."""
        workdir = os.path.join(self.workdir, name)
        os.makedirs(workdir)
        self.listen_port, self.admin_port = free_port(), free_port()
        self.access_log = os.path.join(workdir, "access.log")
        r = subprocess.run(
            [sys.executable, "-m", "llmtally.cli", "envoy-config", "--jwks", str(self.jwks)]
            + ["--upstream", f"127.0.0.1:{self.upstream_port}", "--llmtally", f"127.0.0.1:{self.grpc_port}"]
            + ["--listen-host", "127.0.0.1", "--listen-port", str(self.listen_port)]
            + ["--admin-port", str(self.admin_port), "--access-log", self.access_log, *flags],
            capture_output=True,
            text=True,
            check=True,
        )
        envoy = Envoy(json.loads(r.stdout), workdir, self.admin_port)
        try:
            envoy.wait_ready()
            yield envoy
        finally:
            envoy.stop()

    def envoy_stats(self) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.admin_port}/stats?filter=^cluster\\.llmtally"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        out = {}
        for ln in text.splitlines():
            k, _, v = ln.partition(": ")
            if v.isdigit():
                out[k] = int(v)
        return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory, certs):
    s = TlsStack(str(tmp_path_factory.mktemp("tls")), certs).start()
    yield s
    s.stop()


def channel(port: int, certs: Certs, *, tls: bool = True, client_cert: bool = True) -> grpc.Channel:
    target = f"127.0.0.1:{port}"
    if not tls:
        return grpc.insecure_channel(target)
    creds = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key.read_bytes() if client_cert else None,
        certificate_chain=certs.client_cert.read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(target, creds)


def health(port: int, certs: Certs, service: str = "", **kw) -> int:
    with channel(port, certs, **kw) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def should_rate_limit(port: int, certs: Certs, team: str, addend: int) -> rls_pb2.RateLimitResponse:
    request = rls_pb2.RateLimitRequest(domain="llmtally")
    d = request.descriptors.add()
    d.entries.add(key="team", value=team)
    d.hits_addend.value = addend
    with channel(port, certs) as ch:
        return rls_pb2_grpc.RateLimitServiceStub(ch).ShouldRateLimit(request, timeout=5)


def sample(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


MUTUAL = ("--llmtally-ca", "{ca}", "--llmtally-cert", "{cert}", "--llmtally-key", "{key}")


def tls_flags(certs: Certs, flags: tuple[str, ...]) -> list[str]:
    paths = {"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)}
    return [f.format(**paths) for f in flags]


@pytest.mark.parametrize("server_name", [None, "localhost"], ids=["ip-san", "dns-san-and-sni"])
def test_request_through_envoy_over_mutual_tls_is_counted(stack, certs, server_name):
    flags = tls_flags(certs, MUTUAL) + ["--rate-limit-service", f"127.0.0.1:{stack.rls_port}"]
    if server_name:
        flags += ["--llmtally-server-name", server_name]
    alice = stack.key.token(keys.ALICE)
    with stack.gateway(f"envoy-{server_name or 'ip'}", *flags):
        m0 = metric_samples(stack.metrics_text())
        remaining0 = should_rate_limit(stack.rls_port, certs, "dev", 0).statuses[0].limit_remaining
        status, body = stack.post("/openai", alice, SEED_BODY)
        assert status == 200, body
        usage = json.loads(body)["usage"]
        completion = oracle.count(upstream.ANSWERS[SEED_PROMPT], "cl100k_base")
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (21, completion)
        line = stack.access_lines(1)[-1]
        assert (line["user"], line["team"], line["response_code"]) == ("alice", "dev", 200)
        assert line["total_tokens"] == usage["total_tokens"] == 21 + completion
        assert (line["prompt_tokens"], line["completion_tokens"]) == (21, completion)
        m1 = metric_samples(stack.metrics_text())
        labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "dev"}
        for name, n in [
            ("ai_prompt_tokens_total", 21),
            ("ai_completion_tokens_total", completion),
            ("ai_rate_limited_tokens_total", usage["total_tokens"]),
        ]:
            assert sample(m1, name, **labels) - sample(m0, name, **labels) == n, name
        # Envoy charged the tokens at stream end to the rate-limit service on its own TLS listener
        deadline = time.time() + 10
        while (r := should_rate_limit(stack.rls_port, certs, "dev", 0)).statuses[0].limit_remaining != (
            remaining0 - usage["total_tokens"]
        ) and time.time() < deadline:
            time.sleep(0.05)
        assert r.statuses[0].limit_remaining == remaining0 - usage["total_tokens"]
        stats = stack.envoy_stats()
        for cluster in ("llmtally", "llmtally_ratelimit"):
            assert stats[f"cluster.{cluster}.ssl.handshake"] >= 1, stats
            assert stats[f"cluster.{cluster}.upstream_cx_connect_fail"] == 0, stats
            assert stats[f"cluster.{cluster}.ssl.fail_verify_san"] == 0, stats


@pytest.mark.parametrize(
    "name, flags, stat",
    [
        # TLS 1.3: Envoy's side of the handshake ends before llmtally checks the certificate
        ("no-client-cert", ("--llmtally-ca", "{ca}"), "upstream_cx_connect_fail"),
        ("wrong-name", (*MUTUAL, "--llmtally-server-name", "other.example"), "ssl.fail_verify_san"),
    ],
    ids=["no-client-cert", "wrong-server-name"],
)
def test_envoy_that_fails_the_handshake_is_not_counted(stack, certs, name, flags, stat):
    """Without the client certificate llmtally refuses Envoy; with a server name llmtally's
    certificate does not carry, Envoy refuses llmtally. Either way the request flows (fail-open)
    uncounted."""
    alice = stack.key.token(keys.ALICE)
    with stack.gateway(f"envoy-{name}", *tls_flags(certs, flags)):
        m0 = metric_samples(stack.metrics_text())
        status, body = stack.post("/openai", alice, SEED_BODY)
        assert status == 200 and json.loads(body)["usage"]["prompt_tokens"] == 21
        line = stack.access_lines(1)[-1]
        assert (line["user"], line["response_code"], line["total_tokens"], line["prompt_tokens"]) == (
            "alice",
            200,
            None,
            None,
        )
        m1 = metric_samples(stack.metrics_text())
        labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "dev"}
        assert sample(m1, "ai_prompt_tokens_total", **labels) == sample(m0, "ai_prompt_tokens_total", **labels)
        stats = stack.envoy_stats()
        assert stats[f"cluster.llmtally.{stat}"] >= 1, stats
        assert stats["cluster.llmtally.upstream_rq_completed"] == stats["cluster.llmtally.upstream_rq_503"], stats


# -- gRPC clients against the TLS listeners --


def test_health_needs_tls_and_the_client_certificate(stack, certs):
    for kw in ({"tls": False}, {"client_cert": False}):
        with pytest.raises(grpc.RpcError) as e:
            health(stack.grpc_port, certs, **kw)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (kw, e.value)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health(stack.grpc_port, certs) == serving
    assert health(stack.grpc_port, certs, EXT_PROC_SERVICE) == serving


def test_rate_limit_service_on_its_own_listener(stack, certs):
    r = should_rate_limit(stack.rls_port, certs, "qa", 0)
    assert r.overall_code == rls_pb2.RateLimitResponse.OK
    assert [(s.code, s.current_limit.requests_per_unit, s.limit_remaining) for s in r.statuses] == [
        (rls_pb2.RateLimitResponse.OK, BUDGETS["qa"], BUDGETS["qa"])
    ]
    r = should_rate_limit(stack.rls_port, certs, "qa", BUDGETS["qa"] + 1)
    assert r.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    assert [(s.code, s.limit_remaining) for s in r.statuses] == [(rls_pb2.RateLimitResponse.OVER_LIMIT, 0)]
    # not on the ext_proc listener
    with pytest.raises(grpc.RpcError) as e:
        should_rate_limit(stack.grpc_port, certs, "qa", 0)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # the same TLS settings: no plaintext, no client without a certificate
    request = rls_pb2.RateLimitRequest(domain="llmtally")
    for kw in ({"tls": False}, {"client_cert": False}):
        with channel(stack.rls_port, certs, **kw) as ch, pytest.raises(grpc.RpcError) as e:
            rls_pb2_grpc.RateLimitServiceStub(ch).ShouldRateLimit(request, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (kw, e.value)


# -- startup errors --


@pytest.mark.parametrize(
    "setting, problem",
    [
        ("tlsCertFile", "missing"),
        ("tlsCertFile", "not-pem"),
        ("tlsKeyFile", "not-pem"),
        ("tlsClientCaFile", "missing"),
    ],
)
def test_unreadable_tls_file_stops_serve_with_one_line(setting, problem, certs, tmp_path):
    files = {"tlsCertFile": certs.server_cert, "tlsKeyFile": certs.server_key, "tlsClientCaFile": certs.ca}
    bad = tmp_path / f"{setting}.pem"
    if problem == "not-pem":
        bad.write_bytes(b"\x30\x82\x01\x0a this is DER-ish, not PEM\n")
    files[setting] = bad
    cfg = tmp_path / "llmtally.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{free_port()}\nmetricsAddr: 127.0.0.1:{free_port()}\n"
        + "".join(f"{k}: {v}\n" for k, v in files.items())
    )
    r = subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"llmtally: error: {setting} {bad}: "), r.stderr
    assert ("not a PEM file" if problem == "not-pem" else "cannot read it") in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("problem", ["junk-inside", "swapped", "another-key", "junk-ca"])
def test_a_broken_certificate_or_key_names_the_files(problem, certs, tmp_path):
    """PEM markers with junk inside, the key and the certificate swapped, the key of another certificate, a
    junk CA bundle: one line naming the files, not gRPC core's log and a failed bind."""
    files = {"tlsCertFile": certs.server_cert, "tlsKeyFile": certs.server_key, "tlsClientCaFile": certs.ca}
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    if problem == "junk-inside":
        files["tlsCertFile"] = junk
    elif problem == "swapped":
        files["tlsCertFile"], files["tlsKeyFile"] = certs.server_key, certs.server_cert
    elif problem == "another-key":
        files["tlsKeyFile"] = certs.client_key
    else:
        files["tlsClientCaFile"] = junk
    cfg = tmp_path / "llmtally.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{free_port()}\nmetricsAddr: 127.0.0.1:{free_port()}\n"
        + "".join(f"{k}: {v}\n" for k, v in files.items())
    )
    r = subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    want = {
        "junk-inside": f"tlsCertFile {junk} / tlsKeyFile {certs.server_key}: not a valid certificate and key",
        "swapped": f"tlsCertFile {certs.server_key} / tlsKeyFile {certs.server_cert}: not a valid certificate",
        "another-key": f"tlsCertFile {certs.server_cert} / tlsKeyFile {certs.client_key}: the key is not the "
        "certificate's",
        "junk-ca": f"tlsClientCaFile {junk}: not valid CA certificates",
    }[problem]
    assert r.stderr.startswith(f"llmtally: error: {want}"), r.stderr


def test_an_encrypted_key_stops_serve_with_one_line_and_never_asks_for_a_pass_phrase(certs, tmp_path):
    """OpenSSL asked for the key's pass phrase on the terminal (the start waited there), then failed with
    '[Errno 22] Invalid argument'."""
    enc = tmp_path / "enc.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(certs.server_key), "-aes256", "-passout", "pass:secret", "-out", str(enc)],
        check=True,
        capture_output=True,
    )
    assert b"ENCRYPTED" in enc.read_bytes()
    cfg = tmp_path / "llmtally.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{free_port()}\nmetricsAddr: 127.0.0.1:{free_port()}\n"
        f"tlsCertFile: {certs.server_cert}\ntlsKeyFile: {enc}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr == (
        f"llmtally: error: tlsKeyFile {enc}: the key is encrypted, and gRPC cannot be given its pass phrase; "
        "give an unencrypted key (openssl pkey -in KEY -out KEY.plain)\n"
    )
