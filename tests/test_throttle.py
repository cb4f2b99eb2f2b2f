"""The one-line-a-minute throttle that every rate-limited log line goes through."""

import logging
import threading

from llmtally.throttle import OncePerMinute, OncePerMinuteFilter


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_once_per_minute_per_key():
    clock = Clock()
    q = OncePerMinute(clock=clock)
    assert [q.due("a"), q.due("a"), q.due("b"), q.due("a")] == [True, False, True, False]
    clock.t += 59.9
    assert q.due("a") is False
    clock.t += 0.1
    assert [q.due("a"), q.due("a"), q.due("b")] == [True, False, True]


def test_the_keys_remembered_are_bounded():
    clock = Clock()
    q = OncePerMinute(clock=clock, max_keys=3)
    assert [q.due(k) for k in "abc"] == [True] * 3
    assert q.due("d") is True  # "a", the oldest, is forgotten
    assert len(q.last) == 3 and set(q.last) == {"b", "c", "d"}
    assert (q.due("a"), q.due("c")) == (True, False)


def test_one_line_among_threads():
    q = OncePerMinute()
    start = threading.Barrier(8)
    said = []

    def speak():
        start.wait()
        for _ in range(1000):
            if q.due("x"):
                said.append(1)

    threads = [threading.Thread(target=speak) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert said == [1]


def test_the_filter_keys_by_level_and_format(caplog):
    log = logging.getLogger("test.throttle")
    f = OncePerMinuteFilter()
    log.addFilter(f)
    try:
        with caplog.at_level(logging.INFO, logger="test.throttle"):
            for i in range(5):
                log.warning("failed to export %s", i)
                log.error("failed to export %s", i)
                log.warning("another %s", i)
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            ("WARNING", "failed to export 0"),
            ("ERROR", "failed to export 0"),
            ("WARNING", "another 0"),
        ]
    finally:
        log.removeFilter(f)


def test_odd_response_bodies_are_logged_once_a_minute_per_provider(caplog):
    """Counted for every call (ai_scan_anomalies_total), said once: an upstream answering garbage to every
    request used to write a line per request."""
    from llmtally.config import Config
    from llmtally.exchange import Exchange, Host
    from llmtally.metrics import Metrics
    from test_serve import messages

    host = Host(Config(), Metrics(Config()))
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true}'
    broken = [b"data: {not json at all\n\n", b'data: {"choices": []}\n\n', b"data: [DONE]\n\n"]
    with caplog.at_level(logging.WARNING, logger="llmtally"):
        for _ in range(5):
            ex = Exchange(host, "openai")
            for m in messages("/v1/chat/completions", body, 200, "text/event-stream", broken):
                ex.handle(m)
            ex.close()
    odd = [r for r in caplog.records if r.getMessage().startswith("odd response body")]
    assert len(odd) == 1 and "broken_docs" in odd[0].getMessage()
    anomalies = host.metrics.anomalies.labels("openai", "broken_docs")._value.get()
    assert anomalies == 5
