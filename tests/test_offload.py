"""The worker threads of heavy messages (`llmtally.offload`): smaller first but none for ever, cancellation,
shutdown."""

import threading

import pytest

from llmtally.offload import Offload


def test_the_smallest_queued_call_runs_first():
    pool = Offload(1, clock=lambda: 100.0)  # calls that come at once
    gate, order = threading.Event(), []
    try:
        blocker = pool.submit(0, gate.wait)  # the one thread is busy until the gate opens
        futures = [pool.submit(size, lambda size=size: order.append(size)) for size in (500, 100, 300, 100)]
        gate.set()
        blocker.result(5)
        [f.result(5) for f in futures]
        assert order == [100, 100, 300, 500]  # by size; FIFO among equals
    finally:
        pool.shutdown()


def test_a_flood_of_smaller_calls_holds_a_large_one_only_its_sizes_share():
    """A 1 MiB call is due 16 ms after it came: smaller calls that come later than that run after it (before,
    strictly by size, a stream of 66 KB calls held it for ever)."""
    from llmtally.offload import BYTES_PER_SECOND

    now = [100.0]
    pool = Offload(1, clock=lambda: now[0])
    gate, order = threading.Event(), []
    try:
        blocker = pool.submit(0, gate.wait)
        large = 1 << 20
        futures = [pool.submit(large, lambda: order.append("large"))]
        share = large / BYTES_PER_SECOND  # 1/64 s
        # due at `at` + 66 KB's share (about 1 ms): the first two before the large call, the rest after it
        for i, at in enumerate((0.001, share / 2, share * 1.01, 0.5, 2.0)):
            now[0] = 100.0 + at
            futures.append(pool.submit(66_000, lambda i=i: order.append(i)))
        gate.set()
        blocker.result(5)
        [f.result(5) for f in futures]
        assert order == [0, 1, "large", 2, 3, 4]
    finally:
        pool.shutdown()


def test_a_call_cancelled_while_queued_never_runs_and_errors_reach_the_caller():
    pool = Offload(1)
    gate, ran = threading.Event(), []
    try:
        pool.submit(0, gate.wait)
        queued = pool.submit(1, lambda: ran.append(1))
        assert queued.cancel()
        failing = pool.submit(2, lambda: 1 / 0)
        gate.set()
        with pytest.raises(ZeroDivisionError):
            failing.result(5)
        assert ran == []
    finally:
        pool.shutdown()


def test_shutdown_cancels_what_is_queued():
    pool = Offload(1)
    gate = threading.Event()
    running = pool.submit(0, gate.wait)
    while not running.running():  # the thread has taken it
        threading.Event().wait(0.001)
    queued = pool.submit(1, lambda: None)
    pool.shutdown()
    assert queued.cancelled()
    gate.set()
    assert running.result(5) is True
    with pytest.raises(RuntimeError):
        pool.submit(1, lambda: None)
