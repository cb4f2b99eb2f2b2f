"""Observe mode under saturating load: does llmtally count every request Envoy served? wrk drives Envoy
(ext_proc in observability mode) and llmtally `observe: true` as fast as it can; when the counts stop
moving, Envoy's completed requests are set against llmtally's `ai_requests_total`.

    python benches/observe_count.py [--connections 32] [--seconds 10] [--stream]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from e2e_load import STREAM_BODY, lua_script, start_gateway, start_mock
from llmtally.demo import SEED_BODY, keys


def get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=10).read().decode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--stream", action="store_true", help="streamed answers (38 events) instead of JSON")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="llmtally-observe-")
    key = keys.SigningKey()
    body, extra = (STREAM_BODY, {"x-mock-delay-ms": "0"}) if args.stream else (SEED_BODY, {})
    script = lua_script(os.path.join(workdir, "load.lua"), key.token(keys.ALICE), body, extra)
    mock, up = start_mock()
    backend, envoy, listen = start_gateway("llmtally-observe", workdir, key, up)
    cfg = open(os.path.join(workdir, "llmtally-llmtally-observe.yaml")).read()
    port = re.search(r"metricsAddr: 127.0.0.1:(\d+)", cfg).group(1)
    metrics = f"http://127.0.0.1:{port}/metrics"
    stats = f"http://127.0.0.1:{envoy.admin_port}/stats"

    def counted() -> int:
        return round(sum(float(v) for v in re.findall(r"^ai_requests_total\{[^}]*\} (\S+)", get(metrics), re.M)))

    try:
        url = f"http://127.0.0.1:{listen}/openai"
        subprocess.run(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", script, url],
            check=True,
            capture_output=True,
        )
        last, deadline = -1, time.time() + 60
        while time.time() < deadline:  # llmtally may trail Envoy: wait until its count stops moving
            now = counted()
            if now == last:
                break
            last = now
            time.sleep(2)
        s = get(stats)
        served = int(re.search(r"^http\.ai_gateway\.downstream_rq_completed: (\d+)", s, re.M).group(1))
        failed = int(re.search(r"^http\.ai_gateway\.ext_proc\.streams_failed: (\d+)", s, re.M).group(1))
        print(
            f"{'streams' if args.stream else 'JSON'} over {args.connections} connections, {args.seconds} s: "
            f"Envoy served {served} ({served / args.seconds:.0f}/s), llmtally counted {counted()}, "
            f"ext_proc streams_failed {failed}"
        )
        return 0 if counted() == served else 1
    finally:
        envoy.stop()
        backend.stop()
        mock.terminate()


if __name__ == "__main__":
    sys.exit(main())
