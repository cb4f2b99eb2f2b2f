"""The sidecar's own HTTP endpoint: `/metrics` (Prometheus text, gzip when asked), `/healthz`, `/readyz` and `/`.

It replaces prometheus-client's `start_http_server`, which runs a thread per connection and never times out an
idle one. Here one daemon thread ("llmtally-metrics") runs its own asyncio loop, apart from the gRPC loop, and
every resource a client can hold is bounded:

- at most `max_connections` open connections; when full, a new one evicts the oldest connection that is not being
  answered (one still sending its request head, or idle between keep-alive requests), else it is closed at once;
- a request head must arrive within `header_timeout` seconds and be at most 8 KiB (else 431 and close);
- a keep-alive connection idle for `idle_timeout` seconds is closed, and so is one whose client does not take a
  response within `idle_timeout`, so a slow reader cannot hold up the other scrapes;
- request bodies are never read: GET and HEAD only, other methods get 405 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, gzip_accepted

log = logging.getLogger("llmtally")

__all__ = ["MAX_HEAD_BYTES", "MetricsHTTP", "start_metrics_http"]

#: the largest request head (request line and headers) read
MAX_HEAD_BYTES = 8192
#: a /metrics page is served again while younger than this many times the time it took to generate
PAGE_REUSE = 4
#: /metrics answers per second (a bucket of as many); more get 429, so scraping in a loop costs little
SCRAPES_PER_SECOND = 10
#: a connection answering a request this long (its client does not read) may be evicted for a new one
BUSY_GRACE = 2.0
#: connections the kernel may queue before the loop accepts them
_BACKLOG = 64
#: how long a closing connection drains what the client still sends (see _linger)
_LINGER_SECONDS = 1.0
_TEXT = "text/plain; charset=utf-8"
_INDEX = b"llmtally\n/metrics  Prometheus metrics\n/healthz  liveness\n/readyz   readiness\n"


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    #: answering a request since (monotonic), else None: evicted only after BUSY_GRACE (a client that asks
    #: and never reads holds a slot as much as one that never asks)
    busy_since: float | None = None


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    keep_alive: bool
    accept_encoding: str


class MetricsHTTP:
    """A running metrics endpoint; `start_metrics_http` makes one."""

    def __init__(
        self,
        sock: socket.socket,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        max_connections: int,
        header_timeout: float,
        idle_timeout: float,
    ) -> None:
        #: the bound (host, port)
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self._sock = sock
        self._registry = registry
        self._ready = ready
        self._max_connections = max(1, max_connections)
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._conns: list[_Conn] = []  # oldest first
        self._page: bytes | None = None  # the latest /metrics page, when it was made and what it cost (s)
        self._page_gzip: bytes | None = None
        self._page_at = 0.0
        self._page_cost = 0.0
        self._bucket = float(SCRAPES_PER_SECOND)  # scrapes that may be answered now
        self._bucket_at = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._started = threading.Event()
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llmtally-metrics", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (read-only, for tests and debugging)."""
        return len(self._conns)

    def close(self) -> None:
        """Stop serving: close the listening socket and every connection, and end the thread. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    # --- the metrics thread

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # the loop itself failed: report it to the starter, or log it
            if not self._started.is_set():
                self._error = e
                self._started.set()
            else:
                log.error("metrics endpoint stopped", exc_info=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        # the limit bounds the StreamReader's buffer: readuntil() gives up past it (asyncio allows the separator
        # beyond the limit, hence the - 4)
        server = await asyncio.start_server(self._handle, sock=self._sock, limit=MAX_HEAD_BYTES - 4, backlog=_BACKLOG)
        self._loop = asyncio.get_running_loop()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()  # closes the listening socket
            for conn in self._conns:
                conn.writer.transport.abort()
            # the aborted connections end on their own (EOF) within an iteration or two; asyncio.run() would
            # cancel any still running
            others = asyncio.all_tasks() - {asyncio.current_task()}
            if others:
                await asyncio.wait(others, timeout=1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self._max_connections and not self._evict():
            writer.transport.abort()  # every slot is answering a request: this one waits for none
            return
        # drain() returns only once everything is handed to the kernel, so that closing loses nothing
        writer.transport.set_write_buffer_limits(0)
        conn = _Conn(writer)
        self._conns.append(conn)
        try:
            await self._serve(conn, reader)
        except Exception:  # one connection's trouble (a reset, a bug) must not end the thread
            log.debug("metrics connection failed", exc_info=True)
        except asyncio.CancelledError:
            # only at shutdown. Nothing awaits this task, and asyncio 3.11 logs an error for a cancelled one
            # (its callback asks a cancelled task for its exception), so it ends quietly.
            pass
        finally:
            if conn in self._conns:
                self._conns.remove(conn)
            writer.transport.abort()  # nothing is buffered any more: drained, or given up on

    def _evict(self) -> bool:
        """Close the oldest connection not being answered (a slowloris, an idle keep-alive), else the one
        answered longest if that is past BUSY_GRACE (a client that does not read); False if none."""
        victim = next((c for c in self._conns if c.busy_since is None), None)
        if victim is None:
            now = time.monotonic()
            stuck = [c for c in self._conns if c.busy_since is not None and now - c.busy_since >= BUSY_GRACE]
            victim = min(stuck, key=lambda c: c.busy_since or now, default=None)
        if victim is None:
            return False
        self._conns.remove(victim)
        # its task then sees EOF and ends; it is not cancelled (see _handle)
        victim.writer.transport.abort()
        return True

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        first = True
        while True:
            head: bytes | None
            try:
                head = await self._read_head(reader, first)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                return  # too slow, or gone: nothing to answer
            except asyncio.LimitOverrunError:
                head = None  # too large: answered with 431
            first = False
            conn.busy_since = time.monotonic()
            req = None if head is None else _parse(head)
            if req is not None:
                status, ctype, body, extra = self._route(req)
                keep, head_only = req.keep_alive and status != 405, req.method == "HEAD"
            elif head is None:
                status, ctype, body, extra = 431, _TEXT, b"request head too large\n", []
                keep = head_only = False
            else:
                status, ctype, body, extra = 400, _TEXT, b"bad request\n", []
                keep = head_only = False
            await self._send(conn.writer, status, ctype, body, head_only=head_only, keep=keep, extra=extra)
            conn.busy_since = None
            if not keep:
                await self._linger(conn.writer, reader)
                return

    async def _read_head(self, reader: asyncio.StreamReader, first: bool) -> bytes:
        """The next request head; raises TimeoutError, IncompleteReadError (EOF) or LimitOverrunError (too large)."""
        start = b""
        if not first:
            # between keep-alive requests the client may stay quiet for idle_timeout; once it begins, it has
            # header_timeout for the whole head
            start = await asyncio.wait_for(reader.read(1), self._idle_timeout)
            if not start:
                raise asyncio.IncompleteReadError(b"", None)
        rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._header_timeout)
        return start + rest

    def _route(self, req: _Request) -> tuple[int, str, bytes, list[str]]:
        """(status, content type, body, extra headers) of a request."""
        if req.method not in ("GET", "HEAD"):
            return 405, _TEXT, b"method not allowed\n", ["Allow: GET, HEAD"]
        if req.path == "/metrics":
            return self._metrics(req.accept_encoding)
        if req.path == "/healthz":
            return 200, _TEXT, b"ok\n", []
        if req.path == "/readyz":
            try:
                ready = self._ready()
            except Exception:
                log.debug("metrics endpoint: ready() failed", exc_info=True)
                ready = False
            return (200, _TEXT, b"ready\n", []) if ready else (503, _TEXT, b"not ready\n", [])
        if req.path == "/":
            return 200, _TEXT, _INDEX, []
        return 404, _TEXT, b"not found\n", []

    def _metrics(self, accept_encoding: str) -> tuple[int, str, bytes, list[str]]:
        # CPU work under the GIL, done right here in the metrics thread: it stalls this loop only, never the gRPC
        # one. At most SCRAPES_PER_SECOND are answered, and a page (and its gzip form) is reused while younger
        # than PAGE_REUSE x what it cost to make, so that scraping however often costs a bounded share of a core
        now = time.monotonic()
        self._bucket = min(SCRAPES_PER_SECOND, self._bucket + (now - self._bucket_at) * SCRAPES_PER_SECOND)
        self._bucket_at = now
        if self._bucket < 1:
            return 429, _TEXT, b"too many scrapes: retry in a second\n", ["Retry-After: 1"]
        self._bucket -= 1
        try:
            if self._page is None or now - self._page_at >= PAGE_REUSE * self._page_cost:
                page = generate_latest(self._registry)
                self._page, self._page_gzip, self._page_at = page, None, now
                self._page_cost = time.monotonic() - now
        except Exception:  # a collector failed (a multiprocess file half written, say): say so, keep serving
            log.warning("metrics endpoint: collecting the metrics failed", exc_info=True)
            return 500, _TEXT, b"collecting the metrics failed\n", []
        if gzip_accepted(accept_encoding):
            if self._page_gzip is None:
                self._page_gzip = gzip.compress(self._page, compresslevel=6)
            return 200, CONTENT_TYPE_LATEST, self._page_gzip, ["Content-Encoding: gzip", "Vary: Accept-Encoding"]
        return 200, CONTENT_TYPE_LATEST, self._page, ["Vary: Accept-Encoding"]

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        ctype: str,
        body: bytes,
        *,
        head_only: bool,
        keep: bool,
        extra: list[str] | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            *(extra or []),
            "Connection: keep-alive" if keep else "Connection: close",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head if head_only else head + body)
        # a client that does not take the response in time loses its connection (TimeoutError ends _serve)
        await asyncio.wait_for(writer.drain(), self._idle_timeout)

    async def _linger(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        """Half-close, then drop what the client still sends for a moment before the socket is closed.

        The client may still be sending (a body we never read, the rest of an oversized head); closing a socket
        with unread input makes the kernel send a reset, which can destroy the response still in flight."""
        if writer.can_write_eof():
            writer.write_eof()

        async def discard() -> None:
            while await reader.read(65536):
                pass

        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(discard(), _LINGER_SECONDS)


def _parse(head: bytes) -> _Request | None:
    """The request of a head (ending in an empty line), or None if it is not HTTP/1.x."""
    # a client may send empty lines before a request line (RFC 9112 2.2)
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            return None
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    # a body is never read, so after one the connection cannot go on
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        keep = False
    return _Request(method, target.partition("?")[0], keep, headers.get("accept-encoding", ""))


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), bound as prometheus-client binds: the family of the host's first
    address, SO_REUSEADDR."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def start_metrics_http(
    host: str,
    port: int,
    registry: CollectorRegistry,
    *,
    ready: Callable[[], bool] = lambda: True,
    max_connections: int = 32,
    header_timeout: float = 5.0,
    idle_timeout: float = 30.0,
) -> MetricsHTTP:
    """Serve `registry` on (host, port) from a thread of its own; port 0 picks a free port (see `.address`).

    The bind's OSError (EADDRINUSE, ...) is raised from here."""
    sock = _bind(host, port)
    try:
        return MetricsHTTP(sock, registry, ready, max_connections, header_timeout, idle_timeout)
    except BaseException:
        sock.close()
        raise
