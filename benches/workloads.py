"""Shared inputs for the micro-benchmarks (pytest-benchmark)."""

import functools
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
ENVOY_CHUNK = 16 * 1024  # Envoy hands ext_proc body chunks of up to its buffer size


def chunks(body: bytes) -> list[bytes]:
    return [body[i : i + ENVOY_CHUNK] for i in range(0, len(body), ENVOY_CHUNK)]


#: the deltas of the streams, in turn: words of several lengths, punctuation, and now and then a line break
#: (a JSON escape), as a model's text comes
WORDS = [
    b" The",
    b" quick",
    b" brown",
    b" fox",
    b" jumps",
    b" over",
    b" the",
    b" lazy",
    b" dog",
    b".",
    b" It",
    b" was",
    b" not",
    b" amused",
    b",",
    b" and",
    b" said",
    b" so",
    b"\\n\\n",
    b" Then",
]


def deltas_of(n: int) -> list[bytes]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


def openai_sse(deltas: int = 1000) -> bytes:
    def head(w: bytes) -> bytes:
        return (
            b'data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,'
            b'"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"' + w + b'"},"logprobs":null,'
            b'"finish_reason":null}],"usage":null}\n\n'
        )

    # as OpenAI ends a stream with include_usage: the finish reason's chunk, then the usage's
    tail = (
        b'data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,"model":"gpt-4o-2024-08-06",'
        b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
        b'data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1735839253,"model":"gpt-4o-2024-08-06",'
        b'"choices":[],"usage":{"prompt_tokens":21,"completion_tokens":1000,"total_tokens":1021}}\n\ndata: [DONE]\n\n'
    )
    return b"".join(head(w) for w in deltas_of(deltas)) + tail


def anthropic_sse(deltas: int = 1000) -> bytes:
    start = (FIX / "anthropic/messages_stream.sse").read_bytes()

    def delta(w: bytes) -> bytes:
        return (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"' + w + b'"}}\n\n'
        )

    cut = start.index(b"event: content_block_stop")
    return start[:cut] + b"".join(delta(w) for w in deltas_of(deltas)) + start[cut:]


def gemini_sse(deltas: int = 1000) -> bytes:
    def ev(w: bytes) -> bytes:
        return (
            b'data: {"candidates": [{"content": {"parts": [{"text": "' + w + b'"}],"role": "model"},"index": 0}],'
            b'"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash"}'
            b"\r\n\r\n"
        )

    last = (
        b'data: {"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP"}],'
        b'"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 1000,"totalTokenCount": 1009},'
        b'"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
    )
    return b"".join(ev(w) for w in deltas_of(deltas)) + last


def embeddings_json(items: int = 200) -> bytes:
    item = b'{"object":"embedding","index":0,"embedding":[' + b",".join([b"0.0123456789"] * 1536) + b"]},"
    return (
        b'{"object":"list","data":[' + item * items + b'{"object":"embedding","index":1,"embedding":[0.1]}],'
        b'"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}'
    )


#: name -> (body, provider, content type, total tokens expected)
WORKLOADS = {
    "openai_sse": (openai_sse(), "openai", "text/event-stream", 1021),
    "anthropic_sse": (anthropic_sse(), "anthropic", "text/event-stream", 40),
    "gemini_sse": (gemini_sse(), "gemini", "text/event-stream", 1009),
    "embeddings_json": (embeddings_json(), "openai", "application/json", 8),
}


def _fixed_size(text: str, size: int = 256 * 1024) -> str:
    return (text * (size // len(text) + 1))[:size]


def _docs() -> str:
    return "".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


#: the first code points of Han (with extension A), hiragana, katakana and Hangul syllables, and one past each
CJK_RANGES = ((0x3400, 0x4DC0), (0x4E00, 0xA000), (0x3040, 0x30A0), (0x30A0, 0x3100), (0xAC00, 0xD7B0))


def _cjk_unrepeated(size: int = 256 * 1024) -> str:
    """About `size` bytes of Chinese, Japanese and Korean that do not repeat: o200k_base's tokens written
    in those scripts alone (7,579 of them), drawn at random (seeded) with a comma, full stop, space or line
    break now and then. Not sentences, but the pieces a text in these scripts is split into: long runs of
    letters, which a cache of recent pieces does not help."""
    import random

    from llmtally.fallback.tokens import encoding

    words = []
    for b in encoding("cl100k_base")[0].token_byte_values():
        try:
            w = b.decode()
        except UnicodeDecodeError:
            continue
        if all(any(lo <= ord(c) < hi for lo, hi in CJK_RANGES) for c in w):
            words.append(w)
    rng = random.Random(2026)
    out, n = [], 0
    while n < size:
        w = rng.choice(words)
        r = rng.random()
        w += "，" if r < 0.08 else "。" if r < 0.12 else " " if r < 0.14 else "\n" if r < 0.15 else ""
        out.append(w)
        n += len(w.encode())
    return "".join(out)


#: the texts `count_tokens` is measured on, made when first asked for (`count_text`)
COUNT_TEXTS = {
    # the project's English docs, repeated to a fixed 256 KB so the measure does not move with them
    "prose": lambda: _fixed_size(_docs()),
    # the same once: no word's count is kept from its last time in the text (the docs' size moves the measure)
    "prose_once": _docs,
    "code": lambda: "".join(p.read_text() for p in sorted((ROOT / "rust/core/src").glob("*.rs"))),
    # a few sentences repeated, the case a cache of recent pieces makes cheap
    "cjk": lambda: "中文分词测试，这是一个句子。日本語のテキスト、カタカナ。한국어 문장입니다. " * 1500,
    "cjk_once": _cjk_unrepeated,
}


@functools.cache
def count_text(kind: str) -> str:
    return COUNT_TEXTS[kind]()


def seed_stream_messages():
    """The ext_proc messages of the seed's streaming request (Bob), as Envoy sends them."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    def headers(pairs):
        return pb.HttpHeaders(
            headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs])
        )

    body = (FIX / "openai/chat_stream_usage.sse").read_bytes()
    third = len(body) // 3
    return [
        pb.ProcessingRequest(request_headers=headers([(":method", "POST"), (":path", "/v1/chat/completions")])),
        pb.ProcessingRequest(
            request_body=pb.HttpBody(
                body=(FIX / "openai/chat_stream_usage.request.json").read_bytes(), end_of_stream=True
            )
        ),
        pb.ProcessingRequest(response_headers=headers([(":status", "200"), ("content-type", "text/event-stream")])),
        *[
            pb.ProcessingRequest(
                response_body=pb.HttpBody(
                    body=body[i * third : (i + 1) * third if i < 2 else None], end_of_stream=i == 2
                )
            )
            for i in range(3)
        ],
    ]
