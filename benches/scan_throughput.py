"""Scanner throughput, native vs fallback, on ~1k-token answers chunked like
Envoy delivers them, and count_tokens native vs the tiktoken package (counts
asserted equal). Writes JSON results; `--short` is the CI mode.

    python benches/scan_throughput.py [--short] [--out bench-results.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import llmtally

FIX = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
ENVOY_CHUNK = 16 * 1024  # Envoy hands ext_proc body chunks of up to its buffer size


def openai_sse(deltas: int) -> bytes:
    head = b'data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    tail = b'data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":1000,"total_tokens":1021}}\n\ndata: [DONE]\n\n'
    return head * deltas + tail


def anthropic_sse(deltas: int) -> bytes:
    start = (FIX / "anthropic/messages_stream.sse").read_bytes()
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" word"}}\n\n'
    cut = start.index(b"event: content_block_stop")
    return start[:cut] + delta * deltas + start[cut:]


def openai_json(_: int) -> bytes:
    return (FIX / "openai/chat.json").read_bytes()


WORKLOADS = {
    "openai_sse_1k": (openai_sse, "openai", "text/event-stream"),
    "anthropic_sse_1k": (anthropic_sse, "anthropic", "text/event-stream"),
    "openai_json": (openai_json, "openai", "application/json"),
}


def measure(body: bytes, provider: str, ct: str, backend: str, min_seconds: float) -> dict:
    chunks = [body[i:i + ENVOY_CHUNK] for i in range(0, len(body), ENVOY_CHUNK)]
    runs = 0
    best = float("inf")
    deadline = time.perf_counter() + min_seconds
    while runs < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        sc = llmtally.ResponseScanner(provider, content_type=ct, backend=backend)
        for c in chunks:
            sc.feed(c)
        u = sc.finish()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    assert u.source == "provider"
    return {"bytes": len(body), "best_seconds": best, "mb_per_s": len(body) / best / 1e6, "runs": runs}


COUNT_TEXTS = {
    "prose": lambda: (FIX.parent.parent / "README.md").read_text() * 10,
    "code": lambda: "".join(p.read_text() for p in sorted((FIX.parent.parent / "rust/core/src").glob("*.rs"))) * 2,
    "cjk": lambda: "中文分词测试，这是一个句子。日本語のテキスト、カタカナ。한국어 문장입니다. " * 2000,
}


def best_of(f, min_seconds: float) -> tuple[float, object]:
    best, runs, deadline = float("inf"), 0, time.perf_counter() + min_seconds
    while runs < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best, out


def count_bench(min_seconds: float) -> dict:
    from llmtally.fallback.tokens import encoding

    rows = {}
    for enc_name in ("o200k_base", "cl100k_base"):
        tk = encoding(enc_name)[0]
        llmtally.count_tokens("warm up", encoding=enc_name, backend="native")
        for kind, make in COUNT_TEXTS.items():
            text = make()
            t_native, n_native = best_of(lambda: llmtally.count_tokens(text, encoding=enc_name, backend="native"),
                                         min_seconds)
            t_tk, tokens = best_of(lambda: tk.encode_ordinary(text), min_seconds)
            assert n_native == len(tokens), (enc_name, kind)
            rows[f"{enc_name}/{kind}"] = {"bytes": len(text.encode()), "tokens": n_native, "native_s": t_native,
                                          "tiktoken_s": t_tk, "native_over_tiktoken": t_tk / t_native}
            print(f"count {enc_name:11} {kind:5} native {len(text.encode()) / t_native / 1e6:7.1f} MB/s   "
                  f"tiktoken {len(text.encode()) / t_tk / 1e6:6.1f} MB/s   ratio {t_tk / t_native:5.2f}x")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true", help="CI mode: fewer repetitions")
    ap.add_argument("--out", default="bench-results.json")
    args = ap.parse_args()
    min_seconds = 0.2 if args.short else 2.0
    results = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
               "scan": {}}
    for name, (make, provider, ct) in WORKLOADS.items():
        body = make(1000)
        row = {b: measure(body, provider, ct, b, min_seconds) for b in ("native", "python")}
        row["native_over_python"] = row["native"]["mb_per_s"] / row["python"]["mb_per_s"]
        results["scan"][name] = row
        print(f"{name:18} native {row['native']['mb_per_s']:9.1f} MB/s   python {row['python']['mb_per_s']:7.2f} MB/s"
              f"   ratio {row['native_over_python']:6.1f}x")
    results["count_tokens"] = count_bench(min_seconds)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
