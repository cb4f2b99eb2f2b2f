"""A token-budget rate-limit service (`envoy.service.ratelimit.v3.RateLimitService`)
for Envoy's global `ratelimit` filter, served by `llmtally serve` when
`rateLimit` is configured, on the budgets of `budgets.py` (in memory, or in
Redis shared by every replica).

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
from typing import TYPE_CHECKING

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from .budgets import Budgets

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("llmtally.ratelimit")

UNITS = {
    1: rls_pb2.RateLimitResponse.RateLimit.SECOND,
    60: rls_pb2.RateLimitResponse.RateLimit.MINUTE,
    3600: rls_pb2.RateLimitResponse.RateLimit.HOUR,
    86400: rls_pb2.RateLimitResponse.RateLimit.DAY,
}


# xds-protos has no type stubs: the generated servicer base class is Any
class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """Envoy's rate-limit filter on llmtally's budgets: a descriptor's entries (key, value) name the limits
    by exactly those keys; `hits_addend` 0 checks, a positive one charges (the tokens were spent)."""

    def __init__(self, budgets: Budgets):
        self.budgets = budgets

    async def ShouldRateLimit(
        self,
        request: rls_pb2.RateLimitRequest,
        context: grpc.aio.ServicerContext[rls_pb2.RateLimitRequest, rls_pb2.RateLimitResponse],
    ) -> rls_pb2.RateLimitResponse:
        resp = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        for d in request.descriptors:
            status = resp.statuses.add(code=rls_pb2.RateLimitResponse.OK)
            if request.domain != self.budgets.domain:
                continue
            entries = {e.key: e.value for e in d.entries}
            addend = d.hits_addend.value if d.HasField("hits_addend") else (request.hits_addend or 1)
            counters = self.budgets.descriptor_counters(entries, addend)
            if not counters:
                continue
            answers = await self.budgets.hit(counters)
            if answers is None:  # the store failed: failureMode decides
                answers = [(not self.budgets.fail_open, 0)] * len(counters)
            tightest = min(range(len(counters)), key=lambda i: answers[i][1])
            c = counters[tightest]
            status.current_limit.requests_per_unit = c.cap
            status.current_limit.unit = UNITS.get(c.limit.window, rls_pb2.RateLimitResponse.RateLimit.UNKNOWN)
            status.limit_remaining = answers[tightest][1]
            log.debug("rate limit %s: +%d, answers %s", entries, addend, answers)
            if any(over for over, _ in answers):
                status.code = rls_pb2.RateLimitResponse.OVER_LIMIT
                resp.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
        return resp
