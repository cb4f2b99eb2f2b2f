"""The public API contract: names, types, backend choice, errors."""

import json
import os
import subprocess
import sys

import pytest

import llmtally
from conftest import CASES, load


def stats(**kw):
    base = {
        "bytes": 0,
        "decoded_bytes": 0,
        "docs": 0,
        "broken_docs": 0,
        "errors": 0,
        "corrupt_frames": 0,
        "oversized_events": 0,
        "decode_capped": False,
        "decode_failed": False,
        "undecodable": False,
    }
    assert set(kw) <= set(base)
    return {**base, **kw}


def test_native_backend_is_built_and_default():
    assert llmtally._api._native is not None, "the Rust extension did not import"
    env = {k: v for k, v in os.environ.items() if k != "LLMTALLY_BACKEND"}
    code = "import llmtally; print(llmtally.backend())"
    assert subprocess.check_output([sys.executable, "-c", code], env=env, text=True) == "native\n"
    env["LLMTALLY_BACKEND"] = "python"
    assert subprocess.check_output([sys.executable, "-c", code], env=env, text=True) == "python\n"
    env["LLMTALLY_BACKEND"] = "python"
    code = "import llmtally; print(llmtally.ResponseScanner('openai').backend)"
    assert subprocess.check_output([sys.executable, "-c", code], env=env, text=True) == "python\n"


def test_constructor_backend_argument(backend):
    assert llmtally.ResponseScanner("openai", backend=backend).backend == backend
    with pytest.raises(ValueError, match="unknown backend"):
        llmtally.ResponseScanner("openai", backend="fortran")
    with pytest.raises(ValueError, match="unknown backend"):
        llmtally.parse_request(b"{}", "openai", backend="fortran")


def test_parse_request(backend):
    info = llmtally.parse_request(
        load("openai/chat_stream_usage.request.json"), "openai", "/v1/chat/completions", backend=backend
    )
    assert info == llmtally.RequestInfo(model="gpt-3.5-turbo", streaming=True, include_usage=True, prompt_tokens=21)
    info = llmtally.parse_request(
        b'{"model":"m","stream":false,"stream_options":{"include_usage":false}}', "openai", backend=backend
    )
    assert info == llmtally.RequestInfo(model="m", streaming=False, include_usage=False)
    assert llmtally.parse_request(b"\x00junk{", "openai", backend=backend) == llmtally.RequestInfo()
    assert llmtally.parse_request(
        b'{"model":"a","stream":"yes"}', "anthropic", backend=backend
    ) == llmtally.RequestInfo(model="a")
    with pytest.raises(TypeError):
        llmtally.parse_request("{}", "openai", backend=backend)


def test_feed_rejects_non_bytes_and_ignores_after_finish(backend):
    sc = llmtally.ResponseScanner("openai", content_type="application/json", backend=backend)
    with pytest.raises(TypeError):
        sc.feed("text")
    sc.feed(b'{"usage":{"prompt_tokens":1,"completion_tokens":2}}')
    first = sc.finish()
    sc.feed(b'{"usage":{"prompt_tokens":9}}')
    assert (
        sc.finish()
        == first
        == llmtally.Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3, streaming=False, source="provider")
    )


def test_usage_as_dict_and_stats(backend):
    case = CASES[1]
    sc = llmtally.ResponseScanner("openai", content_type="text/event-stream", backend=backend)
    body = load(case["response"])
    sc.feed(body)
    u = sc.finish()
    assert list(u.as_dict()) == [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "model",
        "provider_model",
        "streaming",
        "source",
        "response_id",
        "finish_reasons",
    ]
    assert (u.response_id, u.finish_reasons) == ("chatcmpl-AbC1", ("stop",))
    assert sc.stats() == stats(bytes=len(body), decoded_bytes=len(body), docs=6)


def test_a_usage_is_the_dataclass_its_fields_make(backend):
    """The native core sets a Usage's fields without its __init__ (as the frozen dataclass does): the object
    is the one its fields build, frozen, hashable, every field set, for finishes and snapshots alike."""
    import dataclasses

    case = CASES[1]
    sc = llmtally.ResponseScanner("openai", content_type="text/event-stream", backend=backend)
    sc.feed(load(case["response"])[:300])
    for u in (sc.snapshot(), sc.finish()):
        fields = {f.name: getattr(u, f.name) for f in dataclasses.fields(llmtally.Usage)}
        made = llmtally.Usage(**fields)
        assert type(u) is llmtally.Usage and (u, hash(u), repr(u)) == (made, hash(made), repr(made))
        assert isinstance(u.finish_reasons, tuple) and isinstance(u.streaming, bool)
        with pytest.raises(dataclasses.FrozenInstanceError):
            u.total_tokens = 1  # type: ignore[misc]


def test_broken_documents_and_errors_are_counted(backend):
    sc = llmtally.ResponseScanner("openai", content_type="text/event-stream", backend=backend)
    # a broken event (unclosed), an error event, and a complete event cut before its blank line
    body = (
        b'data: {"usage":{"prompt_tokens":5}\n\ndata: {"error":{"type":"x"}}\n\ndata: {"usage":{"completion_tokens":3}}'
    )
    sc.feed(body)
    u = sc.finish()
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.source) == (5, 3, 8, "provider")
    assert sc.stats() == stats(bytes=len(body), decoded_bytes=len(body), docs=2, broken_docs=1, errors=1)


def test_unreadable_encoding_reports_nothing(backend):
    sc = llmtally.ResponseScanner("openai", content_encoding="snappy", backend=backend)
    body = load("openai/chat.json")
    sc.feed(body)
    assert sc.finish() == llmtally.Usage()
    assert sc.stats() == stats(bytes=len(body), undecodable=True)


def test_limits_defaults_agree():
    from llmtally import _native, fallback

    assert _native.DEFAULT_MAX_DECODED_BYTES == fallback.DEFAULT_MAX_DECODED_BYTES == 64 << 20
    assert _native.DEFAULT_MAX_EVENT_BYTES == fallback.DEFAULT_MAX_EVENT_BYTES == 1 << 20
    assert (llmtally.DEFAULT_MAX_DECODED_BYTES, llmtally.DEFAULT_MAX_EVENT_BYTES) == (64 << 20, 1 << 20)


def test_empty_response_uses_request(backend):
    req = llmtally.RequestInfo(model="gpt-4o", streaming=True)
    sc = llmtally.ResponseScanner("openai", req, backend=backend)
    assert sc.finish() == llmtally.Usage(model="gpt-4o", streaming=True)


def test_bad_constructor_arguments(backend):
    with pytest.raises(TypeError):
        llmtally.ResponseScanner(None, backend=backend)
    for bad in (-1, 1 << 63, 1.5, True):
        with pytest.raises(ValueError, match="max_decoded_bytes"):
            llmtally.ResponseScanner("openai", max_decoded_bytes=bad, backend=backend)
    with pytest.raises(TypeError):  # status is gone: the scanner never used it
        llmtally.ResponseScanner("openai", status=200, backend=backend)


def test_the_fallbacks_registry_is_the_cores():
    """The fallback is built from a generated copy of the Rust registry (cargo test checks the file;
    this checks the data the fallback loaded against what the extension computes)."""
    from llmtally import _native, fallback
    from llmtally.fallback.data import DATA

    core = json.loads(_native.registry_json())
    assert DATA == core
    assert [d.id for d in fallback.registry.ALL] == [p["id"] for p in core["providers"]]
    assert fallback.tokens.ENCODINGS == llmtally.ENCODINGS == tuple(core["encodings"])


def test_provider_ids_round_trip(backend):
    ids = [p.id for p in llmtally.providers()]
    assert llmtally.PROVIDERS == (*ids, "auto")
    assert len(set(ids)) == len(ids) and len({p.display for p in llmtally.providers()}) == len(ids)
    for p in llmtally.providers():
        for spelling in (p.id, p.id.upper(), f" {p.id} "):
            assert llmtally.resolve_provider(spelling, backend=backend) == p.id
            assert llmtally.ResponseScanner(spelling, backend=backend).provider == p.id
        assert llmtally.display_name(p.id) == p.display
    assert llmtally.resolve_provider("vllm", backend=backend) == "openai"  # unknown ids read as OpenAI-compatible
    assert llmtally.display_name("vllm") == "OpenAI"


def test_the_fallback_is_not_imported_with_the_native_backend():
    code = (
        "import sys, llmtally\n"
        "r = llmtally.parse_request(b'{}', 'openai')\n"
        "sc = llmtally.ResponseScanner('auto', r)\n"
        "sc.feed(b'{}'); sc.finish(); llmtally.count_tokens('x'); llmtally.encoding_for_model('gpt-4o')\n"
        "print(sorted(m for m in sys.modules if m.startswith('llmtally')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "LLMTALLY_BACKEND"},
    ).stdout
    assert eval(out) == ["llmtally", "llmtally._api", "llmtally._native", "llmtally._types"]


def test_request_objects_are_checked_alike(backend):
    class Req:
        model, streaming, include_usage, prompt_tokens = "gpt-4o", True, False, 7

    sc = llmtally.ResponseScanner("openai", Req(), backend=backend)  # any object with the attributes
    assert sc.finish() == llmtally.Usage(model="gpt-4o", streaming=True)
    for attr, bad, err in (("streaming", 1, TypeError), ("prompt_tokens", -1, ValueError), ("model", 3, TypeError)):
        r = Req()
        setattr(r, attr, bad)
        with pytest.raises(err):
            llmtally.ResponseScanner("openai", r, backend=backend)
