"""llama.cpp: single-stream decode speed through trillm versus raw llama-cpp-python, and the two
backends side by side on one model.

One invocation measures, interleaved round by round so machine noise hits every side alike:

* raw ``llama_cpp.Llama.generate`` on a GGUF file, and trillm serving that file (llama.cpp backend);
* raw ``mlx_lm.stream_generate`` on the same model in the MLX layout, and trillm serving it (MLX).

The GGUF is the MLX model's own weights (F32), written by the tests' converter, so both backends
run the very same model. Decode tokens/s comes from the gaps between consecutive tokens, as in
:mod:`benchmarks.overhead`. Usage::

    python -m benchmarks.llamacpp               # the tiny and ~50M-parameter random models
    python -m benchmarks.llamacpp --preset 50M --rounds 7
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

from benchmarks.overhead import (
    CACHE,
    PRESETS,
    PROMPT,
    add_blas_option,
    apply_blas,
    build,
    compare,
    measure,
    serving,
)
from inference.backends.mlx.backend import release_mlx_streams


def gguf_of(preset: str) -> Path:
    """The preset model written as GGUF (cached beside the MLX directory)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.tiny_gguf import write_gguf

    source = build(preset)
    target = CACHE / f"{preset}.gguf"
    if not target.exists() or target.stat().st_mtime < (source / "model.safetensors").stat().st_mtime:
        write_gguf(source, target)
    return target


def llama_raw_run(llama: object, tokens: int) -> list[float]:
    """Seconds from the call to each of ``tokens`` tokens of ``Llama.generate`` (greedy)."""
    prompt = llama.tokenize(PROMPT.encode(), add_bos=False)  # type: ignore[attr-defined]
    start = time.perf_counter()
    arrivals: list[float] = []
    for _ in llama.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):  # type: ignore[attr-defined]
        arrivals.append(time.perf_counter() - start)
        if len(arrivals) == tokens:
            break
    if len(arrivals) != tokens:
        raise RuntimeError(f"model stopped early ({len(arrivals)} tokens)")
    return arrivals


def llamacpp_side(gguf: Path, tokens: int, rounds: int) -> dict[str, float]:
    from llama_cpp import Llama

    from inference.backends.llamacpp.backend import describe_gguf

    # The window the server loads the model with: TRILLM_CONTEXT_LENGTH's default, capped by the model's.
    window = min(4096, describe_gguf(gguf).context_length)
    llama = Llama(model_path=str(gguf), n_ctx=window, n_batch=512, verbose=False)
    try:
        with (
            serving(gguf, {"TRILLM_BACKEND": "llamacpp"}) as (_, url),
            httpx.Client(base_url=url, timeout=None) as client,
        ):
            return measure(lambda n: llama_raw_run(llama, n), client, tokens, rounds)
    finally:
        llama.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append", help="default: all")
    parser.add_argument("--tokens", type=int, default=0, help="tokens per run (default: by model)")
    parser.add_argument("--rounds", type=int, default=5)
    add_blas_option(parser)
    args = parser.parse_args()
    blas_env = apply_blas(args.blas)
    print(
        f"{'model':6} {'backend':10} {'raw tok/s':>10} {'trillm tok/s':>13} {'ratio':>7} {'(mean)':>7}"
        f" {'raw TTFT':>10} {'trillm TTFT':>12}"
    )
    for preset in args.preset or list(PRESETS):
        tokens = args.tokens or (400 if preset == "tiny" else 64)
        sides = {
            "llama.cpp": llamacpp_side(gguf_of(preset), tokens, args.rounds),
            "mlx": compare(build(preset), tokens, args.rounds, blas_env),
        }
        for backend, result in sides.items():
            print(
                f"{preset:6} {backend:10} {result['raw_tps']:10.1f} {result['server_tps']:13.1f}"
                f" {result['ratio']:7.3f} {result['ratio_mean']:7.3f} {result['raw_ttft_ms']:8.1f}ms {result['server_ttft_ms']:10.1f}ms"
            )
        speedup = sides["llama.cpp"]["raw_tps"] / sides["mlx"]["raw_tps"]
        print(f"{preset:6} llama.cpp ÷ MLX on this CPU (raw decode): {speedup:.2f}")


if __name__ == "__main__":
    main()
    release_mlx_streams()  # this thread ran mlx_lm itself
