"""Many clients at once: trillm against mlx-lm's own server, with raw mlx-lm as the ceiling.

One invocation runs every workload on the same model directory against ``trillm serve`` and
``mlx_lm.server``, both through their OpenAI-compatible ``/v1/chat/completions`` with streaming,
greedy decoding and usage reports. Both servers are up at once and take turns (an idle server
costs nothing), round after round in alternating order, so that a drift in this noisy machine's
speed falls on both; every figure is the median over the rounds (``--rounds``, default 3). Each
round's conversations open with their own system message, so no round reads another's prompts
from a prompt cache.

- ``1 stream``: tokens/s of one client, decoding (from its first token to its last) and with its
  prompt (from its request to its last byte);
- ``8 streams``: aggregate tokens/s of eight concurrent clients, with their prompts (over the whole
  run) and decoding (from the first token any of them got), and their TTFT p50/p99;
- ``4-turn chat``: time to first token of each turn of a growing conversation;
- ``long prompt``: four streaming clients while a fifth sends a long prompt; the ratio of the
  streams' p99 inter-token gap to their median.

mlx-lm itself in this process, with no server, gives the ceilings: ``stream_generate`` for one
stream, and its ``BatchGenerator`` (the batched decoding both servers drive) for the eight streams'
requests, prompts included. Usage::

    python -m benchmarks.batching                  # the ~50M-parameter random model
    python -m benchmarks.batching --model DIR      # any MLX model directory
    python -m benchmarks.batching --backend llamacpp [--model FILE.gguf]
    python -m benchmarks.batching --blas reference  # MLX's bundled BLAS, on every side

MLX's float32 matrix products run on the same BLAS on every side (``--blas``): NumPy's OpenBLAS
by default, as ``trillm serve`` does on Linux (mlx_lm.server gets it through ``LD_PRELOAD``), so
the ratios compare the servers and not their BLAS.

trillm runs with ``TRILLM_NUM_PARALLEL`` = the number of streams (8), mlx_lm.server with its
defaults (it batches up to 32 sequences).

With ``--backend llamacpp`` the model is the same ~50M model written as GGUF (or any GGUF file), and
the peer is trillm on llama.cpp with ``TRILLM_NUM_PARALLEL=1``: one request at a time, which is
Ollama's default (``OLLAMA_NUM_PARALLEL=1``) and how llama-cpp-python's own server runs a model.
Raw ``Llama.generate`` is then the single-stream ceiling.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from benchmarks.overhead import (
    CHAT_PROMPTS,
    add_blas_option,
    apply_blas,
    build,
    free_port,
    percentile,
    serving,
    session,
    wait_for,
)
from inference.backends.mlx import blas_shim as mlx_blas
from inference.backends.mlx.backend import release_mlx_streams

PROMPTS = CHAT_PROMPTS
FOLLOW_UPS = ["Go on.", "Say more about that.", "And then what happened?", "Summarise it."]


@dataclass
class Stream:
    """One streamed request as the client saw it."""

    start: float
    arrivals: list[float] = field(default_factory=list)
    text: str = ""
    tokens: int = 0
    finished: float = 0.0

    @property
    def ttft(self) -> float:
        return self.arrivals[0] - self.start if self.arrivals else float("nan")

    @property
    def end(self) -> float:
        return self.arrivals[-1] if self.arrivals else self.start


async def chat(client: httpx.AsyncClient, model: str, messages: list[dict[str, str]], tokens: int) -> Stream:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = Stream(time.perf_counter())
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                stream.tokens = int(chunk["usage"]["completion_tokens"])
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    stream.arrivals.append(time.perf_counter())
                    stream.text += piece
    stream.finished = time.perf_counter()
    return stream


async def workloads(url: str, model: str, tokens: int, streams: int, round_: int) -> dict[str, float]:
    """One round of every workload against one server; see the module docstring."""
    out: dict[str, float] = {}
    tag = session(round_)
    async with httpx.AsyncClient(base_url=url, timeout=None) as client:
        # One stream.
        one = await chat(client, model, [*tag, {"role": "user", "content": PROMPTS[0]}], tokens)
        out["single_tps"] = (len(one.arrivals) - 1) / (one.end - one.arrivals[0])
        out["single_total_tps"] = one.tokens / (one.finished - one.start)
        # N concurrent streams.
        runs: list[Stream] = []

        async def client_run(i: int) -> None:
            prompt = PROMPTS[i % len(PROMPTS)]
            runs.append(await chat(client, model, [*tag, {"role": "user", "content": prompt}], tokens))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(streams):
                nursery.start_soon(client_run, i)
        generated = sum(r.tokens for r in runs)
        out["aggregate_tps"] = generated / (max(r.finished for r in runs) - start)
        decoding = max(r.finished for r in runs) - min(r.arrivals[0] for r in runs if r.arrivals)
        out["aggregate_decode_tps"] = (generated - len(runs)) / decoding
        # A random model can print nothing for a prompt (a repeated lone UTF-8 lead byte, which a
        # server holds back): such a stream has no first token to time.
        ttfts = [r.ttft for r in runs if r.arrivals] or [float("nan")]
        out["ttft_p50_ms"], out["ttft_p99_ms"] = percentile(ttfts, 0.5) * 1e3, percentile(ttfts, 0.99) * 1e3
        out["silent_streams"] = float(sum(1 for r in runs if not r.arrivals))
        # A growing conversation.
        messages = [
            {"role": "system", "content": f"Session {round_}. " + "You are a patient storyteller. " * 4}
        ]
        for turn, follow in enumerate([PROMPTS[1], *FOLLOW_UPS[:3]], 1):
            messages.append({"role": "user", "content": follow})
            reply = await chat(client, model, messages, tokens // 2)
            messages.append({"role": "assistant", "content": reply.text})
            out[f"turn{turn}_ttft_ms"] = reply.ttft * 1e3
        # Four streams while a fifth client sends a long prompt.
        streaming: list[Stream] = []

        async def streamer(i: int) -> None:
            request = [*tag, {"role": "user", "content": PROMPTS[i]}]
            streaming.append(await chat(client, model, request, 2 * tokens))

        long_prompt = " ".join(PROMPTS * 6)
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(streamer, i)
            await trio.sleep(0.5)
            long = await chat(client, model, [*tag, {"role": "user", "content": long_prompt}], 1)
        gaps = [b - a for s in streaming for a, b in zip(s.arrivals, s.arrivals[1:], strict=False)]
        out["gap_p50_ms"], out["gap_p99_ms"] = percentile(gaps, 0.5) * 1e3, percentile(gaps, 0.99) * 1e3
        out["gap_max_ms"] = max(gaps) * 1e3  # one freeze per stream can hide below p99 in long answers
        out["long_total_ms"] = (long.finished - long.start) * 1e3
    return out


async def warm_up(url: str, model: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=None) as client:
        await chat(client, model, [{"role": "user", "content": "warm up"}], 4)


def paired_rounds(
    sides: dict[str, tuple[str, str]], tokens: int, streams: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Every workload, ``rounds`` times on each side, the sides taking turns (in alternating
    order, so a drift in the machine's speed falls on both); the median of each figure."""
    for url, model in sides.values():
        trio.run(warm_up, url, model)
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for round_ in range(1, rounds + 1):
        order = list(sides) if round_ % 2 else list(reversed(sides))
        for side in order:
            url, model = sides[side]
            results[side].append(trio.run(workloads, url, model, tokens, streams, round_))
    return {
        side: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for side, runs in results.items()
    }


@contextmanager
def mlx_lm_server(path: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "mlx_lm.server", "--model", str(path), "--port", str(port)]
    command += ["--log-level", "WARNING"]
    proc = subprocess.Popen(
        command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=mlx_blas.preload_env()
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(proc, f"{url}/v1/models")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def one_at_a_time(path: Path) -> Iterator[str]:
    """trillm serving ``path`` on llama.cpp with one sequence at a time."""
    with serving(path, {"TRILLM_NUM_PARALLEL": "1", "TRILLM_BACKEND": "llamacpp"}) as (_, url):
        yield url


def raw_llamacpp_tps(path: Path, tokens: int, rounds: int) -> float:
    from llama_cpp import Llama

    from benchmarks.llamacpp import llama_raw_run

    llama = Llama(model_path=str(path), n_ctx=2048, n_batch=512, verbose=False)
    try:
        rates = []
        for _ in range(rounds):
            arrivals = llama_raw_run(llama, tokens)
            rates.append((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]))
        return statistics.median(rates)
    finally:
        llama.close()


def raw_mlx(path: Path, tokens: int, streams: int, rounds: int) -> dict[str, float]:
    """mlx-lm itself in this process, no server: the ceilings (medians over ``rounds``).

    ``single_tps``: ``stream_generate``'s decode rate over ``2 * tokens`` tokens;
    ``single_total_tps``: one chat request's ``tokens`` over its whole time, prompt included;
    ``aggregate_tps``: the ``streams`` chat requests of the 8-stream workload through one
    ``BatchGenerator`` (mlx-lm's batched decoding, which both servers drive), ``tokens`` each, over
    the whole run, prompts included.
    """
    import mlx_lm
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = mlx_lm.load(str(path))[:2]
    greedy = make_sampler(0.0)

    def prompt(i: int) -> list[int]:
        chat = [*session(0), {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        return list(tokenizer.apply_chat_template(chat, add_generation_prompt=True))

    def batch_run() -> float:
        generator = BatchGenerator(
            model, max_tokens=tokens, completion_batch_size=streams, prefill_batch_size=streams
        )
        start = time.perf_counter()
        left = set(generator.insert([prompt(i) for i in range(streams)]))
        produced = 0
        while left:
            _, responses = generator.next()
            for response in responses:
                produced += 1
                if response.finish_reason is not None:
                    left.discard(response.uid)
        rate = produced / (time.perf_counter() - start)
        generator.close()  # type: ignore[no-untyped-call]
        return rate

    figures: dict[str, list[float]] = {"single_tps": [], "single_total_tps": [], "aggregate_tps": []}
    for _ in range(rounds):
        for response in mlx_lm.stream_generate(
            model, tokenizer, prompt(0), max_tokens=2 * tokens, sampler=greedy
        ):
            rate = response.generation_tps
        figures["single_tps"].append(rate)
        start = time.perf_counter()
        n = sum(
            1 for _ in mlx_lm.stream_generate(model, tokenizer, prompt(0), max_tokens=tokens, sampler=greedy)
        )
        figures["single_total_tps"].append(n / (time.perf_counter() - start))
        figures["aggregate_tps"].append(batch_run())
    return {key: statistics.median(rates) for key, rates in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["mlx", "llamacpp"], default="mlx")
    parser.add_argument(
        "--model", type=Path, help="an MLX model directory or a GGUF file (default: ~50M random model)"
    )
    parser.add_argument("--tokens", type=int, default=32, help="tokens per streamed answer")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every workload on each side")
    add_blas_option(parser)
    args = parser.parse_args()
    env = {"TRILLM_NUM_PARALLEL": str(args.streams)} | apply_blas(args.blas)
    if args.backend == "llamacpp":
        from benchmarks.llamacpp import gguf_of

        path = args.model or gguf_of("50M")
        raw = {"single_tps": raw_llamacpp_tps(path, 2 * args.tokens, args.rounds)}
        raw_label, peer_label = "Llama.generate", "one at a time"
        env["TRILLM_BACKEND"] = "llamacpp"
    else:
        path = args.model or build("50M")
        raw = raw_mlx(path, args.tokens, args.streams, args.rounds)
        raw_label, peer_label = "mlx_lm.stream_generate", "mlx_lm.server"
    with ExitStack() as servers:
        _, url = servers.enter_context(serving(path, env))
        if args.backend == "llamacpp":
            peer_side = (servers.enter_context(one_at_a_time(path)), "bench")
        else:
            peer_side = (servers.enter_context(mlx_lm_server(path)), str(path))
        figures = paired_rounds(
            {"trillm": (url, "bench"), peer_label: peer_side}, args.tokens, args.streams, args.rounds
        )
    ours, peer = figures["trillm"], figures[peer_label]
    rows = [
        ("1 stream tok/s", "single_tps"),
        ("1 stream tok/s, with its prompt", "single_total_tps"),
        (f"{args.streams} streams aggregate tok/s", "aggregate_tps"),
        (f"{args.streams} streams decode tok/s", "aggregate_decode_tps"),
        (f"{args.streams} streams TTFT p50 ms", "ttft_p50_ms"),
        (f"{args.streams} streams TTFT p99 ms", "ttft_p99_ms"),
        (f"{args.streams} streams printing nothing", "silent_streams"),
        *[(f"chat turn {t} TTFT ms", f"turn{t}_ttft_ms") for t in range(1, 5)],
        ("long prompt: stream gap p50 ms", "gap_p50_ms"),
        ("long prompt: stream gap p99 ms", "gap_p99_ms"),
        ("long prompt: stream gap max ms", "gap_max_ms"),
        ("long prompt: its own answer ms", "long_total_ms"),
    ]
    print(f"model: {path}")
    print(f"{'workload':36} {'trillm':>10} {peer_label:>14} {'ratio':>7}")
    for label, key in rows:
        ratio = ours[key] / peer[key] if peer[key] else float("nan")
        print(f"{label:36} {ours[key]:10.1f} {peer[key]:14.1f} {ratio:7.2f}")
    print()
    n = args.streams
    print(f"raw {raw_label}, 1 stream: {raw['single_tps']:.1f} tok/s")
    print(f"trillm / raw, 1 stream:                  {ours['single_tps'] / raw['single_tps']:.3f}")
    if "aggregate_tps" in raw:
        print(
            f"raw mlx-lm, no server: 1 stream with its prompt {raw['single_total_tps']:.1f} tok/s,"
            f" {n} streams through BatchGenerator {raw['aggregate_tps']:.1f} tok/s"
        )
        print(
            f"raw {n} streams / 1 stream, with prompts:    {raw['aggregate_tps'] / raw['single_total_tps']:.2f}"
        )
        print(
            f"trillm {n} streams / raw BatchGenerator:     {ours['aggregate_tps'] / raw['aggregate_tps']:.2f}"
        )
        print(
            f"{peer_label} {n} streams / raw BatchGenerator: {peer['aggregate_tps'] / raw['aggregate_tps']:.2f}"
        )
    print(
        f"trillm {n} streams / 1 stream, with prompts: {ours['aggregate_tps'] / ours['single_total_tps']:.2f}"
    )
    print(
        f"trillm {n} streams / 1 stream, decoding:     {ours['aggregate_decode_tps'] / ours['single_tps']:.2f}"
    )
    print(f"trillm turn 4 TTFT / turn 1 TTFT:        {ours['turn4_ttft_ms'] / ours['turn1_ttft_ms']:.2f}")
    print(f"{peer_label} turn 4 / turn 1:           {peer['turn4_ttft_ms'] / peer['turn1_ttft_ms']:.2f}")
    print(f"trillm stream gap p99 / p50, long prompt: {ours['gap_p99_ms'] / ours['gap_p50_ms']:.2f}")
    print(f"{peer_label} gap p99 / p50:              {peer['gap_p99_ms'] / peer['gap_p50_ms']:.2f}")


if __name__ == "__main__":
    main()
    release_mlx_streams()  # this thread ran mlx_lm itself
