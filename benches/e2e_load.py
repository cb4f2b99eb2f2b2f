"""End-to-end load on loopback: Envoy alone, Envoy + an empty ext_proc,
Envoy + llmtally (1 and 2 workers, and 1 with OpenTelemetry export to an OTLP
sink), and observe-only (Envoy's ext_proc in observability mode: an empty
server that answers nothing, and llmtally with observe: true), driven by wrk
from a separate process, streaming and not: throughput, latency, and the
sidecar's CPU per request; then peak RSS of llmtally with 1000 concurrent
streams; then OpenTelemetry's cost, llmtally with it off and on driven at the
same time (`otel_pairs`).

    python benches/e2e_load.py [--short] [--otel-only] [--out bench-e2e.json]

Every process shares the same 2 cores, so absolute numbers are low and noisy;
the ratios between configurations measured in one run are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil

from llmtally import gateway
from llmtally.demo import SEED_BODY, free_port, keys, upstream
from llmtally.demo.envoy_runner import Envoy, envoy_binary

HERE = os.path.dirname(os.path.abspath(__file__))
STREAM_BODY = dict(SEED_BODY, stream=True, stream_options={"include_usage": True})
#: the configurations measured, in this order
KINDS = ("none", "noop", "llmtally", "llmtally-otel", "llmtally-2w", "noop-observe", "llmtally-observe")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def lua_script(path: str, token: str, body: dict, extra_headers: dict) -> str:
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json", **extra_headers}
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def parse_ms(v: str) -> float:
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_command(url: str, script: str, connections: int, seconds: int) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url]


def wrk_result(out: str) -> dict:
    res = {"req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    for q in ("50", "99"):
        res[f"p{q}_ms"] = parse_ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(errors.group(1)) if errors else 0
    return res


def wrk(url: str, script: str, connections: int, seconds: int) -> dict:
    out = subprocess.run(wrk_command(url, script, connections, seconds), capture_output=True, text=True, check=True)
    return wrk_result(out.stdout)


def start_mock() -> tuple[subprocess.Popen, int]:
    """The demo's mock upstream in a process of its own, and its port."""
    up = free_port()
    mock = subprocess.Popen(
        [sys.executable, "-m", "llmtally.demo.upstream", "--port", str(up)], stdout=subprocess.DEVNULL
    )
    wait_port(up)
    return mock, up


def start_gateway(
    kind: str, workdir: str, key: keys.SigningKey, upstream_port: int, otlp_port: int = 0
) -> tuple[Backend, Envoy, int]:
    """One configuration of KINDS: its ext_proc server (or none) and an Envoy in front of the mock; returns
    both and Envoy's listener port, once Envoy is ready."""
    grpc_port, metrics_port, listen, admin = free_port(), free_port(), free_port(), free_port()
    backend = Backend(kind, grpc_port, metrics_port, workdir, otlp_port)
    cfg = gateway.bootstrap(
        listen_port=listen,
        admin_port=admin,
        upstream_addr=f"127.0.0.1:{upstream_port}",
        llmtally_addr=f"127.0.0.1:{grpc_port}",
        access_log="/dev/null",
        jwks=key.jwks(),
        rate_limit_domain=None,
        ext_proc=kind != "none",
        observe=kind.endswith("-observe"),
    )
    envoy = Envoy(cfg, workdir, admin, concurrency=1)
    try:
        envoy.wait_ready()
    except BaseException:
        envoy.stop()
        backend.stop()
        raise
    return backend, envoy, listen


class Backend:
    """An ext_proc server process (or none)."""

    def __init__(self, kind: str, port: int, metrics_port: int, workdir: str, otlp_port: int = 0):
        self.kind, self.proc = kind, None
        if kind == "none":
            return
        if kind in ("noop", "noop-observe"):
            cmd = [sys.executable, os.path.join(HERE, "noop_extproc.py"), "--listen", f"127.0.0.1:{port}"]
            if kind == "noop-observe":
                cmd.append("--silent")
        else:
            cfg = os.path.join(workdir, f"llmtally-{kind}.yaml")
            with open(cfg, "w") as f:
                f.write(
                    f"listen: 127.0.0.1:{port}\nmetricsAddr: 127.0.0.1:{metrics_port}\nlogLevel: warning\n"
                    f"workers: {2 if kind == 'llmtally-2w' else 1}\n"
                    "stats:\n  customLabels:\n  - name: team\n    metadataKey: principal:team\n"
                    f"observe: {'true' if kind == 'llmtally-observe' else 'false'}\n"
                )
                if kind == "llmtally-otel":  # metrics every second (the SDK's default is 60 s), spans batched
                    f.write(
                        f"otel:\n  endpoint: http://127.0.0.1:{otlp_port}\n  protocol: grpc\n"
                        "  exportIntervalSeconds: 1\n"
                    )
            cmd = [sys.executable, "-m", "llmtally.cli", "serve", "--config", cfg]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the process and its children so far."""
        if self.proc is None:
            return 0.0
        p = psutil.Process(self.proc.pid)
        total = 0.0
        for q in [p, *p.children(recursive=True)]:
            t = q.cpu_times()
            total += t.user + t.system
        return total

    def rss_mb(self) -> float:
        """Resident memory of the process and its children."""
        if self.proc is None:
            return 0.0
        p = psutil.Process(self.proc.pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true", help="CI mode: 3 s per run")
    ap.add_argument("--out", default="bench-e2e.json")
    ap.add_argument("--otel-only", action="store_true", help="only the OpenTelemetry off/on pairs")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    seconds = 3 if args.short else 10
    workdir = tempfile.mkdtemp(prefix="llmtally-bench-")
    key = keys.SigningKey()
    token = key.token(keys.ALICE)
    mock, up = start_mock()
    scripts = {
        "nonstream": lua_script(os.path.join(workdir, "n.lua"), token, SEED_BODY, {}),
        "stream": lua_script(os.path.join(workdir, "s.lua"), token, STREAM_BODY, {"x-mock-delay-ms": "0"}),
    }
    results = {
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "envoy": os.path.basename(envoy_binary()),
        },
        "seconds_per_run": seconds,
        "connections": 32,
        "load": {},
        # body chunks of one streamed answer (the mock sends one SSE event per write)
        "stream_events": len(
            upstream.openai(STREAM_BODY, json.dumps(STREAM_BODY).encode(), "/v1/chat/completions", 1).events
        ),
    }
    from otlp_sink import Sink

    sink = Sink()

    def start(kind: str) -> tuple[Backend, Envoy, str]:
        backend, envoy, listen = start_gateway(kind, workdir, key, up, sink.port)
        url = f"http://127.0.0.1:{listen}/openai"
        wrk(url, scripts["nonstream"], 4, 1)  # warm up
        return backend, envoy, url

    def measure(backend: Backend, url: str, script: str) -> dict:
        cpu0 = backend.cpu_seconds()
        r = wrk(url, script, 32, seconds)
        if backend.proc is not None:
            r["cpu_us_per_request"] = (backend.cpu_seconds() - cpu0) / r["requests"] * 1e6
        return r

    try:
        for kind in () if args.otel_only else KINDS:
            backend, envoy, url = start(kind)
            try:
                row = {w: measure(backend, url, s) for w, s in scripts.items()}
                results["load"][kind] = row
                print(
                    f"{kind:16} "
                    + "  ".join(
                        f"{w}: {r['req_per_s']:7.0f} req/s p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:6.2f} ms"
                        + (f" cpu {r['cpu_us_per_request']:5.0f} us/req" if "cpu_us_per_request" in r else "")
                        for w, r in row.items()
                    ),
                    flush=True,
                )
                if kind == "llmtally":
                    results["rss"] = rss_under_load(url, token, workdir, backend, seconds)
                    print(
                        f"llmtally RSS idle {results['rss']['idle_mb']:.1f} MB, peak with "
                        f"{results['rss']['streams']} concurrent streams {results['rss']['peak_mb']:.1f} MB",
                        flush=True,
                    )
            finally:
                envoy.stop()
                backend.stop()
        results["otel_pairs"] = otel_pairs(start, scripts, PAIR_ROUNDS, seconds)
    finally:
        mock.terminate()
        sink.stop()
    results["otlp_exports"] = sink.exports
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


#: runs of llmtally with OpenTelemetry off and on at the same time (the overhead is a few percent of a
#: number that moves by +-10% from one run to the next on 2 shared cores)
PAIR_ROUNDS = 8


def otel_pairs(start, scripts: dict, rounds: int, seconds: int) -> dict:
    """OpenTelemetry's cost: llmtally with it off and with it on, each behind its own Envoy, driven at the same
    time by two wrk processes (32 connections each), `rounds` times per workload, so that whatever the
    machine does meanwhile falls on both. The overhead is pooled: all the CPU seconds of the off sidecar
    over all the requests it served, against the same of the on one (one round's ratio is kept too)."""
    sides = {"off": start("llmtally"), "on": start("llmtally-otel")}
    out: dict = {}
    try:
        for w, script in scripts.items():
            cpu = {side: 0.0 for side in sides}
            served = {side: 0 for side in sides}
            runs = []
            for _ in range(rounds):
                cpu0 = {side: b.cpu_seconds() for side, (b, _e, _u) in sides.items()}
                procs = {
                    side: subprocess.Popen(wrk_command(url, script, 32, seconds), stdout=subprocess.PIPE, text=True)
                    for side, (_b, _e, url) in sides.items()
                }
                outs = {side: p.communicate()[0] for side, p in procs.items()}
                for side, p in procs.items():
                    if p.returncode:
                        raise RuntimeError(f"wrk against the OTel-{side} stack exited {p.returncode}")
                got = {side: wrk_result(o) for side, o in outs.items()}
                run = {}
                for side, (b, _e, _u) in sides.items():
                    used = b.cpu_seconds() - cpu0[side]
                    cpu[side] += used
                    served[side] += got[side]["requests"]
                    run[side] = used / got[side]["requests"] * 1e6
                runs.append(run)
            per = {side: cpu[side] / served[side] * 1e6 for side in sides}
            ratios = sorted(r["off"] / r["on"] for r in runs)
            out[w] = {
                "runs": runs,
                "off_cpu_us_per_request": per["off"],
                "on_cpu_us_per_request": per["on"],
                "off_over_on": per["off"] / per["on"],
                "median_off_over_on": ratios[len(ratios) // 2],
            }
            print(
                f"OTel off/on {w}: {out[w]['off_over_on']:.3f} ({per['off']:.0f}/{per['on']:.0f} us a request,"
                f" {rounds} rounds at once; one round's ratio {ratios[0]:.3f}-{ratios[-1]:.3f})",
                flush=True,
            )
    finally:
        for b, e, _u in sides.values():
            e.stop()
            b.stop()
    return out


def rss_under_load(url: str, token: str, workdir: str, backend: Backend, seconds: int) -> dict:
    """Peak RSS of llmtally while 1000 slow streams are open at once."""
    idle = backend.rss_mb()
    script = lua_script(
        os.path.join(workdir, "slow.lua"), token, STREAM_BODY, {"x-mock-delay-ms": "40", "x-mock-repeat": "1"}
    )
    wrk_proc = subprocess.Popen(
        ["wrk", "-t2", "-c1000", f"-d{seconds + 2}s", "--timeout", "30s", "-s", script, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak, end = idle, time.time() + seconds + 2
    while time.time() < end:
        peak = max(peak, backend.rss_mb())
        time.sleep(0.1)
    out = wrk_proc.communicate()[0]
    done = re.search(r"(\d+) requests in", out)
    return {"streams": 1000, "idle_mb": idle, "peak_mb": peak, "requests_completed": int(done.group(1)) if done else 0}


if __name__ == "__main__":
    main()
