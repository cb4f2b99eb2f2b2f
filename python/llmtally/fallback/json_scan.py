"""A streaming, pattern-directed JSON scanner (mirror of rust/core/src/json.rs).

A format declares the paths it cares about as a tree of :class:`Leaf`,
:class:`Obj` and :class:`Arr`; the scanner walks a document fed in pieces of
any size and reports the values at those paths to a sink as soon as each is
complete. Everything else is skipped by string-aware bracket counting.
The rules are those of the Rust module, so both backends agree exactly.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

from .data import CONSTANTS

KEY_MAX = CONSTANTS["json_key_max"]
BARE_MAX = CONSTANTS["json_bare_max"]
REPLACEMENT = "\ufffd".encode()

_NON_WS = re.compile(rb"[^ \t\n\r]")
_BARE = re.compile(rb"[A-Za-z0-9+\-.]*")
_STR_STOP = re.compile(rb'["\\]')
_SKIP_STOP = re.compile(rb'["{}\[\]]')
_HEX = b"0123456789abcdefABCDEF"
_BARE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_RAW_STOP = re.compile(rb'["{}\[\] \t\n\r]')
_RAW_ESC = re.compile(rb'["\\\x00-\x1f]')
_RAW_ESC_MAP = {c: b"\\u%04x" % c for c in range(0x20)} | {
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x08: b"\\b",
    0x0C: b"\\f",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
}


def _raw_escape(m: re.Match) -> bytes:
    return _RAW_ESC_MAP[m.group()[0]]


_SIMPLE_ESC = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f", 0x6E: b"\n", 0x72: b"\r", 0x74: b"\t"}


class Leaf:
    __slots__ = ("field",)

    def __init__(self, field: int):
        self.field = field


class Obj:
    __slots__ = ("mark", "kids")

    def __init__(self, mark: int | None, kids: dict[str, Pattern]):
        self.mark = mark
        self.kids = {k.encode(): v for k, v in kids.items()}


class Arr:
    __slots__ = ("elem",)

    def __init__(self, elem: Pattern):
        self.elem = elem


class Raw:
    """Any value, delivered as its compact JSON text through the string callbacks."""

    __slots__ = ("field",)

    def __init__(self, field: int):
        self.field = field


class Or:
    """The first alternative whose kind fits the value ({ an Obj, [ an Arr, else a Leaf, any value a Raw)."""

    __slots__ = ("alts",)

    def __init__(self, *alts: Pattern):
        self.alts = alts

    def pick(self, b: int) -> Pattern | None:
        for p in self.alts:
            kind = type(p)
            if (
                (kind is Obj and b == 0x7B)
                or (kind is Arr and b == 0x5B)
                or (kind is Leaf and b not in (0x7B, 0x5B))
                or kind is Raw
            ):
                return p
        return None


#: a path pattern: what a format reads of a value
Pattern = Leaf | Obj | Arr | Or | Raw


class Sink:
    """Receiver of values; override what you need."""

    # `builtins.int` after the method `int`: in a class body the name is the method
    def int(self, f: int, v: int) -> None: ...
    def boolean(self, f: builtins.int, v: bool) -> None: ...
    def str_start(self, f: builtins.int) -> None: ...
    def str_piece(self, f: builtins.int, s: bytes) -> None: ...
    def str_end(self, f: builtins.int) -> None: ...
    def enter(self, mark: builtins.int) -> None: ...
    def exit(self, mark: builtins.int) -> None: ...


# document ends
EMPTY, COMPLETE, BROKEN = "empty", "complete", "broken"

# states (RAW: inside a raw value outside its strings; RAW_STR: in one of its strings; RAW_BARE: a bare raw value)
(
    VALUE,
    ARR_FIRST,
    OBJ_FIRST,
    OBJ_KEY,
    COLON,
    COMMA_OR_END,
    KEY,
    LEAF,
    BARE,
    SKIP,
    DONE,
    ERROR,
    RAW,
    RAW_STR,
    RAW_BARE,
) = range(15)
# escape states
E_NONE, E_BACKSLASH, E_UNICODE = range(3)

U64_MAX = (1 << 64) - 1


def parse_uint(tok: bytes) -> int | None:
    if not tok or (len(tok) > 1 and tok[0] == 0x30) or not tok.isdigit():
        return None
    v = int(tok)
    return v if v <= U64_MAX else None


def parse_count(tok: bytes) -> int | None:
    """An integer, or one written with a zero fraction (`4.0`); no sign, no exponent."""
    whole, dot, frac = tok.partition(b".")
    if dot and (not frac or frac.strip(b"0")):
        return None
    return parse_uint(whole)


class JsonScanner:
    __slots__ = (
        "root",
        "stack",
        "st",
        "value_pat",
        "key",
        "key_over",
        "bare",
        "bare_over",
        "leaf",
        "leaf_bare",
        "esc",
        "esc_n",
        "esc_acc",
        "high",
        "skip_depth",
        "skip_in_str",
        "skip_esc",
        "raw_depth",
        "seen",
    )

    def __init__(self, root: Pattern):
        self.root = root
        # the patterns in use are Any: the hot paths tell their kinds apart by `kind = type(pat)`,
        # which mypy does not narrow `pat` through
        self.stack: list[Any] = []  # the open Obj and Arr patterns
        self.key = b""
        self.key_over = False
        self.bare = b""
        self.bare_over = False
        self.leaf = 0
        self.leaf_bare: int | None = None
        self.skip_depth = 0
        self.skip_in_str = False
        self.skip_esc = False
        self.raw_depth = 0
        self.esc_n = 0
        self.esc_acc = 0
        self.reset()

    def reset(self) -> None:
        self.stack.clear()
        self.st = VALUE
        self.value_pat: Any = self.root  # None: a value nobody reads
        self.seen = False
        self.high: int | None = None  # a high surrogate awaiting its low half
        self.esc = E_NONE

    def end_doc(self, sink: Sink) -> str:
        if self.st == BARE:
            self._finish_bare(sink)
        elif self.st == RAW_BARE:
            sink.str_end(self.leaf)
            self._after_value()
        if self.st == DONE:
            end = COMPLETE
        elif self.st == VALUE and not self.seen:
            end = EMPTY
        else:
            end = BROKEN
        self.reset()
        return end

    def _after_value(self) -> None:
        self.st = COMMA_OR_END if self.stack else DONE

    def _close(self, sink: Sink) -> None:
        pat = self.stack.pop()
        if type(pat) is Obj and pat.mark is not None:
            sink.exit(pat.mark)
        self._after_value()

    def _finish_bare(self, sink: Sink) -> None:
        f = self.leaf_bare
        if f is not None and not self.bare_over:
            tok = self.bare
            if tok == b"true":
                sink.boolean(f, True)
            elif tok == b"false":
                sink.boolean(f, False)
            else:
                v = parse_count(tok)
                if v is not None:
                    sink.int(f, v)
        self._after_value()

    def _start_value(self, b: int, sink: Sink) -> bool:
        pat = self.value_pat
        if type(pat) is Or:
            pat = pat.pick(b)
        self.seen = True
        kind = type(pat)
        if kind is Raw:
            if b == 0x22:
                st = RAW_STR
            elif b == 0x7B or b == 0x5B:
                st = RAW
            elif b in _BARE_BYTES:
                st = RAW_BARE
            else:
                return False
            f = pat.field
            self.leaf = f
            self.raw_depth = 1 if st == RAW else 0
            self.esc = E_NONE
            self.high = None
            sink.str_start(f)
            sink.str_piece(f, bytes((b,)))
            self.st = st
            return True
        if b == 0x7B:  # {
            if kind is Obj:
                self.stack.append(pat)
                if pat.mark is not None:
                    sink.enter(pat.mark)
                self.st = OBJ_FIRST
            else:
                self._start_skip(1, False)
        elif b == 0x5B:  # [
            if kind is Arr:
                self.stack.append(pat)
                self.value_pat = pat.elem
                self.st = ARR_FIRST
            else:
                self._start_skip(1, False)
        elif b == 0x22:  # "
            if kind is Leaf:
                self.leaf = pat.field
                self.esc = E_NONE
                self.high = None
                sink.str_start(pat.field)
                self.st = LEAF
            else:
                self._start_skip(0, True)
        elif b in _BARE_BYTES:
            self.leaf_bare = pat.field if kind is Leaf else None
            self.bare = bytes((b,))
            self.bare_over = False
            self.st = BARE
        else:
            return False
        return True

    def _start_skip(self, depth: int, in_str: bool) -> None:
        self.skip_depth = depth
        self.skip_in_str = in_str
        self.skip_esc = False
        self.st = SKIP

    def _emit(self, piece: bytes, sink: Sink) -> None:
        if self.st == KEY:
            if len(self.key) + len(piece) > KEY_MAX:
                self.key_over = True
            else:
                self.key += piece
        elif self.st == RAW_STR:
            sink.str_piece(self.leaf, _RAW_ESC.sub(_raw_escape, piece))
        else:
            sink.str_piece(self.leaf, piece)

    def _flush_high(self, sink: Sink) -> None:
        if self.high is not None:
            self.high = None
            self._emit(REPLACEMENT, sink)

    def _emit_unit(self, u: int, sink: Sink) -> None:
        if 0xD800 <= u <= 0xDBFF:
            self._flush_high(sink)
            self.high = u
        elif 0xDC00 <= u <= 0xDFFF:
            h = self.high
            if h is not None:
                self.high = None
                self._emit(chr(0x10000 + ((h - 0xD800) << 10) + (u - 0xDC00)).encode(), sink)
            else:
                self._emit(REPLACEMENT, sink)
        else:
            self._flush_high(sink)
            self._emit(chr(u).encode(), sink)

    def _string(self, data: bytes, i: int, sink: Sink) -> int:
        n = len(data)
        while i < n:
            esc = self.esc
            if esc == E_NONE:
                m = _STR_STOP.search(data, i)
                if m is None:
                    self._flush_high(sink)
                    self._emit(data[i:], sink)
                    return n
                j = m.start()
                if j > i:
                    self._flush_high(sink)
                    self._emit(data[i:j], sink)
                i = j + 1
                if data[j] == 0x5C:
                    self.esc = E_BACKSLASH
                else:
                    self._flush_high(sink)
                    if self.st == KEY:
                        self.st = COLON
                    elif self.st == RAW_STR:
                        sink.str_piece(self.leaf, b'"')
                        if self.raw_depth == 0:
                            sink.str_end(self.leaf)
                            self._after_value()
                        else:
                            self.st = RAW
                    else:
                        sink.str_end(self.leaf)
                        self._after_value()
                    return i
            elif esc == E_BACKSLASH:
                b = data[i]
                i += 1
                self.esc = E_NONE
                if b == 0x75:  # u
                    self.esc = E_UNICODE
                    self.esc_n = 0
                    self.esc_acc = 0
                    continue
                c = _SIMPLE_ESC.get(b)
                if c is None:
                    self.st = ERROR
                    return n
                self._flush_high(sink)
                self._emit(c, sink)
            else:
                b = data[i]
                if b not in _HEX:
                    self.st = ERROR
                    return n
                i += 1
                self.esc_acc = (self.esc_acc << 4) | int(chr(b), 16)
                if self.esc_n == 3:
                    self.esc = E_NONE
                    self._emit_unit(self.esc_acc, sink)
                else:
                    self.esc_n += 1
        return i

    def _skip(self, data: bytes, i: int) -> int:
        n = len(data)
        while i < n:
            if self.skip_in_str:
                if self.skip_esc:
                    self.skip_esc = False
                    i += 1
                    continue
                m = _STR_STOP.search(data, i)
                if m is None:
                    return n
                i = m.end()
                if data[i - 1] == 0x5C:
                    self.skip_esc = True
                else:
                    self.skip_in_str = False
                    if self.skip_depth == 0:
                        self._after_value()
                        return i
            else:
                m = _SKIP_STOP.search(data, i)
                if m is None:
                    return n
                i = m.end()
                c = data[i - 1]
                if c == 0x22:
                    self.skip_in_str = True
                elif c == 0x7B or c == 0x5B:
                    self.skip_depth += 1
                else:
                    self.skip_depth -= 1
                    if self.skip_depth == 0:
                        self._after_value()
                        return i
        return i

    def _raw(self, data: bytes, i: int, sink: Sink) -> int:
        """A raw value outside its strings: whitespace dropped, brackets counted."""
        n = len(data)
        f = self.leaf
        while i < n:
            m = _RAW_STOP.search(data, i)
            j = n if m is None else m.start()
            if j > i:
                sink.str_piece(f, data[i:j])
            if m is None:
                return n
            i = j + 1
            c = data[j]
            if c == 0x22:
                sink.str_piece(f, b'"')
                self.esc = E_NONE
                self.high = None
                self.st = RAW_STR
                return i
            if c == 0x7B or c == 0x5B:
                self.raw_depth += 1
                sink.str_piece(f, bytes((c,)))
            elif c == 0x7D or c == 0x5D:
                sink.str_piece(f, bytes((c,)))
                self.raw_depth -= 1
                if self.raw_depth == 0:
                    sink.str_end(f)
                    self._after_value()
                    return i
        return i

    def _raw_bare(self, data: bytes, i: int, sink: Sink) -> int:
        j = _BARE.match(data, i).end()  # type: ignore[union-attr]  # matches the empty string: never None
        if j > i:
            sink.str_piece(self.leaf, data[i:j])
        if j < len(data):
            sink.str_end(self.leaf)
            self._after_value()
        return j

    def feed(self, data: bytes, sink: Sink) -> None:
        i = 0
        n = len(data)
        while i < n:
            st = self.st
            if st == ERROR:
                return
            if st == KEY or st == LEAF or st == RAW_STR:
                i = self._string(data, i, sink)
                continue
            if st == RAW:
                i = self._raw(data, i, sink)
                continue
            if st == RAW_BARE:
                i = self._raw_bare(data, i, sink)
                continue
            if st == SKIP:
                i = self._skip(data, i)
                continue
            if st == BARE:
                j = _BARE.match(data, i).end()  # type: ignore[union-attr]  # matches the empty string: never None
                if j > i:
                    self.bare += data[i:j]
                    if len(self.bare) > BARE_MAX:
                        self.bare = self.bare[:BARE_MAX]
                        self.bare_over = True
                    i = j
                if i < n:
                    self._finish_bare(sink)
                continue
            m = _NON_WS.search(data, i)
            if m is None:
                return
            i = m.start()
            b = data[i]
            i += 1
            if st == VALUE:
                ok = self._start_value(b, sink)
            elif st == ARR_FIRST:
                if b == 0x5D:
                    self._close(sink)
                    ok = True
                else:
                    ok = self._start_value(b, sink)
            elif st == OBJ_FIRST or st == OBJ_KEY:
                if b == 0x22:
                    self.key = b""
                    self.key_over = False
                    self.esc = E_NONE
                    self.high = None
                    self.st = KEY
                    ok = True
                elif b == 0x7D and st == OBJ_FIRST:
                    self._close(sink)
                    ok = True
                else:
                    ok = False
            elif st == COLON:
                ok = b == 0x3A
                if ok:
                    top = self.stack[-1]
                    self.value_pat = None if self.key_over else top.kids.get(self.key)
                    self.st = VALUE
            elif st == COMMA_OR_END:
                top = self.stack[-1]
                in_obj = type(top) is Obj
                if b == 0x2C:
                    if in_obj:
                        self.st = OBJ_KEY
                    else:
                        self.value_pat = top.elem
                        self.st = VALUE
                    ok = True
                elif (b == 0x7D and in_obj) or (b == 0x5D and not in_obj):
                    self._close(sink)
                    ok = True
                else:
                    ok = False
            else:  # DONE: only whitespace may follow
                ok = False
            if not ok:
                self.st = ERROR
                return
