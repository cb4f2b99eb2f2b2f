"""The worker threads of heavy messages (`llmtally.offload`): the smallest and the oldest in turn,
cancellation, shutdown."""

import threading

import pytest

from llmtally.offload import Offload


def _order(sizes):
    """The order one thread runs calls of `sizes`, queued while it is busy."""
    pool = Offload(1)
    gate, order = threading.Event(), []
    try:
        blocker = pool.submit(0, gate.wait)  # the one thread is busy until the gate opens
        futures = [pool.submit(size, lambda i=i, size=size: order.append((i, size))) for i, size in enumerate(sizes)]
        gate.set()
        blocker.result(5)
        [f.result(5) for f in futures]
        return order
    finally:
        pool.shutdown()


def test_a_lone_thread_takes_the_smallest_and_the_oldest_in_turn():
    # after the blocker (the smallest): the oldest, the smallest (FIFO among equals), the oldest, the rest
    assert _order([500, 100, 300, 100]) == [(0, 500), (1, 100), (2, 300), (3, 100)]
    assert _order([500, 300, 100, 200]) == [(0, 500), (2, 100), (1, 300), (3, 200)]


def test_a_flood_of_smaller_calls_cannot_hold_a_large_one():
    """Smallest first alone: 16 callers re-sending 66 KB prompts held another's 1 MiB prompt past Envoy's
    message timeout. The oldest's turn takes it."""
    order = _order([1 << 20, *[66_000] * 8])
    assert order.index((0, 1 << 20)) == 0


def test_a_flood_of_larger_calls_cannot_hold_a_smaller_one():
    """Oldest first alone: a 128 KiB body waited 2.9 s behind 60 streams of 1 MiB. The smallest's turn takes
    it second, whatever came before it."""
    order = _order([*[1 << 20] * 8, 128 << 10])
    assert order.index((8, 128 << 10)) == 1


@pytest.mark.parametrize("thread, want", [(0, [2, 3, 1, 0]), (1, [0, 1, 2, 3])])
def test_two_threads_keep_one_order_each(thread, want):
    """With two threads, the first always takes the smallest queued call, the second the oldest: with the other
    held, each runs the whole queue in its own order."""
    pool = Offload(2, name="t")
    gates = {"t-0": threading.Event(), "t-1": threading.Event()}
    order: list[int] = []
    try:
        blockers = [pool.submit(0, lambda: gates[threading.current_thread().name].wait()) for _ in gates]
        while not all(b.running() for b in blockers):
            threading.Event().wait(0.001)
        futures = [pool.submit(size, lambda i=i: order.append(i)) for i, size in enumerate([900, 800, 100, 700])]
        gates[f"t-{thread}"].set()
        [f.result(5) for f in futures]
        assert order == want
    finally:
        for g in gates.values():
            g.set()
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
