"""The response scanner (mirror of rust/core/src/scanner.rs)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Literal

from .._types import RequestInfo, Stats, Usage
from . import decode, ndjson
from .base64 import Base64
from .data import CONSTANTS
from .eventstream import EventStream
from .json_scan import BROKEN, COMPLETE, JsonScanner, Pattern, parse_uint
from .registry import CONTENT_TYPES, WHITE_SPACE, holds, resolve
from .sse import SseFramer
from .text import TextState
from .usage import BYTES, CHOICE, CHOICE_INDEX, ROOT, TOOL_INDEX, U64_MAX, UsageAcc, is_text

DEFAULT_MAX_DECODED_BYTES = CONSTANTS["max_decoded_bytes"]
DEFAULT_MAX_EVENT_BYTES = CONSTANTS["max_event_bytes"]
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
SNIFF_MAX = CONSTANTS["sniff_max"]
BOM = b"\xef\xbb\xbf"
_WS = b" \t\n\r\x0c"  # Rust u8::is_ascii_whitespace

SSE, JSON, NDJSON, EVENTSTREAM = "sse", "json", "ndjson", "eventstream"
#: the first bytes of SSE lines (`data:`, `event:`, `id:`, `retry:`, a `:` comment), none a JSON value's
SSE_STARTS = frozenset(b"deir:")


class _Collector(UsageAcc):
    """Usage and text, plus base64-wrapped inner documents (Bedrock chunks).
    Inner patterns have no `bytes` leaf, so the collector is their sink too."""

    __slots__ = ("text", "b64", "inner")

    def __init__(self, inner: Pattern | None, model: str | None):
        super().__init__()
        self.text = TextState(model)
        self.b64 = Base64() if inner is not None else None
        self.inner = JsonScanner(inner) if inner is not None else None  # set whenever b64 is

    def _feed_inner(self, d: bytes) -> None:
        self.inner.feed(d, self)  # type: ignore[union-attr]  # b64's output: set with b64

    def int(self, f: int, v: int) -> None:
        if f == CHOICE_INDEX or f == TOOL_INDEX:
            self.text.index(f, v)
        else:
            super().int(f, v)

    def str_start(self, f: builtins.int) -> None:
        if f == BYTES and self.b64 is not None:
            self.b64.reset()
            self.inner.reset()  # type: ignore[union-attr]  # set with b64
        elif is_text(f):
            self.text.start(f, self.provider_model)
        else:
            super().str_start(f)

    def str_piece(self, f: builtins.int, s: bytes) -> None:
        if f == BYTES and self.b64 is not None:
            self.b64.push(s, self._feed_inner)
        elif is_text(f):
            self.text.piece(s)
            self.text_doc = self.doc
        else:
            super().str_piece(f, s)

    def str_end(self, f: builtins.int) -> None:
        if f == BYTES and self.b64 is not None:
            self.b64.finish(self._feed_inner)
            self.inner.end_doc(self)  # type: ignore[union-attr]  # set with b64
        elif is_text(f):
            self.text.end()
        else:
            super().str_end(f)

    def enter(self, mark: builtins.int) -> None:
        if mark == ROOT or mark == CHOICE:
            # a finish reason held from a document or choice that broke off
            self.commit_finish(self.text.choice)
        super().enter(mark)
        self.text.enter(mark)

    def exit(self, mark: builtins.int) -> None:
        # a choice's (or document's) finish reason, now that its index is known
        if mark == ROOT or mark == CHOICE:
            self.commit_finish(self.text.choice)


class _Docs:
    """One JSON document at a time, fed by whichever framing is in use."""

    __slots__ = ("json", "col", "docs", "broken")

    def __init__(self, json: JsonScanner, col: _Collector):
        self.json = json
        self.col = col
        self.docs = 0
        self.broken = 0

    def feed(self, b: bytes) -> None:
        self.json.feed(b, self.col)

    def end(self) -> None:
        end = self.json.end_doc(self.col)
        if end == COMPLETE:
            self.docs += 1
        elif end == BROKEN:
            self.broken += 1

    # SSE handler
    def data_start(self, first: bool) -> None:
        if first:
            self.json.reset()
        else:
            self.feed(b"\n")

    def data(self, b: bytes) -> None:
        self.feed(b)

    def dispatch(self) -> None:
        self.end()


class ResponseScanner:
    """Same constructor and results as llmtally._native.ResponseScanner (see _native.pyi)."""

    __slots__ = (
        "format",
        "request",
        "kind",
        "hint",
        "array",
        "framer",
        "held",
        "max_event",
        "docs",
        "decoder",
        "bytes",
        "result",
    )

    def __init__(
        self,
        provider: str,
        request: RequestInfo | None = None,
        *,
        content_type: str = "",
        content_encoding: str = "",
        path: str = "",
        headers: Sequence[tuple[str, str]] = (),
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ):
        self.format = resolve(provider, path, content_type)
        if request is not None:  # any object with RequestInfo's attributes, as natively
            request = RequestInfo(
                model=request.model,
                streaming=request.streaming,
                include_usage=request.include_usage,
                prompt_tokens=request.prompt_tokens,
                max_output_tokens=getattr(request, "max_output_tokens", None),  # unused here
            )
        self.request = request
        ct = content_type.translate(_ASCII_LOWER)
        hint = next((kind for cond, kind in CONTENT_TYPES if holds(cond, "", ct)), None)
        codecs = decode.parse(content_encoding)
        if codecs is None:
            self.decoder: decode.Decoder | Literal[False] | None = False  # undecodable
        elif not codecs:
            self.decoder = None
        else:
            self.decoder = decode.Decoder(codecs, max_decoded_bytes)
        self.hint = hint
        self.kind: str | None = None  # undecided
        self.array = False
        self.framer: SseFramer | EventStream | None = None  # with kind SSE and EVENTSTREAM
        self.held = b""
        self.max_event = max_event_bytes
        self.docs = _Docs(
            JsonScanner(self.format.response),
            _Collector(self.format.inner, request.model if request is not None else None),
        )
        self.bytes = 0
        self.result: Usage | None = None
        if hint == EVENTSTREAM:
            self._decide(None)
        usage_headers = self.format.usage_headers
        for name, value in headers:
            name = name.strip(WHITE_SPACE).translate(_ASCII_LOWER)
            slot = next((f for h, f in usage_headers if h == name), None)
            v = parse_uint(value.strip(WHITE_SPACE).encode()) if slot is not None else None
            if slot is not None and v is not None:
                self.docs.col.header(slot, v)

    def _decide(self, first: int | None) -> None:
        kind = self.hint
        if kind in (JSON, NDJSON) and first is not None and first in SSE_STARTS:
            kind = SSE  # a JSON content type over an event stream: no JSON document starts so (scanner.rs)
        if kind is None:
            if first == 0x7B:
                kind = self.format.brace_framing
            elif first == 0x5B:
                kind = JSON
            elif first == 0 and self.format.nul_framing is not None:
                kind = self.format.nul_framing
            else:
                kind = SSE
        self.kind = kind
        if kind == SSE:
            self.framer = SseFramer()
        elif kind == EVENTSTREAM:
            self.framer = EventStream(self.max_event)
        elif kind == JSON and first == 0x5B:
            self.array = True
            self.docs.json = JsonScanner(self.format.response_array)

    def feed(self, chunk: bytes) -> None:
        if not isinstance(chunk, bytes):
            raise TypeError("chunk must be bytes")
        if self.result is not None or not chunk:
            return
        self.bytes += len(chunk)
        dec = self.decoder
        if dec is None:
            self._body(chunk)
        elif dec is not False:
            dec.push(chunk, self._body)

    def _body(self, data: bytes) -> None:
        if self.kind is None:
            self.held += data
            held = self.held
            if len(held) < 3 and BOM.startswith(held):
                return
            start = 3 if held.startswith(BOM) else 0
            rest = held[start:].lstrip(_WS)
            if not rest and len(held) <= SNIFF_MAX:
                return
            self._decide(rest[0] if rest else None)
            self.held = b""
            data = held[start:]
        kind = self.kind
        if kind == SSE:
            self.framer.feed(data, self.docs)  # type: ignore[union-attr]  # _decide set it with kind
        elif kind == JSON:
            self.docs.feed(data)
        elif kind == NDJSON:
            ndjson.feed(data, self.docs)
        else:
            self.framer.feed(data, self._message)  # type: ignore[union-attr]  # _decide set it with kind

    def _message(self, event_type: bytes, message_type: bytes, payload: bytes) -> None:
        if message_type == b"exception":
            self.docs.col.errors += 1
            return
        self.docs.json.reset()
        self.docs.feed(payload)
        self.docs.end()

    @property
    def provider(self) -> str:
        """The provider id whose format is read (`auto` and unknown ids resolved)."""
        return self.format.id

    @property
    def framing(self) -> str | None:
        """The framing in use, None until the content type or the first bytes decide."""
        if self.kind == JSON and self.array:
            return "json-array"
        return self.kind

    def stats(self) -> Stats:
        dec = self.decoder
        es = self.framer if isinstance(self.framer, EventStream) else None  # kind EVENTSTREAM
        return Stats(
            bytes=self.bytes,
            decoded_bytes=self.bytes if dec is None else (0 if dec is False else dec.produced),
            docs=self.docs.docs,
            broken_docs=self.docs.broken,
            errors=self.docs.col.errors,
            corrupt_frames=es.corrupt if es else 0,
            oversized_events=es.oversized if es else 0,
            decode_capped=isinstance(dec, decode.Decoder) and dec.stopped,
            decode_failed=isinstance(dec, decode.Decoder) and dec.failed,
            undecodable=dec is False,
        )

    def finish(self) -> Usage:
        if self.result is not None:
            return self.result
        kind = self.kind
        pending = self.framer is not None and self.framer.pending()
        if kind in (JSON, NDJSON) or (kind == SSE and pending):
            self.docs.end()
        elif kind == EVENTSTREAM and pending:
            self.docs.broken += 1
        col = self.docs.col
        col.commit_finish(col.text.choice)  # of a last document cut short
        if kind == JSON and not self.array and self.docs.docs > 0:
            self.docs.col.mark_final()  # a whole body, not a stream: nothing is provisional
        self.result = self.snapshot(exact=True)
        return self.result

    def usage_changes(self) -> int:
        return self.docs.col.changes

    def text_changes(self) -> int:
        return self.docs.col.text.changes

    def snapshot(self, exact: bool = False) -> Usage:
        """The usage as of now, without ending anything (texts settled first, unless final usage makes
        their counts unneeded, as in Rust); `exact`: counted as a finish counts (tokens.rs, LONG_HELD)."""
        if self.result is not None:
            return self.result
        acc = self.docs.col
        if not (acc.reported() and acc.is_final()):
            acc.text.settle()
        kind = self.kind
        pm = acc.provider_model
        req = self.request
        model = req.model if req is not None and req.model is not None else pm
        if req is not None:
            streaming = bool(req.streaming)
        else:
            streaming = kind in (SSE, NDJSON, EVENTSTREAM) or (kind == JSON and self.array)
        nums = (0, 0, 0, 0, 0, 0)
        source = "none"
        if acc.reported():
            nums = acc.numbers(self.format)
            source = "provider"
            if not acc.is_final() and acc.text.seen():  # provisional usage never wins over the text delivered
                completion, reasoning = acc.text.totals(exact)
                p, c, t, ca, cw, r = nums
                nums = (p, c, t, ca, cw, max(r, reasoning))
                if completion > c:
                    nums = (p, completion, min(p + completion, U64_MAX), ca, cw, max(r, reasoning))
                    source = "provider+tokenizer"
        elif acc.text.seen():
            completion, reasoning = acc.text.totals(exact)
            prompt = req.prompt_tokens if req is not None else 0
            nums = (prompt, completion, min(prompt + completion, U64_MAX), 0, 0, reasoning)
            source = "tokenizer"
        p, c, t, ca, cw, r = nums
        return Usage(
            prompt_tokens=p,
            completion_tokens=c,
            total_tokens=t,
            cached_tokens=ca,
            cache_write_tokens=cw,
            reasoning_tokens=r,
            model=model,
            provider_model=pm,
            streaming=streaming,
            source=source,
            response_id=acc.response_id,
            finish_reasons=acc.finish_reasons(),
        )
