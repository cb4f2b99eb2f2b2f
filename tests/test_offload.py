"""The worker threads of heavy messages (`llmtally.offload`): smallest first, cancellation, shutdown."""

import threading

import pytest

from llmtally.offload import Offload


def test_the_smallest_queued_call_runs_first():
    pool = Offload(1)
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
