"""Token and request budgets (`llmtally.budgets`) on both stores: the in-memory one and a real redis-server.
Exact counter values after every operation."""

import asyncio
import contextlib

import pytest

from llmtally.budgets import (
    Budgets,
    Limit,
    MemoryStore,
    RedisStore,
    StoreError,
    duration,
    rate_limit_headers,
    refusal,
)
from redis_server import RedisServer

TEAM = Limit(("team",), tokens=100, window=60)
TEAM_MODEL = Limit(("team", "model"), tokens=1000, requests=3, window=3600)
OPS_ONLY = Limit(("team",), tokens=50, window=60, match=(("team", "ops"),))
T0 = 1_800_000_030.0  # 30 s into a minute


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = RedisServer(tmp_path_factory.mktemp("redis"))
    yield r
    r.stop()


@pytest.fixture(params=["memory", "redis"])
def make(request, redis):
    """Budgets on a fresh store of each kind, with a clock the test moves."""
    made = []

    def build(limits, now=T0, fail_open=True, timeout=0.5):
        clock = [now]
        if request.param == "memory":
            store = MemoryStore(clock=lambda: clock[0])
        else:
            redis.command("FLUSHALL")
            store = RedisStore(redis.url, timeout)
        b = Budgets(limits, store, fail_open=fail_open, clock=lambda: clock[0])
        made.append(b)
        return b, clock

    yield build
    for b in made:
        asyncio.run(b.store.close())


def run(coro):
    return asyncio.run(coro)


def test_a_reservation_is_all_or_none_across_limits(make):
    b, _ = make([TEAM, TEAM_MODEL])

    async def go():
        keys = {"team": "dev", "model": "gpt-4o", "llm": "openai"}
        first = await b.reserve(keys, 60)
        assert first.decision.allowed and first.decision.used == (60, 60, 1)
        second = await b.reserve(keys, 50)  # 60 + 50 > 100 on the team limit: nothing is added anywhere
        assert not second.decision.allowed and second.decision.denied.limit == TEAM
        third = await b.reserve(keys, 40)  # exactly to the cap
        assert third.decision.allowed and third.decision.used == (100, 100, 2)
        fourth = await b.reserve({**keys, "team": "ops"}, 40)  # another team: its own budgets
        assert fourth.decision.used == (40, 40, 1)

    run(go())


def test_settle_replaces_the_reservation_by_the_charge(make):
    b, _ = make([TEAM])

    async def go():
        keys = {"team": "dev"}
        r = await b.reserve(keys, 90)
        b.settle(r, 25)  # the request used 25 of the 90 it reserved
        b.settle(r, 1000)  # settled once only
        await b.drain()
        again = await b.reserve(keys, 75)
        assert again.decision.allowed and again.decision.used == (100,)

    run(go())


def test_requests_are_counted_and_limited(make):
    b, _ = make([TEAM_MODEL])

    async def go():
        keys = {"team": "dev", "model": "m"}
        used = [(await b.reserve(keys, 1)).decision for _ in range(4)]
        assert [d.allowed for d in used] == [True, True, True, False]
        assert used[3].denied.kind == "requests" and used[3].denied.cap == 3

    run(go())


def test_a_match_limit_applies_to_its_values_only(make):
    b, _ = make([OPS_ONLY])

    async def go():
        assert await b.reserve({"team": "dev"}, 1_000_000) is None  # no limit applies
        assert not (await b.reserve({"team": "ops"}, 51)).decision.allowed

    run(go())


def test_a_new_window_starts_from_zero(make):
    b, clock = make([TEAM])

    async def go():
        assert (await b.reserve({"team": "dev"}, 100)).decision.allowed
        assert not (await b.reserve({"team": "dev"}, 1)).decision.allowed
        clock[0] += 30  # the next minute
        assert (await b.reserve({"team": "dev"}, 100)).decision.used == (100,)

    run(go())


def test_the_rate_limit_filter_phases_check_then_charge(make):
    b, _ = make([TEAM, OPS_ONLY])

    async def go():
        check = b.descriptor_counters({"team": "ops"}, 0)
        assert [c.limit for c in check] == [TEAM, OPS_ONLY]
        assert await b.hit(check) == [(False, 100), (False, 50)]
        assert await b.hit(b.descriptor_counters({"team": "ops"}, 70)) == [(False, 30), (True, 0)]
        assert await b.hit(b.descriptor_counters({"team": "ops"}, 0)) == [(False, 30), (True, 0)]
        assert b.descriptor_counters({"team": "ops", "model": "m"}, 0) == []  # keys must be exactly the limit's

    run(go())


def test_hostile_key_values_are_bounded(make):
    b, _ = make([TEAM])
    long = b.counters({"team": "x" * 100_000}, 1)[0].key
    odd = b.counters({"team": "a:b{c}\n"}, 1)[0].key
    assert len(long) < 200 and "#" in long and "\n" not in odd and "{c}" not in odd


def test_the_redis_store_fails_open_or_closed_and_recovers(tmp_path):
    r = RedisServer(tmp_path)
    try:

        async def go(fail_open):
            b = Budgets([TEAM], RedisStore(r.url, 0.2), fail_open=fail_open)
            assert (await b.reserve({"team": "dev"}, 10)).decision.allowed
            r.stop()
            failed = (await b.reserve({"team": "dev"}, 10)).decision
            assert failed.store_failed and failed.allowed == fail_open
            assert await b.hit(b.descriptor_counters({"team": "dev"}, 5)) is None
            r.start()  # empty again: no persistence
            back = (await b.reserve({"team": "dev"}, 10)).decision
            assert back.allowed and not back.store_failed and back.used == (10,)
            await b.store.close()

        run(go(True))
        run(go(False))
    finally:
        r.stop()


def test_a_slow_store_is_a_failure_within_the_timeout(tmp_path):
    r = RedisServer(tmp_path)
    try:

        async def go():
            b = Budgets([TEAM], RedisStore(r.url, 0.05))
            slow = asyncio.create_task(asyncio.to_thread(r.command, "DEBUG", "SLEEP", "0.5"))
            await asyncio.sleep(0.1)
            t = asyncio.get_running_loop().time()
            d = (await b.reserve({"team": "dev"}, 1)).decision
            waited = asyncio.get_running_loop().time() - t
            await slow
            await b.store.close()
            return d, waited

        d, waited = run(go())
        assert d.store_failed and d.allowed
        assert waited < 0.4  # the 50 ms deadline, not the server's 500 ms stall
    finally:
        r.stop()


def test_what_the_client_sees():
    assert [duration(s) for s in (0.02, 1, 59.2, 360, 3723)] == ["20ms", "1s", "1m0s", "6m0s", "1h2m3s"]
    b = Budgets([TEAM, TEAM_MODEL], MemoryStore(clock=lambda: T0), clock=lambda: T0)
    r = asyncio.run(b.reserve({"team": "dev", "model": "m"}, 30))
    assert rate_limit_headers(r.decision, T0) == [
        ("x-ratelimit-limit-requests", "3"),
        ("x-ratelimit-remaining-requests", "2"),
        ("x-ratelimit-reset-requests", "59m30s"),
        ("x-ratelimit-limit-tokens", "100"),
        ("x-ratelimit-remaining-tokens", "70"),
        ("x-ratelimit-reset-tokens", "30s"),
    ]
    body, headers = refusal("anthropic", 429, "no room")
    assert body == b'{"type":"error","error":{"type":"rate_limit_error","message":"no room"}}'
    body, headers = refusal("openai", 429, "no room")
    assert body == (
        b'{"error":{"message":"no room","type":"tokens","param":null,"code":"rate_limit_exceeded"}}'
    ) and headers == [("content-type", "application/json")]
    assert refusal("bedrock", 429, "x")[1][1] == ("x-amzn-errortype", "ThrottlingException")
    assert refusal("gemini", 503, "x")[0] == b'{"error":{"code":503,"message":"x","status":"UNAVAILABLE"}}'


# -- through `llmtally serve`: the reservation at request-body time, shared by two sidecars --

ENFORCE = """rateLimit:
  enforce: true
  headers: true
  redis: {url}
  limits:
  - by: [team]
    tokens: 150
    per: day
"""


def _openai(team: str):
    import json

    from test_serve import jwt_metadata, load, messages

    body = json.loads(load("openai/chat.request.json"))
    body["max_tokens"] = 30
    msgs = messages(
        "/v1/chat/completions",
        json.dumps(body).encode(),
        200,
        "application/json",
        [load("openai/chat.json")],
        md=jwt_metadata(team, "alice"),
    )
    return json.dumps(body).encode(), msgs


def _settled(redis, want: int) -> None:
    import time

    deadline = time.time() + 5
    while list(redis.keys().values()) != [want]:
        assert time.time() < deadline, redis.keys()
        time.sleep(0.01)


def test_two_sidecars_reserve_and_settle_one_budget_in_redis(tmp_path, redis):
    import llmtally
    from test_serve import Sidecar, md_of

    redis.command("FLUSHALL")
    body, msgs = _openai("ops")
    prompt = llmtally.parse_request(body, "openai", "/v1/chat/completions").prompt_tokens
    reserve = prompt + 30
    for d in ("a", "b", "a2"):
        (tmp_path / d).mkdir()
    a = Sidecar(tmp_path / "a", extra=ENFORCE.format(url=redis.url))
    b = Sidecar(tmp_path / "b", extra=ENFORCE.format(url=redis.url))
    try:
        charged = 0
        for i, s in enumerate((a, b, a)):  # three fit: 43 + 43 + reserve <= 150
            resps = s.process(msgs, provider="openai")
            assert [r.WhichOneof("response") for r in resps] == [m.WhichOneof("request") for m in msgs]
            added = {
                h.header.key: h.header.raw_value.decode()
                for h in resps[2].response_headers.response.header_mutation.set_headers
            }
            assert added["x-ratelimit-limit-tokens"] == "150"
            assert added["x-ratelimit-remaining-tokens"] == str(150 - charged - reserve), i
            assert md_of(resps[-1])["ai.gateway.kgateway.dev"]["total_tokens"] == 43
            charged += 43
            _settled(redis, charged)  # the reservation is replaced by the 43 tokens charged
        refused = b.process(msgs, provider="openai")  # 129 + reserve > 150: llmtally answers itself
        # (a real Envoy sends nothing after an immediate response; this client does, and gets plain passes)
        assert refused[1].HasField("immediate_response")
        assert not any(r.HasField("dynamic_metadata") or r.HasField("immediate_response") for r in refused[2:])
        imm = refused[1].immediate_response
        headers = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
        assert imm.status.code == 429
        assert imm.body.startswith(b'{"error":{"message":"llmtally: the tokens budget of team (150 per 86400 s)')
        assert b'"code":"rate_limit_exceeded"' in imm.body
        assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-remaining-tokens"] == "21"
        assert md_of(refused[1])["ai.gateway.kgateway.dev"]["prompt_tokens"] == prompt
        _settled(redis, charged)  # nothing reserved for the refused request
        other = a.process(_openai("dev")[1], provider="openai")  # another team: its own budget
        assert not other[1].HasField("immediate_response")
        m = a.metrics()
        assert m[("ai_budget_decisions_total", (("limit", "team"), ("outcome", "allowed")))] == 3
        assert b.metrics()[("ai_budget_decisions_total", (("limit", "team"), ("outcome", "denied")))] == 1
        # a restarted sidecar finds the budget where it was
        a.stop()
        a = Sidecar(tmp_path / "a2", extra=ENFORCE.format(url=redis.url))
        assert a.process(msgs, provider="openai")[1].immediate_response.status.code == 429
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_sentinel_and_cluster_stores_share_one_budget(tmp_path, topology):
    """Two stores (two sidecars) on one Redis behind Sentinel, or on a three-master Redis Cluster (every key
    of a script in one slot by the domain's hash tag): the same all-or-none reservation and settle."""
    from redis_server import RedisCluster, RedisSentinel

    started = []
    try:
        if topology == "sentinel":
            master = RedisServer(tmp_path)
            started.append(master)
            sentinel = RedisSentinel(tmp_path, master)
            started.append(sentinel)
            url, cluster = sentinel.url, False
        else:
            c = RedisCluster(tmp_path)
            started.append(c)
            url, cluster = c.url, True

        async def go():
            one = Budgets([TEAM, TEAM_MODEL], RedisStore(url, 1.0, cluster=cluster))
            two = Budgets([TEAM, TEAM_MODEL], RedisStore(url, 1.0, cluster=cluster))
            keys = {"team": "dev", "model": "m"}
            r = await one.reserve(keys, 60)
            assert r.decision.allowed and r.decision.used == (60, 60, 1)
            assert not (await two.reserve(keys, 41)).decision.allowed  # the other store sees the 60
            one.settle(r, 20)
            await one.drain()
            assert (await two.reserve(keys, 80)).decision.used == (100, 100, 2)
            await one.store.close()
            await two.store.close()

        run(go())
    finally:
        for s in reversed(started):
            s.stop()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("rateLimit:\n  limits:\n  - by: [tenant]\n    tokens: 5\n", "rateLimit.limits[0].by: ['tenant'] are neither"),
        ("rateLimit:\n  limits:\n  - by: [team]\n", "rateLimit.limits[0]: needs tokens, requests or usd"),
        ("rateLimit:\n  limits:\n  - by: [team]\n    tokens: 5\n    per: week\n", "rateLimit.limits[0].per: 'week'"),
        ("rateLimit:\n  redis: http://x\n", "rateLimit.redis: 'http://x' is not a redis://"),
        ("rateLimit:\n  redis: redis+sentinel://h:26379\n", "rateLimit.redis: the service (master) name is missing"),
        ("rateLimit:\n  headers: true\n", "rateLimit.headers: the x-ratelimit-* headers need enforce: true"),
        ("rateLimit:\n  failureMode: maybe\n", "rateLimit.failureMode: 'maybe' is not open or closed"),
        ("rateLimit:\n  redisTimeoutMs: 0\n", "rateLimit.redisTimeoutMs: must be an integer from 1 to 60000, not 0"),
        (
            "rateLimit:\n  enforce: true\n  limits:\n  - by: [team]\n    usd: 5\n",
            "rateLimit.limits[0].usd: a spend limit needs",
        ),
        (
            "rateLimit:\n  limits:\n  - by: [team]\n    usd: 5\n",
            "rateLimit.limits[0].usd: spend limits are held by llmtally's",
        ),
        (
            "rateLimit:\n  limits:\n  - by: [team]\n    usd: 0.0000001\n",
            "rateLimit.limits[0].usd: 1e-07 is less than one micro",
        ),
        (
            "rateLimit:\n  limits:\n  - by: [team]\n    tokens: 5\n  - by: [team]\n    requests: 5\n",
            "rateLimit.limits[1]: the same keys, match and window as limits[0]",
        ),
        (
            "rateLimit:\n  limits:\n  - by: [llm]\n    match: {llm: OpenAI}\n    tokens: 5\n",
            "rateLimit.limits[0].match.llm: 'OpenAI' is not a provider id",
        ),
        ("rateLimit:\n  enforce: true\n", "rateLimit.enforce: true needs limits"),
        ("requestBodyMode: PARTIAL\n", "requestBodyMode: 'PARTIAL' is not BUFFERED_PARTIAL, BUFFERED or STREAMED"),
        ("rateLimit:\n  limits:\n  - by: [team]\n    usd: -1\n", "rateLimit.limits[0].usd: must be a number"),
        (
            "rateLimit:\n  limits:\n  - by: [team]\n    match: {model: x}\n    tokens: 5\n",
            "rateLimit.limits[0].match: keys ['model'] are not in by",
        ),
    ],
)
def test_a_bad_budget_setting_is_one_line(tmp_path, doc, message):
    from llmtally import config

    f = tmp_path / "c.yaml"
    f.write_text("stats:\n  customLabels:\n  - name: team\n    metadataKey: principal:team\n" + doc)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f), environ={})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_limits_as_operators_write_them(tmp_path):
    from llmtally import config

    f = tmp_path / "c.yaml"
    f.write_text(
        "stats:\n  customLabels:\n  - name: team\n    metadataKey: principal:team\n"
        "rateLimit:\n  windowSeconds: 3600\n  redis: redis+sentinel://a:26379,b:26380/main/2\n  limits:\n"
        "  - descriptorKey: team\n    value: ops\n    tokens: 400\n"
        "  - by: [team, model]\n    requests: 10\n    per: minute\n"
    )
    rl = config.load(str(f), environ={}).rate_limit
    assert rl.limits == (
        Limit(("team",), tokens=400, window=3600, match=(("team", "ops"),)),
        Limit(("team", "model"), requests=10, window=60),
    )
    assert [lim.name for lim in rl.limits] == ["team=ops", "team,model"]
    from llmtally.budgets import parse_sentinel_url

    assert parse_sentinel_url(rl.redis) == ([("a", 26379), ("b", 26380)], "main", 2, None, None)


def test_a_sentinel_urls_password_is_used_and_never_shown(tmp_path):
    """`:password@` or `user:password@` authenticate to the master and the sentinels (before, the password was
    taken for part of the first host name and printed in every store failure's log line); a query is refused,
    and a URL of the wrong scheme is shown without its password. A redis:// URL redis-py cannot read stops the
    start (before: a bare redis-py message, or every request failing later)."""
    from llmtally import config
    from llmtally.budgets import RedisStore, parse_sentinel_url

    u = parse_sentinel_url("redis+sentinel://:hunter%402@a:26379,b:26380/main/1")
    assert u == ([("a", 26379), ("b", 26380)], "main", 1, None, "hunter@2")
    assert parse_sentinel_url("redis+sentinel://ops:pw@a:26379/main")[3:] == ("ops", "pw")
    assert parse_sentinel_url("redis+sentinel://ops@a:26379/main")[3:] == ("ops", None)  # as redis-py reads it
    store = RedisStore("redis+sentinel://ops:pw@a:26379/main", 0.05)
    kwargs = store.client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("ops", "pw")
    assert store.client.connection_pool.sentinel_manager.sentinel_kwargs["password"] == "pw"
    f = tmp_path / "c.yaml"
    for url, message in [
        ("redis+sentinel://a:26379/main?password=hunter2", "rateLimit.redis: a redis+sentinel:// URL takes no query"),
        ("redis+sentinel://:hunter2@a/main", "rateLimit.redis: 'a' is not host:port"),
        ("http://u:hunter2@a:6379/0", "rateLimit.redis: 'http://a:6379/0' is not a redis://"),
        # read as redis-py will: at the start, not at every request
        ("redis://:hunter2@a:abc/0", "rateLimit.redis: 'redis://a:***/0': Port could not be cast to integer"),
        ("redis://a:6379/0?socket_timeout=abc", "rateLimit.redis: 'redis://a:6379/0': Invalid value for 'socket_t"),
        ("redis://a:6379/notadb", "rateLimit.redis: 'redis://a:6379/notadb': the path 'notadb' is not a database"),
        # mistyped: the password is still not shown
        ("redis:/:hunter2@a:6379/0", "rateLimit.redis: 'a:6379/0' is not a redis://"),
        ("redis://default:hunter2/0", "rateLimit.redis: 'redis://default:***/0': Port could not be cast"),
        ("redis://:hunter2@[::1/0", "rateLimit.redis: 'redis://[::1/0': Invalid IPv6 URL"),
        (
            f"rediss://a:6379/0?ssl_ca_certs={tmp_path}/none.pem",
            f"rateLimit.redis: 'rediss://a:6379/0': ssl_ca_certs {tmp_path}/none.pem: no such file",
        ),
    ]:
        f.write_text(f"rateLimit:\n  redis: '{url}'\n  limits:\n  - by: [model]\n    tokens: 10\n")
        with pytest.raises(config.ConfigError) as e:
            config.load(str(f), environ={})
        assert str(e.value).startswith(message) and "hunter2" not in str(e.value)


def test_no_request_escapes_the_budget_by_its_body(tmp_path, redis):
    """A body larger than what is read (Envoy's BUFFERED_PARTIAL passes the rest) is decided on what was read,
    before the upstream is called; a request whose body never reaches llmtally is charged at its end."""
    import json

    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from test_serve import Sidecar, jwt_metadata, load, md_of, messages

    redis.command("FLUSHALL")
    s = Sidecar(tmp_path, extra=ENFORCE.format(url=redis.url) + "maxRequestBodyBytes: 64\n")
    try:
        body = json.dumps({"max_tokens": 200, "model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 500}]})
        msgs = messages(
            "/v1/chat/completions",
            b"",
            200,
            "application/json",
            [load("openai/chat.json")],
            md=jwt_metadata("ops", "mallory"),
        )
        msgs[1] = pb.ProcessingRequest(request_body=pb.HttpBody(body=body.encode(), end_of_stream=False))
        resps = s.process(msgs[:2], provider="openai")  # the rest of the body never comes through ext_proc
        assert resps[1].immediate_response.status.code == 429  # 200 reserved for output alone: > 150
        assert redis.keys() == {}
        # no request body at all (Envoy's request_body_mode NONE): charged when the stream ends
        no_body = [msgs[0], *msgs[2:]]
        resps = s.process(no_body, provider="openai")
        assert md_of(resps[-1])["ai.gateway.kgateway.dev"]["total_tokens"] == 43
        _settled(redis, 43)
    finally:
        s.stop()


def test_a_rediss_store_speaks_tls(tmp_path):
    """`rediss://` with the server's CA: the store works over TLS; a plaintext client is refused."""
    from certs import make_certs

    c = make_certs(tmp_path)
    r = RedisServer(tmp_path, tls=(c.server_cert, c.server_key, c.ca))
    try:

        async def go():
            b = Budgets([TEAM], RedisStore(r.url, 1.0))
            assert (await b.reserve({"team": "dev"}, 70)).decision.used == (70,)
            assert not (await b.reserve({"team": "dev"}, 31)).decision.allowed
            await b.store.close()
            plain = Budgets([TEAM], RedisStore(f"redis://127.0.0.1:{r.port}/0", 0.5))
            assert (await plain.reserve({"team": "dev"}, 1)).decision.store_failed
            await plain.store.close()

        run(go())
    finally:
        r.stop()


def test_a_usd_budget_is_reserved_and_settled_in_micro_dollars(tmp_path, redis):
    """A spend limit: the reservation is priced (the prompt estimate at the input price, the output limit at
    the output price), a request that does not fit gets 429, and the counter ends at the exact cost."""
    from test_serve import Sidecar, md_of

    redis.command("FLUSHALL")
    extra = (
        "pricing:\n  models:\n    gpt-3.5-turbo: {input: 500, output: 1500}\n"  # USD per million: dear, on purpose
        f"rateLimit:\n  enforce: true\n  redis: {redis.url}\n  limits:\n  - by: [team]\n    usd: 0.2\n    per: day\n"
    )
    body, msgs = _openai("ops")
    s = Sidecar(tmp_path, extra=extra)
    try:
        first = s.process(msgs, provider="openai")
        ai = md_of(first[-1])["ai.gateway.kgateway.dev"]
        assert ai["cost_microusd"] == 21 * 500 + 22 * 1500  # 43,500 micro-dollars
        _settled(redis, 43_500)
        for _ in range(2):  # each reserves 21 x 500 + 30 x 1500 = 55,500: 43,500 x 2 + 55,500 fits in 200,000
            assert not s.process(msgs, provider="openai")[1].HasField("immediate_response")
        _settled(redis, 130_500)
        refused = s.process(msgs, provider="openai")[1].immediate_response  # 130,500 + 55,500 = 186,000: fits
        assert not refused.HasField("status")
        _settled(redis, 174_000)
        refused = s.process(msgs, provider="openai")[1].immediate_response  # 174,000 + 55,500 > 200,000
        assert refused.status.code == 429
        assert b"the spend budget of team (0.200000 USD per 86400 s)" in refused.body
        assert b"(0.055500 USD)" in refused.body
        _settled(redis, 174_000)
    finally:
        s.stop()


def test_a_reservation_whose_answer_was_lost_is_undone(tmp_path):
    """The store ran the reservation after the client gave up on it (a stall past redisTimeoutMs): the
    background cancel undoes it, whichever of the two the store runs first; nothing stays charged."""
    r = RedisServer(tmp_path)
    try:

        async def go():
            b = Budgets([TEAM], RedisStore(r.url, 0.05))
            stall = asyncio.create_task(asyncio.to_thread(r.command, "DEBUG", "SLEEP", "0.4"))
            await asyncio.sleep(0.05)
            d = (await b.reserve({"team": "dev"}, 90)).decision
            assert d.store_failed and d.allowed  # failed open: not charged
            await stall
            await b.drain()  # the cancel, retried until the store answers
            await b.store.close()

        run(go())
        counters = {k: v for k, v in r.keys().items() if ":t:" in k}
        assert set(counters.values()) <= {0}, counters
    finally:
        r.stop()


def test_a_settle_after_the_store_restarted_touches_nothing(tmp_path):
    """Reservations made before Redis restarted empty are not settled against the new counters (which would
    go negative and give a team free tokens)."""
    r = RedisServer(tmp_path)
    try:

        async def go():
            b = Budgets([TEAM], RedisStore(r.url, 1.0))
            old = await b.reserve({"team": "dev"}, 90)
            r.stop()
            r.start()
            with contextlib.suppress(StoreError):  # the first call after a restart meets a dead connection
                await b.store.values(b.counters({"team": "dev"}, 0))
            new = await b.reserve({"team": "dev"}, 90)
            assert new.decision.allowed and not new.decision.store_failed
            b.settle(old, 10)  # its reservation is gone with the old counters
            b.settle(new, 10)
            await b.drain()
            await b.store.close()

        run(go())
        assert [v for k, v in r.keys().items() if ":t:" in k] == [10]
    finally:
        r.stop()


def test_the_memory_store_stays_within_its_key_cap():
    store = MemoryStore(clock=lambda: T0, max_keys=10)
    b = Budgets([Limit(("model",), tokens=1000, window=60)], store, clock=lambda: T0)

    async def go():
        reservations = [await b.reserve({"model": f"made-up-{i}"}, 5) for i in range(300)]
        assert len(store.counts) == 11  # the cap, and one shared counter for the rest
        # past the cap the 290 share one budget of 1000: 200 reservations of 5 fit
        assert sum(r.decision.allowed for r in reservations) == 10 + 200
        for res in reservations:
            b.settle(res, 1)
        await b.drain()

    run(go())
    overflow = [v for k, (v, _) in store.counts.items() if "#overflow" in k]
    assert overflow == [200]  # each settled from 5 to 1, on the shared counter


def test_calls_charged_nothing_leave_no_counters_in_the_memory_store():
    """Failing calls under a per-model limit (made-up names, a 404 each: charged 0) filled the 100,000 keys,
    and every team's new window then shared the overflow counter (one team's use denied another). Counters
    settled back to 0 are dropped when the cap is reached (at most once a second, with the expired ones); one
    that was charged stays."""
    now = [T0]
    store = MemoryStore(clock=lambda: now[0], max_keys=10)
    b = Budgets([Limit(("team", "model"), tokens=1000, window=60)], store, clock=lambda: now[0])

    async def go():
        for i in range(300):
            now[0] = T0 + i * 0.01  # 100 a second: the cap is purged of the zeros once a second
            res = await b.reserve({"team": "mallory", "model": f"made-up-{i}"}, 5)
            assert res.decision.allowed
            b.settle(res, 0)
            await b.drain()
        assert all(v == 0 for v, _ in store.counts.values())
        now[0] += 1.0
        alice = await b.reserve({"team": "alice", "model": "gpt-4o"}, 900)
        b.settle(alice, 900)
        await b.drain()
        bob = await b.reserve({"team": "bob", "model": "gpt-4o"}, 900)
        assert bob.decision.allowed  # Bob's own counter, not one shared with Alice's 900
        b.settle(bob, 900)
        await b.drain()
        assert sorted(v for v, _ in store.counts.values() if v) == [900, 900]
        assert not any("#overflow" in k for k in store.counts)

    run(go())


def _enforcing(tmp_path, redis, extra=""):
    from test_serve import Sidecar

    redis.command("FLUSHALL")
    return Sidecar(tmp_path, extra=ENFORCE.format(url=redis.url) + extra)


def test_a_partial_body_is_decided_at_once_and_a_bodyless_request_reserves_nothing(tmp_path, redis):
    """Envoy's BUFFERED_PARTIAL sends one message of a body larger than its buffer (end_of_stream false) and
    forwards the rest unread: the reservation is made on it, not skipped. A GET reserves nothing."""
    import json

    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from test_serve import jwt_metadata, load, messages

    s = _enforcing(tmp_path, redis)
    try:
        body = json.dumps({"model": "gpt-4o", "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]})
        msgs = messages(
            "/v1/chat/completions",
            b"",
            200,
            "application/json",
            [load("openai/chat.json")],
            md=jwt_metadata("ops", "x"),
        )
        msgs[1] = pb.ProcessingRequest(request_body=pb.HttpBody(body=body.encode(), end_of_stream=False))
        assert s.process(msgs[:2], provider="openai")[1].immediate_response.status.code == 429
        get = messages("/v1/models", b"", 200, "application/json", [b'{"data":[]}'], md=jwt_metadata("ops", "x"))
        get[0].request_headers.end_of_stream = True
        del get[1]
        resps = s.process(get, provider="openai")
        assert not any(r.HasField("immediate_response") for r in resps)
        assert redis.keys() == {}
    finally:
        s.stop()


def test_a_model_field_added_to_the_body_cannot_pick_another_budget(tmp_path, redis):
    """Azure serves the deployment the path names: a team x model budget is by that, not by a body field."""
    import json

    from test_serve import jwt_metadata, load, messages

    extra = "  - by: [team, model]\n    tokens: 100\n    per: day\n"
    s = _enforcing(tmp_path, redis, extra=extra.replace("  - ", "  - ", 1))
    try:
        path = "/openai/deployments/prod-chat/chat/completions?api-version=2024-10-21"
        decisions = []
        for i in range(3):
            body = json.dumps({"model": f"x{i}", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]})
            msgs = messages(
                path, body.encode(), 200, "application/json", [load("openai/chat.json")], md=jwt_metadata("dev", "x")
            )
            decisions.append(s.process(msgs, provider="azure")[1].HasField("immediate_response"))
        assert decisions == [False, False, True]  # one budget: prod-chat's (43 + 43 + ~50 > 100)
        assert any(",prod-chat:" in k for k in redis.keys())
    finally:
        s.stop()


def test_spend_is_charged_when_only_the_provider_names_a_priced_model_and_released_when_a_call_fails(tmp_path, redis):
    """The request names an unpriced model (an alias, an Azure deployment), the provider answers as a priced
    one: the call's spend reaches the budget at its end. A call that fails with no usage spends nothing."""
    import json

    from test_serve import Sidecar, jwt_metadata, load, messages

    redis.command("FLUSHALL")
    extra = (
        "pricing:\n  models:\n    gpt-3.5-turbo: {input: 500, output: 1500}\n"
        f"rateLimit:\n  enforce: true\n  redis: {redis.url}\n  limits:\n  - by: [team]\n    usd: 0.1\n    per: day\n"
    )
    body = json.dumps({"model": "my-alias", "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]})
    ok = messages(
        "/v1/chat/completions",
        body.encode(),
        200,
        "application/json",
        [load("openai/chat.json")],
        md=jwt_metadata("ops", "x"),
    )
    err = b'{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}'
    failed = messages(
        "/v1/chat/completions", body.encode(), 503, "application/json", [err], md=jwt_metadata("ops", "x")
    )
    s = Sidecar(tmp_path, extra=extra)
    try:
        s.process(failed, provider="openai")
        assert redis.keys() == {}  # nothing reserved for an unpriced name, nothing charged for a failure
        s.process(ok, provider="openai")  # answered as gpt-3.5-turbo-0125: 21 x 500 + 22 x 1500
        _settled(redis, 43_500)
        s.process(ok, provider="openai")
        _settled(redis, 87_000)
        s.process(ok, provider="openai")  # admitted: the name has no price to reserve; charged at the end
        _settled(redis, 130_500)
    finally:
        s.stop()
