"""The response scanner (mirror of rust/core/src/scanner.rs)."""

from __future__ import annotations

from .formats import anthropic, openai
from .json_scan import BROKEN, COMPLETE, JsonScanner
from .provider import resolve
from .sse import SseFramer
from .usage import UsageAcc

UNDECIDED, SSE, JSON, OPAQUE = range(4)
SNIFF_MAX = 4096
BOM = b"\xef\xbb\xbf"
_WS = b" \t\n\r\x0c"  # Rust u8::is_ascii_whitespace


class _Docs:
    """Routes SSE data lines into the JSON scanner."""

    __slots__ = ("json", "acc", "stats")

    def __init__(self, json, acc, stats):
        self.json = json
        self.acc = acc
        self.stats = stats

    def end(self) -> None:
        end = self.json.end_doc(self.acc)
        if end == COMPLETE:
            self.stats[1] += 1
        elif end == BROKEN:
            self.stats[2] += 1

    def data_start(self, first: bool) -> None:
        if first:
            self.json.reset()
        else:
            self.json.feed(b"\n", self.acc)

    def data(self, b: bytes) -> None:
        self.json.feed(b, self.acc)

    def dispatch(self) -> None:
        self.end()


def _format_for(provider: str):
    return anthropic.FORMAT if provider == "anthropic" else openai.FORMAT


class ResponseScanner:
    """Same constructor and results as llmtally._native.ResponseScanner."""

    __slots__ = ("format", "request", "framing", "held", "bom_checked", "sse", "json", "acc", "counts",
                 "docs", "result")

    def __init__(self, provider: str, request, content_type: str, content_encoding: str, status: int, path: str):
        self.format = _format_for(resolve(provider, path))
        self.request = request
        ct = content_type.lower()
        enc = content_encoding.strip().lower()
        if enc not in ("", "identity"):
            self.framing = OPAQUE
        elif "text/event-stream" in ct:
            self.framing = SSE
        elif "json" in ct:
            self.framing = JSON
        else:
            self.framing = UNDECIDED
        self.held = b""
        self.bom_checked = False
        self.sse = SseFramer()
        self.json = JsonScanner(self.format.pat)
        self.acc = UsageAcc()
        self.counts = [0, 0, 0]  # bytes, docs, broken docs
        self.docs = _Docs(self.json, self.acc, self.counts)
        self.result = None

    def stats(self) -> tuple[int, int, int, int]:
        """(bytes, docs, broken_docs, errors)"""
        return self.counts[0], self.counts[1], self.counts[2], self.acc.errors

    def feed(self, chunk: bytes) -> None:
        if not isinstance(chunk, bytes):
            raise TypeError("chunk must be bytes")
        if self.result is not None or not chunk:
            return
        self.counts[0] += len(chunk)
        if self.framing == OPAQUE:
            return
        if not self.bom_checked or self.framing == UNDECIDED:
            self.held += chunk
            if not self.bom_checked:
                if len(self.held) < len(BOM) and BOM.startswith(self.held):
                    return
                self.bom_checked = True
                if self.held.startswith(BOM):
                    self.held = self.held[len(BOM):]
            if self.framing == UNDECIDED:
                rest = self.held.lstrip(_WS)
                if rest:
                    self.framing = JSON if rest[0] in b"{[" else SSE
                elif len(self.held) > SNIFF_MAX:
                    self.framing = SSE
                else:
                    return
            held, self.held = self.held, b""
            self._dispatch(held)
            return
        self._dispatch(chunk)

    def _dispatch(self, data: bytes) -> None:
        if self.framing == SSE:
            self.sse.feed(data, self.docs)
        elif self.framing == JSON:
            self.json.feed(data, self.acc)

    def finish(self) -> tuple:
        if self.result is not None:
            return self.result
        if self.framing == SSE:
            streaming = True
        elif self.framing == JSON:
            streaming = False
        else:
            streaming = bool(self.request is not None and self.request[1])
        if self.framing == JSON or (self.framing == SSE and self.sse.pending()):
            self.docs.end()
        req_model = self.request[0] if self.request is not None else None
        pm = self.acc.provider_model
        model = req_model if req_model is not None else pm
        nums = (0, 0, 0, 0, 0)
        source = "none"
        if self.acc.reported():
            nums = self.acc.numbers(self.format.prompt_adds_cache)
            source = "provider"
        self.result = (*nums, model, pm, streaming, source)
        return self.result
