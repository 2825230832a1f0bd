"""The MLX backend: Hugging Face / mlx-community model directories run with ``mlx-lm``.

With :mod:`inference.backends.mlx.batch`, the only modules that import MLX. Everything here runs on the
engine's worker thread, so MLX's thread-local streams stay on one thread. Loading and describing
models live here; chat templates, tokenizing and the grammar mask in
:mod:`inference.backends.mlx.prompting`; batched decoding and the prefix cache in
:mod:`inference.backends.mlx.batch`, on mlx-lm's own ``BatchGenerator``; vision models (mlx-vlm) in
:mod:`inference.backends.mlx.vision`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.backends.base import ModelInfo, ModelLoadError, ModelUnavailable, SamplingParams
from inference.backends.mlx import blas_shim as mlx_blas
from inference.backends.mlx.batch import MlxBatch, PrefixCache, make_sampler
from inference.backends.mlx.embedding import MlxEmbeddingModel
from inference.backends.mlx.prompting import MlxPrompting
from inference.backends.mlx.vision import MlxVisionModel
from inference.backends.model_kinds import GenerationOnly
from inference.backends.sentence_layout import pooling_of

_DTYPE_NAMES = {"F32": "F32", "F16": "F16", "BF16": "BF16"}


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path.name}: implausible safetensors header")
        header: dict[str, Any] = json.loads(f.read(length))
    return header


def _count_parameters(path: Path) -> tuple[int, str]:
    """Parameter count and dominant dtype from the safetensors headers (no weights read)."""
    total = 0
    dtypes: dict[str, int] = {}
    for file in sorted(path.glob("*.safetensors")):
        for name, entry in _safetensors_header(file).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            total += count
            dtypes[entry["dtype"]] = dtypes.get(entry["dtype"], 0) + count
    dominant = max(dtypes, key=lambda d: dtypes[d]) if dtypes else "unknown"
    return total, dominant


def describe_directory(path: Path) -> ModelInfo:
    """Facts about a Hugging Face layout model directory, from its small files only."""
    config = json.loads((path / "config.json").read_text())
    chat_template = None
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.exists():
        chat_template = json.loads(tokenizer_config.read_text()).get("chat_template")
    jinja = path / "chat_template.jinja"
    if chat_template is None and jinja.exists():
        chat_template = jinja.read_text()
    params, dtype = _count_parameters(path)
    quant = config.get("quantization") or config.get("quantization_config")
    if isinstance(quant, dict) and "bits" in quant:
        quantization = f"Q{quant['bits']}"
        # Packed quantised weights undercount parameters by 32/bits.
        params = params * 32 // int(quant["bits"])
    else:
        quantization = _DTYPE_NAMES.get(dtype, dtype)
    text_config = config.get("text_config", {})
    context = config.get("max_position_embeddings") or text_config.get("max_position_embeddings")
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return ModelInfo(
        family=str(config.get("model_type", "unknown")),
        context_length=int(context or 4096),
        parameter_count=params,
        quantization=quantization,
        chat_template=chat_template if isinstance(chat_template, str) else None,
        size_bytes=size,
        pooling=pooling_of(path, config),
        vision=isinstance(config.get("vision_config"), dict),
        extra={
            "embedding_length": config.get("hidden_size"),
            "block_count": config.get("num_hidden_layers"),
            "attention.head_count": config.get("num_attention_heads"),
            "attention.head_count_kv": config.get("num_key_value_heads"),
            "vocab_size": config.get("vocab_size"),
        },
    )


class MlxModel(MlxPrompting, GenerationOnly):
    """A model loaded with ``mlx_lm.load``."""

    max_sequences = 0

    def __init__(
        self, path: Path, cache: CacheSettings, info: ModelInfo, loaded: tuple[Any, Any] | None = None
    ) -> None:
        """Load ``path`` with ``mlx_lm.load``, or take ``loaded`` (a model and its tokenizer
        loaded otherwise: one rank's shard of a distributed model)."""
        import mlx_lm

        self.info = info  # describe_directory(path), read once by the backend's load
        try:
            if loaded is None:
                loaded = mlx_lm.load(str(path))[:2]
            self._model: Any = loaded[0]
            self._tokenizer: Any = loaded[1]
        except Exception as error:  # mlx-lm raises many kinds; all mean "unusable files"
            raise ModelLoadError(f"{type(error).__name__}: {error}") from error
        self._eos = set(self._tokenizer.eos_token_ids)
        self._grammars = None
        self._n_vocab = int(self._model.args.vocab_size)
        self._interleave_chunk = cache.interleave_chunk
        self.prefix_cache = PrefixCache(cache.entries, cache.max_bytes) if cache.entries > 0 else None

    def open_batch(self) -> MlxBatch:
        return self._batch(lambda params: make_sampler(params, self._n_vocab))

    def _batch(self, sampler: Callable[[SamplingParams], Any]) -> MlxBatch:
        return MlxBatch(
            self._model,
            self._tokenizer,
            self._eos,
            make_sampler=sampler,
            make_processors=self.processors,
            prefix_cache=self.prefix_cache,
            interleave_chunk=self._interleave_chunk,
        )

    def close(self) -> None:
        import gc

        # Drop every reference to the weights (the model, and the grammar cache that holds the
        # tokenizer), collect cycles, then hand MLX's cached buffers back to the system.
        self._model = None
        self._grammars = None
        self.prefix_cache = None
        gc.collect()
        free_cached_memory()


@dataclass(frozen=True)
class CacheSettings:
    """Prefix cache bounds (``entries`` 0 turns it off) and the prefill chunk a batch starts from
    while other sequences decode (then sized from the steps' durations)."""

    entries: int = 16
    max_bytes: int = 2 << 30
    interleave_chunk: int = 32


class MlxBackend:
    """Serves directories holding ``config.json`` and ``*.safetensors`` weights."""

    name = "mlx"

    def __init__(self, cache: CacheSettings | None = None, *, openblas: bool = True) -> None:
        self.cache = cache or CacheSettings()
        self.openblas = openblas  # Linux: route MLX's float32 products to OpenBLAS (mlx_blas)

    def can_load(self, path: Path) -> bool:
        return (path / "config.json").is_file() and any(path.glob("*.safetensors"))

    def describe(self, path: Path) -> ModelInfo:
        return describe_directory(path)

    def load(self, path: Path, num_ctx: int | None = None) -> MlxModel | MlxEmbeddingModel | MlxVisionModel:
        if not any(path.glob("tokenizer*")):
            raise ModelLoadError("no tokenizer files (tokenizer.json / tokenizer_config.json)")
        mlx_blas.install(self.openblas)  # before the first load imports MLX; decided once
        mlx_blas.verify()  # MLX is imported now: check the products really reach the shim
        try:
            info = describe_directory(path)
            if info.embedding:
                return MlxEmbeddingModel(path, info)
            if info.vision:
                return MlxVisionModel(path, info)
            return self.text_model(path, info)
        except (ModelLoadError, ModelUnavailable):
            raise
        except Exception as error:
            raise ModelLoadError(f"{type(error).__name__}: {error}") from error

    def text_model(self, path: Path, info: ModelInfo) -> MlxModel:
        """A text generation model (a distributed server's backend shards it instead)."""
        return MlxModel(path, self.cache, info)

    def release_thread(self) -> None:
        release_mlx_streams()


_wedged = False


def wedge() -> None:
    """A distributed collective may never finish (its peer was lost): from now on MLX's waits
    for every stream (``clear_cache``, ``clear_streams``) would never return, so they are skipped."""
    global _wedged
    _wedged = True


def wedged() -> bool:
    return _wedged


def free_cached_memory() -> None:
    """Hand MLX's cached buffers back to the system (after an unload), unless a stream is wedged."""
    import mlx.core as mx

    if not _wedged:
        mx.clear_cache()


def release_mlx_streams() -> None:
    """Free the calling thread's MLX streams, if MLX was used at all (and no stream is wedged).

    Since MLX 0.32 a thread must do this before it ends (and the main thread before the
    interpreter exits); otherwise the process may abort at exit ("terminate called without an
    active exception", ml-explore/mlx#4327).
    """
    import sys

    core = sys.modules.get("mlx.core")
    if core is not None and not _wedged:
        core.clear_streams()
