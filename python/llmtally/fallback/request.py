"""What the request tells, and a prompt token estimate (mirror of request.rs)."""

from __future__ import annotations

from .json_scan import Arr, JsonScanner, Leaf, Obj, Or, Sink
from .provider import path_model, path_only, path_streams, resolve
from .tokens import count, encoding_for
from .usage import INCLUDE_USAGE, MODEL, R_MSG, R_NAME, R_TEXT, STREAM, ShortString

STREAM_OPTIONS = Obj(None, {"include_usage": Leaf(INCLUDE_USAGE)})
TEXT_BLOCKS = Arr(Obj(None, {"text": Leaf(R_TEXT)}))
TEXT_OR_BLOCKS = Or(Leaf(R_TEXT), TEXT_BLOCKS)

CHAT_MESSAGE = Obj(R_MSG, {
    "role": Leaf(R_TEXT),
    "content": TEXT_OR_BLOCKS,
    "name": Leaf(R_NAME),
    "tool_call_id": Leaf(R_TEXT),
    "tool_calls": Arr(Obj(None, {"function": Obj(None, {"name": Leaf(R_TEXT), "arguments": Leaf(R_TEXT)})})),
})
INPUT = Or(Leaf(R_TEXT), Arr(Or(Leaf(R_TEXT), CHAT_MESSAGE, Arr(Leaf(R_TEXT)))))

OPENAI = Obj(None, {
    "model": Leaf(MODEL), "stream": Leaf(STREAM), "stream_options": STREAM_OPTIONS,
    "messages": Arr(CHAT_MESSAGE), "input": INPUT, "prompt": INPUT, "instructions": Leaf(R_TEXT),
})

BLOCK = Obj(None, {"text": Leaf(R_TEXT), "content": TEXT_OR_BLOCKS})
MESSAGES = Obj(None, {
    "model": Leaf(MODEL), "stream": Leaf(STREAM), "system": TEXT_OR_BLOCKS,
    "messages": Arr(Obj(None, {"content": Or(Leaf(R_TEXT), Arr(BLOCK))})),
})

GEMINI_CONTENT = Obj(None, {"parts": TEXT_BLOCKS})
GEMINI = Obj(None, {"model": Leaf(MODEL), "stream": Leaf(STREAM), "contents": Arr(GEMINI_CONTENT), "systemInstruction": GEMINI_CONTENT,
                    "system_instruction": GEMINI_CONTENT})

OLLAMA = Obj(None, {
    "model": Leaf(MODEL), "stream": Leaf(STREAM), "stream_options": STREAM_OPTIONS,
    "messages": Arr(Obj(None, {"content": Leaf(R_TEXT)})), "prompt": Leaf(R_TEXT), "system": Leaf(R_TEXT),
})

_PATTERNS = {"anthropic": MESSAGES, "bedrock": MESSAGES, "gemini": GEMINI, "vertex-ai": GEMINI, "ollama": OLLAMA}


class _Collect(Sink):
    def __init__(self):
        self.model = None
        self.stream = None
        self.include_usage = False
        self.buf = ShortString()
        self.texts: list[str] = []
        self.text = bytearray()
        self.fixed = 0
        self.messages = 0

    def int(self, f: int, v: int) -> None:
        if f == R_TEXT:
            self.fixed += 1  # a token id

    def boolean(self, f: int, v: bool) -> None:
        if f == STREAM:
            self.stream = v
        elif f == INCLUDE_USAGE:
            self.include_usage = v

    def str_start(self, f: int) -> None:
        if f == MODEL:
            self.buf.start()
        elif f in (R_TEXT, R_NAME):
            self.text = bytearray()

    def str_piece(self, f: int, s: bytes) -> None:
        if f == MODEL:
            self.buf.push(s)
        elif f in (R_TEXT, R_NAME):
            self.text += s

    def str_end(self, f: int) -> None:
        if f == MODEL:
            m = self.buf.take()
            if m is not None:
                self.model = m
        elif f in (R_TEXT, R_NAME):
            self.fixed += f == R_NAME
            self.texts.append(self.text.decode("utf-8", "replace"))

    def enter(self, mark: int) -> None:
        if mark == R_MSG:
            self.messages += 1


def parse_request(body: bytes, provider: str, path: str = "") -> tuple:
    """(model, streaming, include_usage, prompt_tokens); never fails on bad input."""
    if not isinstance(body, bytes):
        raise TypeError("body must be bytes")
    p = resolve(provider, path)
    sc = JsonScanner(_PATTERNS.get(p, OPENAI))
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
    enc = encoding_for(model)
    text = sum(count(t, enc) for t in c.texts)
    overhead = 3 * c.messages + 3 if c.messages else 0
    return model, streaming, c.include_usage, text + c.fixed + overhead
