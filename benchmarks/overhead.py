"""Single-stream decode speed through trillm versus mlx_lm's own ``stream_generate``.

Both run in one invocation on the same model directory, prompt and greedy settings, interleaved
(raw, server, raw, server, ...) so machine noise hits both alike; the medians are printed as a
ratio. Usage::

    python -m benchmarks.overhead                 # tiny (64-wide) and ~50M-parameter random models
    python -m benchmarks.overhead --model DIR     # any MLX model directory

The random models are built with the tests' tiny-model builder and cached under
``~/.cache/trillm-bench``. Decode tokens/s is N / (T(2N) - T(N)), measured end to end on both sides so prefill and fixed
costs cancel; time to first token is the time of a one-token request (the server's includes HTTP).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from inference.mlx_backend import release_mlx_streams

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"
CACHE = Path.home() / ".cache" / "trillm-bench"
PRESETS = {"tiny": {"hidden_size": 64, "num_layers": 2}, "50M": {"hidden_size": 768, "num_layers": 10}}


def build(preset: str) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.tiny_model import build_model

    path = CACHE / preset
    if not (path / "model.safetensors").exists():
        build_model(path, seed=1, **PRESETS[preset])  # type: ignore[arg-type]
    return path


def raw_run(model: object, tokenizer: object, tokens: int) -> float:
    """Seconds for mlx_lm.stream_generate to produce ``tokens`` tokens."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    start = time.perf_counter()
    count = 0
    for response in stream_generate(model, tokenizer, PROMPT, max_tokens=tokens, sampler=make_sampler(0.0)):  # type: ignore[arg-type]
        count = response.generation_tokens
    if count != tokens:
        raise RuntimeError(f"model stopped early ({count} tokens)")
    return time.perf_counter() - start


def server_run(client: httpx.Client, name: str, tokens: int) -> float:
    """Seconds for a streamed /api/generate (raw prompt) to deliver ``tokens`` tokens and finish."""
    body = {
        "model": name,
        "prompt": PROMPT,
        "raw": True,
        "options": {"temperature": 0, "num_predict": tokens},
    }
    start = time.perf_counter()
    with client.stream("POST", "/api/generate", json=body) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if chunk["done"] and chunk["eval_count"] != tokens:
                raise RuntimeError(f"model stopped early ({chunk['eval_count']} tokens)")
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def measure(raw: Callable[[int], float], client: httpx.Client, tokens: int, rounds: int) -> dict[str, float]:
    """Interleaved raw and server runs of 1, N and 2N tokens; medians as tokens/s and TTFT.

    ``raw(n)`` is the seconds the backend alone takes for ``n`` tokens; the server side streams
    the model ``bench`` through ``client``.
    """
    server_run(client, "bench", 4)  # load the model and warm up both sides
    raw(4)
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for n in (1, tokens, 2 * tokens):
            times.setdefault(("raw", n), []).append(raw(n))
            times.setdefault(("srv", n), []).append(server_run(client, "bench", n))
    med = {key: statistics.median(values) for key, values in times.items()}
    # Decode speed from the difference of two lengths: prefill and fixed costs cancel out.
    raw_tps = tokens / (med[("raw", 2 * tokens)] - med[("raw", tokens)])
    srv_tps = tokens / (med[("srv", 2 * tokens)] - med[("srv", tokens)])
    return {
        "raw_tps": raw_tps,
        "server_tps": srv_tps,
        "ratio": srv_tps / raw_tps,
        "raw_ttft_ms": med[("raw", 1)] * 1e3,
        "server_ttft_ms": med[("srv", 1)] * 1e3,
    }


def compare(path: Path, tokens: int, rounds: int) -> dict[str, float]:
    """trillm on MLX against ``mlx_lm.stream_generate`` for the model directory ``path``."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(path))[:2]
    # The prefix cache off: every run prefills the same prompt as raw mlx-lm does, so the N / 2N
    # difference isolates decoding (with it on, each request finds the previous one's tokens).
    env = {"TRILLM_BACKEND": "mlx", "TRILLM_PREFIX_CACHE": "0"}
    # One connection, as real clients keep.
    with serving(path, env) as (_, url), httpx.Client(base_url=url, timeout=None) as client:
        return measure(lambda n: raw_run(model, tokenizer, n), client, tokens, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an MLX model directory (default: the presets)")
    parser.add_argument("--tokens", type=int, default=0, help="tokens per run (default: by model)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    targets = {"model": args.model} if args.model else {p: build(p) for p in PRESETS}
    print(
        f"{'model':8} {'raw tok/s':>10} {'trillm tok/s':>13} {'ratio':>7} {'raw TTFT':>10} {'trillm TTFT':>12}"
    )
    for label, path in targets.items():
        tokens = args.tokens or (400 if label == "tiny" else 48)
        result = compare(path, tokens, args.rounds)
        print(
            f"{label:8} {result['raw_tps']:10.1f} {result['server_tps']:13.1f} {result['ratio']:7.3f}"
            f" {result['raw_ttft_ms']:8.1f}ms {result['server_ttft_ms']:10.1f}ms"
        )
    shutil.rmtree(CACHE / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
    release_mlx_streams()  # this thread ran mlx_lm itself
