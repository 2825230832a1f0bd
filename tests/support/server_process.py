"""``trillm serve`` in a process of its own, for what cannot run inside the test process: a
distributed group (MLX's group is global to a process) and benchmark peers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from inference.backends.mlx.distributed.launcher import free_port


def serve_command(store: Path, port: int) -> list[str]:
    """``trillm serve`` on ``127.0.0.1:port`` with the store ``store``."""
    return [sys.executable, "-m", "app.cli", "serve", "--host", f"127.0.0.1:{port}", "--models", str(store)]


@dataclass
class ServerProcess:
    """A running ``trillm serve``; its output (every rank's) goes to ``log``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(
        cls, store: Path, log: Path, *args: str, env: dict[str, str] | None = None, seconds: float = 90.0
    ) -> ServerProcess:
        port = free_port()
        environment = os.environ | {"TRILLM_OLLAMA_MODELS": ""} | (env or {})
        command = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            f"127.0.0.1:{port}",
            "--models",
            str(store),
        ]
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*command, *args], env=environment, stdout=out, stderr=subprocess.STDOUT
            )
        server = cls(process, f"http://127.0.0.1:{port}", log)
        server.wait_ready(seconds)
        return server

    def wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                httpx.get(f"{self.url}/api/version", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"the server at {self.url} did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def follower_pids(self) -> list[int]:
        """The ranks this server started (``--distributed``), from its log."""
        return [int(pid) for pid in re.findall(r"started rank \d+ on \S+ \(pid (\d+)\)", self.output())]

    def stop(self, seconds: float = 30.0) -> int:
        """SIGTERM, as a service manager stops it; the exit code (raises if it does not exit)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
