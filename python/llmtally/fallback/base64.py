"""Streaming base64 decoder (mirror of rust/core/src/base64.rs)."""

from __future__ import annotations

import binascii
import re

_VALID = re.compile(rb"[A-Za-z0-9+/]*")


class Base64:
    __slots__ = ("rest", "pad", "failed")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.rest = b""  # 0-3 pending characters
        self.pad = False
        self.failed = False

    def push(self, data: bytes, out) -> None:
        i, n = 0, len(data)
        while i < n and not self.failed:
            if data[i] == 0x3D:  # '='
                self.pad = True
                i += 1
                continue
            if self.pad:
                self.failed = True
                break
            j = _VALID.match(data, i).end()  # type: ignore[union-attr]  # matches the empty string: never None
            if j == i:
                self.failed = True
                break
            chars = self.rest + data[i:j]
            whole = len(chars) - len(chars) % 4
            if whole:
                out(binascii.a2b_base64(chars[:whole]))
            self.rest = chars[whole:]
            i = j

    def finish(self, out) -> None:
        if not self.failed and len(self.rest) >= 2:
            out(binascii.a2b_base64(self.rest + b"=" * (4 - len(self.rest))))
        self.reset()
