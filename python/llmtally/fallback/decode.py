"""Streaming content decoding (mirror of rust/core/src/decode.rs).

zlib for gzip and deflate, `brotli` for br and `zstandard` for zstd, each
driven with a bounded output per call so a compression bomb never
materialises. Without the optional `brotli` / `zstandard` packages those
codings are undecodable in this backend (``pip install llmtally[fallback]``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import IO, cast

from .data import CONSTANTS

try:
    import brotli
except ImportError:  # pragma: no cover
    brotli = None
try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None  # type: ignore[assignment]  # optional: parse() refuses zstd without it

BLOCK = CONSTANTS["decode_block"]
ZSTD_WINDOW_MAX = 1 << CONSTANTS["zstd_window_log_max"]

GZIP, DEFLATE, BROTLI, ZSTD = "gzip", "deflate", "br", "zstd"
_NAMES = {"gzip": GZIP, "x-gzip": GZIP, "deflate": DEFLATE, "br": BROTLI, "zstd": ZSTD}

# flows
MORE, STOP, ERROR = range(3)


def parse(header: str) -> list[str] | None:
    """Codecs to undo in decoding order, or None if one is unknown (or unavailable)."""
    out = []
    for part in header.split(","):
        name = part.strip().lower()
        if name in ("", "identity"):
            continue
        codec = _NAMES.get(name)
        if codec is None or (codec == BROTLI and brotli is None) or (codec == ZSTD and zstandard is None):
            return None
        out.append(codec)
    out.reverse()
    return out


def _inflate(z, data: bytes, emit):
    """Returns (flow, ended, unused input after the end)."""
    while True:
        try:
            out = z.decompress(data, BLOCK)
        except zlib.error:
            return ERROR, False, b""
        data = z.unconsumed_tail
        if out and not emit(out):
            return STOP, False, b""
        if z.eof:
            return MORE, True, z.unused_data
        if not data and len(out) < BLOCK:
            return MORE, False, b""


class _Gzip:
    """Header, raw deflate, CRC32 and size trailer; members may follow."""

    def __init__(self):
        self.phase = "header"
        self.buf = b""
        self.flags = 0
        self.extra = 0
        self.z = zlib.decompressobj(-15)
        self.crc = 0
        self.size = 0

    def _after(self, done: str) -> str:
        order = [("extra_len", 4), ("name", 8), ("comment", 16), ("hcrc", 2)]
        names = [p for p, _ in order]
        start = names.index(done) + 1 if done in names else 0
        for p, bit in order[start:]:
            if self.flags & bit:
                return p
        return "body"

    def _gather(self, want: int, data: bytes) -> bytes:
        k = want - len(self.buf)
        self.buf += data[:k]
        return data[k:]

    def push(self, data: bytes, emit) -> int:
        while data:
            phase = self.phase
            if phase == "done":
                return MORE
            if phase == "between":
                self.phase = "header" if data[0] == 0x1F else "done"
            elif phase == "header":
                data = self._gather(10, data)
                if len(self.buf) < 10:
                    continue
                h = self.buf
                if h[0] != 0x1F or h[1] != 0x8B or h[2] != 8 or h[3] & 0xE0:
                    return ERROR
                self.flags = h[3]
                self.buf = b""
                self.phase = self._after("header")
            elif phase == "extra_len":
                data = self._gather(2, data)
                if len(self.buf) == 2:
                    self.extra = int.from_bytes(self.buf, "little")
                    self.buf = b""
                    self.phase = "extra"
            elif phase == "extra":
                k = min(self.extra, len(data))
                data = data[k:]
                self.extra -= k
                if self.extra == 0:
                    self.phase = self._after("extra_len")
            elif phase in ("name", "comment"):
                j = data.find(b"\0")
                if j < 0:
                    data = b""
                else:
                    data = data[j + 1 :]
                    self.phase = self._after(phase)
            elif phase == "hcrc":
                data = self._gather(2, data)
                if len(self.buf) == 2:
                    self.buf = b""
                    self.phase = "body"
            elif phase == "body":

                def counted(b):
                    self.crc = zlib.crc32(b, self.crc)
                    self.size = (self.size + len(b)) & 0xFFFFFFFF
                    return emit(b)

                flow, ended, data = _inflate(self.z, data, counted)
                if flow != MORE:
                    return flow
                if not ended:
                    return MORE
                self.phase = "trailer"
            else:  # trailer
                data = self._gather(8, data)
                if len(self.buf) < 8:
                    continue
                crc = int.from_bytes(self.buf[:4], "little")
                size = int.from_bytes(self.buf[4:], "little")
                if crc != self.crc or size != self.size:
                    return ERROR
                _Gzip.__init__(self)
                self.phase = "between"
        return MORE


class _Deflate:
    def __init__(self):
        self.head = b""
        self.z = None
        self.done = False

    def push(self, data: bytes, emit) -> int:
        if self.done:
            return MORE
        if self.z is None:
            k = 2 - len(self.head)
            self.head += data[:k]
            data = data[k:]
            if len(self.head) < 2:
                return MORE
            b0, b1 = self.head
            zlib_wrapped = b0 & 0x0F == 8 and b0 >> 4 <= 7 and (b0 << 8 | b1) % 31 == 0
            self.z = zlib.decompressobj(15 if zlib_wrapped else -15)
            data = self.head + data
        flow, ended, _ = _inflate(self.z, data, emit)
        self.done = ended
        return flow


class _Brotli:
    def __init__(self):
        self.d = brotli.Decompressor()

    def push(self, data: bytes, emit) -> int:
        if self.d.is_finished():
            return MORE
        try:
            out = self.d.process(data, output_buffer_limit=BLOCK)
            while True:
                if out and not emit(out):
                    return STOP
                if self.d.is_finished() or self.d.can_accept_more_data():
                    return MORE
                out = self.d.process(b"", output_buffer_limit=BLOCK)
        except brotli.error:
            return ERROR


class _Stop(Exception):
    pass


class _Zstd:
    def __init__(self):
        self.emit: Callable[[bytes], bool] | None = None
        # zstandard only calls write() of its writer
        writer = cast("IO[bytes]", self)
        self.w = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW_MAX).stream_writer(writer, write_size=BLOCK)

    def write(self, b) -> int:  # called by zstandard with each output block
        if not self.emit(bytes(b)):  # type: ignore[misc]  # push() set emit before zstandard writes
            raise _Stop
        return len(b)

    def push(self, data: bytes, emit) -> int:
        self.emit = emit
        try:
            self.w.write(data)
        except _Stop:
            return STOP
        except zstandard.ZstdError:
            return ERROR
        return MORE


_STAGES = {GZIP: _Gzip, DEFLATE: _Deflate, BROTLI: _Brotli, ZSTD: _Zstd}


def _run(stages, data: bytes, sink) -> int:
    if not stages:
        return MORE if sink(data) else STOP
    first, rest = stages[0], stages[1:]
    downstream = [MORE]

    def emit(block):
        downstream[0] = _run(rest, block, sink)
        return downstream[0] == MORE

    flow = first.push(data, emit)
    return downstream[0] if downstream[0] != MORE else flow


class Decoder:
    __slots__ = ("stages", "cap", "produced", "stopped", "failed")

    def __init__(self, codecs: list[str], cap: int):
        self.stages = [_STAGES[c]() for c in codecs]
        self.cap = cap
        self.produced = 0
        self.stopped = False
        self.failed = False

    def push(self, data: bytes, out) -> None:
        if self.stopped or self.failed:
            return

        def capped(b) -> bool:
            room = self.cap - self.produced
            take = min(room, len(b))
            if take:
                out(b[:take] if take < len(b) else b)
                self.produced += take
            return len(b) <= room

        flow = _run(self.stages, data, capped)
        if flow == STOP:
            self.stopped = True
        elif flow == ERROR:
            self.failed = True
