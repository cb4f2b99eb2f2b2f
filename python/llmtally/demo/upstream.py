"""A mock LLM upstream for the demo and the end-to-end tests: it answers
OpenAI chat, Anthropic Messages, Gemini (SSE, JSON array, non-streaming) and
Bedrock Converse(Stream) in the providers' byte-exact formats, streaming
event by event over time like a real server. Loopback only.

Run alone: python -m llmtally.demo.upstream [--port N].

Usage numbers are what the provider would report: the prompt as llmtally
estimates it and the completion counted with the model's encoding. Request
headers `x-mock-delay-ms` (between events, default 2) and `x-mock-repeat`
(answer length multiplier) shape a stream for tests; a non-streaming answer
comes with a content-length in one write, or in `x-mock-json-writes` writes
that many delays apart, or (`x-mock-json-chunked: 1`) with chunked transfer
encoding and no length, as servers that stream their JSON send it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from urllib.parse import unquote

from .. import count_tokens, parse_request
from ..fallback import eventstream

ANSWERS = {
    "Please explain the movie Dr. Strangelove in 1 sentence.": '"Dr. Strangelove" is a 1964 satirical black '
    "comedy by Stanley Kubrick in which an unhinged U.S. general "
    "orders a nuclear strike on the Soviet Union, and bumbling officials fail to stop the resulting doomsday.",
}
DEFAULT_ANSWER = "Hello! I am a mock model served by llmtally for testing. How can I help you today?"


def _answer(body: dict, repeat: int) -> str:
    last = ""
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, str):
            last = c
        elif isinstance(c, list):
            last = "".join(p.get("text", "") for p in c if isinstance(p, dict))
    for c in body.get("contents") or []:
        last = "".join(p.get("text", "") for p in c.get("parts", []) if isinstance(p, dict))
    return " ".join([ANSWERS.get(last, DEFAULT_ANSWER)] * max(1, repeat))


def _words(text: str) -> list[str]:
    """Deltas as a tokenizer-driven server sends them: a word and its leading space."""
    out, cur = [], ""
    for ch in text:
        if ch == " " and cur:
            out.append(cur)
            cur = ""
        cur += ch
    return out + ([cur] if cur else [])


def _j(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Reply:
    def __init__(self, status: int, content_type: str, events: list[bytes], streaming: bool):
        self.status, self.content_type, self.events, self.streaming = status, content_type, events, streaming


def openai(body: dict, raw: bytes, path: str, repeat: int) -> Reply:
    model = body.get("model") or "gpt-4o-mini"
    served = {"gpt-3.5-turbo": "gpt-3.5-turbo-0125", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}.get(model, model)
    text = _answer(body, repeat)
    prompt = parse_request(raw, "openai", path).prompt_tokens
    completion = count_tokens(text, model=model)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    base = {"id": "chatcmpl-mock1", "created": int(time.time()), "model": served, "system_fingerprint": None}
    if not body.get("stream"):
        doc = {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "service_tier": "default",
        }
        return Reply(200, "application/json", [json.dumps(doc, indent=2).encode() + b"\n"], False)
    chunk = {**base, "object": "chat.completion.chunk"}
    events = [
        {
            **chunk,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            "usage": None,
        }
    ]
    events += [
        {
            **chunk,
            "choices": [{"index": 0, "delta": {"content": w}, "logprobs": None, "finish_reason": None}],
            "usage": None,
        }
        for w in _words(text)
    ]
    events.append(
        {**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], "usage": None}
    )
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**chunk, "choices": [], "usage": usage})
    out = [b"data: " + _j(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    return Reply(200, "text/event-stream; charset=utf-8", out, True)


def anthropic(body: dict, raw: bytes, path: str, repeat: int) -> Reply:
    model = body.get("model") or "claude-sonnet-4-5"
    served = {"claude-sonnet-4-5": "claude-sonnet-4-5-20250929"}.get(model, model)
    text = _answer(body, repeat)
    prompt = parse_request(raw, "anthropic", path).prompt_tokens
    completion = count_tokens(text)
    if not body.get("stream"):
        doc = {
            "id": "msg_mock1",
            "type": "message",
            "role": "assistant",
            "model": served,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": completion,
            },
        }
        return Reply(200, "application/json", [_j(doc)], False)
    ev = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_mock1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": served,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": prompt,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                    },
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
    ]
    ev += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})
        for w in _words(text)
    ]
    ev += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": completion},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    out = [f"event: {name}\n".encode() + b"data: " + _j(d) + b"\n\n" for name, d in ev]
    return Reply(200, "text/event-stream; charset=utf-8", out, True)


def gemini(body: dict, raw: bytes, path: str, repeat: int) -> Reply:
    bare, _, query = path.partition("?")
    model = bare.rsplit("/models/", 1)[-1].split(":")[0]
    text = _answer(body, repeat)
    prompt = parse_request(raw, "gemini", path).prompt_tokens
    words = _words(text)
    thoughts = 12
    chunks = []
    for i, w in enumerate(words):
        last = i == len(words) - 1
        cand = {"content": {"parts": [{"text": w}], "role": "model"}, "index": 0}
        usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        if last:
            cand["finishReason"] = "STOP"
            n = count_tokens(text)
            usage = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": n,
                "totalTokenCount": prompt + n + thoughts,
                "thoughtsTokenCount": thoughts,
            }
        chunks.append(
            {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": "mock-gemini"}
        )
    if ":generateContent" in bare:
        doc = dict(
            chunks[-1],
            candidates=[{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        )
        return Reply(200, "application/json; charset=UTF-8", [json.dumps(doc, indent=2).encode()], False)
    if "alt=sse" in query:
        return Reply(200, "text/event-stream", [b"data: " + _j(c) + b"\r\n\r\n" for c in chunks], True)
    parts = [json.dumps(c, indent=2).replace("\n", "\r\n").encode() for c in chunks]
    out = [b"[" + parts[0]] + [b"\r\n,\r\n" + p for p in parts[1:]] + [b"]"]
    return Reply(200, "application/json; charset=UTF-8", out, True)


def _es_message(event_type: str, payload: dict) -> bytes:
    return eventstream.encode(
        [(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")], _j(payload)
    )


def bedrock(body: dict, raw: bytes, path: str, repeat: int) -> Reply:
    text = _answer(body, repeat)
    prompt = parse_request(raw, "bedrock", path).prompt_tokens
    n = count_tokens(text)
    usage = {"inputTokens": prompt, "outputTokens": n, "totalTokens": prompt + n}
    if not path.split("?")[0].endswith("-stream"):
        doc = {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": usage,
            "metrics": {"latencyMs": 120},
        }
        return Reply(200, "application/json", [_j(doc)], False)
    pad = base64.b64encode(b"padding-against-side-channels").decode()
    out = [_es_message("messageStart", {"p": pad, "role": "assistant"})]
    out += [
        _es_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}, "p": pad[:12]})
        for w in _words(text)
    ]
    out += [
        _es_message("contentBlockStop", {"contentBlockIndex": 0, "p": pad}),
        _es_message("messageStop", {"p": pad, "stopReason": "end_turn"}),
        _es_message("metadata", {"metrics": {"latencyMs": 120}, "p": pad, "usage": usage}),
    ]
    return Reply(200, "application/vnd.amazon.eventstream", out, True)


def route(path: str) -> tuple[str, Callable[[dict, bytes, str, int], Reply] | None]:
    bare = unquote(path.split("?", 1)[0])
    if bare.endswith("/chat/completions"):
        return "openai", openai
    if bare.endswith("/messages"):
        return "anthropic", anthropic
    if ":generateContent" in bare or ":streamGenerateContent" in bare:
        return "gemini", gemini
    if "/model/" in bare and (bare.endswith("/converse") or bare.endswith("/converse-stream")):
        return "bedrock", bedrock
    return "", None


async def _read_request(reader):
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


async def handle(reader, writer) -> None:
    try:
        while True:
            req = await _read_request(reader)
            if req is None:
                break
            method, path, headers, raw = req
            _, make = route(path)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            if make is None or method != "POST" or not isinstance(body, dict):
                msg = _j(
                    {
                        "error": {
                            "message": f"mock upstream: no route for {method} {path}",
                            "type": "invalid_request_error",
                        }
                    }
                )
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(msg)
                    + msg
                )
                await writer.drain()
                continue
            reply = make(body, raw, path, int(headers.get("x-mock-repeat", "1")))
            delay = int(headers.get("x-mock-delay-ms", "2")) / 1000
            head = f"HTTP/1.1 {reply.status} OK\r\ncontent-type: {reply.content_type}\r\n"
            if reply.streaming:
                writer.write((head + "transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n").encode())
                for ev in reply.events:
                    writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    await writer.drain()
                    if delay:
                        await asyncio.sleep(delay)
                writer.write(b"0\r\n\r\n")
            else:
                payload = b"".join(reply.events)
                writes = max(1, min(int(headers.get("x-mock-json-writes", "1")), len(payload) or 1))
                step = -(-len(payload) // writes)
                parts = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
                chunked = headers.get("x-mock-json-chunked") == "1"
                writer.write(
                    (head + ("transfer-encoding: chunked" if chunked else f"content-length: {len(payload)}")).encode()
                    + b"\r\n\r\n"
                )
                for i, part in enumerate(parts):
                    if part:
                        writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                    if i < len(parts) - 1:
                        await writer.drain()
                        await asyncio.sleep(delay or 0.002)
                if chunked:
                    writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def start(host: str = "127.0.0.1", port: int = 0, ssl=None):
    """Start the mock; returns the asyncio server (its port: server.sockets[0].getsockname()[1]).
    `ssl`: an `ssl.SSLContext` (server side) to serve HTTPS instead of plain HTTP."""
    return await asyncio.start_server(handle, host, port, ssl=ssl)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="llmtally's mock LLM upstream")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()

    async def run():
        server = await start("127.0.0.1", args.port)
        print(f"mock upstream on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
