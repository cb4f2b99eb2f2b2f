"""Memory stays flat whatever the body size (a fresh process per measure)."""

import json
import subprocess
import sys
import textwrap

import pytest

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
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "model": "text-embedding-3-large",
        "provider_model": "text-embedding-3-large",
        "streaming": False,
        "source": "provider",
        "response_id": None,
        "finish_reasons": [],
    }
    # the body is 100 MiB; the scanner's peak memory growth stays a few MiB
    assert r["grew_kib"] < 8 * 1024, r
