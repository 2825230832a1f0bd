"""Single-stream decode speed through trillm versus mlx_lm's own ``stream_generate``.

Both run in one invocation on the same model directory, prompt and greedy settings, interleaved
(raw, server, raw, server, ...) so machine noise hits both alike. Usage::

    python -m benchmarks.overhead                 # tiny (64-wide) and ~50M-parameter random models
    python -m benchmarks.overhead --model DIR     # any MLX model directory
    python -m benchmarks.overhead --blas reference  # MLX's bundled reference BLAS on both sides

The random models are built with the tests' tiny-model builder and cached under
``~/.cache/trillm-bench``; the seed is one whose greedy output is visible text, so the server
streams one chunk per token, as it does for a real model.

Every token's arrival is timed: in this process for raw generation, at the HTTP client for the
server. Decode tokens/s is one over the median gap between consecutive tokens, pooled over the
rounds (robust to this machine's bursts of noise); ``mean`` is the same from the mean gap
(first to last token of each run, median over runs). Time to first token includes HTTP on the
server's side.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from inference.backends.mlx import blas_shim as mlx_blas
from inference.backends.mlx.backend import release_mlx_streams
from inference.backends.mlx.distributed.launcher import free_port

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"
CHAT_PROMPTS = [  # the batching benchmark's clients
    "Tell me about the sea.",
    "Write a short poem about a robot learning to paint.",
    "What is the capital of France?",
    "List three colours and one animal for each of them, please.",
    "Why is the sky blue during the day and red at sunset?",
    "Explain how a bicycle stays upright when it moves.",
    "Describe a quiet morning in a small mountain village.",
    "Give me a recipe for a simple tomato soup.",
]
CACHE = Path.home() / ".cache" / "trillm-bench"
PRESETS = {"tiny": {"hidden_size": 64, "num_layers": 2}, "50M": {"hidden_size": 768, "num_layers": 10}}


def session(round_: int) -> list[dict[str, str]]:
    """The system message that starts every conversation of a batching round: each round's
    prompts are new to both servers' prompt caches."""
    return [{"role": "system", "content": f"Session {round_}."}]


def build(preset: str) -> Path:
    """The preset's random model, built once with the first seed whose greedy output is visible."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.tiny_model import build_model

    path = CACHE / preset
    seed = 1
    while not (path / "model.safetensors").exists() or not _speaks(path):
        shutil.rmtree(path, ignore_errors=True)
        build_model(path, seed=seed, **PRESETS[preset])  # type: ignore[arg-type]
        seed += 1
    return path


def _speaks(path: Path) -> bool:
    """Whether the model's greedy continuations print text: of PROMPT, and of the batching
    benchmark's chat prompts (rendered with the chat template, in the first three rounds).

    A random model repeats one token; when that is a lone UTF-8 lead byte nothing is ever
    streamed, which would leave the server's per-token path out of the measurement.
    """
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(path))[:2]
    system = {"role": "system", "content": "You are a patient storyteller. " * 4}
    chats = [[{"role": "user", "content": p}] for p in CHAT_PROMPTS]
    chats.append([system, {"role": "user", "content": CHAT_PROMPTS[1]}])
    # The batching benchmark's rounds open with a session message of their own.
    for round_ in range(1, 4):
        chats += [[*session(round_), {"role": "user", "content": p}] for p in CHAT_PROMPTS]
    prompts = [PROMPT] + [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats
    ]
    for prompt in prompts:
        text = tokenizer.decode([r.token for r in raw_stream(model, tokenizer, 8, prompt)])
        if not text.strip() or "\ufffd" in text:
            return False
    return True


def raw_stream(model: object, tokenizer: object, tokens: int, prompt: str = PROMPT) -> Iterator[Any]:
    """mlx_lm.stream_generate, greedy: one response per token."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    return stream_generate(model, tokenizer, prompt, max_tokens=tokens, sampler=make_sampler(0.0))  # type: ignore[arg-type,no-any-return]


def raw_run(model: object, tokenizer: object, tokens: int) -> list[float]:
    """Seconds from the call to each of ``tokens`` tokens of mlx_lm.stream_generate."""
    start = time.perf_counter()
    arrivals = [time.perf_counter() - start for _ in raw_stream(model, tokenizer, tokens)]
    if len(arrivals) != tokens:
        raise RuntimeError(f"model stopped early ({len(arrivals)} tokens)")
    return arrivals


def server_run(client: httpx.Client, name: str, tokens: int) -> list[float]:
    """Seconds from sending a streamed /api/generate (raw prompt) to each chunk that holds text."""
    body = {
        "model": name,
        "prompt": PROMPT,
        "raw": True,
        "options": {"temperature": 0, "num_predict": tokens},
    }
    start = time.perf_counter()
    arrivals: list[float] = []
    with client.stream("POST", "/api/generate", json=body) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if chunk.get("response"):
                arrivals.append(time.perf_counter() - start)
            if chunk["done"] and chunk["eval_count"] != tokens:
                raise RuntimeError(f"model stopped early ({chunk['eval_count']} tokens)")
    return arrivals


def percentile(values: list[float], q: float) -> float:
    """The value below which a fraction ``q`` of ``values`` lies (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def add_blas_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blas",
        choices=["openblas", "reference"],
        default="openblas",
        help="what MLX's float32 matrix products run on, alike on every side (default: openblas, as "
        "trillm serve does on Linux; reference: MLX's bundled netlib BLAS)",
    )


def apply_blas(kind: str) -> dict[str, str]:
    """Put this process on ``kind`` of BLAS (before it imports MLX) and return what a trillm
    server's environment needs to match; an MLX peer gets ``mlx_blas.preload_env()``."""
    if kind == "reference":
        return {"TRILLM_MLX_OPENBLAS": "0"}
    print(f"MLX matrix products: {mlx_blas.install().describe()}")
    return {}


def start_server(store: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = os.environ | (env or {}) | {"TRILLM_HOST": f"127.0.0.1:{port}", "TRILLM_MODELS": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for(proc, url)
    return proc, url


def wait_for(proc: subprocess.Popen[bytes], url: str, seconds: float = 60.0) -> None:
    """Until ``url`` answers; kills ``proc`` and raises if it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server at {url} did not start")


@contextmanager
def serving(path: Path, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``trillm serve`` (with ``env`` added to its environment) on a temporary store holding
    ``path`` (a model directory or a GGUF file) as the model ``bench``."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        (store / ("bench.gguf" if path.suffix == ".gguf" else "bench")).symlink_to(path.resolve())
        proc, url = start_server(store, env)
        try:
            yield proc, url
        finally:
            proc.terminate()
            proc.wait(10)


def measure(
    raw: Callable[[int], list[float]], client: httpx.Client, tokens: int, rounds: int
) -> dict[str, float]:
    """Interleaved raw and server runs of ``tokens`` tokens: decode tokens/s, ratios and TTFT.

    ``raw(n)`` gives the arrival time of each of ``n`` tokens from the backend alone; the
    server side streams the model ``bench`` through ``client``.
    """
    server_run(client, "bench", 4)  # load the model and warm up both sides
    raw(4)
    runs: dict[str, list[list[float]]] = {"raw": [], "srv": []}
    for _ in range(rounds):
        runs["raw"].append(raw(tokens))
        runs["srv"].append(server_run(client, "bench", tokens))
    result: dict[str, float] = {}
    for side, label in (("raw", "raw"), ("srv", "server")):
        gaps = [b - a for arrivals in runs[side] for a, b in itertools.pairwise(arrivals)]
        means = [(a[-1] - a[0]) / (len(a) - 1) for a in runs[side] if len(a) > 1]
        if not gaps:
            raise RuntimeError(f"{label}: no two tokens arrived apart (does the model print anything?)")
        result[f"{label}_tps"] = 1 / statistics.median(gaps)
        result[f"{label}_tps_mean"] = 1 / statistics.median(means)
        result[f"{label}_ttft_ms"] = statistics.median(a[0] for a in runs[side]) * 1e3
    result["ratio"] = result["server_tps"] / result["raw_tps"]
    result["ratio_mean"] = result["server_tps_mean"] / result["raw_tps_mean"]
    return result


def compare(path: Path, tokens: int, rounds: int, blas_env: dict[str, str]) -> dict[str, float]:
    """trillm on MLX against ``mlx_lm.stream_generate`` for the model directory ``path``."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(path))[:2]
    # The prefix cache off: every run prefills the same prompt as raw mlx-lm does, so the N / 2N
    # difference isolates decoding (with it on, each request finds the previous one's tokens).
    env = {"TRILLM_BACKEND": "mlx", "TRILLM_PREFIX_CACHE": "0"} | blas_env
    # One connection, as real clients keep.
    with serving(path, env) as (_, url), httpx.Client(base_url=url, timeout=None) as client:
        return measure(lambda n: raw_run(model, tokenizer, n), client, tokens, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an MLX model directory (default: the presets)")
    parser.add_argument("--tokens", type=int, default=0, help="tokens per run (default: by model)")
    parser.add_argument("--rounds", type=int, default=5)
    add_blas_option(parser)
    args = parser.parse_args()
    blas_env = apply_blas(args.blas)
    targets = {"model": args.model} if args.model else {p: build(p) for p in PRESETS}
    print(
        f"{'model':8} {'raw tok/s':>10} {'trillm tok/s':>13} {'ratio':>7} {'(mean)':>7}"
        f" {'raw TTFT':>10} {'trillm TTFT':>12}"
    )
    for label, path in targets.items():
        tokens = args.tokens or (400 if label == "tiny" else 64)
        result = compare(path, tokens, args.rounds, blas_env)
        print(
            f"{label:8} {result['raw_tps']:10.1f} {result['server_tps']:13.1f} {result['ratio']:7.3f}"
            f" {result['ratio_mean']:7.3f}"
            f" {result['raw_ttft_ms']:8.1f}ms {result['server_ttft_ms']:10.1f}ms"
        )
    shutil.rmtree(CACHE / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
    release_mlx_streams()  # this thread ran mlx_lm itself
