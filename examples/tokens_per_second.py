"""Measure a model's tokens/s against any Ollama-compatible server (trillm, Ollama, ...).

Streams one generation, counting chunks as they arrive (time to first token, chunks/s seen by the
client), then runs the same request with ``"stream": false`` and reads the server's own figures
(``eval_count`` / ``eval_duration``); both are printed side by side::

    python examples/tokens_per_second.py MODEL [--host HOST] [--tokens 128]

The client's rate is only printed over enough chunks to mean something (at least 8, spread over
at least 50 ms); a shorter reply says how many chunks it saw instead.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
from server_address import reachable, server_url

MIN_CHUNKS, MIN_SPAN_S = 8, 0.05


def streaming(client: httpx.Client, body: dict[str, object]) -> dict[str, float]:
    start = time.perf_counter()
    first = last = 0.0
    chunks = 0
    final: dict[str, float] = {}
    with client.stream("POST", "/api/generate", json=body | {"stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            part = json.loads(line)
            if "error" in part:
                raise SystemExit(f"error: {part['error']}")
            now = time.perf_counter()
            if part.get("done"):
                final = part
                break
            chunks += 1
            first = first or now
            last = now
    span = last - first
    return {
        "ttft_s": first - start,
        "chunks": chunks,
        "client_tps": (chunks - 1) / span if chunks >= MIN_CHUNKS and span >= MIN_SPAN_S else float("nan"),
        "server_tps": final["eval_count"] / (final["eval_duration"] / 1e9),
    }


def non_streaming(client: httpx.Client, body: dict[str, object]) -> dict[str, float]:
    start = time.perf_counter()
    r = client.post("/api/generate", json=body | {"stream": False})
    r.raise_for_status()
    out = r.json()
    return {
        "wall_s": time.perf_counter() - start,
        "tokens": out["eval_count"],
        "server_tps": out["eval_count"] / (out["eval_duration"] / 1e9),
        "prompt_tps": out["prompt_eval_count"] / (out["prompt_eval_duration"] / 1e9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="tokens/s of a model on an Ollama-compatible server")
    parser.add_argument("model")
    parser.add_argument("--host", help="server address (default: TRILLM_HOST, OLLAMA_HOST, 127.0.0.1:11434)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompt", default="Write a short story about a lighthouse keeper.")
    args = parser.parse_args()
    body = {"model": args.model, "prompt": args.prompt, "options": {"num_predict": args.tokens, "seed": 1}}
    url = server_url(args.host)

    def measure() -> tuple[dict[str, float], dict[str, float]]:
        with httpx.Client(base_url=url, timeout=None) as client:
            client.post("/api/generate", json={"model": args.model}).raise_for_status()  # load it first
            return streaming(client, body), non_streaming(client, body)

    s, n = reachable(measure, url)
    client_rate = f"{s['client_tps']:13.1f}" if s["client_tps"] == s["client_tps"] else f"{'n/a':>13}"
    print(f"{'mode':14} {'TTFT':>9} {'client tok/s':>13} {'server tok/s':>13}")
    print(f"{'streaming':14} {s['ttft_s'] * 1e3:7.1f}ms {client_rate} {s['server_tps']:13.1f}")
    print(f"{'non-streaming':14} {'':>9} {'':>13} {n['server_tps']:13.1f}")
    print(
        f"(streaming: {s['chunks']:.0f} chunks; non-streaming: {n['tokens']:.0f} tokens in {n['wall_s']:.2f}s)"
    )
    if s["client_tps"] != s["client_tps"]:
        print(
            f"(the client rate needs {MIN_CHUNKS} chunks over {MIN_SPAN_S * 1e3:.0f} ms; ask for more --tokens)"
        )


if __name__ == "__main__":
    main()
