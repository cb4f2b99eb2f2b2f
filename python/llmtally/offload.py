"""Worker threads for the messages that cost milliseconds of CPU (a large body's prompt estimate, a large or
compressed response chunk), so that they never hold up the event loop that answers every other stream.

Two orders at once: the threads take turns, one turn the smallest queued message, the next the oldest (with
two threads, as by default, one does each). Smallest first alone let a flood of smaller messages hold a large
one for ever (16 callers re-sending 66 KB prompts kept another's 1 MiB prompt past Envoy's message timeout,
uncounted); oldest first alone queued an ordinary prompt behind a flood of huge ones (a 128 KiB body waited
2.9 s behind 60 streams of 1 MiB). Taking both, a message waits at most for what is smaller than it or what
came before it, at half the threads' speed. A caller can hold at most one message per stream in the queue,
and the stream cap bounds those. The native backend releases the GIL while it works, so these threads run
beside the event loop."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class _Call:
    __slots__ = ("size", "seq", "fut", "fn", "taken")

    def __init__(self, size: int, seq: int, fut: Future[object], fn: Callable[[], object]):
        self.size, self.seq, self.fut, self.fn, self.taken = size, seq, fut, fn, False

    def __lt__(self, other: _Call) -> bool:  # smallest first, FIFO among equals
        return (self.size, self.seq) < (other.size, other.seq)


class Offload:
    def __init__(self, threads: int, name: str = "llmtally-offload"):
        self._by_size: list[_Call] = []  # a heap; calls taken from the other order stay until popped
        self._by_age: deque[_Call] = deque()
        self._queued = 0
        self._seq = itertools.count()
        self._ready = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def submit(self, size: int, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` in a worker thread (see the module's docstring for the order)."""
        fut: Future[T] = Future()
        with self._ready:
            if self._stopped:
                raise RuntimeError("the offload threads are stopped")
            call = _Call(size, next(self._seq), fut, fn)  # type: ignore[arg-type]
            heapq.heappush(self._by_size, call)
            self._by_age.append(call)
            self._queued += 1
            self._ready.notify()
        return fut

    def _take(self, oldest: bool) -> _Call:
        while True:
            call = self._by_age.popleft() if oldest else heapq.heappop(self._by_size)
            if not call.taken:
                call.taken = True
                self._queued -= 1
                return call

    def _work(self, index: int) -> None:
        # with two or more threads each keeps one order; a lone thread alternates
        alone = len(self._threads) == 1
        oldest = index % 2 == 1
        while True:
            with self._ready:
                while not self._queued and not self._stopped:
                    self._ready.wait()
                if not self._queued:
                    return
                call = self._take(oldest)
                if alone:
                    oldest = not oldest
            fut = call.fut
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                fut.set_result(call.fn())
            except BaseException as e:  # handed to whoever awaits the future
                fut.set_exception(e)

    def shutdown(self) -> None:
        """Cancel what is queued; the calls already running finish (the threads are daemons)."""
        with self._ready:
            self._stopped = True
            for call in self._by_age:
                if not call.taken:
                    call.fut.cancel()
            self._by_age.clear()
            self._by_size.clear()
            self._queued = 0
            self._ready.notify_all()
