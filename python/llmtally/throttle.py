"""At most one log line a minute per kind of event: what bad input or a failing dependency logs, so that a
flood of it (every stream, every export) cannot flood the log. Counting is the metrics' job; this only
decides whether to say it again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

#: seconds between two lines of one kind
PERIOD = 60.0
#: kinds remembered; past it the oldest are forgotten (a forgotten kind may speak again early)
MAX_KEYS = 1000


class OncePerMinute:
    """`due(key)`: True the first time, then at most once per `period` seconds, per key. Thread-safe (the
    offload threads and the export threads log too); bounded to `max_keys` keys."""

    def __init__(
        self, period: float = PERIOD, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.period = period
        self.max_keys = max_keys
        self.clock = clock
        self.last: dict[Hashable, float] = {}
        self.lock = threading.Lock()

    def due(self, key: Hashable = None) -> bool:
        now = self.clock()
        with self.lock:
            t = self.last.get(key)
            if t is not None and now - t < self.period:
                return False
            if t is None and len(self.last) >= self.max_keys:
                del self.last[next(iter(self.last))]  # the oldest first seen
            self.last[key] = now
            return True


class OncePerMinuteFilter(logging.Filter):
    """A logging filter on `OncePerMinute`, keyed by a record's level and format string: for libraries' loggers
    (gRPC's core logs a traceback for every malformed message a peer sends; an OTLP exporter, every failed
    export)."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = OncePerMinute()

    def filter(self, record: logging.LogRecord) -> bool:
        return self.throttle.due((record.levelno, record.msg))
