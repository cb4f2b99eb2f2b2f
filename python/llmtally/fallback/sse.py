"""Server-sent events framing (mirror of rust/core/src/sse.rs).

Streams each `data` line's value to a handler as it arrives; no event is
buffered. CRLF, LF and lone CR end lines (also across chunks); one space
after the colon is dropped; `:` starts a comment; a line without a colon is
a field with an empty value; a blank line dispatches an event that had data.
"""

from __future__ import annotations

import re

_NAME_STOP = re.compile(rb"[:\r\n]")
_EOL = re.compile(rb"[\r\n]")

NAME, AFTER_COLON, DATA, IGNORE = range(4)


class SseFramer:
    __slots__ = ("st", "name", "name_other", "cr", "has_data")

    def __init__(self):
        self.st = NAME
        self.name = b""
        self.name_other = False
        self.cr = False
        self.has_data = False

    def pending(self) -> bool:
        return self.has_data

    def _is_data(self) -> bool:
        return not self.name_other and self.name == b"data"

    def _data_line(self, h) -> None:
        h.data_start(not self.has_data)
        self.has_data = True

    def _line_end(self, b: int) -> None:
        self.cr = b == 0x0D
        self.st = NAME
        self.name = b""
        self.name_other = False

    def feed(self, data: bytes, h) -> None:
        i = 0
        n = len(data)
        while i < n:
            if self.cr:
                self.cr = False
                if data[i] == 0x0A:
                    i += 1
                    continue
            st = self.st
            if st == NAME:
                m = _NAME_STOP.search(data, i)
                j = n if m is None else m.start()
                if j > i:
                    if len(self.name) + (j - i) > 4:
                        self.name_other = True
                    else:
                        self.name += data[i:j]
                if m is None:
                    return
                b = data[j]
                i = j + 1
                if b == 0x3A:
                    if self._is_data():
                        self._data_line(h)
                        self.st = AFTER_COLON
                    else:
                        self.st = IGNORE
                else:
                    if not self.name and not self.name_other:
                        if self.has_data:
                            self.has_data = False
                            h.dispatch()
                    elif self._is_data():
                        self._data_line(h)
                    self._line_end(b)
            elif st == AFTER_COLON:
                if data[i] == 0x20:
                    i += 1
                self.st = DATA
            else:
                m = _EOL.search(data, i)
                j = n if m is None else m.start()
                if st == DATA and j > i:
                    h.data(data[i:j])
                if m is None:
                    return
                self._line_end(data[j])
                i = j + 1
