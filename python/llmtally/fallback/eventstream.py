"""AWS event stream framing (mirror of rust/core/src/eventstream.rs)."""

from __future__ import annotations

import struct
import zlib

from .data import CONSTANTS

PRELUDE = CONSTANTS["eventstream_prelude"]
MIN_MESSAGE = CONSTANTS["eventstream_min_message"]
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _headers(h: bytes):
    """(event_type, message_type), or None if malformed."""
    event_type = message_type = b""
    i, n = 0, len(h)
    while i < n:
        name_len = h[i]
        if i + 2 + name_len > n:
            return None
        name = h[i + 1 : i + 1 + name_len]
        kind = h[i + 1 + name_len]
        i += 2 + name_len
        if kind in (6, 7):
            if i + 2 > n:
                return None
            vlen = int.from_bytes(h[i : i + 2], "big")
            if i + 2 + vlen > n:
                return None
            value = h[i + 2 : i + 2 + vlen]
            if kind == 7:
                if name == b":event-type":
                    event_type = value
                elif name == b":message-type":
                    message_type = value
            i += 2 + vlen
        elif kind in _FIXED:
            if i + _FIXED[kind] > n:
                return None
            i += _FIXED[kind]
        else:
            return None
    return event_type, message_type


class EventStream:
    __slots__ = ("buf", "skip", "max_message", "messages", "corrupt", "oversized")

    def __init__(self, max_message: int):
        self.buf = bytearray()
        self.skip = 0
        self.max_message = max(max_message, MIN_MESSAGE)
        self.messages = self.corrupt = self.oversized = 0

    def pending(self) -> bool:
        return bool(self.buf) or self.skip > 0

    def feed(self, data: bytes, on_message) -> None:
        i, n = 0, len(data)
        buf = self.buf
        while i < n:
            if self.skip:
                k = min(self.skip, n - i)
                self.skip -= k
                i += k
                continue
            if len(buf) < PRELUDE:
                k = min(PRELUDE - len(buf), n - i)
                buf += data[i : i + k]
                i += k
                if len(buf) < PRELUDE:
                    return
                total, hlen, crc = struct.unpack_from(">III", buf)
                if zlib.crc32(buf[:8]) != crc or total < MIN_MESSAGE or hlen > total - MIN_MESSAGE:
                    self.corrupt += 1
                    del buf[0]
                    continue
                if total > self.max_message:
                    self.oversized += 1
                    self.skip = total - PRELUDE
                    buf.clear()
                    continue
            total, hlen = struct.unpack_from(">II", buf)
            k = min(total - len(buf), n - i)
            buf += data[i : i + k]
            i += k
            if len(buf) < total:
                return
            msg = bytes(buf)
            buf.clear()
            heads = _headers(msg[PRELUDE : PRELUDE + hlen])
            if zlib.crc32(msg[: total - 4]) != int.from_bytes(msg[total - 4 :], "big") or heads is None:
                self.corrupt += 1
                continue
            self.messages += 1
            on_message(heads[0], heads[1], msg[PRELUDE + hlen : total - 4])


def encode(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One message with string headers (for tests and the mock upstream)."""
    h = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + len(v).to_bytes(2, "big") + v.encode() for k, v in headers)
    total = PRELUDE + len(h) + len(payload) + 4
    prelude = struct.pack(">II", total, len(h))
    m = prelude + zlib.crc32(prelude).to_bytes(4, "big") + h + payload
    return m + zlib.crc32(m).to_bytes(4, "big")
