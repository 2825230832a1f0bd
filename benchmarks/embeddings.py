"""Embedding throughput: the server against ``mlx-embeddings`` called directly, and beside chat.

One run, side by side, on a model of all-MiniLM-L6-v2's shape (BERT, 384 wide, 6 layers, random
weights, a WordPiece vocabulary trained locally; built once and cached):

1. ``--inputs`` texts of about 64 tokens, embedded by the library directly (batches of 64, padded
   and mean-pooled, as a script would) and through ``POST /api/embed`` as one request,
   interleaved for ``--rounds`` rounds: embeddings/s each way and the ratio (target >= 0.9).
2. The same request while 4 chat streams of a 50M-parameter chat model run on the same server: embeddings/s
   beside the streams, and the streams' tokens/s beside the embeddings, each against alone.

    python -m benchmarks.embeddings [--rounds 3] [--inputs 512] [--blas openblas|reference]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.overhead import CACHE, add_blas_option, apply_blas, build, start_server

STEP = 64  # inputs per forward pass, on both sides


def build_encoder() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.tiny_embedding import build_encoder as build_it

    path = CACHE / "minilm-shape"
    if not (path / "model.safetensors").exists():
        build_it(path, width=384, layers=6, heads=6, vocab_size=8000)
    return path


def texts(count: int, tokenizer: Any) -> list[str]:
    """``count`` distinct texts of about 64 tokens each."""
    from tests.support.tiny_model import synthetic_corpus

    lines = iter(synthetic_corpus(count * 8, seed=7))
    out = []
    while len(out) < count:
        text = ""
        while len(tokenizer.encode(text)) < 64:
            text += next(lines) + " "
        out.append(text.strip())
    return out


def library_seconds(model: Any, tokenizer: Any, inputs: list[str]) -> float:
    import mlx.core as mx

    start = time.perf_counter()
    for i in range(0, len(inputs), STEP):
        ids = [tokenizer.encode(t) for t in inputs[i : i + STEP]]
        width = max(map(len, ids))
        batch = mx.array([t + [0] * (width - len(t)) for t in ids])
        mask = mx.array([[1] * len(t) + [0] * (width - len(t)) for t in ids])
        mx.eval(model(batch, attention_mask=mask).text_embeds)
    return time.perf_counter() - start


def server_seconds(client: httpx.Client, inputs: list[str]) -> float:
    start = time.perf_counter()
    reply = client.post("/api/embed", json={"model": "embed", "input": inputs}, timeout=600)
    reply.raise_for_status()
    assert len(reply.json()["embeddings"]) == len(inputs)
    return time.perf_counter() - start


def chat_streams(
    url: str, count: int, tokens: int, stop: threading.Event, rates: list[float]
) -> list[threading.Thread]:
    """``count`` threads, each streaming chats of ``tokens`` tokens until ``stop``; every chat's
    decode rate (the server's eval_count / eval_duration) goes into ``rates``."""

    def run(i: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            while not stop.is_set():
                body = {
                    "model": "chat",
                    "messages": [{"role": "user", "content": f"Tell story {i}."}],
                    "stream": False,
                    "options": {"num_predict": tokens, "temperature": 0},
                }
                final = client.post("/api/chat", json=body).json()
                rates.append(final["eval_count"] / (final["eval_duration"] / 1e9))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", type=int, default=512)
    add_blas_option(parser)
    args = parser.parse_args()
    env = apply_blas(args.blas)
    from mlx_embeddings.utils import load

    path = build_encoder()
    chat = build("50M")  # a decode step of some milliseconds, as a real model on a Mac takes
    model, tokenizer = load(str(path))
    inputs = texts(args.inputs, tokenizer)
    lengths = sorted(len(tokenizer.encode(t)) for t in inputs)
    print(f"{len(inputs)} inputs, median {lengths[len(lengths) // 2]} tokens; model {path.name}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        (store / "embed").symlink_to(path)
        (store / "chat").symlink_to(chat)
        proc, url = start_server(store, env | {"TRILLM_NUM_PARALLEL": "4"})
        try:
            with httpx.Client(base_url=url) as client:
                server_seconds(client, inputs[:STEP])  # load and warm up both sides
                library_seconds(model, tokenizer, inputs[:STEP])
                lib, srv = [], []
                for _ in range(args.rounds):
                    lib.append(library_seconds(model, tokenizer, inputs))
                    srv.append(server_seconds(client, inputs))
                lib_rate = len(inputs) / statistics.median(lib)
                srv_rate = len(inputs) / statistics.median(srv)
                print(f"library directly : {lib_rate:8.1f} embeddings/s")
                print(f"through trillm   : {srv_rate:8.1f} embeddings/s   ratio {srv_rate / lib_rate:.3f}")

                alone_rates: list[float] = []
                stop = threading.Event()
                threads = chat_streams(url, 4, 200, stop, alone_rates)
                time.sleep(8)
                stop.set()
                for thread in threads:
                    thread.join()
                beside_rates: list[float] = []
                stop = threading.Event()
                threads = chat_streams(url, 4, 200, stop, beside_rates)
                time.sleep(1)
                beside = [server_seconds(client, inputs) for _ in range(args.rounds)]
                stop.set()
                for thread in threads:
                    thread.join()
                busy_rate = len(inputs) / statistics.median(beside)
                chat_alone = statistics.median(alone_rates)
                chat_beside = statistics.median(beside_rates)
                print(
                    f"beside 4 chat streams: {busy_rate:8.1f} embeddings/s ({busy_rate / srv_rate:.2f} of alone); "
                    f"the streams {chat_beside:.1f} tokens/s each ({chat_beside / chat_alone:.2f} of alone)"
                )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
