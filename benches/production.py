"""A production-shaped benchmark: OpenAI chat streams of 300 and 1,000 events written one event per chunk
at a steady pace (a model generating about 100 tokens per second), and non-streaming JSON answers of the
same lengths, through Envoy alone, Envoy with an empty grpcio ext_proc (the floor of any Python host),
Envoy with llmtally, and the two in observe-only mode (Envoy's ext_proc in observability mode: an empty
server that answers nothing, and llmtally with `observe: true`). For each: the sidecar's CPU per request
and per 1,000 output tokens, throughput, time to the first body byte (p50/p99) and what the sidecar adds
to it, and the latency added per streamed chunk.

    python benches/production.py [--short] [--out bench-production.json] [--markdown FILE]

The client is this process (asyncio, one connection per concurrent request, keep-alive); the upstream is
the demo's mock, pacing events with `x-mock-delay-ms`. Everything shares the machine's cores: the
side-by-side ratios of one run are what count, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from e2e_load import start_gateway, start_mock  # noqa: E402
from llmtally.demo import SEED_BODY, keys, upstream  # noqa: E402

KINDS = ("none", "noop", "llmtally", "noop-observe", "llmtally-observe")
LABELS = {
    "none": "Envoy alone",
    "noop": "empty ext_proc",
    "llmtally": "llmtally",
    "noop-observe": "observe: silent empty server",
    "llmtally-observe": "observe: llmtally",
}
#: milliseconds between two events of a stream (about 100 output tokens per second)
PACE_MS = 10
#: requests in flight at once
CONCURRENCY = 16


def body_for(events: int, stream: bool) -> tuple[dict, int, int]:
    """The request body whose answer has about `events` events (the mock repeats its answer), the events the
    stream has, and the answer's output tokens."""
    base = dict(SEED_BODY, messages=[{"role": "user", "content": "Hello"}])
    sbody = dict(base, stream=True, stream_options={"include_usage": True})
    repeat = 1
    while True:
        r = upstream.openai(sbody, json.dumps(sbody).encode(), "/v1/chat/completions", repeat)
        if len(r.events) >= events:
            break
        repeat += 1
    usage = json.loads(r.events[-2].removeprefix(b"data: "))["usage"]
    body = dict(sbody if stream else base, __repeat=repeat)
    return body, len(r.events), usage["completion_tokens"]


class Result:
    def __init__(self) -> None:
        self.seconds = 0.0  # the run's length: new requests start until its deadline, the last ones end after
        self.ttfb: list[float] = []  # seconds: request written to the first body byte
        self.total: list[float] = []  # seconds: request written to the last body byte
        self.errors = 0


async def one(host: str, port: int, request: bytes, res: Result, until: float) -> None:
    """A keep-alive connection sending `request` until `until`, reading each response to its end."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            t0 = time.monotonic()
            writer.write(request)
            status = await reader.readline()
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            first = None
            if headers.get("transfer-encoding") == "chunked":
                while True:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        await reader.readline()
                        break
                    await reader.readexactly(size + 2)
                    first = first or time.monotonic()
            else:
                await reader.readexactly(int(headers.get("content-length", "0")))
                first = time.monotonic()
            end = time.monotonic()
            if not status.startswith(b"HTTP/1.1 200"):
                res.errors += 1
                continue
            res.ttfb.append((first or end) - t0)
            res.total.append(end - t0)
    finally:
        writer.close()


def run_load(port: int, request: bytes, seconds: float, concurrency: int) -> Result:
    res = Result()

    async def main() -> None:
        t0 = time.monotonic()
        await asyncio.gather(*(one("127.0.0.1", port, request, res, t0 + seconds) for _ in range(concurrency)))
        res.seconds = time.monotonic() - t0

    asyncio.run(main())
    return res


def http_request(token: str, body: dict) -> bytes:
    body = dict(body)
    repeat = body.pop("__repeat")
    payload = json.dumps(body).encode()
    head = (
        "POST /openai HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {token}\r\nx-mock-repeat: {repeat}\r\nx-mock-delay-ms: {PACE_MS}\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true", help="CI mode: shorter runs")
    ap.add_argument("--out", default="bench-production.json")
    ap.add_argument("--markdown", help="write the table here too")
    args = ap.parse_args()
    # how long new requests are started (each connection finishes the one it has in flight): a 310-event
    # stream lasts about 3.3 s and a 1007-event one about 10.5 s at the pace
    seconds = {"stream-300": 12, "stream-1000": 20, "json-300": 5, "json-1000": 5}
    if args.short:  # one round of 1007-event streams, two of 310
        seconds = {"stream-300": 4, "stream-1000": 1, "json-300": 2, "json-1000": 2}
    workdir = tempfile.mkdtemp(prefix="llmtally-prod-")
    key = keys.SigningKey()
    token = key.token(keys.ALICE)
    mock, up = start_mock()
    workloads = {}
    for n in (300, 1000):
        for stream in (True, False):
            body, events, tokens = body_for(n, stream)
            workloads[f"{'stream' if stream else 'json'}-{n}"] = {
                "request": http_request(token, body),
                "events": events if stream else 1,
                "output_tokens": tokens,
            }
    out: dict = {
        "pace_ms": PACE_MS,
        "concurrency": CONCURRENCY,
        "seconds": seconds,
        "workloads": {w: {"events": v["events"], "output_tokens": v["output_tokens"]} for w, v in workloads.items()},
        "results": {},
    }
    try:
        for kind in KINDS:
            backend, envoy, listen = start_gateway(kind, workdir, key, up)
            try:
                run_load(listen, workloads["json-300"]["request"], 1, 4)  # warm up
                for w, spec in workloads.items():
                    cpu0 = backend.cpu_seconds()
                    res = run_load(listen, spec["request"], seconds[w], CONCURRENCY)
                    settle(backend)  # in observe mode the sidecar may still be reading what Envoy has sent
                    cpu = backend.cpu_seconds() - cpu0
                    n = len(res.total)
                    row = {
                        "requests": n,
                        "errors": res.errors,
                        "req_per_s": n / res.seconds,
                        "ttfb_p50_ms": quantile(res.ttfb, 0.5) * 1e3,
                        "ttfb_p99_ms": quantile(res.ttfb, 0.99) * 1e3,
                        "total_p50_ms": quantile(res.total, 0.5) * 1e3,
                        "total_p99_ms": quantile(res.total, 0.99) * 1e3,
                        "after_first_p50_ms": quantile([t - f for t, f in zip(res.total, res.ttfb, strict=True)], 0.5)
                        * 1e3,
                    }
                    if backend.proc is not None and n:
                        row["cpu_us_per_request"] = cpu / n * 1e6
                        row["cpu_us_per_1k_output_tokens"] = cpu / n / spec["output_tokens"] * 1e9
                    out["results"].setdefault(w, {})[kind] = row
                    print(
                        f"{kind:9} {w:12} {n:5} req {row['req_per_s']:7.1f}/s ttfb p50 {row['ttfb_p50_ms']:7.2f} "
                        f"p99 {row['ttfb_p99_ms']:7.2f} ms total p50 {row['total_p50_ms']:8.1f} ms"
                        + (f" cpu {row['cpu_us_per_request']:7.0f} us/req" if "cpu_us_per_request" in row else ""),
                        flush=True,
                    )
            finally:
                envoy.stop()
                backend.stop()
    finally:
        mock.terminate()
    derive(out)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    table = markdown(out)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


def settle(backend, timeout: float = 30.0) -> None:
    """Wait until the sidecar is idle (under 1% of a core over a quarter of a second): its CPU for a
    workload includes the work left when the client is done (observe mode: Envoy does not wait for it)."""
    deadline = time.time() + timeout
    last = backend.cpu_seconds()
    while time.time() < deadline:
        time.sleep(0.25)
        now = backend.cpu_seconds()
        if now - last < 0.0025:
            return
        last = now


def derive(out: dict) -> None:
    """Ratios and added latencies against the floor (the empty ext_proc) and Envoy alone."""
    for w, rows in out["results"].items():
        events = out["workloads"][w]["events"]
        alone, floor = rows["none"], rows["noop"]
        for kind in KINDS[1:]:
            r = rows[kind]
            r["added_ttfb_p50_ms"] = r["ttfb_p50_ms"] - alone["ttfb_p50_ms"]
            r["added_ttfb_p99_ms"] = r["ttfb_p99_ms"] - alone["ttfb_p99_ms"]
            if events > 1:  # after the first byte: what each later chunk waited more than through Envoy alone
                r["added_ms_per_chunk_p50"] = (r["after_first_p50_ms"] - alone["after_first_p50_ms"]) / (events - 1)
        lt = rows["llmtally"]
        lt["cpu_over_floor"] = lt["cpu_us_per_request"] / floor["cpu_us_per_request"]
        lt["throughput_over_floor"] = lt["req_per_s"] / floor["req_per_s"]
        # observe-only against the normal floor's CPU (target: at most 0.7x) and Envoy alone's throughput
        for kind in ("noop-observe", "llmtally-observe"):
            r = rows[kind]
            if r.get("cpu_us_per_request"):
                r["cpu_over_floor"] = r["cpu_us_per_request"] / floor["cpu_us_per_request"]
            r["throughput_over_alone"] = r["req_per_s"] / alone["req_per_s"]


def markdown(out: dict) -> str:
    lines = [
        f"| workload ({out['concurrency']} at once, streams paced {out['pace_ms']} ms per event) | through | req/s "
        "| sidecar CPU/req | CPU per 1k output tokens | time to first byte p50 / p99 | added to it p50 / p99 "
        "| added per chunk |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w, rows in out["results"].items():
        spec = out["workloads"][w]
        shape = f"{spec['events']} events" if spec["events"] > 1 else "one JSON body"
        name = f"{w} ({shape}, {spec['output_tokens']} output tokens)"
        for kind in KINDS:
            r = rows[kind]
            cpu = f"{r['cpu_us_per_request']:.0f} µs" if "cpu_us_per_request" in r else ""
            per_k = f"{r['cpu_us_per_1k_output_tokens']:.0f} µs" if "cpu_us_per_1k_output_tokens" in r else ""
            if "cpu_over_floor" in r:
                cpu += f" ({r['cpu_over_floor']:.2f}x floor)"
            added = f"{r['added_ttfb_p50_ms']:.2f} / {r['added_ttfb_p99_ms']:.2f} ms" if kind != "none" else ""
            chunk = f"{r['added_ms_per_chunk_p50'] * 1000:.0f} µs" if "added_ms_per_chunk_p50" in r else ""
            lines.append(
                f"| {name if kind == 'none' else ''} | {LABELS[kind]} | {r['req_per_s']:.1f} | {cpu} | {per_k} "
                f"| {r['ttfb_p50_ms']:.2f} / {r['ttfb_p99_ms']:.2f} ms | {added} | {chunk} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
