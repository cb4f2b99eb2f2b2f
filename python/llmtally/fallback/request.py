"""What the request tells, and a prompt token estimate (mirror of request.rs).

Besides text: tool definitions (a fixed overhead each, Anthropic's tool-use
system prompt once), structured-output schemas (their compact JSON, from Raw
patterns), and media in parts by the provider family's rules: images by the
size their PNG/GIF/WebP/JPEG header tells, WAV audio by its duration, else
documented fixed estimates. The constants and rules are those of the Rust
module, so both backends agree exactly.
"""

from __future__ import annotations

import builtins
import json

from .._types import RequestInfo
from .base64 import Base64
from .data import FIELDS
from .json_scan import JsonScanner, Sink
from .registry import resolve
from .tokens import count, encoding_for
from .usage import INCLUDE_USAGE, MODEL, R_MSG, R_NAME, R_TEXT, STREAM, ShortString

R_TOOL, R_TOOL_ANTHROPIC, R_PART_OPENAI, R_PART_ANTHROPIC, R_PART_GEMINI = (
    FIELDS[n] for n in ("R_TOOL", "R_TOOL_ANTHROPIC", "R_PART_OPENAI", "R_PART_ANTHROPIC", "R_PART_GEMINI")
)
R_KIND, R_DETAIL, R_IMAGE, R_AUDIO, R_VIDEO, R_FILE, R_MEDIA = (
    FIELDS[n] for n in ("R_KIND", "R_DETAIL", "R_IMAGE", "R_AUDIO", "R_VIDEO", "R_FILE", "R_MEDIA")
)
R_MAX_OUTPUT, R_MAX_OUTPUT_ALT = FIELDS["R_MAX_OUTPUT"], FIELDS["R_MAX_OUTPUT_ALT"]
_SHORT = (MODEL, R_KIND, R_DETAIL, R_MAX_OUTPUT, R_MAX_OUTPUT_ALT)  # strings held in `buf`

TOOL_TOKENS = 8
ANTHROPIC_TOOL_PROMPT = 346
DATA_URL_HEAD_MAX = 256
MEDIA_SNIFF_MAX = 1 << 20
MEDIA_SECONDS = 30
MAX_OUTPUT_MAX = 1 << 32

IMAGE, AUDIO, VIDEO, FILE = "image", "audio", "video", "file"
OPENAI, ANTHROPIC, GEMINI = "openai", "anthropic", "gemini"
_FAMILIES = {R_PART_OPENAI: OPENAI, R_PART_ANTHROPIC: ANTHROPIC, R_PART_GEMINI: GEMINI}
_IMPLIED = {R_IMAGE: IMAGE, R_AUDIO: AUDIO, R_VIDEO: VIDEO, R_FILE: FILE, R_MEDIA: None}


def kind_of(s: bytes) -> str | None:
    """The kind a `type` or MIME type names (ASCII case-insensitive)."""
    s = s.lower()
    if b"image" in s:
        return IMAGE
    if b"audio" in s:
        return AUDIO
    if b"video" in s:
        return VIDEO
    if s in (b"file", b"input_file", b"document") or s.startswith((b"application/", b"text/")):
        return FILE
    return None


def limit_of(raw: bytes | None) -> int | None:
    """An output-token limit from a value's compact JSON: plain digits, no leading zero, at most 2^32."""
    if not raw or not raw.isdigit() or (len(raw) > 1 and raw[0] == 0x30):
        return None
    v = int(raw)
    return v if v <= MAX_OUTPUT_MAX else None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def openai_image(w: int, h: int) -> int:
    long = max(w, h)
    if long > 2048:
        w, h = max(w * 2048 // long, 1), max(h * 2048 // long, 1)
    short = min(w, h)
    if short > 768:
        w, h = max(w * 768 // short, 1), max(h * 768 // short, 1)
    return 170 * _ceil_div(w, 512) * _ceil_div(h, 512) + 85


def anthropic_image(w: int, h: int) -> int:
    long = max(w, h)
    if long > 1568:
        w, h = max(w * 1568 // long, 1), max(h * 1568 // long, 1)
    return min(_ceil_div(w * h, 750), 1600)


def gemini_image(w: int, h: int) -> int:
    if w <= 384 and h <= 384:
        return 258
    return 258 * _ceil_div(w, 768) * _ceil_div(h, 768)


class Media:
    """What one media string told."""

    __slots__ = ("implied", "mime", "image", "audio")

    def __init__(self, implied: str | None, mime: str | None, image, audio):
        self.implied = implied
        self.mime = mime
        self.image: tuple[int, int] | None = image
        self.audio: tuple[int, int] | None = audio  # WAV data bytes, byte rate


def media_tokens(family: str, part_kind: str | None, low: bool, m: Media) -> int:
    if m.image is not None:
        kind = IMAGE
    else:
        kind = m.implied or part_kind or m.mime or (AUDIO if m.audio is not None else FILE)

    def per_second(rate: int) -> int:
        if m.audio is not None and m.audio[1] > 0:
            return _ceil_div(rate * m.audio[0], m.audio[1])
        return rate * MEDIA_SECONDS

    if kind == IMAGE:
        if family == OPENAI:
            if low:
                return 85
            return 765 if m.image is None else openai_image(*m.image)
        if family == ANTHROPIC:
            return 1600 if m.image is None else anthropic_image(*m.image)
        return 258 if m.image is None else gemini_image(*m.image)
    if kind == AUDIO and family == OPENAI:
        return per_second(10)
    if kind == AUDIO and family == GEMINI:
        return per_second(32)
    if kind == VIDEO and family == GEMINI:
        return 263 * MEDIA_SECONDS
    return {OPENAI: 765, ANTHROPIC: 1600, GEMINI: 258}[family]


def _be16(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 2], "big")


def _le(b: bytes, i: int, n: int) -> int:
    return int.from_bytes(b[i : i + n], "little")


def fixed_header(h: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or WebP from its first bytes."""
    n = len(h)
    if n >= 24 and h[:8] == b"\x89PNG\r\n\x1a\n" and h[12:16] == b"IHDR":
        dims = (int.from_bytes(h[16:20], "big"), int.from_bytes(h[20:24], "big"))
    elif n >= 10 and h[:6] in (b"GIF87a", b"GIF89a"):
        dims = (_le(h, 6, 2), _le(h, 8, 2))
    elif n >= 16 and h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        cc = h[12:16]
        if cc == b"VP8 " and n >= 30 and h[23:26] == b"\x9d\x01\x2a":
            dims = (_le(h, 26, 2) & 0x3FFF, _le(h, 28, 2) & 0x3FFF)
        elif cc == b"VP8L" and n >= 25 and h[20] == 0x2F:
            bits = _le(h, 21, 4)
            dims = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        elif cc == b"VP8X" and n >= 30:
            dims = (_le(h, 24, 3) + 1, _le(h, 27, 3) + 1)
        else:
            return None
    else:
        return None
    return dims if dims[0] > 0 and dims[1] > 0 else None


# header steps
HEAD, JPEG_MARKER, JPEG_CODE, JPEG_LENGTH, JPEG_FRAME, WAV_CHUNK, WAV_FORMAT, DONE = range(8)


class Header:
    """Reads an image's size or a WAV's duration from the first decoded bytes, in pieces of any size."""

    __slots__ = ("step", "pos", "buf", "need", "skip", "marker", "chunk", "byte_rate", "image", "audio")

    def __init__(self):
        self.step = HEAD
        self.pos = 0
        self.buf = b""
        self.need = 2
        self.skip = 0
        self.marker = 0
        self.chunk = 0
        self.byte_rate = 0
        self.image: tuple[int, int] | None = None
        self.audio: tuple[int, int] | None = None

    def done(self) -> bool:
        return self.step == DONE

    def _expect(self, step: int, need: int) -> None:
        self.step = step
        self.need = need
        self.buf = b""

    def push(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and self.step != DONE:
            if self.pos >= MEDIA_SNIFF_MAX:
                self.step = DONE
                break
            room = min(MEDIA_SNIFF_MAX - self.pos, n - i)
            if self.skip > 0:
                k = min(self.skip, room)
                self.skip -= k
                self.pos += k
                i += k
                continue
            k = min(self.need - len(self.buf), room)
            self.buf += data[i : i + k]
            self.pos += k
            i += k
            if len(self.buf) == self.need:
                self._full()

    def _full(self) -> None:
        b = self.buf
        step = self.step
        if step == HEAD:
            n = len(b)
            if n == 2:
                if b == b"\xff\xd8":
                    self._expect(JPEG_MARKER, 1)
                else:
                    self.need = 12
            elif n == 12:
                if b[:4] == b"RIFF" and b[8:12] == b"WAVE":
                    self._expect(WAV_CHUNK, 8)
                else:
                    self.need = 30
            else:
                self.image = fixed_header(b)
                self.step = DONE
        elif step == JPEG_MARKER:
            if b[0] == 0xFF:
                self._expect(JPEG_CODE, 1)
            else:
                self.step = DONE
        elif step == JPEG_CODE:
            c = b[0]
            if c == 0xFF:
                self.buf = b""
            elif 0xD0 <= c <= 0xD8 or c == 0x01:
                self._expect(JPEG_MARKER, 1)
            elif c in (0xD9, 0xDA):
                self.step = DONE
            else:
                self.marker = c
                self._expect(JPEG_LENGTH, 2)
        elif step == JPEG_LENGTH:
            length = _be16(b, 0)
            frame = 0xC0 <= self.marker <= 0xCF and self.marker not in (0xC4, 0xC8, 0xCC)
            if length < 2 or (frame and length < 7):
                self.step = DONE
            elif frame:
                self._expect(JPEG_FRAME, 5)
            else:
                self.skip = length - 2
                self._expect(JPEG_MARKER, 1)
        elif step == JPEG_FRAME:
            h, w = _be16(b, 1), _be16(b, 3)
            self.image = (w, h) if w > 0 and h > 0 else None
            self.step = DONE
        elif step == WAV_CHUNK:
            size = _le(b, 4, 4)
            cc = b[:4]
            if cc == b"fmt " and size >= 12:
                self.chunk = size
                self._expect(WAV_FORMAT, 12)
            elif cc == b"data":
                self.audio = (size, self.byte_rate) if self.byte_rate > 0 else None
                self.step = DONE
            elif cc == b"fmt ":
                self.step = DONE
            else:
                self.skip = size + (size & 1)
                self._expect(WAV_CHUNK, 8)
        elif step == WAV_FORMAT:
            self.byte_rate = _le(b, 8, 4)
            self.skip = self.chunk - 12 + (self.chunk & 1)
            self._expect(WAV_CHUNK, 8)
        else:
            self.step = DONE

    def end(self) -> None:
        if self.step == HEAD:
            self.image = fixed_header(self.buf)
        self.step = DONE


# sniff modes
PREFIX, PAYLOAD, OFF = range(3)


class Sniff:
    """A media string: a data URL, raw base64, or a reference (decoding stops at its first odd byte)."""

    __slots__ = ("implied", "mime", "mode", "prefix", "b64", "header")

    def __init__(self, implied: str | None):
        self.implied = implied
        self.mime: str | None = None
        self.mode = PREFIX
        self.prefix = b""
        self.b64 = Base64()
        self.header = Header()

    def _payload(self, data: bytes) -> None:
        """Decode in slices, to stop soon after the header is read."""
        header = self.header
        for i in range(0, len(data), 4096):
            if header.done():
                return
            self.b64.push(data[i : i + 4096], header.push)

    def _is_data_url(self) -> bool:
        return len(self.prefix) >= 5 and self.prefix[:5].lower() == b"data:"

    def push(self, s: bytes) -> None:
        while self.mode == PREFIX and s:
            take = min(DATA_URL_HEAD_MAX - len(self.prefix), len(s))
            self.prefix += s[:take]
            s = s[take:]
            if len(self.prefix) < 5:
                continue
            if not self._is_data_url():
                self.mode = PAYLOAD
                head, self.prefix = self.prefix, b""
                self._payload(head)
            else:
                comma = self.prefix.find(b",")
                if comma >= 0:
                    head = self.prefix[5:comma].lower()
                    semi = head.find(b";")
                    self.mime = kind_of(head if semi < 0 else head[:semi])
                    rest, self.prefix = self.prefix[comma + 1 :], b""
                    if head.endswith(b";base64"):
                        self.mode = PAYLOAD
                        self._payload(rest)
                    else:
                        self.mode = OFF
                elif len(self.prefix) == DATA_URL_HEAD_MAX:
                    self.mode = OFF
        if self.mode == PAYLOAD:
            self._payload(s)

    def finish(self) -> Media:
        if self.mode == PREFIX and not self._is_data_url():
            self.mode = PAYLOAD
            head, self.prefix = self.prefix, b""
            self._payload(head)
        if self.mode == PAYLOAD and not self.header.done():
            self.b64.finish(self.header.push)
        self.header.end()
        return Media(self.implied, self.mime, self.header.image, self.header.audio)


class _Part:
    __slots__ = ("family", "kind", "low", "items")

    def __init__(self, family: str):
        self.family = family
        self.kind: str | None = None
        self.low = False
        self.items: list[Media] = []


class _Collect(Sink):
    def __init__(self):
        self.model: str | None = None
        self.stream: bool | None = None
        self.include_usage = False
        self.buf = ShortString()
        # the last R_MAX_OUTPUT and R_MAX_OUTPUT_ALT values read (None: none, or not an integer)
        self.max_output: int | None = None
        self.max_output_alt: int | None = None
        self.texts: list[str] = []
        self.text = bytearray()
        self.in_text = False  # inside a text string (its bytes in `text`)
        self.fixed = 0
        self.messages = 0
        self.tools = 0
        self.anthropic_tools = False
        self.parts: list[_Part] = []  # open parts, innermost last
        self.media: Sniff | None = None

    def _close_part(self) -> None:
        if self.parts:
            p = self.parts.pop()
            for m in p.items:
                self.fixed += media_tokens(p.family, p.kind, p.low, m)

    def _end_media(self) -> None:
        s = self.media
        if s is not None:
            self.media = None
            m = s.finish()
            if self.parts:
                self.parts[-1].items.append(m)

    def finish(self) -> None:
        """The document ended: a text (a body cut inside a string), a media string and parts left open count too."""
        if self.in_text:
            self.texts.append(self.text.decode("utf-8", "replace"))
            self.in_text = False
        self._end_media()
        while self.parts:
            self._close_part()
        self.fixed += self.tools * TOOL_TOKENS
        if self.anthropic_tools:
            self.fixed += ANTHROPIC_TOOL_PROMPT

    def int(self, f: int, v: int) -> None:
        if f == R_TEXT:
            self.fixed += 1  # a token id

    def boolean(self, f: builtins.int, v: bool) -> None:
        if f == STREAM:
            self.stream = v
        elif f == INCLUDE_USAGE:
            self.include_usage = v

    def str_start(self, f: builtins.int) -> None:
        if f in _SHORT:
            self.buf.start()
        elif f == R_TEXT or f == R_NAME:
            self.text = bytearray()
            self.in_text = True
        elif f in _IMPLIED:
            self.media = Sniff(_IMPLIED[f])

    def str_piece(self, f: builtins.int, s: bytes) -> None:
        if f in _SHORT:
            self.buf.push(s)
        elif f == R_TEXT or f == R_NAME:
            self.text += s
        elif self.media is not None:
            self.media.push(s)

    def str_end(self, f: builtins.int) -> None:
        if f == MODEL:
            m = self.buf.take()
            if m is not None:
                self.model = m
        elif f == R_KIND:
            kind = kind_of(self.buf.buf) if self.buf.valid() else None
            if kind is not None and self.parts:
                self.parts[-1].kind = kind
        elif f == R_DETAIL:
            low = self.buf.valid() and self.buf.buf == b"low"
            if self.parts:
                self.parts[-1].low = low
        elif f == R_MAX_OUTPUT:
            self.max_output = limit_of(self.buf.buf if self.buf.valid() else None)
        elif f == R_MAX_OUTPUT_ALT:
            self.max_output_alt = limit_of(self.buf.buf if self.buf.valid() else None)
        elif f == R_TEXT or f == R_NAME:
            self.fixed += f == R_NAME
            self.texts.append(self.text.decode("utf-8", "replace"))
            self.in_text = False
        else:
            self._end_media()

    def enter(self, mark: builtins.int) -> None:
        if mark == R_MSG:
            self.messages += 1
        elif mark == R_TOOL or mark == R_TOOL_ANTHROPIC:
            self.tools += 1
            self.anthropic_tools |= mark == R_TOOL_ANTHROPIC
        else:
            family = _FAMILIES.get(mark)
            if family is not None:
                self.parts.append(_Part(family))

    def exit(self, mark: builtins.int) -> None:
        if mark in _FAMILIES:
            self._close_part()


def _json_utf8(body: bytes) -> bytes:
    """The body as UTF-8, read as `json.loads(bytes)` reads it: a UTF-8 BOM dropped, UTF-16 and UTF-32 (by BOM or
    by their zero bytes) decoded, a unit that is not a character becoming U+FFFD (mirror of request.rs)."""
    enc = json.detect_encoding(body)
    if enc == "utf-8":
        return body
    if enc == "utf-8-sig":
        return body[3:]
    return body.decode(enc, errors="replace").encode()


def parse_request(body: bytes, provider: str, path: str = "") -> RequestInfo:
    """Model, streaming flag, output-token limit and prompt estimate; never fails on bad input."""
    if not isinstance(body, bytes):
        raise TypeError("body must be bytes")
    d = resolve(provider, path)
    sc = JsonScanner(d.request)
    c = _Collect()
    sc.feed(_json_utf8(body), c)
    sc.end_doc(c)
    c.finish()
    streaming = c.stream if c.stream is not None else d.path_streams(path)
    model = c.model if c.model is not None else d.path_model(path)
    enc = encoding_for(model)
    text = sum(count(t, enc) for t in c.texts)
    overhead = 3 * c.messages + 3 if c.messages else 0
    return RequestInfo(
        model=model,
        streaming=streaming,
        include_usage=c.include_usage,
        prompt_tokens=text + c.fixed + overhead,
        max_output_tokens=c.max_output if c.max_output is not None else c.max_output_alt,
    )
