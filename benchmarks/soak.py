"""Soak: minutes of mixed traffic, watching for drift in memory, descriptors, tasks and latency.

Starts ``trillm serve`` (with ``TRILLM_METRICS=1``) on the tiny preset model and runs
``--clients`` concurrent clients for ``--minutes``. The mix is the reliability plan's: a streamed
chat read to the end (55 %), a stream abandoned after a few tokens (20 %), a JSON-Schema request
(10 %), a streamed chat offering a tool (10 %), or a malformed body (5 %). Every ``--every``
seconds it samples the server's RSS, open file descriptors and Trio task count (from
``/metrics``), and the time to first token of the requests in that window; at the end it prints
each window, the RSS drift per hour after warm-up, and the TTFT p99 of every window against the
first ten minutes' (the plan's 2-hour run: ``--minutes 120 --every 300``). Usage::

    python -m benchmarks.soak [--minutes 3] [--clients 8] [--every 30] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from pathlib import Path

import httpx

from benchmarks.memory import rss_mb
from benchmarks.overhead import build, percentile, serving

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def fds(pid: int) -> int:
    folder = Path(f"/proc/{pid}/fd")
    return len(os.listdir(folder)) if folder.is_dir() else -1


def tasks(client: httpx.Client) -> int:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("trillm:trio_tasks "):
            return int(float(line.split()[1]))
    return -1


def one_request(client: httpx.Client, rng: random.Random) -> float | None:
    """Send one request of a random kind; the time to first token of completed streams."""
    kind = rng.random()
    body: dict[str, object] = {
        "model": "bench",
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "options": {"num_predict": rng.randint(8, 48)},
    }
    if kind < 0.05:
        client.post("/api/chat", content=b'{"model": "bench", "messages": [{"role": 7}]')
        return None
    if kind < 0.15:
        body |= {"format": SCHEMA, "stream": False}
        client.post("/api/chat", json=body)
        return None
    if kind < 0.25:
        body["tools"] = [TOOL]
    start = time.perf_counter()
    first = None
    with client.stream("POST", "/api/chat", json=body) as response:
        for count, _ in enumerate(response.iter_lines()):
            first = first or time.perf_counter() - start
            if kind >= 0.8 and count >= 3:
                return None  # abandoned mid-stream
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--every", type=float, default=30.0)
    parser.add_argument("--model", type=Path, help="an MLX model directory (default: the tiny preset)")
    args = parser.parse_args()
    path = args.model or build("tiny")
    os.environ["TRILLM_METRICS"] = "1"
    ttfts: list[tuple[float, float]] = []
    stop = time.monotonic() + args.minutes * 60
    with serving(path) as (proc, url), httpx.Client(base_url=url, timeout=120) as probe:
        one_request(probe, random.Random(0))  # load the model

        def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=url, timeout=120) as client:
                while time.monotonic() < stop:
                    ttft = one_request(client, rng)
                    if ttft is not None:
                        ttfts.append((time.monotonic(), ttft))

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        samples = []
        while time.monotonic() < stop:
            time.sleep(min(args.every, max(0.0, stop - time.monotonic())))
            samples.append((time.monotonic(), rss_mb(proc.pid), fds(proc.pid), tasks(probe)))
        for thread in threads:
            thread.join()
        time.sleep(1.0)
        samples.append((time.monotonic(), rss_mb(proc.pid), fds(proc.pid), tasks(probe)))
    print(
        f"{'window':>8} {'RSS MB':>8} {'fds':>5} {'tasks':>6} {'requests':>9} {'TTFT p50':>9} {'TTFT p99':>9}"
    )
    begin = samples[0][0] - args.every
    windows = []
    for at, rss, fd, task in samples:
        window = sorted(t for when, t in ttfts if begin < when <= at)
        begin = at
        p50 = statistics.median(window) * 1e3 if window else float("nan")
        p99 = percentile(window, 0.99) * 1e3 if window else float("nan")
        windows.append((rss, fd, task, p99))
        print(
            f"{at - samples[0][0]:8.0f} {rss:8.1f} {fd:5d} {task:6d} {len(window):9d} {p50:8.1f}ms {p99:8.1f}ms"
        )
    first, last = windows[0], windows[-2] if len(windows) > 2 else windows[-1]
    # Drift is measured after warm-up: from the second sample to the end.
    warm = 1 if len(samples) > 2 else 0
    hours = max((samples[-1][0] - samples[warm][0]) / 3600, 1e-9)
    drift = (windows[-1][0] - windows[warm][0]) / windows[warm][0] / hours
    print(
        f"RSS drift after warm-up {drift:+.1%}/h; fds {first[1]} -> {windows[-1][1]}; "
        f"tasks {first[2]} -> {windows[-1][2]} (idle, after the run); "
        f"TTFT p99 {first[3]:.1f} ms (first window) vs {last[3]:.1f} ms (last loaded window)"
    )
    # The plan's latency criterion: each window's p99 against the p99 of the first ten minutes
    # (the first sixth of a shorter run).
    head = samples[0][0] - args.every + min(600.0, args.minutes * 10)
    base = [t for when, t in ttfts if when <= head]
    if base:
        p99 = percentile(base, 0.99)
        worst = max((w[3] for w in windows[:-1] if w[3] == w[3]), default=float("nan"))
        print(
            f"TTFT p99 of the first {min(600.0, args.minutes * 10) / 60:.1f} min {p99 * 1e3:.1f} ms;"
            f" worst window {worst:.1f} ms ({worst / (p99 * 1e3):.2f}x)"
        )


if __name__ == "__main__":
    main()
