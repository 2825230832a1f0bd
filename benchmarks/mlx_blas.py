"""MLX on a Linux CPU: its bundled reference BLAS against NumPy's OpenBLAS (``inference/backends/mlx/blas_shim.py``).

Each side runs in its own process (the BLAS is chosen before MLX is imported), one after the
other, on the same products and the same model::

    python -m benchmarks.mlx_blas                # the ~50M-parameter random model
    python -m benchmarks.mlx_blas --model DIR    # any float32 MLX model directory

It prints the time of a 512x2048 float32 product at 1, 8 and 128 rows, then raw
``mlx_lm.stream_generate`` on the model: time to first token of a 66-token prompt and decode
tokens/s (best of two runs), with the ratios OpenBLAS over reference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROWS = (1, 8, 128)
PROMPT = "The quick brown fox jumps over the lazy dog. " * 6


def side(model: str, tokens: int) -> dict[str, float]:
    """In this process: the products and the model's speed on whatever BLAS MLX got."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    out: dict[str, float] = {}
    weight = mx.random.normal((2048, 512))
    for rows in ROWS:
        x = mx.random.normal((rows, 512))
        mx.eval(weight, x, x @ weight.T)
        start = time.perf_counter()
        for _ in range(10):
            mx.eval(x @ weight.T)
        out[f"matmul_{rows}_ms"] = (time.perf_counter() - start) / 10 * 1e3
    loaded, tokenizer = mlx_lm.load(model)[:2]
    for _ in range(2):
        start = time.perf_counter()
        count, first = 0, 0.0
        for _response in mlx_lm.stream_generate(
            loaded, tokenizer, PROMPT, max_tokens=tokens, sampler=make_sampler(0.0)
        ):
            count += 1
            if count == 1:
                first = time.perf_counter()
        rate = (count - 1) / (time.perf_counter() - first)
        out["ttft_ms"] = min(out.get("ttft_ms", 1e12), (first - start) * 1e3)
        out["decode_tps"] = max(out.get("decode_tps", 0.0), rate)
    return out


def run_side(blas: str, model: Path, tokens: int) -> dict[str, float]:
    code = (
        "import json, sys\n"
        "from inference.backends.mlx import blas_shim as mlx_blas\n"
        f"choice = mlx_blas.install({blas == 'openblas'})\n"
        "print(choice.describe(), file=sys.stderr)\n"
        "from benchmarks.mlx_blas import side\n"
        f"print(json.dumps(side({str(model)!r}, {tokens})))\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    print(f"{blas}: {done.stderr.strip().splitlines()[-1]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    from benchmarks.overhead import build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a float32 MLX model directory (default: ~50M random)")
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    model = args.model or build("50M")
    reference = run_side("reference", model, args.tokens)
    openblas = run_side("openblas", model, args.tokens)
    print(f"{'measure':32} {'reference':>10} {'OpenBLAS':>10} {'speed-up':>9}")
    for rows in ROWS:
        key = f"matmul_{rows}_ms"
        label = f"512x2048 product, {rows} rows, ms"
        print(
            f"{label:32} {reference[key]:10.3f} {openblas[key]:10.3f} {reference[key] / openblas[key]:8.1f}x"
        )
    ttft = "time to first token, ms"
    print(f"{ttft:32} {reference['ttft_ms']:10.1f} {openblas['ttft_ms']:10.1f}", end="")
    print(f" {reference['ttft_ms'] / openblas['ttft_ms']:8.1f}x")
    decode = "decode tok/s"
    print(f"{decode:32} {reference['decode_tps']:10.1f} {openblas['decode_tps']:10.1f}", end="")
    print(f" {openblas['decode_tps'] / reference['decode_tps']:8.1f}x")


if __name__ == "__main__":
    main()
