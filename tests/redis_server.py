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

    def __init__(self, workdir, port: int | None = None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server (.ci/run installs it)")
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
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
        """Every key with its integer value."""
        import redis

        r = redis.Redis(port=self.port)
        try:
            return {k.decode(): int(r.get(k)) for k in r.keys("*")}
        finally:
            r.close()
