"""Log lines: text or JSON (`logFormat: json`: one object per line), llmtally's level apart from the
libraries', and the stream a line belongs to (its `x-request-id` and trace id, to join access logs and
traces)."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Protocol

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StreamIds(Protocol):
    """What a log line tells of its stream (the exchange)."""

    @property
    def request_id(self) -> str: ...
    @property
    def trace_id(self) -> str: ...


#: the stream whose handler is running (set per gRPC stream task; offloaded work runs in a copy of it)
stream: contextvars.ContextVar[StreamIds | None] = contextvars.ContextVar("llmtally_stream", default=None)


_HEX = frozenset("0123456789abcdef")


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase; a later version may add
    fields), or "" where the span's parent would not be taken from it either (version ff, zero ids)."""
    parts = traceparent.strip(" \t").split("-")
    if len(parts) < 4 or [len(p) for p in parts[:4]] != [2, 32, 16, 2]:
        return ""
    version, trace, parent, flags = parts[:4]
    if not _HEX.issuperset(version + trace + parent + flags) or version == "ff":
        return ""
    if (version == "00" and len(parts) != 4) or trace == "0" * 32 or parent == "0" * 16:
        return ""
    return trace


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC, milliseconds), level, logger, message, and for a
    stream's lines request_id and trace_id; exception with the traceback when there is one."""

    def __init__(self, worker: str = ""):
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker:
            out["worker"] = self.worker
        s = stream.get()
        if s is not None:
            if s.request_id:
                out["request_id"] = s.request_id
            if s.trace_id:
                out["trace_id"] = s.trace_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str, fmt: str = "text", worker: str = "") -> None:
    """`level` for llmtally's own loggers; the libraries (grpc, asyncio, opentelemetry) log warnings and errors
    only, so that `--log-level debug` shows llmtally's lines, not theirs."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        name = f"%(name)s[{worker}]" if worker else "%(name)s"
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.replace("%(name)s", name)))
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("llmtally").setLevel(level.upper())


def printable(v: str) -> str:
    """`v` with every character `str.isprintable` refuses (control characters, line and paragraph separators,
    lone surrogates, unassigned code points) as U+FFFD: a model name is the client's, and a newline or an escape
    sequence in it would forge lines in a text access log or drive a terminal."""
    return v if v.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in v)
