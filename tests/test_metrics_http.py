"""The bounded metrics endpoint (llmtally.metrics_http): what it serves, and that idle, slow or oversized clients
cannot hold threads or slots."""

import errno
import gzip
import http.client
import logging
import socket
import threading
import time
import urllib.request

import psutil
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from llmtally.metrics_http import MAX_HEAD_BYTES, start_metrics_http

SAMPLE = "llmtally_test_things_total 3.0"


@pytest.fixture(autouse=True)
def no_logged_errors(caplog):
    """Nothing the server does here is worth a warning: not evicting, not timing out, not closing."""
    yield
    records = caplog.get_records("call") + caplog.get_records("teardown")
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


@pytest.fixture
def registry():
    reg = CollectorRegistry()
    Counter("llmtally_test_things", "Things counted by the test.", registry=reg).inc(3)
    return reg


@pytest.fixture
def serve(registry):
    """start(**options) -> a server on 127.0.0.1 and a free port; all are closed after the test."""
    servers = []

    def start(**options):
        server = start_metrics_http("127.0.0.1", 0, registry, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def get(address, path, method="GET", headers=None, body=None):
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def read_all(sock):
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def seconds_until_closed(sock, timeout=2.0):
    """Seconds until the server closes `sock` (recv returns b""); fails if data comes or it stays open."""
    sock.settimeout(timeout)
    t0 = time.monotonic()
    assert sock.recv(1024) == b""
    return time.monotonic() - t0


def wait_for_open_connections(server, n, timeout):
    """Whether the server's open connections come down to `n` within `timeout` seconds (it sees closes late)."""
    deadline = time.monotonic() + timeout
    while server.open_connections != n and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.open_connections == n


def tcp_connections(port):
    proc = psutil.Process()
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    accepted = [c for c in conns if c.laddr and c.laddr.port == port and c.status != psutil.CONN_LISTEN]
    clients = [c for c in conns if c.raddr and c.raddr.port == port]
    return accepted, clients


def test_metrics_text(serve):
    server = serve()
    status, headers, body = get(server.address, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert int(headers["Content-Length"]) == len(body)
    assert "Content-Encoding" not in headers
    assert SAMPLE in body.decode().splitlines()
    # a query string does not change the path
    assert get(server.address, "/metrics?name[]=x")[2] == body


def test_metrics_gzip(serve):
    server = serve()
    plain = get(server.address, "/metrics")[2]
    status, headers, body = get(server.address, "/metrics", headers={"Accept-Encoding": "br;q=1.0, gzip;q=0.5"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body)
    assert gzip.decompress(body) == plain


def test_head_sends_headers_only(serve):
    server = serve()
    full = get(server.address, "/metrics")[2]
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = read_all(s)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(full)}".encode() in head.split(b"\r\n")
    assert rest == b""


def test_healthz_readyz_index_404(serve):
    ready = threading.Event()
    server = serve(ready=ready.is_set)
    assert get(server.address, "/healthz")[::2] == (200, b"ok\n")
    assert get(server.address, "/readyz")[::2] == (503, b"not ready\n")
    ready.set()
    assert get(server.address, "/readyz")[::2] == (200, b"ready\n")
    ready.clear()
    assert get(server.address, "/readyz")[::2] == (503, b"not ready\n")
    status, _, index = get(server.address, "/")
    assert status == 200
    assert all(p in index for p in (b"/metrics", b"/healthz", b"/readyz"))
    assert get(server.address, "/nope")[::2] == (404, b"not found\n")
    assert get(server.address, "/metrics/x")[0] == 404


def test_ready_that_raises_is_not_ready(serve):
    def broken():
        raise RuntimeError("boom")

    server = serve(ready=broken)
    assert get(server.address, "/readyz")[0] == 503
    assert get(server.address, "/healthz")[0] == 200  # the thread lives on


def test_post_is_405(serve):
    server = serve()
    status, headers, body = get(server.address, "/metrics", method="POST", body=b"x" * 100_000)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert headers["Connection"] == "close"  # the body was not read: the connection cannot go on
    assert body == b"method not allowed\n"


def test_bad_request_line_is_400(serve):
    server = serve()
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"hello\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 400 ")


def test_keep_alive(serve):
    server = serve()
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        assert (first.status, first.read(), first.getheader("Connection")) == (200, b"ok\n", "keep-alive")
        sock = conn.sock
        conn.request("GET", "/metrics")
        second = conn.getresponse()
        assert second.status == 200
        assert SAMPLE in second.read().decode().splitlines()
        assert conn.sock is sock  # http.client would have reconnected had the server closed it
    finally:
        conn.close()


def test_idle_keep_alive_is_closed(serve):
    server = serve(idle_timeout=0.3)
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).endswith(b"\r\n\r\nok\n")
        assert 0.2 < seconds_until_closed(s) < 2.0


def test_slowloris_is_disconnected(serve):
    server = serve(header_timeout=0.3)
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert 0.2 < seconds_until_closed(s) < 2.0


def test_trickled_head_is_cut_at_header_timeout(serve):
    """The deadline is for the whole head, not per byte."""
    server = serve(header_timeout=0.3)
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 2.0:
            try:
                s.sendall(b"X")
            except OSError:  # reset: closed
                closed = True
                break
            s.settimeout(0.05)
            try:
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:
                closed = True
                break
        assert closed
        assert 0.2 < time.monotonic() - t0 < 1.5


def head_of(size):
    """A GET request head of exactly `size` bytes."""
    start, end = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def test_head_of_8_kib_is_served(serve):
    server = serve()
    assert len(head_of(MAX_HEAD_BYTES)) == MAX_HEAD_BYTES == 8192
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(head_of(MAX_HEAD_BYTES))
        assert read_all(s).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("size", [MAX_HEAD_BYTES + 1, 100_000])
def test_larger_head_is_431(serve, size):
    server = serve()
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(head_of(size))
        raw = read_all(s)
    assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close\r\n" in raw


def test_400_idle_connections_hold_no_threads_and_at_most_max_slots(serve):
    threads, os_threads = threading.active_count(), psutil.Process().num_threads()
    server = serve(max_connections=32)
    port = server.address[1]
    idle = []

    def settled(opened, timeout=10):
        """Wait until the server has taken every connection opened so far: each is either held (accepted) or
        evicted (client side: CLOSE_WAIT)."""
        deadline = time.monotonic() + timeout
        while True:
            accepted, clients = tcp_connections(port)
            evicted = sum(c.status == psutil.CONN_CLOSE_WAIT for c in clients)
            if evicted + len(accepted) >= opened or time.monotonic() > deadline:
                return accepted, evicted
            time.sleep(0.01)

    try:
        for i in range(400):
            if i and i % 16 == 0:
                # never more than 16 waiting in the listen backlog (64): past it the kernel drops the client's final
                # ACK, and the handshake completes only when the server resends its SYN-ACK, seconds later
                settled(i)
            idle.append(socket.create_connection(server.address, timeout=5))
        accepted, evicted = settled(400)
        assert evicted >= 400 - 32
        assert len(accepted) <= 32
        assert server.open_connections <= 32
        assert threading.active_count() <= threads + 1
        assert psutil.Process().num_threads() <= os_threads + 1
        # a scrape still gets through: it evicts the oldest idle connection
        status, _, body = get(server.address, "/metrics")
        assert status == 200
        assert SAMPLE in body.decode().splitlines()
        assert len(tcp_connections(port)[0]) <= 32
    finally:
        for s in idle:
            s.close()


def test_slow_reader_does_not_block_other_scrapes(serve, registry):
    # long labels: a page of 4 MB that is quick to make
    bulk = Counter("llmtally_test_bulk", "Samples with long labels.", ["i"], registry=registry)
    for i in range(500):
        bulk.labels(f"{i}-" + "x" * 4000).inc()
    server = serve(idle_timeout=0.5)
    slow = socket.socket()
    try:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(server.address)
        # pages asked for and never read: more than the socket buffers hold, so the server is left waiting to write
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        time.sleep(0.1)
        t0 = time.monotonic()
        status, _, body = get(server.address, "/metrics")
        assert time.monotonic() - t0 < 0.5  # not held up until the slow one's write timed out
        assert status == 200
        assert SAMPLE in body.decode().splitlines()
        assert wait_for_open_connections(server, 1, 0.5)  # the slow one, still waiting to write
        assert wait_for_open_connections(server, 0, 3.0)  # its write timed out (idle_timeout)
    finally:
        slow.close()


def test_bind_error_is_raised(registry):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        threads = threading.active_count()
        with pytest.raises(OSError) as e:
            start_metrics_http("127.0.0.1", holder.getsockname()[1], registry)
        assert e.value.errno == errno.EADDRINUSE
        assert threading.active_count() == threads


def test_close_frees_the_port_and_ends_the_thread(registry):
    server = start_metrics_http("127.0.0.1", 0, registry)
    address = server.address
    assert [t for t in threading.enumerate() if t.name == "llmtally-metrics"]
    client = socket.create_connection(address, timeout=5)
    try:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        t0 = time.monotonic()
        server.close()
        assert time.monotonic() - t0 < 0.5  # its connections end at once, not at a timeout
        server.close()  # idempotent
        assert not [t for t in threading.enumerate() if t.name == "llmtally-metrics"]
        assert seconds_until_closed(client) < 1.0  # the open keep-alive connection was closed too
    finally:
        client.close()
    again = start_metrics_http(*address, registry)
    try:
        assert again.address == address
        assert get(address, "/healthz")[0] == 200
    finally:
        again.close()


def test_a_page_is_reused_while_younger_than_four_times_its_cost():
    """Scrapes however frequent cost at most a quarter of a core: a page that took t to make is served again
    for 4 t."""

    class Slow:
        made = 0

        def describe(self):
            return []  # registered without a collect()

        def collect(self):
            Slow.made += 1
            time.sleep(0.1)  # a page that costs 100 ms
            yield GaugeMetricFamily("pages_made", "pages made", value=Slow.made)

    registry = CollectorRegistry()
    registry.register(Slow())
    srv = start_metrics_http("127.0.0.1", 0, registry)
    try:
        url = f"http://127.0.0.1:{srv.address[1]}/metrics"
        first = urllib.request.urlopen(url, timeout=5).read()
        again = urllib.request.urlopen(url, timeout=5).read()  # within 400 ms of the first
        assert b"pages_made 1.0" in first and again == first
        time.sleep(0.45)
        assert b"pages_made 2.0" in urllib.request.urlopen(url, timeout=5).read()
    finally:
        srv.close()


def test_clients_that_ask_and_never_read_cannot_fill_the_slots(serve, registry, monkeypatch):
    """Every slot held by a client that sent requests and reads none of the answers: past BUSY_GRACE such a
    connection is evicted for a new one, so probes and scrapes still get through."""
    import llmtally.metrics_http as mh

    monkeypatch.setattr(mh, "BUSY_GRACE", 0.2)
    bulk = Counter("llmtally_test_bulk", "Samples with long labels.", ["i"], registry=registry)
    for i in range(500):
        bulk.labels(f"{i}-" + "x" * 4000).inc()  # a page larger than the socket buffers
    server = serve(max_connections=4, idle_timeout=30)
    stuck = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(server.address)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            stuck.append(s)
        assert wait_for_open_connections(server, 4, 2)
        time.sleep(0.3)  # past the grace: they are stuck writing to clients that do not read
        for path in ("/healthz", "/readyz", "/metrics"):
            assert get(server.address, path)[0] == 200
    finally:
        for s in stuck:
            s.close()


def test_scrapes_past_ten_a_second_get_429(serve):
    server = serve()
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    try:
        statuses = []
        for _ in range(25):  # one keep-alive connection, as fast as it goes
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            r.read()
            statuses.append((r.status, r.getheader("Retry-After")))
    finally:
        conn.close()
    assert statuses[:10] == [(200, None)] * 10  # the burst
    assert (429, "1") in statuses and statuses.count((200, None)) <= 12
    assert get(server.address, "/healthz")[0] == 200  # probes are never limited
    time.sleep(1.0)
    assert get(server.address, "/metrics")[0] == 200
