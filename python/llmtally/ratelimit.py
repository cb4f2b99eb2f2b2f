"""A token-budget rate-limit service (`envoy.service.ratelimit.v3.RateLimitService`)
for Envoy's global `ratelimit` filter, served by `llmtally serve` when
`rateLimit` is configured. Budgets live in memory, per sidecar process, in
fixed windows; for several Envoys or replicas use envoyproxy/ratelimit with
Redis and the same descriptors.

Envoy evaluates `ratelimit` on the request headers, before any body is read,
so the charge is made in two phases (see docs/envoy.md, "Token rate limiting"):
- before: a descriptor with `hits_addend` 0 only checks whether the budget
  is already spent (OVER_LIMIT: Envoy answers 429);
- after: `apply_on_stream_done` sends the same descriptor with the request's
  actual tokens (`%DYNAMIC_METADATA(envoy.ratelimit:hits_addend)%`), which
  are added to the window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("llmtally.ratelimit")

UNITS = {
    1: rls_pb2.RateLimitResponse.RateLimit.SECOND,
    60: rls_pb2.RateLimitResponse.RateLimit.MINUTE,
    3600: rls_pb2.RateLimitResponse.RateLimit.HOUR,
    86400: rls_pb2.RateLimitResponse.RateLimit.DAY,
}


@dataclass(frozen=True)
class TokenLimit:
    #: the descriptor entry key it applies to (e.g. `team`)
    descriptor_key: str
    #: tokens per window
    tokens: int
    #: only this entry value; None: every value has its own budget
    value: str | None = None


class DescriptorEntry(Protocol):
    """One entry of a rate-limit descriptor (`envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry`)."""

    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...


class Budgets:
    """Fixed-window token counters per (descriptor key, value); the number of
    windows kept is capped like label values, so hostile values cannot grow it."""

    def __init__(
        self,
        limits: tuple[TokenLimit, ...],
        window_seconds: int,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limits = limits
        self.window = window_seconds
        self.max_keys = max_keys
        self.clock = clock
        self.used: dict[tuple[str, str], int] = {}
        self.epoch = -1
        self.lock = threading.Lock()

    def limit_for(self, entries: Iterable[DescriptorEntry]) -> tuple[TokenLimit, str] | None:
        for lim in self.limits:
            for e in entries:
                if e.key == lim.descriptor_key and (lim.value is None or e.value == lim.value):
                    return lim, e.value
        return None

    def apply(self, key: tuple[str, str], limit: int, addend: int) -> tuple[bool, int]:
        """Add `addend` tokens; returns (over the limit, tokens remaining)."""
        with self.lock:
            epoch = int(self.clock() // self.window)
            if epoch != self.epoch:
                self.epoch, self.used = epoch, {}
            used = self.used.get(key, 0)
            if key not in self.used and len(self.used) >= self.max_keys:
                key = ("", "overflow")  # one shared budget for the excess keys
                used = self.used.get(key, 0)
            over = used >= limit if addend == 0 else used + addend > limit
            self.used[key] = used = used + addend
            return over, max(limit - used, 0)


# xds-protos has no type stubs: the generated servicer base class is Any
class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, domain: str, budgets: Budgets):
        self.domain = domain
        self.budgets = budgets

    async def ShouldRateLimit(
        self,
        request: rls_pb2.RateLimitRequest,
        context: grpc.aio.ServicerContext[rls_pb2.RateLimitRequest, rls_pb2.RateLimitResponse],
    ) -> rls_pb2.RateLimitResponse:
        resp = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        unit = UNITS.get(self.budgets.window, rls_pb2.RateLimitResponse.RateLimit.UNKNOWN)
        for d in request.descriptors:
            status = resp.statuses.add(code=rls_pb2.RateLimitResponse.OK)
            found = self.budgets.limit_for(d.entries) if request.domain == self.domain else None
            if found is None:
                continue
            lim, value = found
            addend = d.hits_addend.value if d.HasField("hits_addend") else (request.hits_addend or 1)
            over, remaining = self.budgets.apply((lim.descriptor_key, value), lim.tokens, addend)
            log.debug(
                "rate limit %s=%s: +%d, over=%s, remaining=%d", lim.descriptor_key, value, addend, over, remaining
            )
            status.current_limit.requests_per_unit = lim.tokens
            status.current_limit.unit = unit
            status.limit_remaining = remaining
            if over:
                status.code = rls_pb2.RateLimitResponse.OVER_LIMIT
                resp.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
        return resp
