"""Two ranks against one process, and against ``mlx_lm.server`` run the same way, in one run.

Three servers on the same random model (Qwen2 layout, sharded tensor parallel across the two
ranks): ``trillm serve`` (one process), ``trillm serve --distributed 2`` (two ranks on loopback,
MLX's ring backend), and ``mlx_lm.server`` under ``mlx.launch -n 2 --backend ring`` (mlx-lm's own
distributed server). Each is asked for one stream and then for 8 concurrent streams of greedy
tokens over ``/v1/chat/completions`` (what both speak); the figures are decode tokens/s (one
stream: from its first token to its last; 8 streams: all tokens over the whole burst) and the
time to the first token, medians of the rounds, printed as ratios.

On one machine the two ranks share its cores and talk over loopback: what matters here is the
ratio to ``mlx_lm.server`` (the same sharding and collectives). Run with
``python -m benchmarks.distributed``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import trio

from benchmarks.overhead import add_blas_option, apply_blas, free_port, wait_for
from inference.backends.mlx import blas_shim as mlx_blas
from tests.support.server_process import ServerProcess

PROMPTS = [
    "The quick brown fox",
    "Hello there",
    "Bonjour",
    "One two three",
    "Grüße",
    "你好",
    "Emoji",
    "system",
]


async def stream(
    client: httpx.AsyncClient, model: str, prompt: str, tokens: int
) -> tuple[float, list[float]]:
    """Seconds to the first token and the arrival time of every content chunk."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    arrivals: list[float] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                arrivals.append(time.perf_counter())
    return arrivals[0] - start, arrivals


async def workload(url: str, model: str, tokens: int, streams: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await stream(client, model, "warm up", 8)
        if streams == 1:
            ttft, arrivals = await stream(client, model, PROMPTS[0], tokens)
            return {"tps": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), "ttft": ttft}
        results: list[tuple[float, list[float]]] = []

        async def one(prompt: str) -> None:
            results.append(await stream(client, model, prompt, tokens))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(streams):
                nursery.start_soon(one, PROMPTS[index % len(PROMPTS)])
        took = time.perf_counter() - started
        return {
            "tps": sum(len(a) for _, a in results) / took,
            "ttft": statistics.mean(t for t, _ in results),
        }


@contextmanager
def mlx_lm_group(path: Path) -> Iterator[str]:
    """``mlx_lm.server`` on two ranks, launched by ``mlx.launch`` with the ring backend."""
    port = free_port()
    launcher = Path(sys.executable).with_name("mlx.launch")
    command = [str(launcher), "-n", "2", "--backend", "ring", "--", sys.executable, "-m", "mlx_lm.server"]
    command += ["--model", str(path), "--port", str(port), "--log-level", "WARNING"]
    # A session of its own: mlx.launch does not pass SIGTERM on to its ranks, so the whole group is
    # signalled (a rank left behind spins on a core).
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=mlx_blas.preload_env(),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(proc, f"{url}/v1/models", seconds=120)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=512, help="the model's hidden size")
    parser.add_argument("--layers", type=int, default=8)
    add_blas_option(parser)
    args = parser.parse_args()
    env = apply_blas(args.blas)
    from tests.support.tiny_model import build_model

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        path = build_model(store / "bench", hidden_size=args.width, num_layers=args.layers, seed=3)
        logs = Path(tmp)
        sides: dict[str, dict[str, list[float]]] = {}
        for side in ("one process", "two ranks", "mlx_lm.server, two ranks"):
            if side == "mlx_lm.server, two ranks":
                context = mlx_lm_group(path)
                model = str(path)
            else:
                extra = ("--distributed", "2") if side == "two ranks" else ()
                context = trillm(store, logs / f"{len(sides)}.log", extra, env)
                model = "bench"
            with context as url:
                figures: dict[str, list[float]] = {}
                for _ in range(args.rounds):
                    for streams in (1, 8):
                        result = trio.run(workload, url, model, args.tokens, streams)
                        for key, value in result.items():
                            figures.setdefault(f"{key} x{streams}", []).append(value)
                sides[side] = figures
        medians = {side: {k: statistics.median(v) for k, v in f.items()} for side, f in sides.items()}
        print(f"model: {args.width} wide, {args.layers} layers; {args.tokens} tokens, {args.rounds} rounds")
        for side, figures in medians.items():
            print(f"{side:>26}: " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
        ours, one, theirs = medians["two ranks"], medians["one process"], medians["mlx_lm.server, two ranks"]
        for key in ours:
            better = "higher" if key.startswith("tps") else "lower"
            print(
                f"{key:>8}: two ranks / mlx_lm.server {ours[key] / theirs[key]:.2f}, "
                f"two ranks / one process {ours[key] / one[key]:.2f} ({better} is better)"
            )


@contextmanager
def trillm(store: Path, log: Path, extra: tuple[str, ...], env: dict[str, str]) -> Iterator[str]:
    server = ServerProcess.start(store, log, *extra, env={**env, "TRILLM_BACKEND": "mlx"})
    try:
        yield server.url
    finally:
        server.stop()


if __name__ == "__main__":
    main()
