"""Hypothesis: native and fallback agree on any input and any split, and the
streaming JSON scanner agrees with json.loads on valid documents."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmtally
from conftest import CASES, eols, load

U64_MAX = (1 << 64) - 1
PROVIDERS = list(llmtally.PROVIDERS)  # every registry id and auto: a new provider is covered too
CONTENT_TYPES = [
    "",
    "text/event-stream",
    "application/json",
    "application/x-ndjson",
    "application/stream+json",
    "application/vnd.amazon.eventstream",
]


def run(body_chunks, backend, provider="openai", content_type="", request=None, path=""):
    sc = llmtally.ResponseScanner(provider, request, content_type=content_type, path=path, backend=backend)
    changes = []
    for c in body_chunks:
        sc.feed(c)
        changes.append((sc.usage_changes() > 0, sc.snapshot()))
    return sc.finish(), sc.stats(), sc.provider, sc.framing, changes


def split(body: bytes, cuts):
    cuts = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)], strict=False)]


@st.composite
def fixture_and_cuts(draw):
    case = draw(st.sampled_from(CASES))
    body = load(case["response"])
    eol = draw(st.sampled_from(eols(case)))
    body = body.replace(b"\n", eol)
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=40))
    return case, body, cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fixture_and_cuts())
def test_fixture_random_splits_both_backends_exact(data):
    case, body, cuts = data
    pieces = split(body, cuts)
    for backend in ("native", "python"):
        sc = llmtally.ResponseScanner(
            case["provider"],
            None,
            content_type=case.get("content_type", ""),
            path=case.get("path", ""),
            headers=case.get("headers", {}),
            backend=backend,
        )
        for p in pieces:
            sc.feed(p)
        got = sc.finish().as_dict()
        want = dict(case["usage"])
        if "request" in case:  # without the request, the model falls back to the provider's
            want["model"] = want["provider_model"]
            if want["source"] == "tokenizer":  # ... and there is no prompt estimate
                want["prompt_tokens"], want["total_tokens"] = 0, want["completion_tokens"]
        if case.get("content_type", "") == "" or "request" in case:
            want["streaming"] = got["streaming"]  # checked with the request in test_cases
        assert got == want


@st.composite
def mutated(draw):
    """A fixture with random bytes inserted, deleted or flipped."""
    case = draw(st.sampled_from(CASES))
    body = bytearray(load(case["response"]))
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(body)))
        op = draw(st.sampled_from(["ins", "del", "flip"]))
        if op == "ins":
            body[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif body and pos < len(body):
            if op == "del":
                del body[pos : pos + draw(st.integers(1, 16))]
            else:
                body[pos] ^= draw(st.integers(1, 255))
    return bytes(body)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(mutated(), st.binary(max_size=600)),
    st.lists(st.integers(0, 700), max_size=20),
    st.sampled_from(PROVIDERS),
    st.sampled_from(CONTENT_TYPES),
)
def test_any_bytes_native_equals_fallback(body, cuts, provider, content_type):
    pieces = split(body, cuts)
    native = run(pieces, "native", provider, content_type)
    python = run(pieces, "python", provider, content_type)
    assert native == python
    assert run([body], "native", provider, content_type)[:4] == native[:4]


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, U64_MAX + 5), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
usage_values = st.one_of(
    st.integers(-3, U64_MAX + 3), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=3), json_values
)


#: keys the OpenAI pattern reads at the top level, and in a choice
READ_KEYS = ("usage", "model", "error", "id", "choices", "response", "x_groq", "timings", "delta", "output_index")
CHOICE_KEYS = ("index", "finish_reason", "delta", "message", "text")
printable_ascii = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
#: ids and finish reasons: valid ones, ones at and past their caps, control characters, non-ASCII, other kinds
short_strings = st.one_of(
    st.sampled_from(["stop", "length", "tool_calls", "", "a\nb", "é", "x\x7f"]),
    st.text(max_size=20),
    st.text(printable_ascii, min_size=60, max_size=70),
    st.text(printable_ascii, min_size=250, max_size=260),
    json_values,
)
choice_indexes = st.one_of(
    st.integers(0, 20), st.integers(U64_MAX - 1, U64_MAX + 2), st.sampled_from([-1, 2.0, 1.5, True, None, "1"])
)


@st.composite
def choice(draw):
    c = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in CHOICE_KEYS), json_scalars, max_size=2))
    if draw(st.booleans()):
        c["index"] = draw(choice_indexes)
    if draw(st.integers(0, 3)):
        c["finish_reason"] = draw(
            st.one_of(st.none(), st.text(printable_ascii, min_size=1, max_size=10), short_strings)
        )
    items = list(c.items())
    draw(st.randoms()).shuffle(items)  # `index` before or after `finish_reason`
    return dict(items)


@st.composite
def openai_doc(draw):
    doc = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in READ_KEYS), json_values, max_size=4))
    if draw(st.booleans()):
        doc["model"] = draw(st.one_of(st.text(max_size=300), json_values))
    if draw(st.booleans()):
        doc["id"] = draw(short_strings)
    if draw(st.booleans()):
        doc["choices"] = draw(st.lists(st.one_of(choice(), choice(), json_scalars), max_size=6))
    if draw(st.booleans()):
        keys = ["prompt_tokens", "completion_tokens", "total_tokens", "other"]
        usage = draw(st.dictionaries(st.sampled_from(keys), usage_values, max_size=4))
        if draw(st.booleans()):
            usage["prompt_tokens_details"] = {"cached_tokens": draw(usage_values)}
        if draw(st.booleans()):
            usage["completion_tokens_details"] = {"reasoning_tokens": draw(usage_values)}
        doc["usage"] = usage
    items = list(doc.items())
    draw(st.randoms()).shuffle(items)
    return dict(items)


def is_count(v):
    """What the documents' rules count: an integer, or a float written with a zero fraction (`4.0`)."""
    if isinstance(v, float):
        r = repr(v)
        return v.is_integer() and "e" not in r and not r.startswith("-") and int(v) <= U64_MAX
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U64_MAX


def kept(v, cap):
    """An id or finish reason as both backends keep it: 1 to `cap` bytes of printable ASCII."""
    return isinstance(v, str) and 0 < len(v) <= cap and all(" " <= c <= "~" for c in v)


def ids_and_reasons(doc):
    """The response id and the (choice index, finish reason) pairs, in order, of a valid OpenAI
    document: a choice's index is its `index` count, else its position among the choice objects."""
    rid = doc.get("id") if kept(doc.get("id"), 256) else None
    reasons = []
    choices = doc.get("choices")
    for pos, c in enumerate(c for c in (choices if isinstance(choices, list) else []) if isinstance(c, dict)):
        if kept(c.get("finish_reason"), 64):
            reasons.append((int(c["index"]) if is_count(c.get("index")) else pos, c["finish_reason"]))
    return rid, reasons


def finish_reasons(pairs):
    """Later reasons of an index replace earlier ones; at most 16 indexes; in index order."""
    by_index = {}
    for i, v in pairs:
        if i in by_index or len(by_index) < 16:
            by_index[i] = v
    return tuple(by_index[i] for i in sorted(by_index))


def extract(doc):
    """The usage fields and model a valid OpenAI document carries."""
    usage = doc.get("usage")
    slots = {}
    if isinstance(usage, dict):
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if is_count(usage.get(k)):
                slots[k] = int(usage[k])
        for outer, inner in (
            ("prompt_tokens_details", "cached_tokens"),
            ("completion_tokens_details", "reasoning_tokens"),
        ):
            d = usage.get(outer)
            if isinstance(d, dict) and is_count(d.get(inner)):
                slots[inner] = int(d[inner])
    model = doc.get("model")
    return slots, model if isinstance(model, str) and 0 < len(model.encode()) <= 256 else None


def expected(slots, model, streaming, rid=None, reasons=()):
    p, c, r = slots.get("prompt_tokens", 0), slots.get("completion_tokens", 0), slots.get("reasoning_tokens", 0)
    total = slots.get("total_tokens")
    if total is not None and r > 0 and p + c + r == total:  # a completion that excluded reasoning (xAI)
        c += r
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": min(p + c, U64_MAX) if total is None else total,
        "cached_tokens": slots.get("cached_tokens", 0),
        "cache_write_tokens": 0,
        "reasoning_tokens": r,
        "model": model,
        "provider_model": model,
        "streaming": streaming,
        "source": "provider" if slots else "none",
        "response_id": rid,
        "finish_reasons": finish_reasons(reasons),
    }


@settings(max_examples=400, deadline=None)
@given(openai_doc(), st.booleans(), st.integers(0, 2), st.lists(st.integers(0, 5000), max_size=10))
def test_json_body_matches_json_loads(doc, ascii_only, indent, cuts):
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=indent or None).encode()
    parsed = json.loads(body)
    want = expected(
        *extract(parsed), streaming=False, rid=ids_and_reasons(parsed)[0], reasons=ids_and_reasons(parsed)[1]
    )
    for backend in ("native", "python"):
        got, _ = run(split(body, cuts), backend, "openai", "application/json")[:2]
        assert got.as_dict() == want


@settings(max_examples=200, deadline=None)
@given(st.lists(openai_doc(), min_size=1, max_size=5), st.lists(st.integers(0, 5000), max_size=10))
def test_sse_events_latest_value_wins(docs, cuts):
    body = b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs) + b"data: [DONE]\n\n"
    for backend in ("native", "python"):
        got, stats = run(split(body, cuts), backend, "openai", "text/event-stream")[:2]
        assert stats["docs"] == len(docs) + 1 and stats["broken_docs"] == 0
        # each usage field takes the value of the last event that carried it; the first valid id wins;
        # each choice index the latest reason
        slots, model, rid, reasons = {}, None, None, []
        for d in docs:
            one, m = extract(d)
            slots.update(one)
            model = m if m is not None else model
            i, r = ids_and_reasons(d)
            rid = rid or i
            reasons += r
        assert got.as_dict() == expected(slots, model, streaming=True, rid=rid, reasons=reasons)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b'"', b"").replace(b"\\", b"")).filter(bool))
def test_invalid_utf8_in_strings_decodes_alike(raw):
    body = b'{"model":"' + raw + b'"}'
    native = run([body], "native", "openai", "application/json")[0]
    python = run([body], "python", "openai", "application/json")[0]
    assert native.provider_model == python.provider_model == raw.decode("utf-8", "replace")


def _long_key_stream(klen: int, escaped: bool) -> bytes:
    key = "k" * (klen - 2) + ('\\"' if escaped else "kk")
    usage = {"prompt_tokens": klen, "completion_tokens": 5, "total_tokens": klen + 5}
    first = f'{{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","{key}":1,'
    first += '"choices":[{"index":0,"delta":{"content":" hi"}}]}'
    last = f'{{"id":"c","choices":[],"{key}":null,"usage":{json.dumps(usage)}}}'
    return f"data: {first}\n\ndata: {last}\n\ndata: [DONE]\n\n".encode()


@pytest.mark.parametrize("klen", [1, 2, 31, 32, 33, 63, 64, 65, 66, 100])
@pytest.mark.parametrize("escaped", [False, True])
def test_keys_around_the_whole_key_fast_path_split_anywhere(klen, escaped):
    """Object keys read in one copy when the chunk holds them whole (no escape, at most 64 bytes), else byte
    by byte: every split of keys on both sides of that bound gives both backends the same usage."""
    body = _long_key_stream(klen, escaped)
    for cut in range(len(body) + 1):
        got = []
        for backend in ("native", "python"):
            sc = llmtally.ResponseScanner("openai", content_type="text/event-stream", backend=backend)
            sc.feed(body[:cut])
            sc.feed(body[cut:])
            got.append(sc.finish())
        assert got[0] == got[1]
        assert (got[0].prompt_tokens, got[0].total_tokens, got[0].source) == (klen, klen + 5, "provider")


@st.composite
def templated_stream(draw):
    """A stream as providers write one: each event the last one with a few of its values changed, most often
    the text (the native scanner replays such events from a recording of the last one: llmtally_core's
    template.rs); texts with quotes, escapes, non-ASCII and control characters, empty ones, and now and then
    another value changed, an event on two data lines, or one cut by the chunking. Whole events are replayed
    too, framing and all, so the SSE around the data line varies as well: the line ends (LF, CRLF or CR),
    `event:`, `id:` and comment lines that come and go, and a raw CR or LF inside a text (a line break to
    the framer, where the JSON would have an escape)."""
    text = st.text(alphabet=st.sampled_from(list('ab "\\/\n\té€😀\x00') + ["\u2028"]), max_size=6)
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
    events = []
    eol = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    head = draw(st.sampled_from([b"", b"event: delta" + eol, b": ping" + eol]))
    for _ in range(draw(st.integers(1, 25))):
        what = draw(
            st.sampled_from(
                ["text"] * 6 + ["model", "id", "index", "reason", "refusal", "two lines", "raw break", "framing"]
            )
        )
        d = json.loads(json.dumps(doc))
        c = d["choices"][0]
        if what == "text":
            c["delta"]["content"] = draw(text)
        elif what == "model":
            d["model"] = draw(st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "hi"]))
        elif what == "id":
            d["id"] = draw(st.sampled_from(["chatcmpl-1", "chatcmpl-2", "hi"]))
        elif what == "index":
            c["index"] = draw(st.integers(0, 2))
        elif what == "reason":
            c["finish_reason"] = draw(st.sampled_from([None, "stop", "length"]))
        elif what == "refusal":
            c["delta"] = {"refusal": draw(text)}
        doc = d
        line = json.dumps(d, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
        if what == "two lines":
            line = line.replace(',"choices"', '\ndata: ,"choices"', 1).replace("\ndata: ,", ",\ndata: ", 1)
        raw = line.encode().replace(b"\n", eol)
        if what == "raw break" and b'"content":"' in raw:
            at = raw.index(b'"content":"') + len(b'"content":"') + draw(st.integers(0, 2))
            raw = raw[:at] + draw(st.sampled_from([b"\n", b"\r", b"\r\n"])) + raw[at:]
        if what == "framing":
            head = draw(st.sampled_from([b"", b"event: delta" + eol, b"event: other" + eol, b"id: 7" + eol]))
        events.append(head + b"data: " + raw + eol + eol)
    body = b"".join(events) + b"data: [DONE]" + eol + eol
    return body, draw(st.lists(st.integers(0, len(body)), max_size=8))


@settings(max_examples=400, deadline=None)
@given(templated_stream())
def test_templated_streams_native_equals_fallback(data):
    body, cuts = data
    chunks = split(body, cuts)
    assert run(chunks, "native", content_type="text/event-stream") == run(
        chunks, "python", content_type="text/event-stream"
    )


def test_a_raw_line_break_in_a_templated_text_is_framed_not_replayed():
    """The third event is the second with its text changed to one holding a raw LF: to the SSE framer that is
    two lines (a broken document and an ignored line), so the whole-event replay must not take it."""

    def ev(c: bytes) -> bytes:
        return b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"' + c + b'"},"finish_reason":null}]}\n\n'

    body = ev(b"hi") + ev(b"yo") + ev(b"h\ni") + ev(b"ok") + b"data: [DONE]\n\n"
    native = run([body], "native", content_type="text/event-stream")
    assert native == run([body], "python", content_type="text/event-stream")
    usage, stats = native[0], native[1]
    assert (stats["docs"], stats["broken_docs"]) == (4, 1)
    assert usage.completion_tokens == llmtally.count_tokens("hiyohok", model="gpt-4o")
