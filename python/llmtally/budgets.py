"""Token and request budgets shared by any number of `llmtally serve` processes and Envoys.

A `Limit` is what an operator writes: per a combination of forwarded keys (custom label names such as `team`,
and `model`, `llm`), so many tokens and/or requests per window. The counters live in a `Store`: `MemoryStore`
in one process, or `RedisStore`, where every operation is one server-side script, so replicas never lose an
update. Two ways to use them:

- reservation (`enforce: true`): when the request body is read, llmtally knows the caller, the model and the
  prompt estimate; it reserves the estimate plus the requested output limit on every matching limit at once
  (all or none), answers 429 itself when that does not fit, and at the end of the stream replaces the
  reservation by what the request was charged (`Budgets.reserve`, `Budgets.settle`);
- Envoy's rate-limit filter (`ratelimit.RateLimitService`): the two-phase check-then-charge on descriptors,
  on the same store (`Budgets.hit`).

Counters are fixed windows aligned to the wall clock (shared by every replica): a key holds the window's
charged total and expires with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from .throttle import OncePerMinute

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("llmtally.budgets")

#: window lengths by name (and the seconds accepted as `windowSeconds`)
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
#: budget keys a limit may be by, besides the custom labels
BUILTIN_KEYS = ("model", "llm")
#: a key value longer than this is stored by its hash (values come from clients: JWT claims, model names)
VALUE_MAX = 64
#: the in-memory store keeps at most this many counters; past it, new keys share one counter per limit
MEMORY_KEYS_MAX = 100_000


@dataclass(frozen=True)
class Limit:
    #: the budget keys, in the order written (e.g. ("team",) or ("team", "model"))
    by: tuple[str, ...]
    #: tokens per window (None: not limited in tokens)
    tokens: int | None = None
    #: requests per window (None: not limited in requests)
    requests: int | None = None
    #: window length in seconds: 1, 60, 3600 or 86400
    window: int = 60
    #: only requests with these values (key, value); empty: every value has its own budget
    match: tuple[tuple[str, str], ...] = ()
    #: spend per window in micro-dollars (by the price table; None: not limited in spend)
    microusd: int | None = None

    @property
    def name(self) -> str:
        """How metrics and logs name it: `team`, `team,model`, `team=ops`."""
        fixed = dict(self.match)
        return ",".join(f"{k}={fixed[k]}" if k in fixed else k for k in self.by)

    def applies(self, values: Mapping[str, str]) -> bool:
        return all(k in values for k in self.by) and all(values.get(k) == v for k, v in self.match)


@dataclass(frozen=True)
class Counter:
    """One counter a request touches: a store key, its limit, and what the request adds to it."""

    limit: Limit
    kind: str  # "tokens", "requests" or "microusd"
    key: str
    cap: int
    amount: int
    #: seconds the key lives (past its window's end, so a late settle still finds it)
    ttl: int
    #: when the window ends (wall clock)
    reset_at: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    counters: tuple[Counter, ...]
    #: each counter's value after the operation (or at the refusal, for the one that did not fit)
    used: tuple[int, ...]
    #: the counter that did not fit
    denied: Counter | None = None
    #: the store failed: allowed or denied by `failureMode`
    store_failed: bool = False


class StoreError(Exception):
    """The budget store did not answer in time or failed."""


class Store(Protocol):
    """Counters, and a record per reservation (by its id): `applied`, then gone once settled, or `cancelled`.
    The record makes a reservation whose answer was lost (a timeout) undoable, and keeps a settle from
    touching counters that are not the ones it reserved on (a store that restarted empty)."""

    async def reserve(self, counters: Sequence[Counter], rid: str) -> tuple[bool, int, list[int]]:
        """Add every counter's amount if each fits (value + amount <= cap; with amount 0: value < cap), else
        none: (all fitted, 1-based index of the first that did not (0), values). A reservation already
        cancelled (its cancel overtook it) adds nothing: (False, -1, [])."""
        ...

    async def adjust(self, items: Sequence[tuple[str, int]], rid: str) -> None:
        """Settle: add each delta to its key if the reservation is still applied, and forget it."""
        ...

    async def cancel(self, counters: Sequence[Counter], rid: str) -> None:
        """Undo a reservation whose answer was lost, if it was applied; either way it cannot apply later."""
        ...

    async def hit(self, counters: Sequence[Counter]) -> list[int]:
        """Add every counter's amount unconditionally; returns the values (the rate-limit filter's phase 2,
        a charge without reservation)."""
        ...

    async def values(self, counters: Sequence[Counter]) -> list[int]:
        """The counters' values, changing nothing (the rate-limit filter's phase 1)."""
        ...

    async def close(self) -> None: ...


def _fits(value: int, c: Counter) -> bool:
    return value < c.cap if c.amount == 0 else value + c.amount <= c.cap


def _overflow(key: str) -> str:
    """The shared counter of a limit, kind and window for the keys past the in-memory cap."""
    parts = key.split(":")  # llmtally:{domain}:limit:window:values:kind:start (values have no ':')
    return ":".join([*parts[:4], "#overflow", *parts[5:]])


class MemoryStore:
    """Counters in this process (one sidecar): a restart forgets them. At most `max_keys` counters: past it,
    a new key is counted on its limit's shared overflow counter for that kind and window."""

    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = MEMORY_KEYS_MAX):
        self.clock = clock
        self.max_keys = max_keys
        self.counts: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)
        self.records: dict[str, float] = {}  # applied reservations -> expires at
        self.purged = 0.0
        self.lock = threading.Lock()

    def _get(self, key: str, now: float) -> int:
        v = self.counts.get(key)
        if v is None or v[1] <= now:
            return 0
        return v[0]

    def _key(self, key: str, now: float) -> str:
        if key in self.counts or len(self.counts) < self.max_keys:
            return key
        if now - self.purged >= 1.0:  # drop the expired ones, at most once a second
            self.purged = now
            # and those back at 0 (failed calls are charged nothing: calls to made-up model names answered 404
            # must not fill the cap and fold every team's new windows into the shared overflow counter)
            self.counts = {k: v for k, v in self.counts.items() if v[1] > now and v[0] != 0}
            self.records = {k: t for k, t in self.records.items() if t > now}
            if len(self.counts) < self.max_keys:
                return key
        return _overflow(key)

    def _add(self, key: str, amount: int, ttl: int, now: float) -> int:
        value = self._get(key, now) + amount
        old = self.counts.get(key)
        expires = old[1] if old is not None and old[1] > now else now + ttl  # a window's key never outlives it
        self.counts[key] = (value, expires)
        return value

    async def reserve(self, counters: Sequence[Counter], rid: str) -> tuple[bool, int, list[int]]:
        with self.lock:
            now = self.clock()
            keys = [self._key(c.key, now) for c in counters]
            current = [self._get(k, now) for k in keys]
            for i, (c, v) in enumerate(zip(counters, current, strict=True)):
                if not _fits(v, c):
                    return False, i + 1, current
            self.records[rid] = now + max(c.ttl for c in counters)
            return True, 0, [self._add(k, c.amount, c.ttl, now) for k, c in zip(keys, counters, strict=True)]

    async def adjust(self, items: Sequence[tuple[str, int]], rid: str) -> None:
        with self.lock:
            now = self.clock()
            if self.records.pop(rid, 0.0) <= now:
                return
            for key, delta in items:
                key = key if key in self.counts else _overflow(key)
                v = self.counts.get(key)
                if v is not None and v[1] > now:
                    self.counts[key] = (v[0] + delta, v[1])

    async def cancel(self, counters: Sequence[Counter], rid: str) -> None:
        await self.adjust([(c.key, -c.amount) for c in counters], rid)

    async def hit(self, counters: Sequence[Counter]) -> list[int]:
        with self.lock:
            now = self.clock()
            return [self._add(self._key(c.key, now), c.amount, c.ttl, now) for c in counters]

    async def values(self, counters: Sequence[Counter]) -> list[int]:
        with self.lock:
            now = self.clock()
            return [self._get(self._key(c.key, now), now) for c in counters]

    async def close(self) -> None:
        pass


# Server-side scripts: each runs atomically, so any number of replicas share the counters without lost updates.
# KEYS: the counters, then the reservation's record; ARGV: per counter (cap, amount, ttl), then the record's ttl.
_RESERVE = """
local n = #KEYS - 1
if redis.call('EXISTS', KEYS[n + 1]) == 1 then return {2, 0} end
local values = {}
for i = 1, n do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  local cap, amount = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  values[i] = v
  if (amount == 0 and v >= cap) or (amount > 0 and v + amount > cap) then
    return {0, i, unpack(values)}
  end
end
for i = 1, n do
  values[i] = redis.call('INCRBY', KEYS[i], tonumber(ARGV[3 * i - 1]))
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 * i])) end
end
redis.call('SET', KEYS[n + 1], 'applied', 'EX', tonumber(ARGV[3 * n + 1]))
return {1, 0, unpack(values)}
"""
# KEYS: counters, then the record; ARGV: one delta per counter. Only an applied reservation is settled.
_ADJUST = """
local n = #KEYS - 1
if redis.call('GET', KEYS[n + 1]) ~= 'applied' then return 0 end
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], tonumber(ARGV[i])) end
end
redis.call('DEL', KEYS[n + 1])
return 1
"""
# KEYS: counters, then the record; ARGV: one amount per counter, then the record's ttl.
_CANCEL = """
local n = #KEYS - 1
if redis.call('GET', KEYS[n + 1]) == 'applied' then
  for i = 1, n do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECRBY', KEYS[i], tonumber(ARGV[i])) end
  end
end
redis.call('SET', KEYS[n + 1], 'cancelled', 'EX', tonumber(ARGV[n + 1]))
return 1
"""
# KEYS: the counters; ARGV: per counter (cap, amount, ttl).
_HIT = """
local values = {}
for i = 1, #KEYS do
  values[i] = redis.call('INCRBY', KEYS[i], tonumber(ARGV[3 * i - 1]))
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 * i])) end
end
return values
"""


#: `redis+sentinel://[user[:password]@ or :password@]host:26379,host2:26379/service[/db]`: the master Redis
#: Sentinel names `service`; the user and password (URL-encoded) are the master's and the sentinels'
SENTINEL_SCHEME = "redis+sentinel://"


class SentinelURL(NamedTuple):
    hosts: list[tuple[str, int]]
    service: str
    db: int
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelURL:
    """The parts of a `redis+sentinel://` URL; ValueError names what is wrong (never the password)."""
    from urllib.parse import unquote

    rest = url[len(SENTINEL_SCHEME) :]
    if "?" in rest or "#" in rest:
        raise ValueError("a redis+sentinel:// URL takes no query or fragment: redis+sentinel://host:26379/mymaster")
    hosts_part, _, path = rest.partition("/")
    username = password = None
    if "@" in hosts_part:
        userinfo, _, hosts_part = hosts_part.rpartition("@")
        user, sep, pw = userinfo.partition(":")  # as redis-py reads redis://user@host and redis://:pw@host
        username, password = unquote(user) or None, unquote(pw) if sep else None
    service, _, db = path.partition("/")
    hosts = []
    for h in hosts_part.split(","):
        host, sep, port = h.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{h!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    if not service:
        raise ValueError("the service (master) name is missing: redis+sentinel://host:26379/mymaster")
    if db and not db.isdigit():
        raise ValueError(f"{db!r} is not a database number")
    return SentinelURL(hosts, service, int(db or 0), username, password)


class RedisStore:
    """Counters in Redis (`redis://`, `rediss://`, `unix://`, `redis+sentinel://`; `cluster` for Redis
    Cluster), shared by every replica. Each call is bounded by `timeout` seconds; a failure raises
    StoreError (the caller applies `failureMode`), and the client reconnects on the next call, so
    recovery needs no restart."""

    def __init__(self, url: str, timeout: float, cluster: bool = False):
        import redis.asyncio as redis

        self.timeout = timeout
        client: redis.Redis | redis.RedisCluster
        if url.startswith(SENTINEL_SCHEME):
            from redis.asyncio.sentinel import Sentinel

            u = parse_sentinel_url(url)
            auth = {"username": u.username, "password": u.password} if u.username or u.password else {}
            # called through Any: redis-py annotates Sentinel's constructor from 8.2 on, not before
            sentinel = cast(Any, Sentinel)(
                u.hosts, sentinel_kwargs=auth or None, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            client = sentinel.master_for(
                u.service, db=u.db, socket_timeout=timeout, socket_connect_timeout=timeout, **auth
            )
        elif cluster:
            client = redis.RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        else:
            client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._hit = client.register_script(_HIT)
        self._adjust = client.register_script(_ADJUST)
        self._cancel = client.register_script(_CANCEL)

    async def _call_raw(self, coro: object) -> object:
        try:
            return await asyncio.wait_for(coro, self.timeout)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception as e:  # every redis, socket and timeout error: the store failed
            raise StoreError(f"{type(e).__name__}: {e}") from None

    async def _call(self, coro: object) -> list[int]:
        result = await self._call_raw(coro)
        return [int(x) for x in result] if isinstance(result, list) else []

    @staticmethod
    def _args(counters: Sequence[Counter]) -> list[int]:
        return [x for c in counters for x in (c.cap, c.amount, c.ttl)]

    @staticmethod
    def _record(counters: Sequence[Counter], rid: str) -> str:
        return counters[0].key.split(":", 2)[0] + ":" + counters[0].key.split(":", 2)[1] + f":res:{rid}"

    async def reserve(self, counters: Sequence[Counter], rid: str) -> tuple[bool, int, list[int]]:
        keys = [c.key for c in counters] + [self._record(counters, rid)]
        r = await self._call(self._reserve(keys=keys, args=[*self._args(counters), max(c.ttl for c in counters)]))
        if r[0] == 2:
            return False, -1, []
        return bool(r[0]), r[1], r[2:]

    async def adjust(self, items: Sequence[tuple[str, int]], rid: str) -> None:
        record = items[0][0].split(":", 2)[0] + ":" + items[0][0].split(":", 2)[1] + f":res:{rid}"
        await self._call(self._adjust(keys=[k for k, _ in items] + [record], args=[d for _, d in items]))

    async def cancel(self, counters: Sequence[Counter], rid: str) -> None:
        keys = [c.key for c in counters] + [self._record(counters, rid)]
        await self._call(self._cancel(keys=keys, args=[*(c.amount for c in counters), max(c.ttl for c in counters)]))

    async def hit(self, counters: Sequence[Counter]) -> list[int]:
        return await self._call(self._hit(keys=[c.key for c in counters], args=self._args(counters)))

    async def values(self, counters: Sequence[Counter]) -> list[int]:
        got = await self._call_raw(self.client.mget([c.key for c in counters]))
        return [int(v) if v is not None else 0 for v in got] if isinstance(got, list) else [0] * len(counters)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:
            log.debug("closing the Redis client", exc_info=True)


def _value(v: str) -> str:
    """A key value as stored: short printable values as they are, others by their hash (bounded keys)."""
    if len(v) <= VALUE_MAX and v.isprintable() and not any(ch in v for ch in ":{},#"):
        return v
    return "#" + hashlib.sha256(v.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class Reservation:
    """What a request reserved: settled once, at the end of its stream."""

    decision: Decision
    tokens: int  # reserved on each token counter
    settled: bool = False
    microusd: int = 0  # reserved on each spend counter
    rid: str = ""  # the store's record of it


class Budgets:
    """The limits, their store, and the failure policy; what `exchange` and `ratelimit` call."""

    def __init__(
        self,
        limits: Sequence[Limit],
        store: Store,
        *,
        domain: str = "llmtally",
        fail_open: bool = True,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.limits = tuple(limits)
        self.store = store
        self.domain = domain
        self.fail_open = fail_open
        self.metrics = metrics
        self.clock = clock
        self.quiet = OncePerMinute()  # the store's failures: one line a minute
        self.tasks: set[asyncio.Task[None]] = set()  # settles in flight

    # -- counters --

    def _counters(
        self, lim: Limit, values: Mapping[str, str], tokens: int, requests: bool = True, microusd: int | None = 0
    ) -> list[Counter]:
        now = self.clock()
        start = int(now // lim.window) * lim.window
        # named by the limit, not its position: reordering the configuration keeps the budgets; one hash tag
        # for every key, as a script's keys must share a Redis Cluster slot
        base = f"llmtally:{{{self.domain}}}:{_value(lim.name)}:{lim.window}:" + ",".join(
            _value(values[k]) for k in lim.by
        )
        ttl, reset_at = lim.window + 60, float(start + lim.window)
        out = []
        if lim.tokens is not None:
            out.append(Counter(lim, "tokens", f"{base}:t:{start}", lim.tokens, tokens, ttl, reset_at))
        if lim.requests is not None and requests:
            out.append(Counter(lim, "requests", f"{base}:r:{start}", lim.requests, 1, ttl, reset_at))
        if lim.microusd is not None and microusd is not None:  # None: the model has no price
            out.append(Counter(lim, "microusd", f"{base}:u:{start}", lim.microusd, microusd, ttl, reset_at))
        return out

    def counters(self, values: Mapping[str, str], tokens: int, microusd: int | None = 0) -> list[Counter]:
        """The counters a request with these key values touches, adding `tokens`, one request and `microusd`
        (None: unpriced, so the spend limits do not hold it)."""
        return [
            c
            for lim in self.limits
            if lim.applies(values)
            for c in self._counters(lim, values, tokens, microusd=microusd)
        ]

    def descriptor_counters(self, entries: Mapping[str, str], tokens: int) -> list[Counter]:
        """The token counters of a rate-limit descriptor: the limits by exactly its keys that match its values."""
        keys = set(entries)
        return [
            c
            for lim in self.limits
            if set(lim.by) == keys and lim.applies(entries)
            for c in self._counters(lim, entries, tokens, requests=False, microusd=None)
        ]

    # -- the reservation --

    async def reserve(self, values: Mapping[str, str], tokens: int, microusd: int | None = 0) -> Reservation | None:
        """Reserve `tokens`, one request and `microusd` on every limit that applies, all or none; None: no
        limit applies. A reservation whose answer is lost (a timeout, the caller gone) is cancelled in the
        background, so that a script the store ran after all does not charge it."""
        counters = self.counters(values, tokens, microusd)
        if not counters:
            return None
        rid = secrets.token_hex(12)
        t = time.monotonic()
        try:
            ok, failed, used = await self.store.reserve(counters, rid)
        except StoreError as e:
            self._store_failed("reserve", e)
            self._background(self._undo(counters, rid))
            d = Decision(self.fail_open, tuple(counters), (), store_failed=True)
            self._decided(d)
            return Reservation(d, 0, settled=True)  # nothing is reserved (or it is being undone)
        except asyncio.CancelledError:
            self._background(self._undo(counters, rid))
            raise
        self._observe("reserve", t)
        d = Decision(ok, tuple(counters), tuple(used), None if ok else counters[failed - 1])
        self._decided(d)
        return Reservation(d, tokens, settled=not ok, microusd=microusd or 0, rid=rid)

    async def _undo(self, counters: list[Counter], rid: str) -> None:
        """Cancel a reservation whose answer was lost, retrying while the store is away (a few seconds)."""
        for delay in (0.0, 0.2, 1.0, 3.0, 10.0):
            await asyncio.sleep(delay)
            try:
                await self.store.cancel(counters, rid)
                return
            except StoreError:
                continue
        log.debug("could not cancel reservation %s", rid)

    def _background(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def settle(self, r: Reservation, charged: int, charged_microusd: int = 0) -> None:
        """Replace the reservation by what was charged (tokens and micro-dollars), in the background (the
        stream has ended)."""
        if r.settled:
            return
        r.settled = True
        delta = {"tokens": charged - r.tokens, "microusd": charged_microusd - r.microusd}
        items = [(c.key, delta[c.kind]) for c in r.decision.counters if delta.get(c.kind)]
        if not items:
            return
        self._background(self._adjust(items, r.rid))

    def charge(
        self, values: Mapping[str, str], charged: int, charged_microusd: int | None = 0, spend_only: bool = False
    ) -> None:
        """Add what a request that had no reservation was charged (and the request), in the background;
        `spend_only`: its spend alone (the rest was reserved and settled)."""
        counters = self.counters(values, charged, charged_microusd)
        if spend_only:
            counters = [c for c in counters if c.kind == "microusd"]
        if not counters:
            return
        self._background(self._hit(counters))

    async def _hit(self, counters: list[Counter]) -> None:
        t = time.monotonic()
        try:
            await self.store.hit(counters)
        except StoreError as e:
            self._store_failed("charge", e)
            return
        self._observe("charge", t)

    async def _adjust(self, items: list[tuple[str, int]], rid: str) -> None:
        t = time.monotonic()
        try:
            await self.store.adjust(items, rid)
        except StoreError as e:
            self._store_failed("settle", e)
            return
        self._observe("settle", t)

    async def drain(self) -> None:
        """Wait for the settles in flight (at shutdown)."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- Envoy's rate-limit filter --

    async def hit(self, counters: Sequence[Counter]) -> list[tuple[bool, int]] | None:
        """Phase 1 (amount 0): is each budget spent? Phase 2: charge. Returns per counter (over, remaining);
        None: the store failed (the caller answers by `failureMode`)."""
        t = time.monotonic()
        try:
            if all(c.amount == 0 for c in counters):
                used = await self.store.values(counters)
                over = [not _fits(v, c) for c, v in zip(counters, used, strict=True)]
            else:
                used = await self.store.hit(counters)
                over = [v > c.cap for c, v in zip(counters, used, strict=True)]
        except StoreError as e:
            self._store_failed("hit", e)
            return None
        self._observe("hit", t)
        return [(o, max(c.cap - v, 0)) for o, c, v in zip(over, counters, used, strict=True)]

    # -- what is counted and logged --

    def _decided(self, d: Decision) -> None:
        if self.metrics is None:
            return
        outcome = (
            ("store_failed_allowed" if d.allowed else "store_failed_denied")
            if d.store_failed
            else ("allowed" if d.allowed else "denied")
        )
        names = {d.denied.limit.name} if d.denied is not None else {c.limit.name for c in d.counters}
        for name in names:
            self.metrics.record_budget(name, outcome)

    def _observe(self, op: str, t: float) -> None:
        if self.metrics is not None:
            self.metrics.record_store_latency(op, time.monotonic() - t)

    def _store_failed(self, op: str, e: StoreError) -> None:
        if self.metrics is not None:
            self.metrics.record_store_error(op)
        if self.quiet.due():
            log.warning(
                "the budget store failed (%s: %s); requests are %s until it answers again "
                "(ai_budget_store_errors_total, logged once a minute)",
                op,
                e,
                "allowed" if self.fail_open else "refused",
            )


# -- what the client sees --


def duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    s = int(-(-seconds // 1))  # whole seconds, rounded up
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    return f"{m}m{s}s" if m else f"{s}s"


def rate_limit_headers(d: Decision, now: float) -> list[tuple[str, str]]:
    """`x-ratelimit-{limit,remaining,reset}-{tokens,requests}` of the tightest counter of each kind."""
    out: list[tuple[str, str]] = []
    for kind in ("requests", "tokens"):
        pairs = [(c, v) for c, v in zip(d.counters, d.used, strict=False) if c.kind == kind]
        if not pairs:
            continue
        c, v = min(pairs, key=lambda p: p[0].cap - p[1])
        out += [
            (f"x-ratelimit-limit-{kind}", str(c.cap)),
            (f"x-ratelimit-remaining-{kind}", str(max(c.cap - v, 0))),
            (f"x-ratelimit-reset-{kind}", duration(c.reset_at - now)),
        ]
    return out


def refusal(provider: str, status: int, message: str, kind: str = "tokens") -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of an error in the provider's own shape, so its SDKs raise their usual error
    (a RateLimitError for 429)."""
    import json

    rate = status == 429
    headers = [("content-type", "application/json")]
    doc: object
    if provider == "anthropic":
        kind = "rate_limit_error" if rate else "api_error"
        doc = {"type": "error", "error": {"type": kind, "message": message}}
    elif provider in ("gemini", "vertex-ai"):
        doc = {"error": {"code": status, "message": message, "status": "RESOURCE_EXHAUSTED" if rate else "UNAVAILABLE"}}
    elif provider == "bedrock":
        doc = {"message": message}
        headers.append(("x-amzn-errortype", "ThrottlingException" if rate else "ServiceUnavailableException"))
    elif provider == "ollama":
        doc = {"error": message}
    elif provider == "cohere":
        doc = {"message": message}
    else:  # OpenAI and the compatible APIs (Azure, Mistral, vLLM...)
        code = "rate_limit_exceeded" if rate else "service_unavailable"
        kind = {"microusd": "spend"}.get(kind, kind)  # OpenAI's types are tokens and requests
        doc = {"error": {"message": message, "type": kind if rate else "server_error", "param": None, "code": code}}
    return json.dumps(doc, separators=(",", ":")).encode(), headers
