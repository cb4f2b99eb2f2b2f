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
import re
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


def encoding_for(model: str | None, *fallbacks: str | None) -> str:
    """tiktoken's encoding for the first of the names it knows (the request's model, then the
    provider's: an Azure deployment's own name has none), else o200k_base."""
    for m in (model, *fallbacks):
        try:
            name = tiktoken.encoding_name_for_model(m) if m else None
        except KeyError:
            name = None
        if name in ENC:
            return name
    return "o200k_base"


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
                add((idx, 0, "reasoning"), c.get("thinking"))
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
                # Mistral's reasoning models: typed parts, `thinking` a string or text parts
                for p in m.get("content") if isinstance(m.get("content"), list) else []:
                    if isinstance(p, dict):
                        add((ci, 0, "content"), p.get("text"))
                        th = p.get("thinking")
                        for t in th if isinstance(th, list) else [{"text": th}]:
                            if isinstance(t, dict):
                                add((ci, 0, "reasoning"), t.get("text"))
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
            add((idx, 0, "content"), delta.get("content"))  # Anthropic compaction_delta
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


# ---- response ids and finish reasons (docs/providers.md, "Response ids and finish reasons") ----

ID_MAX, REASON_MAX, REASONS_MAX = 256, 64, 16
FAMILY = {"anthropic": "anthropic", "gemini": "google", "vertex-ai": "google", "cohere": "cohere"}
FAMILY |= {"bedrock": "bedrock", "ollama": "ollama"}  # any other id reads OpenAI's formats


def _valid(v, cap: int) -> bool:
    """A non-empty string of at most `cap` UTF-8 bytes, printable ASCII only."""
    return isinstance(v, str) and 0 < len(v.encode()) <= cap and all(" " <= c <= "~" for c in v)


def _get(d, *path):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _index(v, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else default


def response_id(provider: str, docs_) -> str | None:
    """The first valid id where the provider's format carries one, in document order."""
    family = FAMILY.get(provider, "openai")
    paths = {
        "openai": [("id",), ("response", "id")],
        "anthropic": [("id",), ("message", "id")],
        "google": [("responseId",), ("interaction", "id"), ("id",)],
        "cohere": [("id",), ("generation_id",)],
        "bedrock": [("id",), ("message", "id")],
        "ollama": [],
    }[family]
    for d in docs_:
        # in the document's own key order: the first key of a path that is present
        found = [(list(d).index(p[0]), _get(d, *p)) for p in paths if isinstance(d, dict) and p[0] in d]
        for _, v in sorted(found, key=lambda x: x[0]):
            if _valid(v, ID_MAX):
                return v
    return None


def finish_reasons(provider: str, docs_) -> list[str]:
    """Each choice's latest valid finish reason, by choice index (the choice's `index`, else its
    position; a document's own reason: its top-level `index`, else 0); at most 16 choices."""
    family = FAMILY.get(provider, "openai")
    by_index: dict[int, str] = {}

    def put(i: int, v) -> None:
        if _valid(v, REASON_MAX) and (i in by_index or len(by_index) < REASONS_MAX):
            by_index[i] = v

    def arrays(d, key: str, reason: str) -> None:
        for pos, ch in enumerate(d.get(key) or []):
            if isinstance(ch, dict):
                put(_index(ch.get("index"), pos), ch.get(reason))

    for d in docs_:
        if not isinstance(d, dict):
            continue
        top = _index(d.get("index", d.get("contentBlockIndex", d.get("output_index"))), 0)
        if family in ("openai", "ollama", "bedrock"):
            arrays(d, "choices", "finish_reason")
        if family == "openai":
            put(top, _get(d, "incomplete_details", "reason"))
            put(top, _get(d, "response", "incomplete_details", "reason"))
        if family in ("anthropic", "bedrock"):
            put(top, _get(d, "delta", "stop_reason"))
            put(top, d.get("stop_reason"))
        if family == "google":
            arrays(d, "candidates", "finishReason")
        if family == "cohere":
            put(top, _get(d, "delta", "finish_reason"))
            put(top, d.get("finish_reason"))
        if family == "ollama":
            put(top, d.get("done_reason"))
        if family == "bedrock":
            for key in ("stopReason", "completionReason", "finish_reason"):
                put(top, d.get(key))
            put(top, _get(d, "messageStop", "stopReason"))
            arrays(d, "results", "completionReason")
            arrays(d, "outputs", "stop_reason")
            arrays(d, "generations", "finish_reason")
    return [by_index[i] for i in sorted(by_index)]


# ---- request prompt estimates (docs/providers.md, "Prompt estimates") ----

TOOL_TOKENS = 8  # per tool definition
ANTHROPIC_TOOL_PROMPT = 346  # once, when an Anthropic request has tools
SNIFF_MAX = 1 << 20  # decoded bytes of media data examined for a size


def compact(v) -> str:
    """A JSON value as the estimate counts it."""
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _blocks(v):
    if isinstance(v, str):
        return [v]
    return [b["text"] for b in v or [] if isinstance(b, dict) and isinstance(b.get("text"), str)]


def _kind(s) -> str | None:
    """The kind a `type` or MIME type names."""
    if not isinstance(s, str):
        return None
    s = s.lower()
    for k in ("image", "audio", "video"):
        if k in s:
            return k
    if s in ("file", "input_file", "document") or s.startswith(("application/", "text/")):
        return "file"
    return None


def _decode(payload: str) -> bytes:
    """The base64 prefix of a string, decoded (a URL decodes to a few junk bytes)."""
    chars = re.match(r"[A-Za-z0-9+/]*", payload).group()  # type: ignore[union-attr]
    if len(chars) % 4 == 1:  # a lone last character decodes to nothing
        chars = chars[:-1]
    return base64.b64decode(chars + "=" * (-len(chars) % 4))


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, WebP or JPEG header (within the first SNIFF_MAX bytes)."""
    data = data[:SNIFF_MAX]
    size = None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        size = struct.unpack(">II", data[16:24])
    elif data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        size = struct.unpack("<HH", data[6:10])
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a" and len(data) >= 30:
            w, h = struct.unpack("<HH", data[26:30])
            size = (w & 0x3FFF, h & 0x3FFF)
        elif chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
            (bits,) = struct.unpack("<I", data[21:25])
            size = ((bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1)
        elif chunk == b"VP8X" and len(data) >= 30:
            size = (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    elif data[:2] == b"\xff\xd8":
        i = 2
        while i < len(data) and data[i] == 0xFF:
            while i < len(data) and data[i] == 0xFF:
                i += 1
            if i >= len(data):
                break
            marker = data[i]
            i += 1
            if 0xD0 <= marker <= 0xD8 or marker == 0x01:
                continue
            if marker in (0xD9, 0xDA) or i + 2 > len(data):
                break
            (length,) = struct.unpack(">H", data[i : i + 2])
            if marker in range(0xC0, 0xD0) and marker not in (0xC4, 0xC8, 0xCC):
                if length >= 7 and i + 7 <= len(data):
                    h, w = struct.unpack(">HH", data[i + 3 : i + 7])
                    size = (w, h)
                break
            if length < 2:
                break
            i += length
    return size if size and size[0] > 0 and size[1] > 0 else None


def wav_audio(data: bytes) -> tuple[int, int] | None:
    """(data bytes, byte rate) of a WAV."""
    data = data[:SNIFF_MAX]
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    i, rate = 12, 0
    while i + 8 <= len(data):
        chunk, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
        if chunk == b"data":
            return (size, rate) if rate else None
        if chunk == b"fmt ":
            if size < 12 or i + 20 > len(data):
                return None
            rate = int.from_bytes(data[i + 16 : i + 20], "little")
        i += 8 + size + size % 2
    return None


def media(s, hint: str | None):
    """(kind, image size, wav) of a media string: a data URL, base64, or a reference."""
    if not isinstance(s, str):
        return None
    mime, payload = None, s
    if s[:5].lower() == "data:":
        head, comma, rest = s[5:].partition(",")
        payload = None
        if comma and len(head.encode()) + 5 < 256:
            mime = _kind(head.split(";")[0])
            payload = rest if head.lower().endswith(";base64") else None
    data = _decode(payload) if payload is not None else b""
    size, wav = image_size(data), wav_audio(data)
    kind = "image" if size else hint or mime or ("audio" if wav else "file")
    return kind, size, wav


def _ceil(a: int, b: int) -> int:
    return (a + b - 1) // b


def image_tokens(family: str, size, low: bool) -> int:
    if family == "openai":
        if low:
            return 85
        if size is None:
            return 765  # a 1024x1024 image at high detail
        w, h = size
        if max(w, h) > 2048:
            m = max(w, h)
            w, h = max(1, w * 2048 // m), max(1, h * 2048 // m)
        if min(w, h) > 768:
            m = min(w, h)
            w, h = max(1, w * 768 // m), max(1, h * 768 // m)
        return 85 + 170 * _ceil(w, 512) * _ceil(h, 512)
    if family == "anthropic":
        if size is None:
            return 1600
        w, h = size
        if max(w, h) > 1568:
            m = max(w, h)
            w, h = max(1, w * 1568 // m), max(1, h * 1568 // m)
        return min(1600, _ceil(w * h, 750))
    if size is None or (size[0] <= 384 and size[1] <= 384):
        return 258
    return 258 * _ceil(size[0], 768) * _ceil(size[1], 768)


FILE_TOKENS = {"openai": 765, "anthropic": 1600, "gemini": 258}
AUDIO_RATE = {"openai": 10, "gemini": 32}  # tokens per second


def media_tokens(family: str, s, hint: str | None, low: bool = False) -> int:
    got = media(s, hint)
    if got is None:
        return 0
    kind, size, wav = got
    if kind == "image":
        return image_tokens(family, size, low)
    if kind == "audio" and family in AUDIO_RATE:
        rate = AUDIO_RATE[family]
        return _ceil(rate * wav[0], wav[1]) if wav else rate * 30
    if kind == "video" and family == "gemini":
        return 263 * 30
    return FILE_TOKENS[family]


def _openai_part(p, enc: str) -> int:
    """A Chat Completions or Responses content part: its text and media (OpenAI's rules)."""
    if not isinstance(p, dict):
        return 0
    n = count(p["text"], enc) if isinstance(p.get("text"), str) else 0
    kind = _kind(p.get("type"))
    iu = p.get("image_url")
    detail = p.get("detail")
    items = []
    if isinstance(iu, dict):
        detail = iu.get("detail", detail)
        items.append((iu.get("url"), "image"))
    elif iu is not None:
        items.append((iu, "image"))
    if isinstance(p.get("input_audio"), dict):
        items.append((p["input_audio"].get("data"), "audio"))
    if isinstance(p.get("file"), dict):
        items += [(p["file"].get(k), "file") for k in ("file_data", "file_id") if k in p["file"]]
    if "file_id" in p:
        items.append((p["file_id"], None))
    items += [(p[k], "file") for k in ("file_data", "file_url") if k in p]
    low = detail == "low"
    return n + sum(media_tokens("openai", s, hint or kind, low) for s, hint in items)


def _tool(t, enc: str, flat=("parameters",), wrapped=("parameters",)) -> int:
    """A tool definition: the overhead, its name, description and schema (in the flat form, and in a
    `function` wrapper when `wrapped` is not None)."""
    if not isinstance(t, dict):
        return 0
    n = TOOL_TOKENS
    for f, params in ((t, flat), (t.get("function"), wrapped)):
        if isinstance(f, dict) and params is not None:
            n += sum(count(f[k], enc) for k in ("name", "description") if isinstance(f.get(k), str))
            n += sum(count(compact(f[k]), enc) for k in params if k in f)
    return n


def _anthropic_block(b, enc: str, nested: bool = False) -> int:
    """A Messages or Converse content block (Anthropic's media rules); `nested`: one in a tool result."""
    if not isinstance(b, dict):
        return 0
    n = count(b["text"], enc) if isinstance(b.get("text"), str) else 0
    kind = _kind(b.get("type"))
    src = b.get("source")
    if isinstance(src, dict):
        kind = _kind(src.get("media_type")) or kind
        for k in ("data", "url", "file_id"):
            if k in src:
                n += media_tokens("anthropic", src[k], kind)
        n += sum(count(t, enc) for t in _blocks(src.get("content")))
    if nested and "json" in b:
        n += count(compact(b["json"]), enc)
    content = b.get("content")
    if not nested and isinstance(content, str):
        n += count(content, enc)
    elif not nested and isinstance(content, list):
        n += sum(_anthropic_block(c, enc, True) for c in content)
    if not nested and isinstance(b.get("name"), str):
        n += count(b["name"], enc)
    if not nested and "input" in b:
        n += count(compact(b["input"]), enc)
    for key, hint in (("image", "image"), ("document", "file"), ("video", "video")):
        src = (b.get(key) or {}).get("source") if isinstance(b.get(key), dict) else None
        if isinstance(src, dict):
            if "bytes" in src:
                n += media_tokens("anthropic", src["bytes"], hint)
            if isinstance(src.get("s3Location"), dict) and "uri" in src["s3Location"]:
                n += media_tokens("anthropic", src["s3Location"]["uri"], hint)
            if key == "document" and isinstance(src.get("text"), str):
                n += count(src["text"], enc)
    use = b.get("toolUse")
    if nested:
        return n
    if isinstance(use, dict):
        n += count(use["name"], enc) if isinstance(use.get("name"), str) else 0
        n += count(compact(use["input"]), enc) if "input" in use else 0
    result = b.get("toolResult")
    if isinstance(result, dict) and isinstance(result.get("content"), list):
        n += sum(_anthropic_block(c, enc, True) for c in result["content"])
    return n


def _gemini_part(p, enc: str) -> int:
    if not isinstance(p, dict):
        return 0
    n = count(p["text"], enc) if isinstance(p.get("text"), str) else 0
    for key, refs in (
        ("inlineData", ("data",)),
        ("inline_data", ("data",)),
        ("fileData", ("fileUri", "file_uri")),
        ("file_data", ("fileUri", "file_uri")),
    ):
        blob = p.get(key)
        if isinstance(blob, dict):
            kind = _kind(blob.get("mimeType", blob.get("mime_type")))
            n += sum(media_tokens("gemini", blob[r], kind) for r in refs if r in blob)
    for key, args in (
        ("functionCall", "args"),
        ("function_call", "args"),
        ("functionResponse", "response"),
        ("function_response", "response"),
    ):
        f = p.get(key)
        if isinstance(f, dict):
            n += count(f["name"], enc) if isinstance(f.get("name"), str) else 0
            n += count(compact(f[args]), enc) if args in f else 0
    return n


def prompt_estimate(body: dict, provider: str, enc: str) -> int:
    if provider in ("anthropic", "bedrock"):
        n = sum(count(s, enc) for s in _blocks(body.get("system")))
        for m in body.get("messages", []):
            c = m.get("content")
            if isinstance(c, str):
                n += count(c, enc)
            else:
                n += sum(_anthropic_block(b, enc) for b in c or [])
        tools = body.get("tools") or []
        n += sum(_tool(t, enc, ("input_schema",), None) for t in tools)
        n += ANTHROPIC_TOOL_PROMPT if tools else 0
        for fmt in (body.get("output_format"), (body.get("output_config") or {}).get("format")):
            if isinstance(fmt, dict) and "schema" in fmt:
                n += count(compact(fmt["schema"]), enc)
        for t in (body.get("toolConfig") or {}).get("tools", []):
            spec = t.get("toolSpec")
            if isinstance(spec, dict):
                n += _tool({**spec, **(spec.get("inputSchema") or {})}, enc, ("json",), None)
        # Bedrock InvokeModel prompts of the other families (Titan, Llama/Mistral/DeepSeek, Cohere Command R)
        strings = [body[k] for k in ("inputText", "prompt", "message", "preamble") if isinstance(body.get(k), str)]
        strings += [m["message"] for m in body.get("chat_history", []) if isinstance(m.get("message"), str)]
        return n + sum(count(s, enc) for s in strings)
    if provider in ("gemini", "vertex-ai"):
        contents = list(body.get("contents", []))
        for key in ("systemInstruction", "system_instruction"):
            if key in body:
                contents.append(body[key])
        n = sum(_gemini_part(p, enc) for c in contents for p in c.get("parts") or [])
        strings = []
        inp = body.get("input")  # Interactions: a string or turns
        for turn in [inp] if isinstance(inp, str) else inp if isinstance(inp, list) else []:
            if isinstance(turn, str):
                strings.append(turn)
            elif isinstance(turn, dict):
                strings += _blocks(turn.get("content")) + _blocks([turn])
        strings += [i["content"] for i in body.get("instances", []) if isinstance(i.get("content"), str)]
        for t in body.get("tools", []):
            for key in ("functionDeclarations", "function_declarations"):
                for d in t.get(key, []):
                    n += _tool(d, enc, ("parameters", "parametersJsonSchema", "parameters_json_schema"), None)
        for key in ("generationConfig", "generation_config"):
            cfg = body.get(key) or {}
            for k in ("responseSchema", "response_schema", "responseJsonSchema", "response_json_schema"):
                if k in cfg:
                    strings.append(compact(cfg[k]))
        return n + sum(count(s, enc) for s in strings)
    if provider == "cohere":
        n = 0
        for m in body.get("messages", []):
            c = m.get("content")
            n += count(c, enc) if isinstance(c, str) else sum(_openai_part(p, enc) for p in c or [])
        strings = [body[k] for k in ("message", "preamble") if isinstance(body.get(k), str)]
        strings += [m["message"] for m in body.get("chat_history", []) if isinstance(m.get("message"), str)]
        strings += [t for t in body.get("texts", []) if isinstance(t, str)]
        n += sum(_tool(t, enc, ("parameter_definitions",)) for t in body.get("tools", []))
        rf = body.get("response_format") or {}
        if "json_schema" in rf:
            strings.append(compact(rf["json_schema"]))
        return n + sum(count(s, enc) for s in strings)
    if provider == "ollama":
        strings = [m["content"] for m in body.get("messages", []) if isinstance(m.get("content"), str)]
        strings += [body[k] for k in ("prompt", "system") if isinstance(body.get(k), str)]
        images = [i for m in body.get("messages", []) for i in m.get("images") or []] + body.get("images", [])
        n = sum(media_tokens("openai", i, "image") for i in images)
        n += sum(_tool(t, enc) for t in body.get("tools", []))
        if "format" in body:
            strings.append(compact(body["format"]))
        return n + sum(count(s, enc) for s in strings)
    n = 0
    msgs = body.get("messages", [])
    for m in msgs:
        n += 3
        for key in ("role", "tool_call_id"):
            if isinstance(m.get(key), str):
                n += count(m[key], enc)
        c = m.get("content")
        n += count(c, enc) if isinstance(c, str) else sum(_openai_part(p, enc) for p in c or [])
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
    n += sum(_tool(t, enc) for key in ("tools", "functions") for t in body.get(key, []))
    for schema in ((body.get("response_format") or {}).get("json_schema"), (body.get("text") or {}).get("format")):
        if isinstance(schema, dict):
            n += sum(count(schema[k], enc) for k in ("name", "description") if isinstance(schema.get(k), str))
            n += count(compact(schema["schema"]), enc) if "schema" in schema else 0
    return n


# ---- output-token limits (docs/providers.md, "Output limits") ----

MAX_OUTPUT_MAX = 1 << 32
P, A = "primary", "alt"  # a key of the limit, and one used only when no primary value is read
_OPENAI_LIMITS = {"max_completion_tokens": P, "max_output_tokens": P, "max_tokens": A}
_GEMINI_CONFIG = {"maxOutputTokens": P, "max_output_tokens": P}
OUTPUT_LIMITS = {
    "openai": _OPENAI_LIMITS,
    "anthropic": {
        "max_tokens": P,
        "inferenceConfig": {"maxTokens": P},
        "max_gen_len": P,
        "textGenerationConfig": {"maxTokenCount": P},
    },
    "gemini": {"generationConfig": _GEMINI_CONFIG, "generation_config": _GEMINI_CONFIG},
    "cohere": {"max_tokens": P},
    "ollama": {"options": {"num_predict": P}, "max_tokens": A},
}
OUTPUT_LIMITS["bedrock"] = OUTPUT_LIMITS["anthropic"]
OUTPUT_LIMITS["vertex-ai"] = OUTPUT_LIMITS["gemini"]


def _limits(v, spec, out):
    if isinstance(v, dict):
        for k, x in v.items():
            s = spec.get(k)
            if isinstance(s, dict):
                _limits(x, s, out)
            elif s is not None:
                out[s] = x if type(x) is int and 0 <= x <= MAX_OUTPUT_MAX else None


def max_output_tokens(body, provider: str) -> int | None:
    """The output-token limit of a request parsed by json.loads: per role, the last value in key order;
    a value that is not an integer from 0 to 2^32 is no limit; the primary keys' value, else the alt one's."""
    out: dict = {}
    _limits(body, OUTPUT_LIMITS.get(provider, _OPENAI_LIMITS), out)
    return out.get(P) if out.get(P) is not None else out.get(A)
