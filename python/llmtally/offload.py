"""Worker threads for the messages that cost milliseconds of CPU (a large body's prompt estimate, a large or
compressed response chunk), so that they never hold up the event loop that answers every other stream.

Smaller first, but none for ever: each call is due at the time it came plus its size at `BYTES_PER_SECOND`
(about what a worker reads a body at), and the queue runs the earliest due first. An ordinary large prompt is not
queued behind a flood of huge ones, and no flood of smaller ones holds a large one past its size's share: a 1 MiB
body waits behind calls that came up to 16 ms after it, no more (before, a caller re-sending 66 KB bodies held
another's 1 MiB prompt past Envoy's message timeout, uncounted). A caller can hold at most one message per stream
in the queue, and the stream cap bounds those. The native backend releases the GIL while it works, so these
threads run beside the event loop."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

#: the size a call adds to the time it came, to make its place in the queue (bytes per second of delay)
BYTES_PER_SECOND = 64 * 1024 * 1024


class Offload:
    def __init__(self, threads: int, name: str = "llmtally-offload", clock: Callable[[], float] = time.monotonic):
        self._queue: list[tuple[float, int, Future[object], Callable[[], object]]] = []
        self._seq = itertools.count()  # FIFO among calls due at once
        self._clock = clock
        self._ready = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def submit(self, size: int, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` in a worker thread, after the queued calls due earlier (see the module's docstring)."""
        fut: Future[T] = Future()
        due = self._clock() + size / BYTES_PER_SECOND
        with self._ready:
            if self._stopped:
                raise RuntimeError("the offload threads are stopped")
            item: tuple[float, int, Future[object], Callable[[], object]] = (due, next(self._seq), fut, fn)  # type: ignore[assignment]
            heapq.heappush(self._queue, item)
            self._ready.notify()
        return fut

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopped:
                    self._ready.wait()
                if not self._queue:
                    return
                _, _, fut, fn = heapq.heappop(self._queue)
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to whoever awaits the future
                fut.set_exception(e)

    def shutdown(self) -> None:
        """Cancel what is queued; the calls already running finish (the threads are daemons)."""
        with self._ready:
            self._stopped = True
            for _, _, fut, _ in self._queue:
                fut.cancel()
            self._queue.clear()
            self._ready.notify_all()
