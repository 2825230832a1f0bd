"""Vision requests: the server against ``mlx-vlm`` called directly, and concurrent image streams.

One run, side by side, on a Qwen2-VL of random weights (256 wide, 4 layers; built once and cached)
and a 224x224 picture (64 image tokens):

1. One greedy request of ``--tokens`` tokens with the picture, by mlx-vlm's ``generate_step``
   directly (its processor, then the loop) and through ``POST /api/chat``, interleaved for
   ``--rounds`` rounds: time to first token (the image encoded and the prompt read) and decode
   tokens/s each way, and the ratios (target >= 0.9 for the decode rate).
2. Four such requests at once: their decode tokens/s each and in all, against one alone. A vision
   model's sequences decode side by side, each with its own forward pass (docs/backends.md), so
   the total is the figure that says what concurrency costs or gains.

    python -m benchmarks.vision [--rounds 3] [--tokens 128] [--blas openblas|reference]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.overhead import CACHE, add_blas_option, apply_blas, start_server

QUESTION = "Describe the picture in detail."


def build_model() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.tiny_vision import build_qwen2_vl

    path = CACHE / "qwen2vl-256"
    if not (path / "model.safetensors").exists():
        build_qwen2_vl(path, width=256, layers=4)
    return path


def picture() -> bytes:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.pictures import picture as make

    return make(224, 224, seed=3)


def library_run(model: Any, processor: Any, image: bytes, tokens: int) -> tuple[float, float]:
    """Seconds to the first token and decode tokens/s of mlx-vlm's own loop."""
    import mlx.core as mx
    from mlx_vlm.generate.ar import generate_step

    from validation.images import decode_image

    started = time.perf_counter()
    content = [{"type": "image"}, {"type": "text", "text": QUESTION}]
    prompt = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    inputs = processor(text=[prompt], images=[decode_image(image)])
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
    steps = generate_step(
        mx.array(inputs["input_ids"]), model, inputs["pixel_values"], None, temperature=0.0, **extra
    )
    first = 0.0
    for n, _ in enumerate(steps):
        if n == 0:
            first = time.perf_counter()
        if n + 1 == tokens:
            break
    end = time.perf_counter()
    return first - started, (tokens - 1) / (end - first)


def server_run(client: httpx.Client, image: bytes, tokens: int) -> tuple[float, float]:
    """Seconds to the first token (as the server measures it) and decode tokens/s."""
    body = {
        "model": "vision",
        "stream": False,
        "messages": [{"role": "user", "content": QUESTION, "images": [base64.b64encode(image).decode()]}],
        "options": {"temperature": 0, "num_predict": tokens},
    }
    final = client.post("/api/chat", json=body, timeout=600).json()
    first = (final["load_duration"] + final["prompt_eval_duration"]) / 1e9
    return first, final["eval_count"] / (final["eval_duration"] / 1e9)


def concurrent(url: str, image: bytes, tokens: int, count: int) -> list[float]:
    rates: list[float] = []

    def run() -> None:
        with httpx.Client(base_url=url) as client:
            rates.append(server_run(client, image, tokens)[1])

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    add_blas_option(parser)
    args = parser.parse_args()
    env = apply_blas(args.blas)
    from mlx_vlm.utils import load

    path = build_model()
    image = picture()
    model, processor = load(str(path))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        (store / "vision").symlink_to(path)
        proc, url = start_server(store, env | {"TRILLM_NUM_PARALLEL": "4"})
        try:
            with httpx.Client(base_url=url) as client:
                server_run(client, image, 8)  # load and warm up both sides
                library_run(model, processor, image, 8)
                lib, srv = [], []
                for _ in range(args.rounds):
                    lib.append(library_run(model, processor, image, args.tokens))
                    srv.append(server_run(client, image, args.tokens))
            lib_first = statistics.median(f for f, _ in lib)
            srv_first = statistics.median(f for f, _ in srv)
            lib_rate = statistics.median(r for _, r in lib)
            srv_rate = statistics.median(r for _, r in srv)
            print(f"mlx-vlm directly : first token {lib_first * 1000:7.1f} ms, {lib_rate:7.1f} tokens/s")
            print(
                f"through trillm   : first token {srv_first * 1000:7.1f} ms, {srv_rate:7.1f} tokens/s   "
                f"ratios {srv_first / lib_first:.2f} (first token), {srv_rate / lib_rate:.3f} (decode)"
            )
            rates = concurrent(url, image, args.tokens, 4)
            each = statistics.median(rates)
            print(
                f"4 image streams at once: {each:7.1f} tokens/s each, {sum(rates):7.1f} in all "
                f"({sum(rates) / srv_rate:.2f} of one alone)"
            )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
