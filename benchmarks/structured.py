"""Decode speed with a JSON Schema enforced versus without, and grammar setup time.

One run, one server, one model with a ≥100k-token vocabulary (a byte-level BPE tokenizer trained
locally on synthetic English and JSON, random weights, built once and cached): generations with and
without ``format`` are interleaved and compared by the server's own ``eval_count / eval_duration``.
Setup is timed in process: checking and compiling a schema at request time, building a model's
llguidance tokenizer (once per model), and creating a request's constraint for a new schema and for
a cached one. Then the real-world corpus (``tests/data/schemas``) is compiled for the same
tokenizer by trillm (request check, grammar, lenient fallback, matcher) and, when it is
installed, by xgrammar (``pip install xgrammar``; it needs PyTorch), side by side: acceptance and
compile time per schema (median, p99). Usage::

    python -m benchmarks.structured [--rounds 5] [--corpus-only]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.overhead import CACHE, serving

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 100000},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 6, "maxItems": 6},
        "status": {"enum": ["new", "paid", "shipped"]},
        "note": {"type": "string", "maxLength": 40},
    },
    "required": ["id", "tags", "status", "note"],
    "additionalProperties": False,
}


def build_big_vocab() -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.tiny_model import build_model

    path = CACHE / "vocab120k"
    if not (path / "model.safetensors").exists():
        build_model(path, vocab_size=120000, corpus_lines=400000, pad_vocab_to=128, hidden_size=64, seed=3)
    return path


def decode_rate(client: httpx.Client, seed: int, fmt: dict[str, Any] | None) -> tuple[float, int]:
    body: dict[str, Any] = {
        "model": "bench",
        "prompt": "Order:",
        "stream": False,
        "options": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": seed, "num_predict": 200},
    }
    if fmt is not None:
        body["format"] = fmt
    r = client.post("/api/generate", json=body)
    r.raise_for_status()
    out = r.json()
    return out["eval_count"] / (out["eval_duration"] / 1e9), out["eval_count"]


def setup_times(path: Path) -> dict[str, float]:
    from llguidance.hf import from_tokenizer
    from transformers import PreTrainedTokenizerFast

    from validation.constraint import GrammarCache
    from validation.structured import prepare_format

    hf = PreTrainedTokenizerFast.from_pretrained(str(path))
    n_vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    eos = [hf.convert_tokens_to_ids("<|im_end|>")]
    stamps = [time.perf_counter()]
    tokenizer = from_tokenizer(hf, n_vocab=n_vocab, eos_token=eos)
    stamps.append(time.perf_counter())
    fmt = prepare_format(SCHEMA)
    stamps.append(time.perf_counter())
    prepare_format(SCHEMA)
    stamps.append(time.perf_counter())
    cache = GrammarCache(tokenizer, n_vocab, eos)
    cache.constraint(fmt.grammar).bitmask()
    stamps.append(time.perf_counter())
    cache.constraint(fmt.grammar).bitmask()
    stamps.append(time.perf_counter())
    spans = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "tokenizer_s": spans[0],
        "request_check_ms": spans[1] * 1e3,
        "repeat_check_ms": spans[2] * 1e3,
        "new_schema_ms": spans[3] * 1e3,
        "cached_schema_ms": spans[4] * 1e3,
    }


XGRAMMAR_CAP_S = 30.0  # a schema xgrammar takes longer over counts as refused


def _xgrammar_compile(path: str, n_vocab: int, text: str) -> bool:
    """In a worker process: compile ``text`` with xgrammar (its compiler kept per process)."""
    global _XGR
    import xgrammar
    from transformers import PreTrainedTokenizerFast

    if "_XGR" not in globals():
        info = xgrammar.TokenizerInfo.from_huggingface(
            PreTrainedTokenizerFast.from_pretrained(path), vocab_size=n_vocab
        )
        _XGR = xgrammar.GrammarCompiler(info, cache_enabled=False)
    try:
        _XGR.compile_json_schema(text, any_whitespace=False)
    except Exception:
        return False
    return True


_POOL: list[Any] = []


def _xgrammar_capped(path: str, n_vocab: int, schema: dict[str, Any]) -> bool:
    """xgrammar on one schema in a worker process, given up (and the worker killed) past the cap."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import TimeoutError as Timeout

    if not _POOL:
        _POOL.append(ProcessPoolExecutor(max_workers=1))
        _POOL[0].submit(_xgrammar_compile, path, n_vocab, "{}").result()  # load outside the timing
    future = _POOL[0].submit(_xgrammar_compile, path, n_vocab, json.dumps(schema))
    try:
        return bool(future.result(timeout=XGRAMMAR_CAP_S))
    except Timeout:
        pool = _POOL.pop()
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        return False


def corpus_compile(path: Path) -> None:
    """Acceptance and compile time over the corpus, trillm beside xgrammar."""
    from llguidance import LLMatcher
    from llguidance.hf import from_tokenizer
    from transformers import PreTrainedTokenizerFast

    from tests.unit.test_schema_corpus import corpus
    from validation.request_checks import FieldError
    from validation.structured import compile_schema

    hf = PreTrainedTokenizerFast.from_pretrained(str(path))
    n_vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    tokenizer = from_tokenizer(hf, n_vocab=n_vocab, eos_token=[hf.convert_tokens_to_ids("<|im_end|>")])
    schemas = corpus()

    def trillm(schema: dict[str, Any]) -> bool:
        try:
            fmt = compile_schema(schema)
        except FieldError:
            return False
        return not LLMatcher(tokenizer, fmt.grammar).is_error()

    engines: dict[str, Any] = {"trillm (llguidance)": trillm}
    try:
        from importlib.metadata import version

        engines["xgrammar " + version("xgrammar")] = functools.partial(_xgrammar_capped, str(path), n_vocab)
    except ImportError:
        print("(xgrammar is not installed: pip install xgrammar to compare)")
    print(f"corpus: {len(schemas)} schemas, vocabulary {n_vocab}")
    for name, compile_one in engines.items():
        seconds, accepted = [], 0
        for schema in schemas.values():
            start = time.perf_counter()
            accepted += compile_one(schema)
            seconds.append(time.perf_counter() - start)
        seconds.sort()
        print(
            f"  {name:22} accepted {accepted / len(schemas):6.1%}   compile median "
            f"{seconds[len(seconds) // 2] * 1e3:7.1f} ms   p99 {seconds[int(len(seconds) * 0.99)] * 1e3:8.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus-only", action="store_true", help="only the corpus comparison")
    args = parser.parse_args()
    path = build_big_vocab()
    if args.corpus_only:
        return corpus_compile(path)
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    with serving(path) as (_, url), httpx.Client(base_url=url, timeout=None) as client:
        decode_rate(client, 0, SCHEMA)  # load the model, build its llguidance tokenizer
        free, constrained, lengths = [], [], []
        for seed in range(1, args.rounds + 1):
            free.append(decode_rate(client, seed, None)[0])
            rate, count = decode_rate(client, seed, SCHEMA)
            constrained.append(rate)
            lengths.append(count)
    setup = setup_times(path)
    free_tps, cons_tps = statistics.median(free), statistics.median(constrained)
    print(f"model: random weights, hidden 64, 2 layers, vocabulary {vocab}")
    print(
        f"unconstrained {free_tps:8.1f} tok/s   with schema {cons_tps:8.1f} tok/s   ratio {cons_tps / free_tps:.3f}"
    )
    print(f"(schema replies: median {statistics.median(lengths):.0f} tokens)")
    print(
        f"setup: llguidance tokenizer {setup['tokenizer_s']:.2f} s once per model; request-time check "
        f"{setup['request_check_ms']:.1f} ms (repeated schema {setup['repeat_check_ms']:.2f} ms); new schema {setup['new_schema_ms']:.1f} ms; "
        f"cached schema {setup['cached_schema_ms']:.2f} ms"
    )
    corpus_compile(path)


if __name__ == "__main__":
    main()
