"""Observe-only mode behind a real Envoy: ext_proc in observability mode (Envoy sends every message and waits
for no answer), `llmtally serve` with `observe: true` answers nothing, and counts the same tokens."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import oracle
from helpers import metric_samples, sample
from llmtally.config import ConfigError, load
from llmtally.demo import SEED_BODY, SEED_PROMPT, SEED_STREAM_BODY, Stack, keys, upstream
from llmtally.gateway import EXT_PROC, bootstrap

ANSWER = upstream.ANSWERS[SEED_PROMPT]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(str(tmp_path_factory.mktemp("observe")), observe=True).start()
    yield s
    s.stop()


def ext_proc_stats(s: Stack) -> dict[str, int]:
    url = f"http://127.0.0.1:{s.admin_port}/stats?filter=ext_proc"
    out = {}
    for ln in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        k, _, v = ln.partition(": ")
        if v.isdigit():
            out[k.rpartition(".")[2]] = int(v)
    return out


def render(**kw: object) -> dict:
    """The bootstrap with the demo's JWT, for an upstream and an llmtally that need not run."""
    return bootstrap(
        listen_port=1,
        admin_port=2,
        llmtally_addr="127.0.0.1:3",
        access_log="/dev/null",
        upstream_addr="127.0.0.1:4",
        jwks=keys.SigningKey().jwks(),
        **kw,
    )


def test_the_bootstrap_puts_ext_proc_in_observability_mode_without_rate_limiting():
    cfg = render(observe=True)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.jwt_authn", EXT_PROC, "envoy.filters.http.router"]
    ext = hcm["http_filters"][1]["typed_config"]
    assert ext["observability_mode"] is True and ext["deferred_close_timeout"] == "30s"
    assert "message_timeout" not in ext
    assert ext["processing_mode"] == {
        "request_header_mode": "SEND",
        "request_body_mode": "STREAMED",
        "response_header_mode": "SEND",
        "response_body_mode": "STREAMED",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    # the claims still reach llmtally (its team label); nothing comes back
    assert ext["metadata_options"] == {"forwarding_namespaces": {"untyped": ["envoy.filters.http.jwt_authn"]}}
    with pytest.raises(ValueError, match="observe mode"):
        render(rate_limit_addr="127.0.0.1:5", observe=True)


def test_observe_with_budgets_is_a_config_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("observe: true\nrateLimit:\n  limits: [{by: [team], tokens: 10, per: minute}]\n")
    with pytest.raises(ConfigError) as e:
        load(str(f), {}, {})
    assert str(e.value) == (
        "observe: Envoy ignores every answer in observability mode, so budgets can neither refuse nor charge; "
        "remove rateLimit, or observe"
    )
    f.write_text("observe: 'yes'\n")
    with pytest.raises(ConfigError) as e:
        load(str(f), {}, {})
    assert str(e.value) == "observe: 'yes' is not true or false"


def test_traffic_passes_unchanged_and_is_counted_with_no_answer_sent(stack):
    """Envoy's own counters: every message went to llmtally and none came back; the client gets the upstream's
    bytes; the metrics grow by the exact tokens, per team; the access log has no llmtally field."""
    alice, bob = stack.key.token(keys.ALICE), stack.key.token(keys.BOB)
    m0, e0 = metric_samples(stack.metrics_text()), ext_proc_stats(stack)
    completion = oracle.count(ANSWER, "cl100k_base")

    status, body = stack.post("/openai", alice, SEED_BODY)
    assert status == 200
    doc = json.loads(body)
    assert doc["choices"][0]["message"]["content"] == ANSWER
    assert doc["usage"]["prompt_tokens"] == 21 and doc["usage"]["completion_tokens"] == completion
    status, body = stack.post("/openai", bob, SEED_STREAM_BODY)
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    streamed = "".join(
        (d["choices"][0]["delta"].get("content") or "") for d in oracle.sse_docs(body) if d.get("choices")
    )
    assert streamed == ANSWER

    lines = stack.access_lines(2)
    assert [ln["response_code"] for ln in lines] == [200, 200]
    for ln in lines:  # nothing llmtally would have written reaches Envoy
        assert (ln["prompt_tokens"], ln["completion_tokens"], ln["total_tokens"], ln["model"]) == (
            None,
            None,
            None,
            None,
        )
        assert ln["rate_limited_tokens"] is None
    assert [ln["team"] for ln in lines] == ["dev", "ops"]

    # Envoy does not wait for llmtally: the client may have its answer before llmtally read the stream's end
    labels = [{"llm": "openai", "model": "gpt-3.5-turbo", "team": t} for t in ("dev", "ops")]
    deadline = time.time() + 15
    while True:
        m1 = metric_samples(stack.metrics_text())
        done = all(
            sample(m1, "ai_completion_tokens_total", **lab) - sample(m0, "ai_completion_tokens_total", **lab)
            >= completion
            for lab in labels
        )
        if done or time.time() > deadline:
            break
        time.sleep(0.05)
    for team in ("dev", "ops"):
        labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": team}
        delta = lambda name, labels=labels: sample(m1, name, **labels) - sample(m0, name, **labels)  # noqa: E731
        assert (delta("ai_prompt_tokens_total"), delta("ai_completion_tokens_total")) == (21, completion)
        assert sample(m1, "ai_aborted_streams_total", **labels) == sample(m0, "ai_aborted_streams_total", **labels)

    e1 = ext_proc_stats(stack)
    assert e1["streams_started"] - e0.get("streams_started", 0) == 2
    assert e1["stream_msgs_sent"] - e0.get("stream_msgs_sent", 0) >= 2 * 4  # headers and bodies, both ways
    assert e1["stream_msgs_received"] == 0  # not one answer, ever (the normal mode's is one per message sent)
    assert (e1["streams_failed"], e1["message_timeouts"], e1["failure_mode_allowed"]) == (0, 0, 0)


def test_the_command_lines(tmp_path):
    """envoy-config --observe renders the filter the Stack ran; serve --observe with budgets stops in one line."""
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llmtally.cli", *args], capture_output=True, text=True, timeout=60)

    r = cli("envoy-config", "--upstream", "127.0.0.1:9", "--observe")
    assert r.returncode == 0, r.stderr
    hcm = json.loads(r.stdout)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = next(f["typed_config"] for f in hcm["http_filters"] if f["name"] == EXT_PROC)
    assert (ext["observability_mode"], ext["processing_mode"]["request_body_mode"]) == (True, "STREAMED")
    r = cli("envoy-config", "--upstream", "127.0.0.1:9", "--observe", "--rate-limit-service", "127.0.0.1:7")
    assert (r.returncode, r.stderr) == (
        2,
        "llmtally: error: --observe and --rate-limit-service exclude each other: Envoy ignores llmtally's answers\n",
    )
    f = tmp_path / "c.yaml"
    f.write_text("rateLimit:\n  limits: [{by: [team], tokens: 10, per: minute}]\n")
    r = cli("serve", "--config", str(f), "--observe")
    assert (r.returncode, r.stderr) == (
        2,
        "llmtally: error: invalid configuration: observe (from --observe): Envoy ignores every answer in "
        "observability mode, so budgets can neither refuse nor charge; remove rateLimit, or observe\n",
    )


def test_envoy_may_open_as_many_streams_to_llmtally_as_it_serves():
    """Envoy's default circuit breaker (1024 concurrent requests per cluster) failed ext_proc open past 1024 live
    streams: 1,024 of ~11,000 requests counted in a 2 s observe-mode probe. Both modes, both gRPC clusters."""
    from llmtally.config import Config

    for observe in (False, True):
        cfg = render(rate_limit_addr=None if observe else "127.0.0.1:5", observe=observe)
        grpc = [c for c in cfg["static_resources"]["clusters"] if c["name"].startswith("llmtally")]
        assert [c["name"] for c in grpc] == (["llmtally"] if observe else ["llmtally", "llmtally_ratelimit"])
        for c in grpc:
            assert c["circuit_breakers"] == {"thresholds": [{"max_requests": Config().max_concurrent_streams}]}


def requests_counted(s: Stack) -> float:
    lines = s.metrics_text().splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith("ai_requests_total{"))


def test_a_burst_of_streams_larger_than_grpcs_default_queue_is_counted_whole(tmp_path):
    """gRPC keeps the calls that llmtally's event loop has not taken up yet in a queue of its own, and by
    default refuses them past 1,000 (at random, up to 3,000). In observability mode Envoy never waits, so
    nothing holds a burst back, and a call refused there is a request never counted, by llmtally or by any
    Envoy counter (the request is over when it fails). The burst here: llmtally is stopped while 2,000
    requests pass through Envoy, so their streams reach it at once when it goes on. Before the queue was
    bounded by the stream cap instead, 1,785 of them were counted."""
    n = 2000
    s = Stack(str(tmp_path), observe=True).start()
    try:
        token = s.key.token(keys.ALICE)
        assert s.post("/openai", token, SEED_BODY)[0] == 200
        deadline = time.time() + 15
        while requests_counted(s) < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert requests_counted(s) == 1
        os.kill(s.serve.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(32) as pool:
                codes = list(pool.map(lambda _: s.post("/openai", token, SEED_BODY)[0], range(n)))
        finally:
            os.kill(s.serve.pid, signal.SIGCONT)
        assert codes == [200] * n  # Envoy did not wait for the stopped sidecar
        deadline = time.time() + 60
        while requests_counted(s) < 1 + n and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # nothing more than that comes
        assert requests_counted(s) == 1 + n
        e = ext_proc_stats(s)
        assert (e["streams_started"], e["streams_failed"]) == (1 + n, 0)
    finally:
        s.stop()
