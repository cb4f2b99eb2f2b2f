"""An independent oracle for token counts: parses fixtures with json.loads and
counts with the real tiktoken (vocabularies placed in a private cache from the
bpe-openai wheel's data). Nothing here imports llmtally."""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import os
import struct
import tempfile
from collections import defaultdict

import tiktoken

_CACHE = tempfile.mkdtemp(prefix="tiktoken-ref-")
_spec = importlib.util.find_spec("bpe_openai")
for _name in ("cl100k_base", "o200k_base"):
    _url = f"https://openaipublic.blob.core.windows.net/encodings/{_name}.tiktoken"
    with gzip.open(os.path.join(os.path.dirname(_spec.origin), "data", _name + ".tiktoken.gz")) as _f:
        with open(os.path.join(_CACHE, hashlib.sha1(_url.encode()).hexdigest()), "wb") as _g:
            _g.write(_f.read())
os.environ["TIKTOKEN_CACHE_DIR"] = _CACHE
ENC = {n: tiktoken.get_encoding(n) for n in ("cl100k_base", "o200k_base")}


def count(text: str, enc: str) -> int:
    return len(ENC[enc].encode_ordinary(text))


def encoding_for(model: str | None) -> str:
    try:
        name = tiktoken.encoding_name_for_model(model) if model else None
    except KeyError:
        name = None
    return name if name in ENC else "o200k_base"


# ---- documents of a response body (well-formed fixtures only) ----


def sse_docs(body: bytes):
    text = body.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    for event in text.split("\n\n"):
        data = [ln[5:].removeprefix(" ") for ln in event.split("\n") if ln.startswith("data:")]
        if data:
            try:
                yield json.loads("\n".join(data))
            except ValueError:
                pass


def eventstream_docs(body: bytes):
    i = 0
    while i < len(body):
        total, hlen = struct.unpack_from(">II", body, i)
        payload = body[i + 12 + hlen : i + total - 4]
        headers = body[i + 12 : i + 12 + hlen]
        i += total
        if b"exception" not in headers:
            doc = json.loads(payload)
            yield doc
            if "bytes" in doc:
                yield json.loads(base64.b64decode(doc["bytes"]))


def docs(case, body: bytes):
    if case.get("binary"):
        return list(eventstream_docs(body))
    stripped = body.lstrip()
    if stripped.startswith(b"{") and b"\n{" in body and case["response"].endswith(".ndjson"):
        return [json.loads(ln) for ln in body.splitlines() if ln.strip()]
    if stripped.startswith((b"{", b"[")):
        doc = json.loads(body)
        return doc if isinstance(doc, list) else [doc]
    return list(sse_docs(body))


# ---- output texts, keyed (choice, tool, kind) ----


def texts(docs_):
    acc = defaultdict(str)

    def add(key, v):
        if isinstance(v, str):
            acc[key] += v

    def cohere_message(idx, m):
        """Cohere v2: content and tool calls are objects in deltas, lists in bodies."""
        if not isinstance(m, dict):
            return
        for c in m.get("content") if isinstance(m.get("content"), list) else [m.get("content")]:
            if isinstance(c, dict):
                add((idx, 0, "content"), c.get("text"))
        add((idx, 0, "plan"), m.get("tool_plan"))
        for tc in m.get("tool_calls") if isinstance(m.get("tool_calls"), list) else [m.get("tool_calls")]:
            if isinstance(tc, dict):
                f = tc.get("function") or {}
                add((idx, 0, "tool_name"), f.get("name"))
                add((idx, 0, "tool_args"), f.get("arguments"))

    for d in docs_:
        if not isinstance(d, dict):
            continue
        for pos, ch in enumerate(d.get("choices") or []):
            ci = ch.get("index", pos)
            for part in ("delta", "message"):
                m = ch.get(part) or {}
                add((ci, 0, "content"), m.get("content"))
                add((ci, 0, "refusal"), m.get("refusal"))
                add((ci, 0, "reasoning"), m.get("reasoning_content"))
                add((ci, 0, "reasoning_alt"), m.get("reasoning"))
                for rd in m.get("reasoning_details") or []:
                    if isinstance(rd, dict):
                        add((ci, 0, "reasoning_detail"), rd.get("text"))
                        add((ci, 0, "reasoning_detail"), rd.get("summary"))
                for tpos, tc in enumerate(m.get("tool_calls") or []):
                    f = tc.get("function") or {}
                    add((ci, tc.get("index", tpos), "tool_name"), f.get("name"))
                    add((ci, tc.get("index", tpos), "tool_args"), f.get("arguments"))
            add((ci, 0, "content"), ch.get("text"))
        for pos, cand in enumerate(d.get("candidates") or []):
            for p in (cand.get("content") or {}).get("parts") or []:
                add((cand.get("index", pos), 0, "content"), p.get("text"))
        idx = d.get("index", d.get("contentBlockIndex", d.get("output_index", 0)))
        delta = d.get("delta")
        if isinstance(delta, str):
            add((idx, d.get("content_index", 0), "content"), delta)
        elif isinstance(delta, dict):
            add((idx, 0, "content"), delta.get("text"))
            cohere_message(idx, delta.get("message"))
            add((idx, 0, "reasoning"), delta.get("thinking"))
            add((idx, 0, "tool_args"), delta.get("partial_json"))
            add((idx, 0, "tool_args"), (delta.get("toolUse") or {}).get("input"))
            add((idx, 0, "reasoning"), (delta.get("reasoningContent") or {}).get("text"))
        add((idx, 0, "tool_name"), (d.get("content_block") or {}).get("name"))
        add((idx, 0, "tool_name"), ((d.get("start") or {}).get("toolUse") or {}).get("name"))
        msg = d.get("message")
        if isinstance(msg, dict):
            add((0, 0, "content"), msg.get("content"))
            add((0, 0, "reasoning"), msg.get("thinking"))
            cohere_message(idx, msg)
        add((0, 0, "content"), d.get("response"))
        # Bedrock model families
        add((idx, 0, "content"), d.get("generation"))
        add((idx, 0, "content"), d.get("outputText"))
        add((idx, 0, "content"), d.get("text"))
        for key, field in (("results", "outputText"), ("outputs", "text"), ("generations", "text")):
            for pos, r in enumerate(d.get(key) or []):
                if isinstance(r, dict):
                    add((pos, 0, "content"), r.get(field))
        for part in ((d.get("output") or {}).get("message") or {}).get("content") or []:
            if isinstance(part, dict):
                add((idx, 0, "content"), part.get("text"))
        cbd = d.get("contentBlockDelta")
        if isinstance(cbd, dict):
            add((cbd.get("contentBlockIndex", idx), 0, "content"), (cbd.get("delta") or {}).get("text"))
        # Gemini Interactions, non-streaming
        for pos, step in enumerate(d.get("steps") or []):
            for part in step.get("content") or [] if isinstance(step, dict) else []:
                if isinstance(part, dict):
                    add((pos, 0, "content"), part.get("text"))
    return acc


REASONING_KINDS = ("reasoning", "reasoning_alt", "reasoning_detail")


def completion(docs_, enc: str) -> tuple[int, int]:
    """(all output tokens, reasoning tokens); reasoning sent under several names for one choice and tool
    call counts once, the largest (providers repeat the same text under two names)."""
    t = texts(docs_)
    other = sum(count(v, enc) for k, v in t.items() if k[2] not in REASONING_KINDS)
    most: dict = {}
    for (ci, ti, kind), v in t.items():
        if kind in REASONING_KINDS:
            most[(ci, ti)] = max(most.get((ci, ti), 0), count(v, enc))
    reasoning = sum(most.values())
    return other + reasoning, reasoning


# ---- request prompt estimates (the README's rules) ----


def _blocks(v):
    if isinstance(v, str):
        return [v]
    return [b["text"] for b in v or [] if isinstance(b, dict) and isinstance(b.get("text"), str)]


def prompt_estimate(body: dict, provider: str, enc: str) -> int:
    if provider in ("anthropic", "bedrock"):
        strings = _blocks(body.get("system"))
        for m in body.get("messages", []):
            c = m.get("content")
            if isinstance(c, str):
                strings.append(c)
            else:
                for b in c or []:
                    strings += _blocks([b]) + (_blocks(b.get("content")) if "content" in b else [])
        return sum(count(s, enc) for s in strings)
    if provider in ("gemini", "vertex-ai"):
        parts = [c.get("parts") for c in body.get("contents", [])]
        for key in ("systemInstruction", "system_instruction"):
            if key in body:
                parts.append(body[key].get("parts"))
        strings = [s for p in parts for s in _blocks(p)]
        inp = body.get("input")  # Interactions: a string or turns
        for turn in [inp] if isinstance(inp, str) else inp if isinstance(inp, list) else []:
            if isinstance(turn, str):
                strings.append(turn)
            elif isinstance(turn, dict):
                strings += _blocks(turn.get("content")) + _blocks([turn])
        strings += [i["content"] for i in body.get("instances", []) if isinstance(i.get("content"), str)]
        return sum(count(s, enc) for s in strings)
    if provider == "cohere":
        strings = [s for m in body.get("messages", []) for s in _blocks(m.get("content"))]
        strings += [body[k] for k in ("message", "preamble") if isinstance(body.get(k), str)]
        strings += [m["message"] for m in body.get("chat_history", []) if isinstance(m.get("message"), str)]
        strings += [t for t in body.get("texts", []) if isinstance(t, str)]
        return sum(count(s, enc) for s in strings)
    if provider == "ollama":
        strings = [m["content"] for m in body.get("messages", []) if isinstance(m.get("content"), str)]
        strings += [body[k] for k in ("prompt", "system") if isinstance(body.get(k), str)]
        return sum(count(s, enc) for s in strings)
    n = 0
    msgs = body.get("messages", [])
    for m in msgs:
        n += 3
        for key in ("role", "tool_call_id"):
            if isinstance(m.get(key), str):
                n += count(m[key], enc)
        n += sum(count(s, enc) for s in _blocks(m.get("content")))
        if isinstance(m.get("name"), str):
            n += count(m["name"], enc) + 1
        for tc in m.get("tool_calls") or []:
            f = tc.get("function") or {}
            n += sum(count(f[k], enc) for k in ("name", "arguments") if isinstance(f.get(k), str))
    if msgs:
        n += 3
    for key in ("input", "prompt"):
        v = body.get(key)
        if isinstance(v, str):
            n += count(v, enc)
        elif isinstance(v, list):
            for item in v:
                if isinstance(item, str):
                    n += count(item, enc)
                elif isinstance(item, int):
                    n += 1
                elif isinstance(item, list):
                    n += len(item)
                elif isinstance(item, dict):
                    n += prompt_estimate({"messages": [item]}, provider, enc) - 3
            if any(isinstance(i, dict) for i in v):
                n += 3
    if isinstance(body.get("instructions"), str):
        n += count(body["instructions"], enc)
    return n
