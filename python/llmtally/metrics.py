"""Prometheus metrics of the sidecar (prometheus-client), with custom labels
whose distinct values are capped so a hostile claim cannot explode memory."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram

from ._api import backend as _backend
from .config import Config

if TYPE_CHECKING:
    from ._types import Stats, Usage

TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
#: the scanner `stats()` counters reported as `ai_scan_anomalies_total{kind}`
AnomalyKind = Literal[
    "broken_docs", "corrupt_frames", "oversized_events", "decode_capped", "decode_failed", "undecodable"
]
ANOMALY_KINDS: tuple[AnomalyKind, ...] = get_args(AnomalyKind)


class LabelValues:
    """Keeps at most `cap` distinct values of one label; later ones fold into
    `overflow`. The placeholder for a missing value does not use up the cap."""

    def __init__(self, cap: int, overflow: str, missing: str):
        self.cap = cap
        self.overflow = overflow
        self.seen: set[str] = {missing, overflow}
        self.lock = threading.Lock()
        self.cap += len(self.seen)

    def admit(self, value: str, new: bool = True) -> str:
        """`value` if seen before, or (`new`) if the cap has room; else the overflow value."""
        if value in self.seen:
            return value
        if not new:
            return self.overflow
        with self.lock:
            if len(self.seen) < self.cap:
                self.seen.add(value)
                return value
        return self.overflow


class Metrics:
    """The sidecar's metric families. Exchanges record through `record`,
    `record_anomalies` and `record_exception`, never through a family."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.custom = [lab.name for lab in config.custom_labels]
        cap, overflow, missing = config.label_values_max, config.overflow_value, config.missing_label_value
        self.caps = {lab.name: LabelValues(cap, overflow, missing) for lab in config.custom_labels}
        # the model label is capped too, and admits a new name only from an accepted response: the request names it
        self.model_values = LabelValues(cap, overflow, "")
        self.model_values.seen.update(config.models)  # the operator's list: beyond the cap
        self.model_values.cap += len(config.models)
        self.series_max = config.series_max
        self._series: dict[tuple[str, ...], Series] = {}
        names = ["llm", "model", *self.custom]
        r = self.registry
        self.prompt = Counter("ai_prompt_tokens", "Prompt tokens", names, registry=r)
        self.completion = Counter("ai_completion_tokens", "Completion tokens", names, registry=r)
        self.cached = Counter("ai_cached_tokens", "Prompt tokens served from cache", names, registry=r)
        self.cache_write = Counter(
            "ai_cache_write_tokens", "Prompt tokens written to the provider's cache", names, registry=r
        )
        self.reasoning = Counter("ai_reasoning_tokens", "Completion tokens spent on reasoning", names, registry=r)
        self.rate_limited = Counter(
            "ai_rate_limited_tokens", "Tokens charged to rate limits (hits_addend)", names, registry=r
        )
        self.aborted = Counter(
            "ai_aborted_streams",
            "Streams cut before their end (client gone, upstream reset); their usage so far is in the token counters",
            names,
            registry=r,
        )
        self.timeouts = Counter(
            "ai_message_timeouts",
            "Streams Envoy let go of because an answer of llmtally's took longer than its message timeout "
            "(the client may have received everything; only what llmtally saw is counted)",
            names,
            registry=r,
        )
        self.cost = Counter("ai_cost_usd", "Spend in US dollars, by the price table (pricing)", names, registry=r)
        self.unpriced = Counter(
            "ai_unpriced_requests",
            "Calls whose model has no price in the pricing table (no cost recorded)",
            ["llm", "model"],
            registry=r,
        )
        self.requests = Counter(
            "ai_requests",
            "LLM requests seen, by where their numbers came from and the response status class "
            "(2xx...5xx, or none when no response status came)",
            [*names, "source", "status_class"],
            registry=r,
        )
        self.exceptions = Counter(
            "ai_exception_raised",
            "Exceptions while processing a stream (traffic passed through)",
            ["stage"],
            registry=r,
        )
        self.shed = Counter(
            "ai_shed",
            "ext_proc streams refused at maxConcurrentStreams (stream_cap) or released after streamIdleSeconds "
            "(idle), and request bodies not buffered past maxBufferedBodyBytes (body_memory)",
            ["reason"],
            registry=r,
        )
        from prometheus_client import Gauge

        from . import __version__

        self.build_info = Gauge(
            "llmtally_build_info",
            "The running llmtally: version and backend (always 1)",
            ["version", "backend"],
            registry=r,
            multiprocess_mode="max",  # workers: one sample, not one per process
        )
        self.build_info.labels(__version__, config.backend or _backend()).set(1)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None:  # workers: their parent's /metrics has no process
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, fds
        self.budget_decisions = Counter(
            "ai_budget_decisions",
            "Reservations by limit and outcome: allowed, denied (429), store_failed_allowed, store_failed_denied",
            ["limit", "outcome"],
            registry=r,
        )
        self.store_errors = Counter(
            "ai_budget_store_errors", "Budget store operations that failed or timed out", ["op"], registry=r
        )
        self.store_latency = Histogram(
            "ai_budget_store_seconds",
            "Budget store operations (reserve, settle, hit), successful ones",
            ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.anomalies = Counter(
            "ai_scan_anomalies", "Oddities in response bodies, by kind", ["llm", "kind"], registry=r
        )
        self.duration = Histogram(
            "ai_request_duration_seconds",
            "Request headers to end of response",
            names,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "ai_time_to_first_token_seconds",
            "Streamed responses: request headers to the first response body bytes",
            names,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "ai_time_per_output_token_seconds",
            "Streaming: (end - first body bytes) / (completion tokens - 1)",
            names,
            buckets=PER_TOKEN_BUCKETS,
            registry=r,
        )

    # -- recording: the one way in for the exchange --

    def record(
        self,
        llm: str,
        model: str | None,
        labels: dict[str, str],
        usage: Usage | None,
        *,
        aborted: bool = False,
        timed_out: bool = False,
        duration: float | None = None,
        ttft: float | None = None,
        tpot_span: float | None = None,
        admit_model: bool = False,
        spend: tuple[int | None, bool] = (None, False),
        status: str = "",
    ) -> tuple[str, ...]:
        """One finished (or cut) LLM call. `usage` None: cut before any response,
        so only `aborted` counts; `timed_out`: Envoy dropped the stream on its message timeout (counted
        instead of `aborted`). `duration`: request headers to the end;
        `ttft`: to the first response body bytes; `tpot_span`: from those bytes
        to the end (None when no body came), spread over the completion tokens
        of a streamed answer. `admit_model`: the provider accepted the model (see `label_values`); `spend`:
        (the call's cost in micro-dollars, whether no price applied); `status`: the response's :status.
        Returns the series' label values (capped)."""
        s = self._series_of(llm, model, labels, admit_model)
        if timed_out:
            s.timeouts.inc()
        elif aborted:
            s.aborted.inc()
        if usage is None:
            return s.values
        s.prompt.inc(usage.prompt_tokens)
        s.completion.inc(usage.completion_tokens)
        s.cached.inc(usage.cached_tokens)
        s.cache_write.inc(usage.cache_write_tokens)
        s.reasoning.inc(usage.reasoning_tokens)
        s.rate_limited.inc(usage.total_tokens)
        s.request(usage.source, status_class(status)).inc()
        cost_microusd, unpriced = spend
        if cost_microusd is not None:
            s.cost.inc(cost_microusd / 1_000_000)
        elif unpriced:
            self.unpriced.labels(s.values[0], s.values[1]).inc()
        if duration is not None:
            s.duration.observe(duration)
        if ttft is not None and usage.streaming:  # a whole body's first bytes come when it is done: not a TTFT
            s.ttft.observe(ttft)
        if tpot_span is not None and usage.streaming and usage.completion_tokens > 1:
            s.tpot.observe(tpot_span / (usage.completion_tokens - 1))
        return s.values

    def record_anomalies(self, llm: str, stats: Stats) -> dict[str, int]:
        """Count the oddities in a scanner's `stats()`; returns those seen (kind: count)."""
        seen: dict[str, int] = {k: int(stats[k]) for k in ANOMALY_KINDS if stats[k]}
        for k, n in seen.items():
            self.anomalies.labels(llm, k).inc(n)
        return seen

    def record_exception(self, stage: str) -> None:
        self.exceptions.labels(stage).inc()

    def record_shed(self, reason: str) -> None:
        self.shed.labels(reason).inc()

    def record_budget(self, limit: str, outcome: str) -> None:
        self.budget_decisions.labels(limit, outcome).inc()

    def record_store_error(self, op: str) -> None:
        self.store_errors.labels(op).inc()

    def record_store_latency(self, op: str, seconds: float) -> None:
        self.store_latency.labels(op).observe(seconds)

    # -- label handling --

    def label_values(
        self, llm: str, model: str | None, custom: dict[str, str], admit_model: bool = False
    ) -> tuple[str, ...]:
        """The label values of a call: custom values capped; a model name the label has not seen is admitted
        only when `admit_model` (or listed in `stats.models`), else it is the overflow value; a name with a
        control character (a broken /metrics line) is always the overflow value."""
        if model is None:
            model = ""
        elif model.isprintable():
            model = self.model_values.admit(model, admit_model)
        else:
            model = self.model_values.overflow
        return (llm, model, *(self.caps[n].admit(custom[n]) for n in self.custom))

    def _series_of(self, llm: str, model: str | None, custom: dict[str, str], admit_model: bool = False) -> Series:
        """The labelled children for one label tuple, made once; prometheus-client's labels() is slow on the
        hot path. Past `stats.seriesMax` combinations, a new one folds into (llm, overflow, overflow...): each
        label is capped on its own, but their product is not."""
        values = self.label_values(llm, model, custom, admit_model)
        s = self._series.get(values)
        if s is None:
            if len(self._series) >= self.series_max:
                o = self.model_values.overflow
                values = (llm, *(o for _ in values[1:]))
                s = self._series.get(values)
            if s is None:
                s = self._series[values] = Series(self, values)
        return s


#: every `Usage.source`
SOURCES = ("provider", "tokenizer", "provider+tokenizer", "none")
#: the `status_class` values
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")


def status_class(status: str) -> str:
    """`2xx` for 200..299 and so on; `none` for no (or a malformed) status."""
    if len(status) == 3 and status.isdigit() and "1" <= status[0] <= "5":
        return status[0] + "xx"
    return "none"


#: the labelled children a Series holds, one per metric with the llm, model and custom labels
_CHILDREN = (
    "cost",
    "prompt",
    "completion",
    "cached",
    "cache_write",
    "reasoning",
    "rate_limited",
    "aborted",
    "timeouts",
    "duration",
    "ttft",
    "tpot",
)


class Series:
    __slots__ = (*_CHILDREN, "requests", "values", "family")
    cost: Counter
    prompt: Counter
    completion: Counter
    cached: Counter
    cache_write: Counter
    reasoning: Counter
    rate_limited: Counter
    aborted: Counter
    timeouts: Counter
    duration: Histogram
    ttft: Histogram
    tpot: Histogram
    requests: dict[tuple[str, str], Counter]
    values: tuple[str, ...]
    family: Counter

    def __init__(self, m: Metrics, values: tuple[str, ...]):
        self.values = values
        for name in _CHILDREN:
            setattr(self, name, getattr(m, name).labels(*values))
        self.family = m.requests
        self.requests = {}

    def request(self, source: str, klass: str) -> Counter:
        """The requests counter of a (source, status class): at most 4 x 6 children, made when first used."""
        c = self.requests.get((source, klass))
        if c is None:
            c = self.requests[(source, klass)] = self.family.labels(*self.values, source, klass)
        return c
