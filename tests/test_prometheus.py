"""The shipped Prometheus and Grafana files against Debian's real `prometheus` and `promtool`: the alerting
rules pass `promtool check rules` and their unit tests (`deploy/alerts_test.yml`), llmtally's /metrics passes
`promtool check metrics` after traffic, and a real Prometheus that scrapes `llmtally serve` every second while
traffic flows through a real Envoy answers every query of the Grafana dashboard with data and evaluates every
alert expression (those the traffic should set off fire)."""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llmtally.demo import (
    SEED_BODY,
    SEED_PROMPT,
    SEED_STREAM_BODY,
    Stack,
    free_port,
    keys,
    llmtally_config,
    rate_limit_settings,
)

DEPLOY = pathlib.Path(__file__).parent.parent / "deploy"
ALERTS = DEPLOY / "alerts.yml"
ALERTS_TEST = DEPLOY / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
FAULTY_SERVE = pathlib.Path(__file__).with_name("faulty_serve.py")


def _tool(name: str) -> str | None:
    path = f"/usr/bin/{name}"
    return path if os.access(path, os.X_OK) else shutil.which(name)


PROMETHEUS, PROMTOOL = _tool("prometheus"), _tool("promtool")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package (prometheus and promtool) is not installed: apt-get install prometheus "
    "(.ci/run installs it)",
)

#: the template variables' values for "All" (Grafana's allValue), and the time ranges Grafana fills in
ALL = {"$provider": ".*", "$model": ".*", "$team": ".*", "$limit": ".*"}
RANGES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
#: which template variable filters which label
VARIABLE_OF = {"llm": "$provider", "model": "$model", "team": "$team", "limit": "$limit"}

#: a team with no room in its token budget for a request (prompt estimate + the default output reservation)
SPENT = {"iss": "solo.io", "org": "solo.io", "sub": "carol", "team": "qa", "llms": {}}
BEDROCK_STREAM = "/bedrock/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"
#: small enough that the mock's Bedrock event-stream messages are over it (scan anomaly oversized_events)
MAX_EVENT_BYTES = 120


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60)


# -- the rules and their unit tests --


def test_the_alerting_rules_pass_promtool_check_rules():
    r = promtool("check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout


def test_the_alerting_rules_pass_their_promtool_unit_tests():
    r = promtool("test", "rules", str(ALERTS_TEST))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_says_what_to_do_and_is_unit_tested_firing_and_not():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names) >= 11
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert set(r["annotations"]) == {"summary", "description"}, r["alert"]
        assert len(r["annotations"]["description"]) > 100, r["alert"]
    cases = [c for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in t["alert_rule_test"]]
    for name in names:
        fired = [a for c in cases if c["alertname"] == name for a in c["exp_alerts"]]
        quiet = [c for c in cases if c["alertname"] == name and not c["exp_alerts"]]
        assert fired and quiet, name
        # the exact labels (the severity too) and both annotations of each expected alert
        for a in fired:
            assert "severity" in a["exp_labels"] and set(a["exp_annotations"]) == {"summary", "description"}, name
    # the shipped scrape configuration loads these rules
    cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert [(DEPLOY / f).resolve() for f in cfg["rule_files"]] == [ALERTS.resolve()]


def datasources(node):
    """Every `datasource` value in a dashboard."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                yield v
            else:
                yield from datasources(v)
    elif isinstance(node, list):
        for v in node:
            yield from datasources(v)


def test_the_dashboard_imports_cleanly_and_every_panel_uses_the_variables():
    dash = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["type"] == "datasource" and dash["__inputs"][0]["pluginId"] == "prometheus"
    required = {(r["type"], r["id"]) for r in dash["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    assert {("panel", p["type"]) for p in dash["panels"]} <= required
    # every datasource reference is the import's input (no datasource variable, no fixed uid)
    refs = list(datasources(dash))
    assert len(refs) > len(dash["panels"]) and all(r == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for r in refs)
    assert "${datasource}" not in DASHBOARD.read_text()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"provider", "model", "team", "limit"}
    assert variables["team"]["definition"].endswith(", team)")  # the custom label of the examples
    assert variables["provider"]["definition"] == "label_values(ai_requests_total, llm)"
    for v in variables.values():
        assert v["type"] == "query" and v["query"]["query"] == v["definition"] and v["allValue"] == ".*"
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)
    for p in dash["panels"]:
        assert any(var in t["expr"] for t in p["targets"] for var in ALL), p["title"]
    titles = " ".join(p["title"] for p in dash["panels"])
    for wanted in ("429", "Budget use", "Aborted streams", "Spend", "Unpriced"):
        assert wanted in titles, wanted


# -- a real llmtally, Envoy and Prometheus --


class PromStack(Stack):
    """The demo's stack (Envoy, the mock upstream, `llmtally serve` through tests/faulty_serve.py) with a
    maxEventBytes small enough for the mock's Bedrock stream to count scan anomalies."""

    def start_serve(self) -> None:
        cfg = os.path.join(self.workdir, "llmtally.yaml")
        doc = yaml.safe_load(llmtally_config(f"127.0.0.1:{self.grpc_port}", self.metrics_port, self.rate_limit))
        doc["maxEventBytes"] = MAX_EVENT_BYTES
        with open(cfg, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        with open(self.serve_log, "ab") as log:
            self.serve = subprocess.Popen([*self.serve_command, "serve", "--config", cfg], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            assert self.serve.poll() is None, open(self.serve_log).read()[-2000:]
            try:
                self.metrics_text()
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, "llmtally serve did not start"
                time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    rl = rate_limit_settings({"dev": 100_000, "ops": 100_000, "qa": 100}, spend={})
    s = PromStack(
        str(tmp_path_factory.mktemp("prom-stack")),
        serve_command=[sys.executable, str(FAULTY_SERVE)],
        rate_limit=rl,
    )
    try:
        s.start()
        yield s
    finally:
        s.stop()


class Prometheus:
    """Debian's prometheus on a loopback port, in its own directory, scraping `targets` every second as the
    job `llmtally` and evaluating deploy/alerts.yml every second."""

    def __init__(self, workdir: pathlib.Path, targets: list[str]):
        self.port = free_port()
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS.resolve())],
            "scrape_configs": [{"job_name": "llmtally", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)

    def api(self, path: str, **params) -> object:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:  # a query that does not parse: 400 with the error
            raise AssertionError(f"{path} {params}: {e.code} {e.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert isinstance(data, dict) and data["resultType"] == "vector", (expr, data)
        return data["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def dead_target():
    """A loopback port nothing listens on: a second llmtally target that is down."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def prometheus(stack, dead_target, tmp_path_factory):
    p = Prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{stack.metrics_port}", dead_target])
    try:
        p.wait_ready()
        yield p
    finally:
        p.stop()


def _abort_a_stream(stack, token: str) -> None:
    """A streamed request the client leaves mid-stream."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", stack.listen_port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    conn.request(
        "POST",
        "/openai",
        body=json.dumps(SEED_STREAM_BODY),
        headers={**headers, "x-mock-delay-ms": "20", "x-mock-repeat": "40"},
    )
    resp = conn.getresponse()
    assert resp.status == 200
    got = b""
    while got.count(b"\n\n") < 5:  # a few events, then the client is gone
        got += resp.read1(4096)
    conn.sock.close()
    conn.close()


@pytest.fixture(scope="module")
def traffic(stack, prometheus):
    """With Prometheus scraping, through Envoy: two teams (the `team` claim, the custom label), streamed and not,
    an unpriced model, a Bedrock stream (scan anomalies), a budget refusal, an exception, a client abort and a
    message timeout. In two rounds with a scrape between them, so that rates are above zero: llmtally makes a
    series at its first count."""
    alice, bob, carol = stack.key.token(keys.ALICE), stack.key.token(keys.BOB), stack.key.token(SPENT)
    bedrock = {"messages": [{"role": "user", "content": [{"text": SEED_PROMPT}]}]}
    every_kind = [
        (alice, "/openai", SEED_BODY, 200),
        (alice, "/openai", SEED_STREAM_BODY, 200),
        (bob, "/openai", SEED_STREAM_BODY, 200),
        (bob, "/openai", SEED_BODY, 200),
        (alice, "/openai", dict(SEED_BODY, stream=True), 200),  # no usage in the stream: the tokenizer's count
        (bob, "/openai", dict(SEED_BODY, model="gpt-4o-mini"), 200),  # no price in the demo's table
        (alice, BEDROCK_STREAM, bedrock, 200),
        (carol, "/openai", SEED_BODY, 429),  # qa: 100 tokens a minute, the request reserves 21 + 100
        (alice, "/openai", dict(SEED_BODY, model="explode"), 200),  # raises inside llmtally; passes through
    ]
    for token, path, body, status in every_kind:
        assert stack.request(path, token, body)[0] == status, (path, body)
    _abort_a_stream(stack, alice)
    scraped = ('ai_prompt_tokens_total{team="ops"}', "ai_unpriced_requests_total", "ai_scan_anomalies_total")
    deadline = time.monotonic() + 15
    while not all(prometheus.query(q) for q in (*scraped, 'ai_budget_decisions_total{outcome="denied"}')):
        assert time.monotonic() < deadline, "prometheus did not scrape the first round"
        time.sleep(0.2)
    for token, path, body, status in every_kind[:-1]:
        assert stack.request(path, token, body)[0] == status, (path, body)
    # last: llmtally blocks 3 s on this one, past Envoy's message timeout (2 s), which goes on without it
    assert stack.request("/openai", bob, dict(SEED_STREAM_BODY, model="slow"))[0] == 200


def test_metrics_pass_promtool_check_metrics_after_traffic(stack, traffic):
    text = stack.metrics_text()
    counted = {s.name for f in text_string_to_metric_families(text) for s in f.samples if s.value}
    wanted = (
        "ai_prompt_tokens",
        "ai_unpriced_requests",
        "ai_budget_decisions",
        "ai_exception_raised",
        "ai_scan_anomalies",
    )
    assert {f"{name}_total" for name in wanted} <= counted
    assert "ai_time_to_first_token_seconds_bucket" in counted
    r = promtool("check", "metrics", stdin=text)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")  # no lint finding at all


def substitute(expr: str, values: dict[str, str]) -> str:
    for k in sorted({**RANGES, **values}, key=len, reverse=True):  # longest first: none inside another
        expr = expr.replace(k, {**RANGES, **values}[k])
    assert "$" not in expr, expr
    return expr


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, matchers) of each selector of an expression."""
    return re.findall(r"\b((?:ai|llmtally)_[a-z_]+)(?:\{([^}]*)\})?", expr)


def test_a_real_prometheus_answers_every_dashboard_query_and_alert(stack, prometheus, traffic, dead_target):
    t0 = time.monotonic()
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    # the labels each metric carries, from llmtally's page: a query on a metric with llm, model or team (or
    # limit) filters it by the variable of that label
    labels_of: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(stack.metrics_text()):
        for s in fam.samples:
            labels_of.setdefault(s.name, set()).update(s.labels)
    for expr in exprs:
        for metric, matchers in selectors(expr):
            assert metric in labels_of, (metric, expr)  # llmtally exports it (and it has samples)
            for label in labels_of[metric] & set(VARIABLE_OF):
                assert f'{label}=~"{VARIABLE_OF[label]}"' in matchers, (label, expr)

    # every dashboard query returns data once Prometheus has scraped the traffic (twice, for rate())
    deadline = time.monotonic() + 25
    while True:
        empty = [e for e in exprs if not prometheus.query(substitute(e, ALL))]
        if not empty:
            break
        assert time.monotonic() < deadline, f"no data for: {empty}"
        time.sleep(0.5)

    # the rates of what the second round counted are above zero, per team; a latency quantile is a number
    def by(expr: str, label: str, values: dict[str, str] = ALL) -> dict[str, float]:
        return {s["metric"][label]: float(s["value"][1]) for s in prometheus.query(substitute(expr, values))}

    panel = {p["title"]: [t["expr"] for t in p["targets"]] for p in dash["panels"]}
    tokens = by(panel["Tokens per team (prompt + completion, per second)"][0], "team")
    assert tokens.keys() == {"dev", "ops"} and all(v > 0 for v in tokens.values()), tokens
    assert by(panel["Spend per team (USD per hour)"][0], "team")["dev"] > 0
    assert by(panel["Budget decisions: 429s and share denied, per limit"][0], "limit")["team=qa"] > 0
    assert by(panel["Budget decisions: 429s and share denied, per limit"][2], "limit") == {"team=qa": 1.0}
    assert by(panel["Unpriced calls per model over the time range"][0], "model")["gpt-4o-mini"] >= 1
    ttft = by(panel["Time to first token (p50, p95)"][0], "model")["gpt-3.5-turbo"]
    assert 0 < ttft < 10, ttft

    # the template variables: Grafana's label_values(metric{...}, label) is the label values API
    for v in dash["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)", v["definition"]).groups()
        values = set(prometheus.api(f"label/{label}/values", **{"match[]": substitute(metric, ALL)}))
        wanted = {
            "llm": {"openai", "bedrock"},
            "model": {"gpt-3.5-turbo", "gpt-4o-mini"},
            "team": {"dev", "ops"},
            "limit": {"team=dev", "team=ops", "team=qa"},
        }
        assert wanted[label] <= values, (v["name"], values)

    # one team, provider, model and limit picked: every query evaluates, and keeps to that choice
    one = {"$provider": "openai", "$model": "gpt-3\\\\.5-turbo", "$team": "dev", "$limit": "team=dev"}
    picked = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "dev", "limit": "team=dev"}
    for expr in exprs:
        for series in prometheus.query(substitute(expr, one)):
            assert all(series["metric"].get(k, v) == v for k, v in picked.items()), (expr, series)
    assert by(panel["Tokens per team (prompt + completion, per second)"][0], "team", one).keys() == {"dev"}

    # what the traffic made is in Prometheus, per team
    spend = {s["metric"]["team"]: float(s["value"][1]) for s in prometheus.query("sum by (team) (ai_cost_usd_total)")}
    assert spend["dev"] > 0 and spend["ops"] > 0
    assert float(prometheus.query("sum(ai_aborted_streams_total)")[0]["value"][1]) >= 1

    # every alert expression parses and evaluates; the ones this traffic sets off return their series
    expected = {
        "LlmtallyDown": {"instance": dead_target, "job": "llmtally"},
        "LlmtallyExceptions": {"stage": "request_body"},
        "LlmtallyScanAnomalies": {"llm": "bedrock", "kind": "oversized_events"},
        "LlmtallyBudgetExhausted": {"limit": "team=qa"},
        "LlmtallyUnpricedModel": {"llm": "openai", "model": "gpt-4o-mini"},
        "LlmtallyMessageTimeouts": {"llm": "openai"},
    }
    deadline = time.monotonic() + 15
    while True:
        fired = {r["alert"]: prometheus.query(r["expr"]) for r in alert_rules()}
        missing = [
            a for a, labels in expected.items() if not any(labels.items() <= s["metric"].items() for s in fired[a])
        ]
        if not missing:
            break
        assert time.monotonic() < deadline, (missing, fired)
        time.sleep(0.5)
    assert {a for a, result in fired.items() if result} == set(expected)  # nothing else is wrong
    assert [s["metric"]["instance"] for s in fired["LlmtallyDown"]] == [dead_target]  # the live one is up

    # Prometheus evaluates the rules itself: all healthy; those without a `for` fire, LlmtallyDown is pending
    deadline = time.monotonic() + 10
    while True:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        states = {a["labels"]["alertname"]: a["state"] for a in prometheus.api("alerts")["alerts"]}
        if all(states.get(a) == ("pending" if a == "LlmtallyDown" else "firing") for a in expected):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
    assert len(rules) == len(alert_rules()) and all((r["type"], r["health"]) == ("alerting", "ok") for r in rules)
    print(f"prometheus end to end: {time.monotonic() - t0:.1f} s after the traffic")
