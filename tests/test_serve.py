"""`llmtally serve` driven over a real socket by a real grpcio client:
exact dynamic metadata and exact metric samples."""

import glob
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from grpc_health.v1 import health_pb2, health_pb2_grpc

import llmtally
import oracle
from conftest import CASES, load
from helpers import metric_samples, serve_workers
from llmtally.demo import free_port

#: the real command line with one planted fault: a request for model "explode" raises (test-only)
FAULTY_SERVE = pathlib.Path(__file__).parent / "faulty_serve.py"

SECRET = "Bearer sk-test-SECRET-do-not-leak"
CONFIG = """
midStreamMetadataSeconds: {period}
listen: {listen}
metricsAddr: 127.0.0.1:{metrics}
backend: {backend}
stats:
  labelValuesMax: {cap}
  customLabels:
  - name: team
    metadataKey: principal:team
  - name: user
    metadataKey: principal/sub
    keyDelimiter: /
    metadataNamespace: envoy.filters.http.jwt_authn
"""


class Sidecar:
    """`llmtally serve` as a subprocess; `faulty`: through tests/faulty_serve.py."""

    def __init__(self, tmp_path, backend="native", cap=100, listen=None, extra="", period=0, faulty=False):
        self.grpc_addr = listen or f"127.0.0.1:{free_port()}"
        self.metrics_port = free_port()
        cfg = tmp_path / f"llmtally-{self.metrics_port}.yaml"
        cfg.write_text(
            CONFIG.format(listen=self.grpc_addr, metrics=self.metrics_port, backend=backend, cap=cap, period=period)
            + extra
        )
        self.log = tmp_path / f"serve-{self.metrics_port}.log"
        entry = [str(FAULTY_SERVE)] if faulty else ["-m", "llmtally.cli"]
        self.proc = subprocess.Popen(
            [sys.executable, *entry, "serve", "--config", str(cfg)],
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
        )
        self.channel = grpc.insecure_channel(self.grpc_addr)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.time() + 30
        while True:
            try:
                r = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.time() < deadline, "sidecar did not become healthy"
            time.sleep(0.1)
        self.stub = pb_grpc.ExternalProcessorStub(self.channel)

    def process(self, messages, provider=None):
        md = [("x-llm-provider", provider)] if provider else None
        return list(self.stub.Process(iter(messages), metadata=md, timeout=30))

    def metrics(self) -> dict:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return metric_samples(text)

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory, request):
    # trusted here so that the cases also run with the provider named by the request header
    s = Sidecar(tmp_path_factory.mktemp("serve"), extra="trustProviderHeader: true\n")
    yield s
    s.stop()


def hv(k, v):
    return base_pb2.HeaderValue(key=k, raw_value=v.encode())


def jwt_metadata(team=None, sub=None):
    principal = {k: v for k, v in (("team", team), ("sub", sub)) if v is not None}
    s = Struct()
    s.update({"principal": principal})
    return base_pb2.Metadata(filter_metadata={"envoy.filters.http.jwt_authn": s})


def messages(
    path,
    request_body,
    status,
    content_type,
    response_chunks,
    *,
    header_provider=None,
    md=None,
    encoding=None,
    response_headers=(),
):
    headers = [hv(":method", "POST"), hv(":path", path), hv("authorization", SECRET), hv("x-api-key", SECRET)]
    if header_provider:
        headers.append(hv("x-llm-provider", header_provider))
    resp_headers = [hv(":status", str(status)), hv("content-type", content_type)]
    if encoding:
        resp_headers.append(hv("content-encoding", encoding))
    resp_headers += [hv(k, v) for k, v in response_headers]
    kw = {"metadata_context": md} if md is not None else {}
    out = [
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=headers)), **kw),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=request_body, end_of_stream=True), **kw),
        pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=resp_headers)), **kw),
    ]
    for i, c in enumerate(response_chunks):
        out.append(
            pb.ProcessingRequest(response_body=pb.HttpBody(body=c, end_of_stream=i == len(response_chunks) - 1), **kw)
        )
    return out


def split3(b: bytes):
    n = max(1, len(b) // 3)
    return [b[:n], b[n : 2 * n], b[2 * n :]]


def md_of(resp) -> dict:
    return json_format.MessageToDict(resp.dynamic_metadata)


def floats(d):
    return {
        k: floats(v) if isinstance(v, dict) else float(v) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in d.items()
    }


#: the `provider` metadata of every registry id (the seed's spelling of the ones it names is checked below)
DISPLAY = {p.id: p.display for p in llmtally.providers()}


def test_display_names_are_the_seeds():
    assert (DISPLAY["openai"], DISPLAY["anthropic"]) == ("OpenAI", "Anthropic")  # the seed document's examples


def expected_final(u: dict, llm: str) -> dict:
    ai = {
        "total_tokens": u["total_tokens"],
        "prompt_tokens": u["prompt_tokens"],
        "completion_tokens": u["completion_tokens"],
        "cached_tokens": u["cached_tokens"],
        "cache_write_tokens": u["cache_write_tokens"],
        "reasoning_tokens": u["reasoning_tokens"],
        "provider": DISPLAY[llm],
        "streaming": u["streaming"],
        "usage_source": u["source"],
    }
    if u["model"] is not None:
        ai["model"] = u["model"]
    if u["provider_model"] is not None:
        ai["provider_model"] = u["provider_model"]
    return floats({"ai.gateway.kgateway.dev": ai, "envoy.ratelimit": {"hits_addend": u["total_tokens"]}})


def case_messages(case, **kw):
    body = load(case["request"]) if "request" in case else b"{}"
    ct = case.get("content_type") or ""
    return messages(
        case.get("path") or "/",
        body,
        case.get("status", 200),
        ct,
        split3(load(case["response"])),
        response_headers=sorted((case.get("headers") or {}).items()),
        **kw,
    )


def expected_request(case, llm):
    """The request-body metadata: model, streaming and the prompt estimate (from the oracle)."""

    info = llmtally.parse_request(
        load(case["request"]) if "request" in case else b"{}", case["provider"], case.get("path") or "/"
    )
    prompt = (
        oracle.prompt_estimate(json.loads(load(case["request"])), llm, oracle.encoding_for(info.model))
        if "request" in case
        else 0
    )
    ai = {"provider": DISPLAY[llm], "streaming": info.streaming, "prompt_tokens": prompt}
    if info.model is not None:
        ai["model"] = info.model
    return floats({"ai.gateway.kgateway.dev": ai, "envoy.ratelimit": {"hits_addend": prompt}})


@pytest.mark.parametrize("via", ["grpc-metadata", "request-header"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_every_case_gives_exact_metadata(sidecar, case, via):

    provider = case["provider"]
    msgs = case_messages(case, header_provider=provider if via == "request-header" else None)
    resps = sidecar.process(msgs, provider=provider if via == "grpc-metadata" else None)
    assert [r.WhichOneof("response") for r in resps] == [m.WhichOneof("request") for m in msgs]
    for r in resps:  # nothing in the traffic changes
        inner = getattr(r, r.WhichOneof("response"))
        assert not inner.response.HasField("header_mutation") and not inner.response.HasField("body_mutation")
        assert inner.response.status == 0 and not r.HasField("immediate_response")
    # an id the registry does not know is read as OpenAI-compatible; `auto` is detected from the path, and
    # once the response arrives, with its content type too
    path = case.get("path") or "/"
    llm = (
        provider if provider in DISPLAY else "openai" if provider != "auto" else llmtally.resolve_provider("auto", path)
    )
    # a path at which a provider serves another's API names that API (test_another_apis_paths_under_an_id)
    llm = llmtally.resolve_provider(llm, path)
    want_request = expected_request(case, llm)
    assert md_of(resps[1]) == want_request
    llm = llmtally.resolve_provider(provider, path, case.get("content_type") or "")
    assert [md_of(r) for r in resps[2:-1]] == expected_mid_stream(case, msgs, llm)
    # a request is always known to the sidecar (`{}` when the case has none): its flag decides
    # `streaming`, its model (from the body or the path) is the model, else the provider's
    req_ai = want_request["ai.gateway.kgateway.dev"]
    usage = dict(
        case["usage"], streaming=req_ai["streaming"], model=req_ai.get("model", case["usage"]["provider_model"])
    )
    assert md_of(resps[-1]) == expected_final(usage, llm)


def expected_mid_stream(case, msgs, llm):
    """Metadata on the responses between the request body and the end: after each
    body chunk that changed the numbers (new provider usage or new text, replayed
    through the public scanner on the same chunks), the snapshot; else nothing."""

    info = llmtally.parse_request(
        load(case["request"]) if "request" in case else b"{}", case["provider"], case.get("path") or "/"
    )
    sc = llmtally.ResponseScanner(
        case["provider"],
        info,
        content_type=case.get("content_type") or "",
        path=case.get("path") or "/",
        headers=case.get("headers", {}),
    )
    out, last = [{}], None  # the response headers' response carries nothing
    for m in msgs[3:-1]:
        sc.feed(m.response_body.body)
        u = sc.snapshot()
        if u.source != "none" and u != last:
            out.append(expected_final(u.as_dict(), llm))
            last = u
        else:
            out.append({})
    return out


def sample(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))))


SEED_NONSTREAM = next(c for c in CASES if c["name"].startswith("openai chat non-streaming"))
SEED_STREAM = next(c for c in CASES if c["name"].startswith("openai stream with include_usage"))
NO_USAGE = next(c for c in CASES if c["name"] == "openai stream without usage")


@pytest.mark.parametrize("backend", ["native", "python"])
def test_metrics_per_team_with_overflow_and_missing_labels(tmp_path, backend):
    s = Sidecar(tmp_path, backend=backend, cap=2)
    try:
        runs = [
            (SEED_NONSTREAM, "dev", "alice"),
            (SEED_STREAM, "ops", "bob"),
            (SEED_STREAM, "qa", "carol"),
            (NO_USAGE, None, None),
            (SEED_NONSTREAM, "dev", "alice"),
        ]
        for case, team, sub in runs:
            md = jwt_metadata(team, sub) if team else None
            resps = s.process(case_messages(case, md=md), provider="openai")
            assert md_of(resps[-1])["ai.gateway.kgateway.dev"]["usage_source"] == case["usage"]["source"]
        m = s.metrics()
        common = {"llm": "openai", "model": "gpt-3.5-turbo"}
        want = {  # (team, user): (prompt, completion) -- cap 2: "qa"/"carol" fold into overflow
            ("dev", "alice"): (42, 44),
            ("ops", "bob"): (21, 40),
            ("overflow", "overflow"): (21, 40),
            ("unknown", "unknown"): (21, 40),
        }
        for (team, user), (prompt, completion) in want.items():
            labels = dict(common, team=team, user=user)
            assert sample(m, "ai_prompt_tokens_total", **labels) == prompt
            assert sample(m, "ai_completion_tokens_total", **labels) == completion
            assert sample(m, "ai_rate_limited_tokens_total", **labels) == prompt + completion
        assert (
            sample(
                m, "ai_requests_total", **common, team="unknown", user="unknown", source="tokenizer", status_class="2xx"
            )
            == 1
        )
        assert (
            sample(m, "ai_requests_total", **common, team="dev", user="alice", source="provider", status_class="2xx")
            == 2
        )
        assert sum(v for (n, _), v in m.items() if n == "ai_prompt_tokens_total") == 105
        assert sample(m, "ai_request_duration_seconds_count", **common, team="dev", user="alice") == 2
        assert sample(m, "ai_time_to_first_token_seconds_count", **common, team="ops", user="bob") == 1
        assert sample(m, "ai_time_per_output_token_seconds_count", **common, team="ops", user="bob") == 1
        # non-streaming: the series exist (made with the others) but never observe (a whole body's first bytes
        # come when the answer is done: that is the duration, not a time to first token)
        assert sample(m, "ai_time_per_output_token_seconds_count", **common, team="dev", user="alice") == 0
        assert sample(m, "ai_time_to_first_token_seconds_count", **common, team="dev", user="alice") == 0
        assert not any(n.endswith("_created") for n, _ in m)
        text = urllib.request.urlopen(f"http://127.0.0.1:{s.metrics_port}/metrics").read().decode()
        assert "SECRET" not in text
    finally:
        s.stop()
    assert "SECRET" not in s.log.read_text()


EXPLODE = b'{"model":"explode","messages":[]}'


def test_exception_in_one_stream_leaves_the_others_unaffected(tmp_path):
    s = Sidecar(tmp_path, faulty=True)
    try:
        bad = messages("/v1/chat/completions", EXPLODE, 200, "text/event-stream", split3(load(SEED_STREAM["response"])))
        results = {}

        def run(name, msgs):
            def slow():
                for m in msgs:
                    time.sleep(0.02)
                    yield m

            results[name] = list(s.stub.Process(slow(), metadata=[("x-llm-provider", "openai")], timeout=30))

        threads = [
            threading.Thread(target=run, args=("bad", bad)),
            threading.Thread(target=run, args=("good", case_messages(SEED_STREAM))),
        ]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert [r.WhichOneof("response") for r in results["bad"]] == [m.WhichOneof("request") for m in bad]
        assert all(md_of(r) == {} for r in results["bad"])
        assert md_of(results["good"][-1]) == expected_final(SEED_STREAM["usage"], "openai")
        m = s.metrics()
        assert sample(m, "ai_exception_raised_total", stage="request_body") == 1
        assert (
            sample(m, "ai_prompt_tokens_total", llm="openai", model="gpt-3.5-turbo", team="unknown", user="unknown")
            == 21
        )
    finally:
        s.stop()
    log = s.log.read_text()
    assert log.count("exception in request_body") == 1 and "SECRET" not in log


def test_an_exception_late_in_a_stream_still_charges_what_was_known(tmp_path):
    """The last chunk's handling raises: its answer carries the usage known before the fault (the
    snapshot after the chunks before it), and the metrics record the same numbers."""
    s = Sidecar(tmp_path, faulty=True)
    try:
        body = json.dumps(dict(json.loads(load(SEED_STREAM["request"])), model="explode-late")).encode()
        chunks = split3(load(SEED_STREAM["response"]))
        msgs = messages("/v1/chat/completions", body, 200, "text/event-stream", chunks)
        resps = s.process(msgs, provider="openai")
        info = llmtally.parse_request(body, "openai", "/v1/chat/completions")
        sc = llmtally.ResponseScanner("openai", info, content_type="text/event-stream", path="/v1/chat/completions")
        for c in chunks[:-1]:
            sc.feed(c)
        known = sc.snapshot().as_dict()
        assert known["source"] != "none" and known["completion_tokens"] > 0
        assert md_of(resps[-1]) == expected_final(known, "openai")
        m = s.metrics()
        assert sample(m, "ai_exception_raised_total", stage="response_body") == 1
        # the provider answered as gpt-3.5-turbo-0125, not the request's made-up name: its name is the label
        labels = {"llm": "openai", "model": "gpt-3.5-turbo-0125", "team": "unknown", "user": "unknown"}
        assert sample(m, "ai_completion_tokens_total", **labels) == known["completion_tokens"]
        assert sample(m, "ai_rate_limited_tokens_total", **labels) == known["total_tokens"]
    finally:
        s.stop()


def test_the_production_entry_point_has_no_fault_hook(sidecar):
    """Model "explode" raises only under tests/faulty_serve.py: `llmtally serve` counts it like any other."""
    before = sample(sidecar.metrics(), "ai_exception_raised_total", stage="request_body")
    resps = sidecar.process(
        messages("/v1/chat/completions", EXPLODE, 200, "text/event-stream", split3(load(SEED_STREAM["response"]))),
        provider="openai",
    )
    assert md_of(resps[1])["ai.gateway.kgateway.dev"]["model"] == "explode"
    assert md_of(resps[-1])["ai.gateway.kgateway.dev"]["total_tokens"] == SEED_STREAM["usage"]["total_tokens"]
    assert sample(sidecar.metrics(), "ai_exception_raised_total", stage="request_body") == before


def slow(msgs, delay, stop_after=None):
    for i, m in enumerate(msgs):
        if i == stop_after:
            return  # the stream ends without end_of_stream: what Envoy does when a client is gone
        time.sleep(delay)
        yield m


def test_streams_without_usage_get_tokenizer_metadata_mid_stream(tmp_path):
    s = Sidecar(tmp_path, period=0.1)
    try:
        body = load(NO_USAGE["response"])
        pieces = [body[i : i + 200] for i in range(0, len(body), 200)]
        msgs = messages("/v1/chat/completions", load(NO_USAGE["request"]), 200, "text/event-stream", pieces)
        resps = list(s.stub.Process(slow(msgs, 0.06), metadata=[("x-llm-provider", "openai")], timeout=30))
        mids = [md_of(r)["ai.gateway.kgateway.dev"] for r in resps[3:-1] if md_of(r)]
        final = md_of(resps[-1])["ai.gateway.kgateway.dev"]
        assert mids and all(m["usage_source"] == "tokenizer" and m["prompt_tokens"] == 21 for m in mids)
        counts = [m["completion_tokens"] for m in mids]
        assert counts == sorted(counts) and 0 < counts[-1] <= final["completion_tokens"] == 40
    finally:
        s.stop()


def test_a_stream_cut_short_is_counted_as_aborted_with_its_usage_so_far(tmp_path):
    s = Sidecar(tmp_path)
    try:
        msgs = case_messages(SEED_STREAM)
        resps = list(
            s.stub.Process(slow(msgs, 0, stop_after=len(msgs) - 1), metadata=[("x-llm-provider", "openai")], timeout=30)
        )
        assert len(resps) == len(msgs) - 1
        cut = case_messages(SEED_STREAM)
        list(s.stub.Process(slow(cut, 0, stop_after=2), metadata=[("x-llm-provider", "openai")], timeout=30))
        time.sleep(0.3)
        m = s.metrics()
        labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "unknown", "user": "unknown"}
        assert sample(m, "ai_aborted_streams_total", **labels) == 2
        # the first was cut before its last chunk (which holds the usage): the text it delivered is counted
        # (40 tokens, as the tokenizer counts them) with the prompt estimate; the second saw no response at all
        assert (sample(m, "ai_prompt_tokens_total", **labels), sample(m, "ai_completion_tokens_total", **labels)) == (
            21,
            40,
        )
        assert sample(m, "ai_requests_total", **labels, source="tokenizer", status_class="2xx") == 1
        # no other source: those series were never made
        others = [
            sample(m, "ai_requests_total", **labels, source=src, status_class="2xx") for src in ("provider", "none")
        ]
        assert others == [None, None]
    finally:
        s.stop()


def test_cache_writes_and_provisional_usage_reach_the_metrics(tmp_path):
    s = Sidecar(tmp_path)
    try:
        by_name = {c["name"]: c for c in CASES}
        cache = by_name["anthropic stream with cache, thinking and tool use (auto)"]
        cut = by_name["anthropic overloaded mid-stream"]
        for case in (cache, cut):
            s.process(case_messages(case), provider="anthropic")
        m = s.metrics()
        base = {"llm": "anthropic", "team": "unknown", "user": "unknown"}
        writes = {k: v for k, v in m.items() if k[0] == "ai_cache_write_tokens_total"}
        assert sum(writes.values()) == 2048 == cache["usage"]["cache_write_tokens"]
        # the cut stream's delivered text (2 tokens) won over message_start's placeholder (1)
        labels = dict(base, model=cut["usage"]["model"])
        assert sample(m, "ai_requests_total", **labels, source="provider+tokenizer", status_class="2xx") == 1
        assert sample(m, "ai_completion_tokens_total", **labels) == 2
    finally:
        s.stop()


def test_a_client_cannot_pick_the_parser_nor_blow_up_the_labels(tmp_path):
    """By default the client's own x-llm-provider header is ignored (`gemini` on an OpenAI stream would read
    zero); a claim longer than labelValueMaxLength, or with a control character, becomes the overflow value."""
    s = Sidecar(tmp_path)
    try:
        runs = [("x" * 200, "long"), ("ops\nai_fake_total 1", "newline"), ("dev", "alice")]
        for team, sub in runs:
            msgs = case_messages(SEED_STREAM, header_provider="gemini", md=jwt_metadata(team, sub))
            resps = s.process(msgs)  # no provider from Envoy: the client's header is all there is
            assert md_of(resps[-1]) == expected_final(SEED_STREAM["usage"], "openai")
        m = s.metrics()
        common = {"llm": "openai", "model": "gpt-3.5-turbo"}
        for team, user in (("overflow", "long"), ("overflow", "newline"), ("dev", "alice")):
            assert sample(m, "ai_completion_tokens_total", **common, team=team, user=user) == 40
        assert not any(k[0] == "ai_completion_tokens_total" and dict(k[1]).get("llm") == "gemini" for k in m)
        assert all(len(v) <= 128 and v.isprintable() for k in m for _, v in k[1])
    finally:
        s.stop()


def test_concurrent_streams_beyond_the_cap_are_refused(tmp_path):
    s = Sidecar(tmp_path, extra="maxConcurrentStreams: 2\n")
    try:
        release = threading.Event()
        active = [threading.Event(), threading.Event()]

        def held():
            msgs = case_messages(SEED_STREAM)
            yield from msgs[:2]
            release.wait(20)
            yield from msgs[2:]

        results = [None, None]

        def run(i):
            out = []
            for r in s.stub.Process(held(), metadata=[("x-llm-provider", "openai")], timeout=30):
                out.append(r)
                if len(out) == 2:
                    active[i].set()  # the server is inside this stream
            results[i] = out

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        assert all(a.wait(20) for a in active)
        with pytest.raises(grpc.RpcError) as refused:
            s.process(case_messages(SEED_STREAM), provider="openai")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        [t.join() for t in threads]
        assert [md_of(r[-1]) for r in results] == [expected_final(SEED_STREAM["usage"], "openai")] * 2
        assert md_of(s.process(case_messages(SEED_STREAM), provider="openai")[-1]) == expected_final(
            SEED_STREAM["usage"], "openai"
        )
    finally:
        s.stop()


def test_request_body_beyond_the_cap_is_read_up_to_it(tmp_path):
    # STREAMED: the body in several messages (BUFFERED_PARTIAL sends one, read as soon as it comes)
    s = Sidecar(tmp_path, extra="maxRequestBodyBytes: 64\nrequestBodyMode: STREAMED\n")
    try:
        body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "word " * 500}]}).encode()
        chunks = [body[i : i + 50] for i in range(0, len(body), 50)]  # STREAMED request body
        msgs = messages("/v1/chat/completions", b"", 200, "application/json", [load(SEED_NONSTREAM["response"])])
        msgs[1:2] = [
            pb.ProcessingRequest(request_body=pb.HttpBody(body=c, end_of_stream=i == len(chunks) - 1))
            for i, c in enumerate(chunks)
        ]
        resps = s.process(msgs, provider="openai")
        assert len(resps) == len(msgs)
        req_md = md_of(resps[len(chunks)])["ai.gateway.kgateway.dev"]
        cut = llmtally.parse_request(body[:64], "openai", "/v1/chat/completions")
        assert (req_md["model"], req_md["prompt_tokens"]) == ("gpt-4o", cut.prompt_tokens)
        assert md_of(resps[-1])["ai.gateway.kgateway.dev"]["total_tokens"] == 43  # the response is unaffected
    finally:
        s.stop()


def test_graceful_shutdown_lets_open_streams_finish(tmp_path):
    s = Sidecar(tmp_path)
    msgs = case_messages(SEED_STREAM)
    sent_sigterm = threading.Event()
    inside = threading.Event()  # the server has answered the first messages: the stream is in it

    def slow():
        for i, m in enumerate(msgs):
            if i == 3:
                assert inside.wait(20)
                s.proc.send_signal(signal.SIGTERM)
                sent_sigterm.set()
                time.sleep(0.5)
            yield m

    resps = []
    for r in s.stub.Process(slow(), metadata=[("x-llm-provider", "openai")], timeout=30):
        resps.append(r)
        if len(resps) == 3:
            inside.set()
    assert sent_sigterm.is_set()
    assert md_of(resps[-1]) == expected_final(SEED_STREAM["usage"], "openai")
    assert s.proc.wait(timeout=30) == 0
    with pytest.raises(grpc.RpcError):
        s.process(case_messages(SEED_STREAM), provider="openai")
    s.stop()


def test_unix_socket_and_auto_detection(tmp_path):
    sock = tmp_path / "llmtally.sock"
    s = Sidecar(tmp_path, listen=f"unix:{sock}", extra="unixSocketMode: '0600'\n")
    try:
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        case = next(c for c in CASES if c["name"] == "anthropic stream")
        resps = s.process(case_messages(case))  # no provider given: detected from /v1/messages
        assert md_of(resps[-1]) == expected_final(case["usage"], "anthropic")
        assert (
            sample(
                s.metrics(),
                "ai_completion_tokens_total",
                llm="anthropic",
                model="claude-sonnet-4-5",
                team="unknown",
                user="unknown",
            )
            == 15
        )
    finally:
        s.stop()


def streams_per_worker(worker) -> int:
    """The `ai_requests_total` one worker recorded, read from its own prometheus
    multiprocess files (`<kind>_<pid>.db` in the directory its parent made)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    files = glob.glob(os.path.join(worker.environ()["PROMETHEUS_MULTIPROC_DIR"], f"*_{worker.pid}.db"))
    return sum(
        s.value for fam in MultiProcessCollector.merge(files) for s in fam.samples if s.name == "ai_requests_total"
    )


def vocabulary_bytes() -> int:
    """What loading both vocabularies adds to a fresh process's resident memory."""
    code = (
        "import psutil, llmtally; p = psutil.Process(); a = p.memory_info().rss\n"
        "for e in ('o200k_base', 'cl100k_base'): llmtally.count_tokens('a', encoding=e, backend='native')\n"
        "print(p.memory_info().rss - a)"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_workers_share_the_port_and_one_metrics_endpoint(tmp_path):
    s = Sidecar(tmp_path, extra="workers: 2\n")
    try:
        children = serve_workers(s.proc.pid)
        assert len(children) == 2
        n = 32  # the kernel hashes each new connection to a worker: all 32 on one by chance is 2 in 2**32
        for _ in range(n):
            # a new connection each time (a local subchannel pool: grpc would otherwise reuse the last one)
            with grpc.insecure_channel(s.grpc_addr, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                resps = list(
                    pb_grpc.ExternalProcessorStub(ch).Process(
                        iter(case_messages(SEED_STREAM)), metadata=[("x-llm-provider", "openai")]
                    )
                )
                assert md_of(resps[-1]) == expected_final(SEED_STREAM["usage"], "openai")
        m = s.metrics()
        labels = {"llm": "openai", "model": "gpt-3.5-turbo", "team": "unknown", "user": "unknown"}
        assert sample(m, "ai_prompt_tokens_total", **labels) == 21 * n
        assert sample(m, "ai_completion_tokens_total", **labels) == 40 * n
        assert sample(m, "ai_requests_total", **labels, source="provider", status_class="2xx") == n
        # both workers served streams, and between them exactly the n that /metrics reports
        per_worker = [streams_per_worker(c) for c in children]
        assert sum(per_worker) == n and all(k > 0 for k in per_worker), per_worker
        # the vocabularies were loaded once, before the workers were forked: after serving (prompt estimates
        # read them), each worker's own memory is well under their size
        vocab = vocabulary_bytes()
        assert vocab > 60 * 2**20
        assert all(c.memory_full_info().uss < vocab / 2 for c in children), [c.memory_full_info() for c in children]
    finally:
        s.stop()
    assert s.proc.returncode == 0


@pytest.mark.parametrize(
    "config, message",
    [
        ("workers: 2\nrateLimit:\n  limits: []\n", "rateLimit budgets live in one process"),
        ("workers: 2\nlisten: unix:/tmp/x.sock\n", "cannot share a unix socket"),
        ("listen: nowhere\n", "listen: 'nowhere' is not host:port"),
        ("metricsAddr: unix:/x\n", "metricsAddr: 'unix:/x' is not host:port"),
        ("stats:\n  customLabels:\n  - name: 'bad-name'\n    metadataKey: a\n", "is not a valid Prometheus label name"),
        ("stats:\n  customLabels:\n  - name: model\n    metadataKey: a\n", "is reserved"),
        ("colour: blue\n", "unknown setting 'colour'"),
        # one Struct key for both: the usage fields would be overwritten by hits_addend
        (
            "ratelimitNamespace: ai.gateway.kgateway.dev\n",
            "metadataNamespace: 'ai.gateway.kgateway.dev' is also ratelimitNamespace; give the two different names",
        ),
        ("logLevel: loud\n", "logLevel: 'loud' is not one of"),
        ("maxRequestBodyBytes: many\n", "maxRequestBodyBytes: 'many' is not an integer"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("listen: [127.0.0.1:1\nworkers: 2\n", "is not valid YAML: while parsing a flow sequence"),
        ("unixSocketMode: '999'\n", "unixSocketMode: '999' is not an octal mode"),
        ("unixSocketMode: 0660\n", "unixSocketMode: 432 is not a string; quote the mode"),  # YAML 1.1 octal
        ("maxConcurrentStreams: 0\n", "maxConcurrentStreams: must be an integer from 1 to 1000000, not 0"),
        # numbers: integers are integers, seconds are finite, everything has a sane maximum
        ("maxDecodedBytes: 1.0e+30\n", "maxDecodedBytes: must be an integer from 1 to 1099511627776, not 1e+30"),
        ("maxDecodedBytes: 1099511627777\n", "maxDecodedBytes: must be an integer from 1 to 1099511627776"),
        ("maxRequestBodyBytes: 1.5\n", "maxRequestBodyBytes: must be an integer from 1 to 1073741824, not 1.5"),
        ("maxEventBytes: -1\n", "maxEventBytes: must be an integer from 1 to 1073741824, not -1"),
        ("stats:\n  labelValuesMax: 100001\n", "labelValuesMax: must be an integer from 1 to 100000, not 100001"),
        ("workers: 2.0\n", "workers: must be an integer from 1 to 1024, not 2.0"),
        ("workers: true\n", "workers: must be an integer from 1 to 1024, not True"),
        ("shutdownGraceSeconds: .nan\n", "shutdownGraceSeconds: must be a number of seconds from 0 to 3600, not nan"),
        ("shutdownGraceSeconds: 3601\n", "shutdownGraceSeconds: must be a number of seconds from 0 to 3600"),
        ("shutdownGraceSeconds: -1\n", "shutdownGraceSeconds: must be a number of seconds from 0 to 3600"),
        ("midStreamMetadataSeconds: .inf\n", "midStreamMetadataSeconds: must be a number of seconds from 0 to 3600"),
        ("midStreamMetadataSeconds: soon\n", "midStreamMetadataSeconds: 'soon' is not a number"),
        (
            "rateLimit:\n  limits:\n  - descriptorKey: team\n    tokens: 1.0e+10\n",
            "rateLimit.limits[0].tokens: must be an integer from 1 to 4294967295, not 10000000000.0",
        ),
        ("rateLimit:\n  windowSeconds: 60.5\n", "rateLimit.windowSeconds: 60.5 is not one of"),
        # addresses: ASCII ports in range, /metrics apart from gRPC
        ("listen: 127.0.0.1:99999\n", "listen: '127.0.0.1:99999' is not host:port"),
        ("listen: '127.0.0.1:\u0661\u0668\u0660\u0668\u0660'\n", "is not host:port"),  # Arabic-Indic digits
        ("metricsAddr: 127.0.0.1:18080\n", "metricsAddr: '127.0.0.1:18080' is the listen address too"),
    ],
)
def test_invalid_config_fails_at_start_with_one_clear_line(tmp_path, config, message):
    f = tmp_path / "bad.yaml"
    f.write_text(config)
    r = subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "serve", "--config", str(f)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert r.stderr.startswith("llmtally: error: invalid configuration: ") and r.stderr.count("\n") == 1
    assert message in r.stderr


def test_flags_and_env_override_the_file(tmp_path):
    from llmtally.config import load

    f = tmp_path / "c.yaml"
    f.write_text("listen: 127.0.0.1:1\nmetricsAddr: 127.0.0.1:2\nlogLevel: debug\n")
    c = load(str(f), {"listen": "unix:/run/x.sock"}, {"LLMTALLY_METRICS_ADDR": "0.0.0.0:9999"})
    assert (c.listen, c.metrics_addr, c.log_level) == ("unix:/run/x.sock", "0.0.0.0:9999", "debug")
    c = load(None, {}, {"LLMTALLY_CONFIG": str(f), "LLMTALLY_LOG_LEVEL": "error"})
    assert (c.listen, c.log_level) == ("127.0.0.1:1", "error")


def test_build_info_process_metrics_and_debug_logs_of_llmtally_only(tmp_path):
    """`llmtally_build_info{version,backend}` and the process metrics are on /metrics; `logLevel: debug` turns
    on llmtally's debug lines, not gRPC's or asyncio's."""
    s = Sidecar(tmp_path, extra="logLevel: debug\nrateLimit:\n  limits:\n  - descriptorKey: team\n    tokens: 100\n")
    try:
        from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
        from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

        d = rl.RateLimitDescriptor(entries=[rl.RateLimitDescriptor.Entry(key="team", value="ops")])
        rls_pb2_grpc.RateLimitServiceStub(s.channel).ShouldRateLimit(
            rls_pb2.RateLimitRequest(domain="llmtally", descriptors=[d]), timeout=5
        )  # llmtally.ratelimit logs each call at debug
        s.process(case_messages(SEED_STREAM), provider="openai")
        m = s.metrics()
        assert sample(m, "llmtally_build_info", version=llmtally.__version__, backend="native") == 1
        assert m[("process_resident_memory_bytes", ())] > 50e6 and m[("process_open_fds", ())] > 0
    finally:
        s.stop()
    lines = [ln for ln in s.log.read_text().splitlines() if " DEBUG " in ln]
    assert any(" DEBUG llmtally.ratelimit: rate limit " in ln for ln in lines), lines[:5]
    assert all(ln.split(" DEBUG ", 1)[1].startswith("llmtally") for ln in lines), lines[:5]  # not asyncio's


def test_error_traffic_shows_in_the_status_class(tmp_path):
    s = Sidecar(tmp_path)
    try:
        by_name = {c["name"]: c for c in CASES}
        for name in ("openai 401 error body", "anthropic 529 error body", "openai chat non-streaming (seed: Alice)"):
            case = by_name[name]
            s.process(case_messages(case), provider=case["provider"])
        m = s.metrics()
        got = {
            (dict(k)["llm"], dict(k)["status_class"], dict(k)["source"]): v
            for (name, k) in m
            if name == "ai_requests_total"
            for v in [m[(name, k)]]
        }
        assert got == {("openai", "4xx", "none"): 1, ("anthropic", "5xx", "none"): 1, ("openai", "2xx", "provider"): 1}
    finally:
        s.stop()
