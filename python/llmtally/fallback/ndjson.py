"""Newline-delimited JSON framing (mirror of rust/core/src/ndjson.rs)."""


def feed(data: bytes, h) -> None:
    i, n = 0, len(data)
    while i < n:
        j = data.find(b"\n", i)
        if j < 0:
            h.feed(data[i:])
            return
        if j > i:
            h.feed(data[i:j])
        h.end()
        i = j + 1
