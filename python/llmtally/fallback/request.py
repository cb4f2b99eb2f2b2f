"""What the request tells (mirror of request.rs)."""

from __future__ import annotations

from .json_scan import JsonScanner, Leaf, Obj, Sink
from .provider import path_model, path_only, path_streams, resolve
from .usage import INCLUDE_USAGE, MODEL, STREAM, ShortString

REQUEST = Obj(None, {
    "model": Leaf(MODEL),
    "stream": Leaf(STREAM),
    "stream_options": Obj(None, {"include_usage": Leaf(INCLUDE_USAGE)}),
})


class _Collect(Sink):
    def __init__(self):
        self.model = None
        self.stream = None
        self.include_usage = False
        self.buf = ShortString()

    def boolean(self, f: int, v: bool) -> None:
        if f == STREAM:
            self.stream = v
        elif f == INCLUDE_USAGE:
            self.include_usage = v

    def str_start(self, f: int) -> None:
        if f == MODEL:
            self.buf.start()

    def str_piece(self, f: int, s: bytes) -> None:
        if f == MODEL:
            self.buf.push(s)

    def str_end(self, f: int) -> None:
        if f == MODEL:
            m = self.buf.take()
            if m is not None:
                self.model = m


def parse_request(body: bytes, provider: str, path: str = "") -> tuple:
    """(model, streaming, include_usage, prompt_tokens); never fails on bad input."""
    if not isinstance(body, bytes):
        raise TypeError("body must be bytes")
    p = resolve(provider, path)
    sc = JsonScanner(REQUEST)
    c = _Collect()
    sc.feed(body, c)
    sc.end_doc(c)
    streaming = c.stream
    if streaming is None:
        streaming = path_streams(p, path)
    if streaming is None:
        bare = path_only(path)
        streaming = p == "ollama" and (bare.endswith("/api/chat") or bare.endswith("/api/generate"))
    model = c.model if c.model is not None else path_model(p, path)
    return model, streaming, c.include_usage, 0
