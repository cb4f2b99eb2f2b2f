"""What the request tells, and a prompt token estimate (mirror of request.rs)."""

from __future__ import annotations

import builtins

from .._types import RequestInfo
from .json_scan import JsonScanner, Sink
from .registry import resolve
from .tokens import count, encoding_for
from .usage import INCLUDE_USAGE, MODEL, R_MSG, R_NAME, R_TEXT, STREAM, ShortString


class _Collect(Sink):
    def __init__(self):
        self.model: str | None = None
        self.stream: bool | None = None
        self.include_usage = False
        self.buf = ShortString()
        self.texts: list[str] = []
        self.text = bytearray()
        self.fixed = 0
        self.messages = 0

    def int(self, f: int, v: int) -> None:
        if f == R_TEXT:
            self.fixed += 1  # a token id

    def boolean(self, f: builtins.int, v: bool) -> None:
        if f == STREAM:
            self.stream = v
        elif f == INCLUDE_USAGE:
            self.include_usage = v

    def str_start(self, f: builtins.int) -> None:
        if f == MODEL:
            self.buf.start()
        elif f in (R_TEXT, R_NAME):
            self.text = bytearray()

    def str_piece(self, f: builtins.int, s: bytes) -> None:
        if f == MODEL:
            self.buf.push(s)
        elif f in (R_TEXT, R_NAME):
            self.text += s

    def str_end(self, f: builtins.int) -> None:
        if f == MODEL:
            m = self.buf.take()
            if m is not None:
                self.model = m
        elif f in (R_TEXT, R_NAME):
            self.fixed += f == R_NAME
            self.texts.append(self.text.decode("utf-8", "replace"))

    def enter(self, mark: builtins.int) -> None:
        if mark == R_MSG:
            self.messages += 1


def parse_request(body: bytes, provider: str, path: str = "") -> RequestInfo:
    """Model, streaming flag and prompt estimate; never fails on bad input."""
    if not isinstance(body, bytes):
        raise TypeError("body must be bytes")
    d = resolve(provider, path)
    sc = JsonScanner(d.request)
    c = _Collect()
    sc.feed(body, c)
    sc.end_doc(c)
    streaming = c.stream if c.stream is not None else d.path_streams(path)
    model = c.model if c.model is not None else d.path_model(path)
    enc = encoding_for(model)
    text = sum(count(t, enc) for t in c.texts)
    overhead = 3 * c.messages + 3 if c.messages else 0
    return RequestInfo(
        model=model, streaming=streaming, include_usage=c.include_usage, prompt_tokens=text + c.fixed + overhead
    )
