"""Slow clients against normal traffic: does a slowloris attack slow everyone else down?

Starts ``trillm serve`` on the tiny preset model and times a steady stream of normal requests (a
non-streamed 8-token ``/api/generate``, one after another on one connection) in alternating
phases: quiet, then under attack by ``--attackers`` connections that each send a request line and
then one header line a second, never finishing their headers (reconnecting when the server cuts
them off, as an attacker does). It prints the latency of each kind of phase, the ratio of the
p99 under attack to the quiet p99 (the reliability plan's target: a rise under 10 %), and how long
the server let the slow connections live against its header timeout. Usage::

    python -m benchmarks.slowloris [--attackers 200] [--phase 15] [--rounds 3] [--header-timeout 10]
"""

from __future__ import annotations

import argparse
import selectors
import socket
import statistics
import threading
import time

import httpx

from benchmarks.overhead import build, percentile, serving
from inference.backends.mlx.backend import release_mlx_streams

BODY = {"model": "bench", "prompt": "Once upon a time", "stream": False, "options": {"num_predict": 8}}


class Attack:
    """``count`` slowloris connections kept up on a thread of their own while running."""

    def __init__(self, port: int, count: int) -> None:
        self._port, self._count = port, count
        self._running = threading.Event()
        self._stop = threading.Event()
        self.lifetimes: list[float] = []  # seconds from connect to being cut off by the server
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def attack(self, on: bool) -> None:
        """Open the connections (``on``) or close them all."""
        if on:
            self._running.set()
        else:
            self._running.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _connect(self, selector: selectors.BaseSelector) -> None:
        sock = socket.create_connection(("127.0.0.1", self._port))
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, time.monotonic())

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        last_trickle = time.monotonic()
        while not self._stop.is_set():
            if not self._running.is_set():
                for key in list(selector.get_map().values()):
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
                self._running.wait(0.1)
                continue
            while len(selector.get_map()) < self._count:
                self._connect(selector)
            for key, _ in selector.select(0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the server cut it off
                    self.lifetimes.append(time.monotonic() - key.data)
                    selector.unregister(sock)
                    sock.close()
            if time.monotonic() - last_trickle >= 1.0:
                last_trickle = time.monotonic()
                for key in list(selector.get_map().values()):
                    try:
                        key.fileobj.send(b"X-Slow: 1\r\n")  # type: ignore[union-attr]
                    except OSError:
                        pass


def phase(client: httpx.Client, seconds: float) -> list[float]:
    """Latencies of back-to-back normal requests for ``seconds``."""
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        response = client.post("/api/generate", json=BODY)
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"normal request failed: {response.status_code} {response.text}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=200)
    parser.add_argument("--phase", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/attack pairs")
    parser.add_argument("--header-timeout", type=float, default=10.0)
    args = parser.parse_args()
    env = {"TRILLM_HEADER_TIMEOUT": str(args.header_timeout)}
    with serving(build("tiny"), env) as (_, url), httpx.Client(base_url=url, timeout=60) as client:
        phase(client, 2.0)  # load the model and warm up
        attack = Attack(int(url.rsplit(":", 1)[1]), args.attackers)
        attack.start()
        quiet: list[float] = []
        attacked: list[float] = []
        for _ in range(args.rounds):
            attack.attack(False)
            time.sleep(1.0)
            quiet += phase(client, args.phase)
            attack.attack(True)
            time.sleep(1.0)  # the connections are open
            attacked += phase(client, args.phase)
        attack.close()
    print(f"{'phase':8} {'requests':>9} {'p50':>9} {'p99':>9}")
    for label, values in (("quiet", quiet), ("attack", attacked)):
        print(
            f"{label:8} {len(values):9d} {statistics.median(values) * 1e3:7.1f}ms"
            f" {percentile(values, 0.99) * 1e3:7.1f}ms"
        )
    print(
        f"p99 under attack / quiet p99: {percentile(attacked, 0.99) / percentile(quiet, 0.99):.3f};"
        f" p50: {statistics.median(attacked) / statistics.median(quiet):.3f}"
    )
    if attack.lifetimes:
        print(
            f"slow connections cut off: {len(attack.lifetimes)}, after {min(attack.lifetimes):.1f}"
            f"-{max(attack.lifetimes):.1f} s (header timeout {args.header_timeout:g} s)"
        )


if __name__ == "__main__":
    main()
    release_mlx_streams()  # build() may have run mlx-lm in this process
