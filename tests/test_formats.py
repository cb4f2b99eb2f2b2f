"""Issue-3 behaviours: content decoding, bombs, event-stream corruption,
cumulative usage, bounded memory. Both backends, exact values."""

import json
import random
import subprocess
import sys
import textwrap
import zlib

import brotli
import pytest
import zstandard

import llmtally
from conftest import CASES, load

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


def scanner(case, backend, encoding="", **kw):
    req = None
    if "request" in case:
        req = llmtally.parse_request(load(case["request"]), case["provider"], case.get("path", ""))
    return llmtally.ResponseScanner(
        case["provider"],
        req,
        content_type=case.get("content_type", ""),
        content_encoding=encoding,
        path=case.get("path", ""),
        backend=backend,
        **kw,
    )


def chunks(body, seed):
    rng = random.Random(seed)
    i = 0
    while i < len(body):
        n = rng.choice((1, 5, 100, 3000))
        yield body[i : i + n]
        i += n


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


BEDROCK = BY_NAME["bedrock ConverseStream event stream"]
# without the metadata event, the streamed text is counted (the model has no public tokenizer: o200k_base)
TEXT_TOKENS = BY_NAME["bedrock ConverseStream throttled mid-stream"]["usage"]["completion_tokens"]


def messages(blob):
    out, i = [], 0
    while i < len(blob):
        n = int.from_bytes(blob[i : i + 4], "big")
        out.append(blob[i : i + n])
        i += n
    return out


def bedrock_scan(body, backend, **kw):
    sc = scanner(BEDROCK, backend, **kw)
    for p in chunks(body, 5):
        sc.feed(p)
    return sc.finish().as_dict(), sc.stats()


def test_bedrock_corrupt_message_is_skipped(backend):
    msgs = messages(load(BEDROCK["response"]))
    bad = bytearray(msgs[1])
    bad[-10] ^= 1  # payload byte: the message CRC fails
    body = b"".join([msgs[0], bytes(bad), *msgs[2:]])
    usage, st = bedrock_scan(body, backend)
    assert usage == BEDROCK["usage"]
    assert (st["corrupt_frames"], st["docs"]) == (1, 5)


def test_bedrock_resyncs_after_junk(backend):
    msgs = messages(load(BEDROCK["response"]))
    junk = bytes(range(1, 200))
    body = b"".join([msgs[0], junk, *msgs[1:3], b"\x00\x00\x00", *msgs[3:]])
    usage, st = bedrock_scan(body, backend)
    assert usage == BEDROCK["usage"]
    assert (st["corrupt_frames"], st["docs"]) == (len(junk) + 3, 6)


def test_bedrock_bad_prelude_crc_resyncs(backend):
    msgs = messages(load(BEDROCK["response"]))
    bad = bytearray(msgs[2])
    bad[9] ^= 0xFF  # prelude CRC
    usage, st = bedrock_scan(b"".join([*msgs[:2], bytes(bad), *msgs[3:]]), backend)
    assert usage == BEDROCK["usage"]
    assert st["docs"] == 5 and st["corrupt_frames"] >= 1


def test_bedrock_oversized_message_is_skipped_unbuffered(backend):
    msgs = messages(load(BEDROCK["response"]))
    assert len(msgs[-1]) > 200 > max(len(m) for m in msgs[:-1])
    usage, st = bedrock_scan(b"".join(msgs), backend, max_event_bytes=200)
    assert (usage["source"], usage["completion_tokens"]) == ("tokenizer", TEXT_TOKENS)
    assert (st["oversized_events"], st["docs"], st["corrupt_frames"]) == (1, 5, 0)


def test_bedrock_exception_and_truncation(backend):
    sc = scanner(BY_NAME["bedrock ConverseStream throttled mid-stream"], backend)
    sc.feed(load("bedrock/converse_stream_throttled.bin"))
    sc.finish()
    assert sc.stats()["errors"] == 1
    body = load(BEDROCK["response"])
    usage, st = bedrock_scan(body[:-20], backend)
    assert (usage["source"], usage["completion_tokens"], st["broken_docs"]) == ("tokenizer", TEXT_TOKENS, 1)


@pytest.mark.parametrize(
    "pid, path, ct, want",
    [
        ("OpenAI ", "", "", "openai"),
        ("vllm", "/v1/messages", "", "openai"),
        ("", "/anthropic/v1/messages", "", "anthropic"),
        ("auto", "/anything", "application/vnd.amazon.eventstream; charset=x", "bedrock"),
        ("auto", "/x/api/generate", "", "ollama"),
        ("auto", "/v1/chat/completions?x=/v1/messages", "", "openai"),
        ("vertex-ai", "", "", "vertex-ai"),
    ],
)
def test_resolve_provider(pid, path, ct, want, backend):
    assert llmtally.resolve_provider(pid, path, ct, backend=backend) == want


def test_gemini_latest_usage_object_replaces_earlier(backend):
    body = (
        b'data: {"usageMetadata":{"promptTokenCount":5,"thoughtsTokenCount":7,"totalTokenCount":12}}\r\n\r\n'
        b'data: {"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}}\r\n\r\n'
    )
    sc = llmtally.ResponseScanner("gemini", content_type="text/event-stream", backend=backend)
    sc.feed(body)
    u = sc.finish()
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens, u.total_tokens) == (5, 2, 0, 7)


@pytest.mark.parametrize(
    "path, provider, model, streaming",
    [
        ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", "gemini", "gemini-2.5-pro", True),
        (
            "/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent",
            "vertex-ai",
            "gemini-2.0-flash",
            False,
        ),
        (
            "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream",
            "bedrock",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            True,
        ),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/invoke",
            "bedrock",
            "arn:aws:bedrock:us-east-1:1:inference-profile/x",
            False,
        ),
        ("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", "azure", "gpt4o-prod", False),
        ("/api/chat", "ollama", None, True),
        ("/v1/chat/completions", "openai", None, False),
    ],
)
def test_request_path_facts(path, provider, model, streaming, backend):
    assert llmtally.resolve_provider("auto", path, backend=backend) == provider
    for pid in (provider, "auto"):
        info = llmtally.parse_request(b"{}", pid, path, backend=backend)
        assert (info.model, info.streaming) == (model, streaming)
    info = llmtally.parse_request(b'{"model":"body-model","stream":false}', provider, path, backend=backend)
    assert (info.model, info.streaming) == ("body-model", False)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import llmtally
    backend, mib, enc = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    item = json.dumps({"object": "embedding", "index": 0, "embedding": [0.0123456789] * 1536}).encode() + b","
    head = b'{"object":"list","data":['
    tail = (b'{"object":"embedding","index":1,"embedding":[0.1]}],"model":"text-embedding-3-large",'
            b'"usage":{"prompt_tokens":5000,"total_tokens":5000}}')
    n = -(-(mib << 20) // len(item))
    if enc == "gzip":
        import zlib
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
        parts = [c.compress(head)] + [c.compress(item) for _ in range(n)] + [c.compress(tail) + c.flush()]
        pieces = lambda: iter(parts)
    else:
        pieces = lambda: iter([head] + [item] * n + [tail])
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sc = llmtally.ResponseScanner("openai", content_type="application/json", content_encoding=enc,
                                  backend=backend, max_decoded_bytes=1 << 40)
    before = rss()
    for p in pieces():
        sc.feed(p)
    print(json.dumps({"usage": sc.finish().as_dict(), "grew_kib": rss() - before,
                      "decoded": sc.stats()["decoded_bytes"]}))
""")


@pytest.mark.parametrize("backend_, mib, enc", [("native", 100, ""), ("python", 100, ""), ("native", 100, "gzip")])
def test_100mb_json_body_flat_memory(backend_, mib, enc):
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, backend_, str(mib), enc], capture_output=True, text=True, check=True
    ).stdout
    r = json.loads(out)
    assert r["decoded"] >= mib << 20
    assert r["usage"] == {
        "prompt_tokens": 5000,
        "completion_tokens": 0,
        "total_tokens": 5000,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "model": "text-embedding-3-large",
        "provider_model": "text-embedding-3-large",
        "streaming": False,
        "source": "provider",
    }
    # the body is 100 MiB; the scanner's peak memory growth stays a few MiB
    assert r["grew_kib"] < 8 * 1024, r
