"""Content encodings: every coding and list under any split, truncated and
corrupt compressed data, bombs at the cap, unknown codings. Both backends."""

import zlib

import brotli
import pytest
import zstandard

import llmtally
from conftest import CASES, load
from helpers import case_scanner as scanner
from helpers import random_chunks as chunks

BY_NAME = {c["name"]: c for c in CASES}
SAMPLE = [
    "openai stream with include_usage (seed: Bob)",
    "anthropic stream with cache, thinking and tool use (auto)",
    "vertex JSON-array stream, pretty-printed, cached and tool-use prompt",
    "ollama /api/chat NDJSON stream",
    "bedrock InvokeModelWithResponseStream, Anthropic chunks, sniffed (auto)",
    "openai embeddings",
]


def gzip_(b):
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(b) + c.flush()


def zlib_(b):
    return zlib.compress(b)


def raw_deflate(b):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(b) + c.flush()


ENCODINGS = {
    "gzip": gzip_,
    "x-gzip": gzip_,
    "deflate": zlib_,
    "deflate-raw": raw_deflate,  # sent as "deflate"
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "gzip, br": lambda b: brotli.compress(gzip_(b)),
    "identity, zstd, deflate": lambda b: zlib_(zstandard.ZstdCompressor().compress(b)),
}


def header(name):
    return "deflate" if name == "deflate-raw" else name


@pytest.mark.parametrize("name", SAMPLE)
@pytest.mark.parametrize("enc", list(ENCODINGS))
def test_every_encoding_any_split(name, enc, backend):
    case = BY_NAME[name]
    plain = load(case["response"])
    body = ENCODINGS[enc](plain)
    for pieces in ([body], [body[i : i + 1] for i in range(len(body))], list(chunks(body, 1)), list(chunks(body, 2))):
        sc = scanner(case, backend, header(enc))
        for p in pieces:
            sc.feed(p)
        assert sc.finish().as_dict() == case["usage"]
        st = sc.stats()
        assert (st["bytes"], st["decoded_bytes"], st["decode_capped"], st["decode_failed"]) == (
            len(body),
            len(plain),
            False,
            False,
        )


@pytest.mark.parametrize("enc", ["gzip", "deflate", "deflate-raw", "br", "zstd"])
def test_truncated_compressed_streams_agree(enc):
    case = BY_NAME["openai stream with include_usage (seed: Bob)"]
    plain = load(case["response"])
    body = ENCODINGS[enc](plain)
    for cut in range(0, len(body) + 1, max(1, len(body) // 60)):
        results = []
        for backend in ("native", "python"):
            sc = scanner(case, backend, header(enc))
            sc.feed(body[:cut])
            results.append((sc.finish(), sc.stats()["decoded_bytes"]))
        assert results[0] == results[1], f"cut at {cut}"
    # deflate streams decode up to the cut: minus its last byte, the body still yields the usage
    # (zstd and brotli decode whole blocks, so there a small body cut by a byte yields nothing)
    if enc in ("gzip", "deflate", "deflate-raw"):
        sc = scanner(case, "native", header(enc))
        sc.feed(body[:-1])
        assert sc.finish().total_tokens == 61


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br", "zstd"])
def test_corrupt_compressed_data_stops_cleanly(enc, backend):
    case = BY_NAME["openai stream with include_usage (seed: Bob)"]
    compress = (
        (lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b)) if enc == "zstd" else ENCODINGS[enc]
    )
    body = bytearray(compress(load(case["response"])))
    body[len(body) // 2] ^= 0x55
    body[len(body) // 2 + 1] ^= 0xAA
    sc = scanner(case, backend, enc)
    sc.feed(bytes(body))
    sc.finish()
    assert sc.stats()["decode_failed"] is True


@pytest.mark.parametrize("enc", ["gzip", "br", "zstd"])
def test_bomb_stops_at_the_cap(enc, backend):
    """Usage before the cap counts; output past it is never produced."""
    event = b'data: {"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    plain = event + b": " + b"A" * (4 << 20) + b"\n\n" + b'data: {"usage":{"prompt_tokens":99}}\n\n'
    body = {"gzip": gzip_, "br": lambda b: brotli.compress(b, quality=5), "zstd": ENCODINGS["zstd"]}[enc](plain)
    assert len(body) < 64 * 1024
    cap = 1 << 20
    sc = llmtally.ResponseScanner("openai", content_encoding=enc, backend=backend, max_decoded_bytes=cap)
    for p in chunks(body, 3):
        sc.feed(p)
    u = sc.finish()
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (3, 4, 7)
    st = sc.stats()
    assert (st["decoded_bytes"], st["decode_capped"], st["decode_failed"]) == (cap, True, False)


def test_unknown_encoding_is_undecodable(backend):
    sc = llmtally.ResponseScanner("openai", content_encoding="gzip, compress", backend=backend)
    sc.feed(gzip_(load("openai/chat.json")))
    assert sc.finish().source == "none"
    assert sc.stats()["undecodable"] is True
