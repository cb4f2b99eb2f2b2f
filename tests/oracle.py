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
    if stripped.startswith(b"{") and b"\n{" in body and "ollama" in case["response"]:
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
        add((0, 0, "content"), d.get("response"))
    return acc


def completion(docs_, enc: str) -> tuple[int, int]:
    t = texts(docs_)
    every = sum(count(v, enc) for v in t.values())
    reasoning = sum(count(v, enc) for k, v in t.items() if k[2] == "reasoning")
    return every, reasoning


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
        return sum(count(s, enc) for p in parts for s in _blocks(p))
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
