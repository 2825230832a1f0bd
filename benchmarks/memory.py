"""Does unloading a model give its memory back? The server's resident set size, measured.

Starts ``trillm serve`` on the ~50M-parameter preset (or ``--model DIR``), then loads and unloads
the model a few times (``keep_alive: 0``), reading the server process's RSS after each step.
Usage::

    python -m benchmarks.memory [--model DIR] [--cycles 3]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.overhead import build, serving


def rss_mb(pid: int) -> float:
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an MLX model directory (default: the 50M preset)")
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args()
    path = args.model or build("50M")
    weights = sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20
    with serving(path) as (proc, url), httpx.Client(base_url=url, timeout=None) as client:
        time.sleep(1)
        base = rss_mb(proc.pid)
        print(f"weights on disk {weights:8.1f} MB")
        print(f"server idle     {base:8.1f} MB RSS")
        for cycle in range(1, args.cycles + 1):
            body = {"model": "bench", "prompt": "Hello", "options": {"num_predict": 8}, "stream": False}
            client.post("/api/generate", json=body).raise_for_status()
            loaded = rss_mb(proc.pid)
            client.post("/api/generate", json={"model": "bench", "keep_alive": 0}).raise_for_status()
            time.sleep(0.5)
            unloaded = rss_mb(proc.pid)
            freed = (loaded - unloaded) / max(loaded - base, 1e-9)
            print(
                f"cycle {cycle}: loaded {loaded:8.1f} MB, unloaded {unloaded:8.1f} MB "
                f"({freed:.0%} of the load returned, {unloaded - base:+.1f} MB vs idle)"
            )


if __name__ == "__main__":
    main()
