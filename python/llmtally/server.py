"""`llmtally serve`: the Envoy external processor (ext_proc) over gRPC.

The lifecycle only: the grpc.aio server with its `Processor` servicer (one
`exchange.Exchange` per gRPC stream, where the per-request work happens), the
gRPC health service, the optional rate-limit service, signals and graceful
drain, worker processes sharing the port (which die with their parent), and
the /metrics HTTP endpoint. Every failure to start is a `StartupError` whose
message is one line naming the address and what to do.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, cast

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from . import _api, logs, otel
from .config import Config
from .exchange import PROVIDER_KEY, Answer, Exchange, Host, serialize
from .metrics import Metrics
from .offload import Offload
from .throttle import OncePerMinuteFilter

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from prometheus_client import CollectorRegistry

    from .budgets import Budgets
    from .metrics_http import MetricsHTTP

log = logging.getLogger("llmtally")

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
MAX_GRPC_MESSAGE = 64 << 20
#: the prometheus multiprocess directory of `workers` > 1: `llmtally-metrics-<pid>.<start>-<random>` in the
#: temporary directory, <pid> and <start> (its start time in clock ticks since boot, Linux) naming the parent
METRICS_DIR_PREFIX = "llmtally-metrics-"
_METRICS_DIR = re.compile(re.escape(METRICS_DIR_PREFIX) + r"([0-9]+)(?:\.([0-9]+))?-[^-]+")
#: Linux prctl option: the signal a process gets when its parent dies
_PR_SET_PDEATHSIG = 1
#: the longest unix socket path (sun_path less its terminating NUL)
_MAX_UNIX_PATH = 107


class StartupError(Exception):
    """`llmtally serve` cannot start; the message is one line naming the culprit and what to do."""


#: threads for that work: the estimates run in parallel with the event loop, never more than this at once
OFFLOAD_THREADS = 2


# xds-protos has no type stubs: the generated servicer base class is Any
class Processor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """One `Exchange` per ext_proc stream. Open streams are capped (`maxConcurrentStreams`: more are refused
    with RESOURCE_EXHAUSTED, which Envoy fails open on) and released when idle (`streamIdleSeconds`); health
    checks and rate-limit calls share the gRPC server but never the cap."""

    def __init__(self, host: Host, pool: Offload):
        self.host = host
        self.pool = pool
        #: open streams and the task serving each (what `reap_idle` cancels)
        self.open: dict[Exchange, asyncio.Task[object] | None] = {}
        self.idle: set[Exchange] = set()  # released by `reap_idle`, not yet ended

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext[pb.ProcessingRequest, pb.ProcessingResponse],
    ) -> AsyncIterator[pb.ProcessingResponse]:
        host = self.host
        if len(self.open) >= host.config.max_concurrent_streams:
            host.shed("stream_cap")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "llmtally: maxConcurrentStreams reached")
        hint = None
        for key, value in context.invocation_metadata() or ():
            if key == PROVIDER_KEY and value:
                hint = value
        ex = Exchange(host, cast("str | None", hint))  # a key without the -bin suffix has a str value
        logs.stream.set(ex)  # this task's log lines name the stream
        self.open[ex] = asyncio.current_task()
        loop = asyncio.get_running_loop()
        answer = not host.observe  # in observability mode Envoy ignores answers: none is sent
        pending: Future[Answer | None] | None = None  # a message a worker thread has
        try:
            async for req in request_iterator:
                weight = ex.heavy(req)
                if weight:
                    run = contextvars.copy_context().run  # the thread's log lines name the stream too
                    pending = self.pool.submit(weight, functools.partial(run, ex.handle, req))
                    resp = await asyncio.wrap_future(pending)
                    pending = None
                else:
                    resp = ex.handle(req)
                if ex.reserve_tokens is not None and resp is not None:  # the request is read: its budget
                    resp = await host.admit(ex, resp)
                if answer:
                    if resp is not None:
                        yield resp
                elif ex.done:
                    # observability mode: Envoy keeps its side open until deferred_close_timeout; ending the
                    # RPC now frees the stream (else each request holds one that long, past the cluster's cap)
                    break
        except asyncio.CancelledError:
            if ex not in self.idle:
                raise  # gRPC's own cancellation: the client went away
            # released by `reap_idle`: end the RPC with a status (a bare cancellation would leave the peer waiting)
            await context.abort(grpc.StatusCode.CANCELLED, "llmtally: the stream was idle for streamIdleSeconds")
        finally:
            self.idle.discard(ex)
            del self.open[ex]
            if pending is not None and not pending.done():  # cancelled while a thread works on it: end after it
                pending.add_done_callback(lambda _: loop.call_soon_threadsafe(self._end, ex))
            else:
                self._end(ex)

    def _end(self, ex: Exchange) -> None:
        """The stream is over: record it, and replace its reservation by what it was charged."""
        logs.stream.set(ex)  # also when called back from a worker thread: its log lines name the stream
        ex.close()
        if self.host.budgets is not None:
            try:
                self._settle(ex, self.host.budgets)
            except Exception:  # a bug here must not end the handler: the stream is over already
                self.host.fault("settle", ex)

    def _settle(self, ex: Exchange, budgets: Budgets) -> None:
        r = ex.reservation
        charged = ex.charged if ex.charged is not None else ex.hits
        if r is not None:
            # a call without a price at its end keeps the spend it reserved, unless nothing was used (a failed
            # call: an outage must not spend the budgets)
            spent = ex.charged_microusd if ex.charged_microusd is not None else (r.microusd if charged else 0)
            budgets.settle(r, charged, spent)
            if ex.charged_microusd and not any(c.kind == "microusd" for c in r.decision.counters):
                # the request named a model without a price, the provider one with: its spend is charged now
                budgets.charge(ex.budget_keys(), 0, ex.charged_microusd, spend_only=True)
        elif self.host.enforce and ex.budget_checked and ex.charged_microusd:
            # nothing was reserved (no limit held an unpriced name), but the call had a price after all
            budgets.charge(ex.budget_keys(), 0, ex.charged_microusd, spend_only=True)
        elif self.host.enforce and ex.saw_request and not ex.budget_checked and (charged or ex.charged_microusd):
            # the request reached the upstream without a reservation (Envoy sent no request body, or a
            # request ended before its body did): charged all the same
            budgets.charge(ex.budget_keys(), charged, ex.charged_microusd)

    def reap_idle(self, now: float) -> int:
        """Cancel the streams that received nothing for `streamIdleSeconds`; returns how many."""
        idle = self.host.config.stream_idle_seconds
        stale = [(ex, task) for ex, task in self.open.items() if now - ex.t_last >= idle and ex not in self.idle]
        for ex, task in stale:
            if task is not None:
                self.idle.add(ex)
                task.cancel()
            self.host.shed("idle")
        return len(stale)


async def _reap_idle_streams(processor: Processor) -> None:
    idle = processor.host.config.stream_idle_seconds
    every = min(max(idle / 4, 0.05), 10.0)
    while True:
        await asyncio.sleep(every)
        processor.reap_idle(time.monotonic())


# -- checks before binding: one line naming the address, not gRPC's log line and a traceback --

#: where each address is set, for the advice of an error
_WHERE = {
    "listen": "--listen or the listen setting",
    "metricsAddr": "--metrics-addr or the metricsAddr setting",
    "rateLimit.listen": "the rateLimit.listen setting",
}
#: the TLS settings: (Config field, YAML name)
_TLS_FILES = (
    ("tls_cert_file", "tlsCertFile"),
    ("tls_key_file", "tlsKeyFile"),
    ("tls_client_ca_file", "tlsClientCaFile"),
)


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")  # validated by Config: host:port with an ASCII port
    return host.strip("[]"), int(port)


def _why(e: OSError) -> tuple[str, str]:
    """(what went wrong, what to do) for a failed bind."""
    if e.errno == errno.EADDRINUSE:
        return "address already in use", "another process listens there: stop it, or choose another port"
    if e.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine", "give one of its addresses, such as 127.0.0.1"
    if e.errno == errno.EACCES:
        return "permission denied", "ports below 1024 need privileges: choose a port from 1024"
    return f"cannot bind ({e.strerror or e})", "choose another address"


def _tcp_failure(what: str, addr: str, e: OSError) -> StartupError:
    if isinstance(e, socket.gaierror):
        problem = f"unknown host {_host_port(addr)[0]!r}"
        advice = "give an IP address or a name this machine resolves"
    else:
        problem, advice = _why(e)
    return StartupError(f"{what} {addr}: {problem}; {advice} ({_WHERE[what]})")


def _check_tcp(what: str, addr: str) -> None:
    """Resolve `addr` and bind it once without SO_REUSEPORT, as gRPC will (a port
    that workers of an earlier run still hold is busy to this bind too)."""
    host, port = _host_port(addr)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):  # UnicodeError: a name IDNA cannot encode
        raise _tcp_failure(what, addr, socket.gaierror()) from None
    first: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(sockaddr)
                return  # gRPC listens when one of the addresses binds
            except OSError as e:
                first = first or e
    raise _tcp_failure(what, addr, first or OSError(errno.EADDRNOTAVAIL, "no address"))


def _credentials(config: Config) -> grpc.ServerCredentials | None:
    """The gRPC server credentials of the TLS settings (None: plaintext); a file that cannot be
    read or holds no PEM block is a StartupError naming it."""
    if not config.tls_cert_file:
        return None
    pem: dict[str, bytes] = {}
    for field, name in _TLS_FILES:
        path = getattr(config, field)
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                pem[field] = f.read()
        except OSError as e:
            raise StartupError(f"{name} {path}: cannot read it ({e.strerror}); give a readable PEM file") from None
        if b"-----BEGIN " not in pem[field]:
            raise StartupError(f"{name} {path}: not a PEM file; give the PEM encoding (-----BEGIN ...)")
    _check_tls(config)
    ca = pem.get("tls_client_ca_file")
    return grpc.ssl_server_credentials(
        [(pem["tls_key_file"], pem["tls_cert_file"])], root_certificates=ca, require_client_auth=ca is not None
    )


def _check_tls(config: Config) -> None:
    """Parse the certificate, its key and the CA bundle as a TLS server would, so that a broken file or a
    key that is not the certificate's is named here, not by gRPC's core as a failed bind."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def no_pass_phrase() -> str:  # else OpenSSL asks for one on the terminal, and the start waits there
        raise StartupError(
            f"tlsKeyFile {config.tls_key_file}: the key is encrypted, and gRPC cannot be given its pass phrase; "
            "give an unencrypted key (openssl pkey -in KEY -out KEY.plain)"
        )

    try:
        ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file, password=no_pass_phrase)
    except ssl.SSLError as e:
        why = (
            "the key is not the certificate's"
            if "KEY_VALUES_MISMATCH" in str(e)
            else f"not a valid certificate and key ({e.reason or 'unparsable PEM'})"
        )
        raise StartupError(
            f"tlsCertFile {config.tls_cert_file} / tlsKeyFile {config.tls_key_file}: {why}; give a PEM "
            "certificate chain and its own private key"
        ) from None
    if config.tls_client_ca_file:
        try:
            ctx.load_verify_locations(cafile=config.tls_client_ca_file)
        except ssl.SSLError as e:
            raise StartupError(
                f"tlsClientCaFile {config.tls_client_ca_file}: not valid CA certificates "
                f"({e.reason or 'unparsable PEM'}); give PEM CA certificates"
            ) from None


def _check_unix(addr: str, what: str = "listen") -> None:
    path = addr[len("unix:") :]
    where = f"{what} {addr}"
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise StartupError(f"{where}: the path is longer than {_MAX_UNIX_PATH} bytes; choose a shorter one")
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StartupError(f"{where}: the directory {directory} does not exist; create it, or choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(f"{where}: no permission to create a socket in {directory}; choose another directory")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{where}: {path} exists and is not a socket; remove it, or choose another path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return  # a socket nobody listens on, left by a process that is gone: gRPC replaces it
    raise StartupError(f"{where}: another process listens on this socket; stop it, or choose another path")


def _check_unix_abstract(addr: str, what: str = "listen") -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.bind("\0" + addr[len("unix-abstract:") :])
        except OSError as e:
            problem, _ = _why(e)
            raise StartupError(
                f"{what} {addr}: {problem}; another process has this name: stop it, or choose another"
            ) from None


def preflight(config: Config) -> None:
    """What would stop the start, checked before anything starts: the addresses
    resolve and bind, a unix socket's directory exists, the backend loads."""
    if config.listen.startswith("unix:"):
        _check_unix(config.listen)
    elif config.listen.startswith("unix-abstract:"):
        _check_unix_abstract(config.listen)
    else:
        _check_tcp("listen", config.listen)
    _check_tcp("metricsAddr", config.metrics_addr)
    rl = config.rate_limit
    if rl is not None and rl.listen:
        if rl.listen.startswith("unix:"):
            _check_unix(rl.listen, "rateLimit.listen")
        elif rl.listen.startswith("unix-abstract:"):
            _check_unix_abstract(rl.listen, "rateLimit.listen")
        else:
            _check_tcp("rateLimit.listen", rl.listen)
    _credentials(config)
    try:
        wanted = otel.settings(config)
    except ValueError as e:
        raise StartupError(str(e)) from None
    if wanted is not None:
        problem = otel.check_installed()
        if problem:
            raise StartupError(problem)
        oc = config.otel
        if oc is not None and oc.certificate_file and not os.access(oc.certificate_file, os.R_OK):
            raise StartupError(f"otel.certificateFile {oc.certificate_file}: cannot read it; give a readable CA file")
    try:
        _api.resolve_provider("openai", backend=config.backend or None)
    except ImportError as e:
        raise StartupError(f"backend {config.backend}: {e}") from None


def _start_metrics_http(config: Config, registry: CollectorRegistry, ready: Callable[[], bool]) -> MetricsHTTP:
    """/metrics, /healthz and /readyz (`ready`: the ext_proc service is serving), bounded (see metrics_http)."""
    from .metrics_http import start_metrics_http

    host, port = _host_port(config.metrics_addr)
    try:
        return start_metrics_http(host, port, registry, ready=ready)
    except OSError as e:
        raise _tcp_failure("metricsAddr", config.metrics_addr, e) from None


# -- the stale metrics directories of parents that are gone --


def _process(pid: int) -> tuple[str, str]:
    """(state, start time in clock ticks since boot) of a process, from /proc (Linux); ("", "") elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return "", ""


def _owner_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    state, started = _process(pid)
    if state == "Z":
        return False
    return not (start and started) or started == start  # another start time: the pid was reused


def remove_stale_metrics_dirs(tmp: str | None = None) -> list[str]:
    """Remove the prometheus multiprocess directories that parents killed before they
    could clean up left in the temporary directory; return their paths."""
    tmp = tmp or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return removed
    for entry in entries:
        m = _METRICS_DIR.fullmatch(entry.name)
        try:
            if (
                not m
                or not entry.is_dir(follow_symlinks=False)
                or entry.stat(follow_symlinks=False).st_uid != os.getuid()
            ):
                continue
        except OSError:
            continue
        if not _owner_alive(int(m[1]), m[2]):
            shutil.rmtree(entry.path, ignore_errors=True)
            log.info("removed %s, left by llmtally pid %s, which is gone", entry.path, m[1])
            removed.append(entry.path)
    return removed


def _metrics_dir() -> str:
    pid = os.getpid()
    start = _process(pid)[1]
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{pid}{'.' + start if start else ''}-")


# -- processes --


def run(config: Config) -> int:
    """`llmtally serve`: one process, or `workers` processes sharing the port.
    Raises StartupError when it cannot start; returns the exit code."""
    preflight(config)
    remove_stale_metrics_dirs()
    if config.workers == 1:
        asyncio.run(serve(config))
        return 0
    return _run_workers(config)


def _run_workers(config: Config) -> int:
    import multiprocessing
    from multiprocessing.connection import wait

    mp_dir = _metrics_dir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir  # before any worker imports prometheus_client
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # workers are forked from a forkserver that loaded the vocabularies first (`_preload`): they share them.
    # The forkserver is a fresh single-threaded process, so no lock or gRPC state of this one is inherited
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["llmtally._preload"])
    procs: list[multiprocessing.process.BaseProcess] = []
    conns: list[Connection] = []  # one per worker, held open for as long as this process lives
    http = None
    rc = 0
    started = False
    serving = threading.Event()  # every worker is serving: /readyz
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=mp_dir)  # type: ignore[no-untyped-call]  # not annotated in prometheus-client
        http = _start_metrics_http(config, registry, ready=lambda: serving.is_set())
        for i in range(config.workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(config, i, theirs, os.getpid()), name=f"llmtally-worker-{i}")
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(ours)
        starting = dict(zip(conns, procs, strict=True))
        while starting and not stop.is_set():
            for conn in wait(list(starting), timeout=0.5):
                p = starting.pop(cast("Connection", conn))
                try:
                    msg = cast("Connection", conn).recv()
                except EOFError:
                    p.join(5)
                    raise StartupError(
                        f"{p.name} (pid {p.pid}) exited with code {p.exitcode} while starting (its error is above)"
                    ) from None
                if msg[0] == "error":
                    raise StartupError(msg[1])
        started = True
        serving.set()
        if not stop.is_set():
            log.info(
                "%d workers: ext_proc on %s, metrics on http://%s/metrics",
                config.workers,
                config.listen,
                config.metrics_addr,
            )
        while not stop.is_set():
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                p = dead[0]
                log.error("%s (pid %s) exited with code %s; stopping the others", p.name, p.pid, p.exitcode)
                rc = 1
                break
            stop.wait(0.5)
    finally:
        serving.clear()
        # a failed start: kill (the workers have served nothing; they would only log their drain)
        sig = signal.SIGTERM if started else signal.SIGKILL
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, sig)
        for p in procs:
            p.join(config.shutdown_grace_seconds + 5)
            if p.is_alive():
                p.kill()
                p.join()
        if http is not None:
            http.close()
        for conn in conns:
            conn.close()
        shutil.rmtree(mp_dir, ignore_errors=True)
    if started:
        log.info("stopped")
    return rc


def _die_with_parent(parent_pid: int, conn: Connection, grace: float) -> None:
    """Stop this worker (SIGTERM: the usual drain) when its parent dies: Linux's
    parent-death signal, and, anywhere, a thread that sees the parent's end of
    `conn` close or the parent pid change; if the drain hangs, exit anyway. The process this one was forked
    from is the forkserver, which exits when `parent_pid` does: its death is the signal's trigger."""
    forkserver = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    try:
        os.kill(parent_pid, 0)  # the parent died before the signal was asked for: its end is closed too
    except ProcessLookupError:
        os._exit(0)
    if conn.poll(0):
        os._exit(0)

    def stop() -> None:
        log.warning("the parent process (pid %d) is gone: stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace + 5)
        os._exit(1)

    threading.Thread(target=watch_parent, args=(conn, forkserver, stop), name="llmtally-parent", daemon=True).start()


def watch_parent(conn: Connection, parent_pid: int, gone: Callable[[], object], every: float = 1.0) -> None:
    """Call `gone` once the parent's end of `conn` closes (the parent sends nothing,
    so readable means closed) or the parent pid changes; checked every `every` s."""
    while True:
        try:
            if conn.poll(every):
                break
        except (OSError, EOFError):
            break
        if os.getppid() != parent_pid:
            break
    gone()


def _worker(config: Config, index: int, conn: Connection, parent_pid: int) -> None:
    _die_with_parent(parent_pid, conn, config.shutdown_grace_seconds)
    from .logs import setup

    setup(config.log_level, config.log_format, worker=f"w{index}")
    try:
        asyncio.run(serve(config, ready=lambda: conn.send(("ready",)), worker=True))
    except StartupError as e:
        conn.send(("error", str(e)))
        sys.exit(2)


def _bind(server: grpc.aio.Server, config: Config, addr: str, what: str = "listen") -> None:
    """Bind a gRPC address, with TLS when configured; a unix socket is created with `unixSocketMode`
    (the umask is set around the bind, so it is never more open than that)."""
    old = None
    if addr.startswith("unix:"):
        old = os.umask(0o777 & ~int(config.unix_socket_mode, 8))
    credentials = _credentials(config)
    try:
        if credentials is None:
            port = server.add_insecure_port(addr)  # a TCP port, or 1 for a unix socket
        else:
            port = server.add_secure_port(addr, credentials)
    except RuntimeError:  # gRPC has logged why; preflight found nothing, so another process was quicker
        port = 0
    finally:
        if old is not None:
            os.umask(old)
    if port == 0:
        raise StartupError(f"{what} {addr}: cannot bind (gRPC's line above says why); choose another address")


def _budgets(config: Config, metrics: Metrics) -> Budgets:
    from .budgets import Budgets, MemoryStore, RedisStore, Store

    rl = config.rate_limit
    assert rl is not None
    store: Store = (
        RedisStore(rl.redis, rl.redis_timeout_ms / 1000, cluster=rl.redis_cluster) if rl.redis else MemoryStore()
    )
    return Budgets(rl.limits, store, domain=rl.domain, fail_open=rl.failure_mode == "open", metrics=metrics)


def _add_processor(processor: Processor, server: grpc.aio.Server) -> None:
    """The ext_proc service, as xds-protos registers it but with a response serializer that also takes an
    answer serialized already (`exchange.Answer`)."""
    methods = {
        "Process": grpc.stream_stream_rpc_method_handler(
            processor.Process,
            request_deserializer=pb.ProcessingRequest.FromString,
            response_serializer=serialize,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    server.add_registered_method_handlers(SERVICE, methods)


def _grpc_server(worker: bool, observe_queue: int = 0) -> grpc.aio.Server:
    """The gRPC server. Calls that have arrived but that the event loop has not taken up yet wait in gRPC's
    own queue, which refuses them past 1,000 at random, and always past 3,000. In observability mode Envoy
    never waits for llmtally, so a burst fills that queue, and a call refused there (or waiting there for
    `grpc.server_max_unrequested_time_in_server`, 30 s) is a request never counted: in observe mode the
    random refusals go, and the queue takes `observe_queue` calls (`observeQueueCalls`, 3,000 by default:
    gRPC's hard bound), no more (a waiting call holds what Envoy sent it so far: tens of KiB for an LLM
    request, up to the HTTP/2 window). In normal mode
    Envoy waits for each answer, and a refused call passes at once, uncounted, rather than after the
    message timeout: gRPC's defaults stay."""
    options: list[tuple[str, int]] = [
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
        ("grpc.so_reuseport", 1 if worker else 0),
    ]
    if observe_queue:
        options += [
            ("grpc.server.max_pending_requests", observe_queue),
            ("grpc.server.max_pending_requests_hard_limit", observe_queue),
        ]
    return grpc.aio.server(options=options)


#: the OpenTelemetry SDK's loggers that report failed exports (once a minute each: a collector that is down
#: would log every export)
OTEL_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.trace.span",  # a client's malformed tracestate
    "opentelemetry.trace",
)
#: the longest the last OpenTelemetry export may take at shutdown
TELEMETRY_FLUSH_SECONDS = 5.0


def _telemetry(config: Config, metrics: Metrics) -> otel.Telemetry | None:
    s = otel.settings(config)
    if s is None:
        return None
    for name in OTEL_LOGGERS:
        logging.getLogger(name).addFilter(OncePerMinuteFilter())
    t = otel.Telemetry(s, metrics.custom, metrics.model_values)
    log.info(
        "OpenTelemetry: %s over OTLP %s to %s",
        " and ".join(k for k, on in (("metrics", s.metrics), ("spans", s.traces)) if on) or "nothing",
        s.protocol if s.protocol == s.metrics_protocol else f"{s.protocol} (spans), {s.metrics_protocol} (metrics)",
        otel.redact(s.endpoint) if s.endpoint else "the OTEL_EXPORTER_OTLP_* endpoint",
    )
    return t


async def serve(config: Config, *, ready: Callable[[], object] | None = None, worker: bool = False) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting and give open streams
    `shutdown_grace_seconds` to finish. A worker shares the port with its
    siblings and leaves /metrics to its parent."""
    import prometheus_client

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # not annotated in prometheus-client
    logging.getLogger("grpc._cython.cygrpc").addFilter(OncePerMinuteFilter())
    metrics = Metrics(config)
    host = Host(config, metrics)
    telemetry = _telemetry(config, metrics)
    if telemetry is not None:
        host.set_telemetry(telemetry)
    if config.default_encoding:
        _api.set_default_encoding(config.default_encoding)
    for enc in _api.ENCODINGS:  # load vocabularies before traffic
        _api.count_tokens("warm up", encoding=enc, backend=host.backend)

    # no maximum_concurrent_rpcs: gRPC's cap would refuse health checks and rate-limit calls too;
    # the Processor caps ext_proc streams alone
    server = _grpc_server(worker, config.observe_queue_calls if config.observe else 0)
    pool = Offload(OFFLOAD_THREADS)
    processor = Processor(host, pool)
    _add_processor(processor, server)
    servers = [server]
    if config.rate_limit is not None:
        from envoy.service.ratelimit.v3 import rls_pb2_grpc

        from .ratelimit import RateLimitService

        rl = config.rate_limit
        host.budgets = budgets = _budgets(config, metrics)
        rls_server = server
        if rl.listen:  # its own listener, for a network policy apart from ext_proc's
            rls_server = _grpc_server(worker)
            servers.append(rls_server)
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitService(budgets), rls_server)
        if rl.listen:
            _bind(rls_server, config, rl.listen, "rateLimit.listen")
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    _bind(server, config, config.listen)
    serving = threading.Event()  # the ext_proc service is serving: /readyz
    http = None if worker else _start_metrics_http(config, metrics.registry, ready=serving.is_set)
    for srv in servers:
        await srv.start()
    reaper = asyncio.create_task(_reap_idle_streams(processor)) if config.stream_idle_seconds else None
    for svc in ("", SERVICE):
        await health.set(svc, health_pb2.HealthCheckResponse.SERVING)
    serving.set()
    if not worker:
        log.info(
            "llmtally %s backend: ext_proc on %s%s, metrics on http://%s/metrics",
            host.backend,
            config.listen,
            "" if not config.tls_cert_file else (" (mutual TLS)" if config.tls_client_ca_file else " (TLS)"),
            config.metrics_addr,
        )
    if ready is not None:
        ready()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining open streams for up to %ss", config.shutdown_grace_seconds)
    serving.clear()
    for svc in ("", SERVICE):
        await health.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
    if reaper is not None:
        reaper.cancel()
    await asyncio.gather(*(srv.stop(config.shutdown_grace_seconds) for srv in servers))
    if host.budgets is not None:  # the settles of the streams that just finished, then the store
        await host.budgets.drain()
        await host.budgets.store.close()
    pool.shutdown()
    if telemetry is not None:  # what is left, within a bound: a collector that is down must not hold the exit
        telemetry.shutdown(TELEMETRY_FLUSH_SECONDS)
    if http is not None:
        http.close()
        log.info("stopped")
