"""The fallback's splits, pinned to the native pre-tokenizer's Unicode.

The fallback splits text with tiktoken's pattern in the `regex` module, whose Unicode tables can be newer
than those of tiktoken's and the native core's regex engines (`regex-syntax`): a letter assigned in the
newer version (CJK Extension J, Unicode 17) is a letter to one and punctuation to the other, and the
splits, so the counts, differ. `unicode_classes.txt` (written from `regex-syntax` by `cargo run --example
unicode_classes`, checked by `cargo test`) holds the native classes of every code point; the first call
compares them with the `regex` module's and maps every code point they disagree on to a stand-in the
`regex` module puts in the classes the native core puts it in. The pattern then runs on the mapped text
(one code point for one, so its spans are the original's)."""

from __future__ import annotations

import re
import threading
from importlib import resources

#: the classes the patterns use, as bits (rust/core/src/pretokenize.rs)
CLASSES = (
    r"\p{L}",
    r"\p{N}",
    r"\s",
    r"[\r\n]",
    r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]",
    r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]",
    r"[^\s\p{L}\p{N}]",
    r"[^\r\n\p{L}\p{N}]",
)
CODE_POINTS = 0x110000
SURROGATES = range(0xD800, 0xE000)

_lock = threading.Lock()
_pin: tuple[object, dict[int, str]] | None = None


def native_classes() -> bytearray:
    """The native class bits of every code point (ASCII: the `regex` module's, the same in every version)."""
    out = bytearray(CODE_POINTS)
    text = resources.files(__package__).joinpath("unicode_classes.txt").read_text()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            lo, hi, bits = (int(x, 16) for x in line.split())
            out[lo : hi + 1] = bytes((bits,)) * (hi - lo + 1)
    return out


def regex_classes() -> bytearray:
    """The `regex` module's class bits of every code point."""
    import regex

    everything = "".join(map(chr, range(CODE_POINTS)))
    acc = 0
    for i, pattern in enumerate(CLASSES):
        mask = bytearray(CODE_POINTS)
        bit = bytes((1 << i,))
        for m in regex.finditer(pattern + "+", everything):
            a, b = m.span()
            mask[a:b] = bit * (b - a)
        acc |= int.from_bytes(mask, "big")
    return bytearray(acc.to_bytes(CODE_POINTS, "big"))


def pin() -> tuple[object, dict[int, str]]:
    """(a compiled class of the code points to map (none is ASCII), or None when there are none; the map
    for str.translate)."""
    global _pin
    with _lock:
        if _pin is None:
            _pin = _make()
        return _pin


def _make() -> tuple[object, dict[int, str]]:
    ours, theirs = native_classes(), regex_classes()
    ours[:128] = theirs[:128]
    diff = (int.from_bytes(ours, "big") ^ int.from_bytes(theirs, "big")).to_bytes(CODE_POINTS, "big")
    mapping: dict[int, str] = {}
    stand_in: dict[int, int] = {}
    for m in re.finditer(rb"[^\x00]+", diff):
        for cp in range(*m.span()):
            if cp in SURROGATES:
                continue
            want = ours[cp]
            if want not in stand_in:
                stand_in[want] = _agreed(ours, theirs, want)
            if stand_in[want] >= 0:
                mapping[cp] = chr(stand_in[want])
    if not mapping:
        return None, mapping
    # as ranges: a class of some 17,000 single code points cost the search about 5 us per character
    runs: list[list[int]] = []
    for cp in sorted(mapping):
        if runs and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    ranges = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in runs)
    return re.compile(f"[{ranges}]"), mapping


def _agreed(ours: bytearray, theirs: bytearray, bits: int) -> int:
    """A code point both put in exactly the classes `bits` (-1: none)."""
    b, at = bytes((bits,)), 0
    while (at := theirs.find(b, at)) >= 0:
        if ours[at] == bits and at not in SURROGATES:
            return at
        at += 1
    return -1
