"""A real redis-server (Debian's package) on a free loopback port, for the budget tests."""

import shutil
import socket
import subprocess
import time

import pytest

from llmtally.demo import free_port


class RedisServer:
    """`redis-server` without persistence; `stop()` kills it (a crash), `start()` brings it back on the same
    port (empty, as after a crash without persistence)."""

    def __init__(self, workdir, port: int | None = None, tls: tuple | None = None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server (.ci/run installs it)")
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        #: (cert, key, CA) PEM paths: TLS only (rediss://), client certificates not asked for
        self.tls = tls
        self.start()

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://localhost:{self.port}/0?ssl_ca_certs={self.tls[2]}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.tls:  # the TLS port only: a plaintext client must not get in
            cert, key, ca = self.tls
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(ca),
                "--tls-auth-clients",
                "no",
            ]
        else:
            listen = ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [
                self.binary,
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.tls:
            _wait_port(self.port, self.proc, "redis-server (TLS)")
            return
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, "redis-server exited"
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def command(self, *args: str) -> bytes:
        """One command over RESP; the raw reply."""
        req = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(req)
            return s.recv(65536)

    def keys(self) -> dict[str, int]:
        """Every counter with its value."""
        import redis

        r = redis.Redis(port=self.port)
        try:
            # the counters only: not the records of reservations in flight (`...:res:<id>`)
            return {k.decode(): int(r.get(k)) for k in r.keys("*") if b":res:" not in k}
        finally:
            r.close()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        assert proc.poll() is None, f"{what} exited"
        assert time.time() < deadline, f"{what} did not start"
        time.sleep(0.05)


class RedisSentinel:
    """A sentinel (redis-server in sentinel mode) watching `master` as `service`."""

    def __init__(self, workdir, master: RedisServer, service: str = "llmtally"):
        self.port = free_port()
        conf = workdir / f"sentinel-{self.port}.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\nsentinel monitor {service} 127.0.0.1 {master.port} 1\n"
        )
        self.proc = subprocess.Popen(
            [master.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, self.proc, "redis sentinel")
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/{service}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class RedisCluster:
    """Three masters in cluster mode, slots assigned by redis-cli (Debian's redis-tools)."""

    def __init__(self, workdir, masters: int = 3):
        self.binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if self.binary is None or cli is None:
            pytest.fail("redis-server and redis-cli are not installed: apt-get install redis-server")
        # a cluster node also listens on its port + 10000 (the cluster bus): both must be free and valid
        self.ports = []
        while len(self.ports) < masters:
            p = free_port()
            if p < 55000 and p not in self.ports and _free(p + 10000):
                self.ports.append(p)
        self.procs = []
        for port in self.ports:
            d = workdir / f"node-{port}"
            d.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        self.binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(d),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        try:
            self._form(cli)
        except BaseException:
            self.stop()  # no node outlives a cluster that did not form
            raise

    def _form(self, cli: str) -> None:
        for port, proc in zip(self.ports, self.procs, strict=True):
            _wait_port(port, proc, "redis cluster node")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.time() + 15
        while (
            b"cluster_state:ok"
            not in subprocess.run(
                [cli, "-p", str(self.ports[0]), "cluster", "info"], capture_output=True, timeout=5
            ).stdout
        ):
            assert time.time() < deadline, "the cluster did not become ready"
            time.sleep(0.1)
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
