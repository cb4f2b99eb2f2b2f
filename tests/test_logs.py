"""Log lines: llmtally's level apart from the libraries', and JSON lines that name their stream."""

import io
import json
import logging

import pytest

from llmtally import logs


def test_debug_is_for_llmtallys_loggers_only(restore_logging):
    logs.setup("debug")
    assert logging.getLogger("llmtally.otel").isEnabledFor(logging.DEBUG)
    for lib in ("grpc._cython.cygrpc", "asyncio", "opentelemetry.sdk.trace.export", "redis"):
        assert not logging.getLogger(lib).isEnabledFor(logging.INFO)
        assert logging.getLogger(lib).isEnabledFor(logging.WARNING)
    logs.setup("error")
    assert not logging.getLogger("llmtally").isEnabledFor(logging.WARNING)
    assert len(logging.getLogger().handlers) == 1  # set up twice: one handler


class Ids:
    def __init__(self, request_id, traceparent):
        self.request_id = request_id
        self.traceparent = traceparent

    @property
    def trace_id(self):
        return logs.trace_id_of(self.traceparent)


def test_json_lines_name_their_stream(restore_logging):
    logs.setup("info", "json", worker="w1")
    out = io.StringIO()
    logging.getLogger().handlers[0].setStream(out)
    log = logging.getLogger("llmtally")
    log.info("outside 'a stream' \u00e9")
    token = logs.stream.set(Ids("req-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    try:
        log.warning("inside %s", "x")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logs.stream.reset(token)
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [(ln["level"], ln["logger"], ln["message"], ln["worker"]) for ln in lines] == [
        ("info", "llmtally", "outside 'a stream' \u00e9", "w1"),
        ("warning", "llmtally", "inside x", "w1"),
        ("error", "llmtally", "failed", "w1"),
    ]
    assert "request_id" not in lines[0] and "trace_id" not in lines[0]
    assert {(ln["request_id"], ln["trace_id"]) for ln in lines[1:]} == {("req-1", "4bf92f3577b34da6a3ce929d0e0e4736")}
    assert lines[2]["exception"].startswith("Traceback") and "ValueError: boom" in lines[2]["exception"]
    assert all(len(ln["time"]) == 24 and ln["time"].endswith("Z") for ln in lines)


@pytest.mark.parametrize(
    "traceparent, trace_id",
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""),  # uppercase: not W3C
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", ""),  # version 00 has 4 fields
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", ""),
        ("00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01", ""),
        ("00-4bf92f35", ""),
        ("", ""),
        ("\n\n\n", ""),
    ],
)
def test_trace_ids_of_traceparents(traceparent, trace_id):
    assert logs.trace_id_of(traceparent) == trace_id
