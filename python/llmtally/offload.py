"""Worker threads for the messages that cost milliseconds of CPU (a large body's prompt estimate, a large or
compressed response chunk), so that they never hold up the event loop that answers every other stream.

Smallest first: the queue is ordered by each message's size, so an ordinary large prompt is not queued behind
a flood of huge ones (a caller can hold at most one message per stream in the queue, and the stream cap bounds
those). The native backend releases the GIL while it works, so these threads run beside the event loop."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class Offload:
    def __init__(self, threads: int, name: str = "llmtally-offload"):
        self._queue: list[tuple[int, int, Future[object], Callable[[], object]]] = []
        self._seq = itertools.count()  # FIFO among equal sizes
        self._ready = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def submit(self, size: int, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` in a worker thread, after the queued calls of a smaller `size`."""
        fut: Future[T] = Future()
        with self._ready:
            if self._stopped:
                raise RuntimeError("the offload threads are stopped")
            item: tuple[int, int, Future[object], Callable[[], object]] = (size, next(self._seq), fut, fn)  # type: ignore[assignment]
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
