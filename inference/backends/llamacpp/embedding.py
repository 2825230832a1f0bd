"""GGUF embedding models on llama.cpp: a context opened with ``embeddings`` on and the pooling the
GGUF declares (``<arch>.pooling_type``: mean, CLS or last token), as llama-server runs them.

A batch of inputs goes into one ``llama_batch``, each input its own sequence, and llama.cpp pools
each sequence; the context is cleared between batches, so an input's vector does not depend on
the inputs beside it. The window is the trained one, up to :data:`MAX_WINDOW` tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from inference.backends.base import ModelInfo, ModelLoadError
from inference.backends.model_kinds import EmbeddingOnly

MAX_WINDOW = 8192
POOLING_TYPES = {1: "mean", 2: "cls", 3: "last"}  # llama.cpp's enum; 0 (none) and 4 (rank) are not served


class LlamaCppEmbeddingModel(EmbeddingOnly):
    """An embedding GGUF in memory; see the module docstring."""

    def __init__(self, file: Path, info: ModelInfo, threads: int | None, hint: str) -> None:
        try:
            import llama_cpp
        except ImportError as error:
            raise ModelLoadError(hint) from error
        self._lib = llama_cpp
        window = min(info.context_length, MAX_WINDOW)
        self._llama: Any = llama_cpp.Llama(
            model_path=str(file),
            embedding=True,
            n_ctx=window,
            n_batch=window,
            n_ubatch=window,
            n_threads=threads,
            n_gpu_layers=-1,
            verbose=False,
        )
        self.info = replace(info, context_length=window)
        self._width = int(self._llama.n_embd())
        self._sequences = int(self._llama.context_params.n_seq_max)

    def tokenize(self, text: str) -> list[int]:
        # add_bos: the vocabulary's own BOS / EOS rules apply (Qwen3-Embedding appends its EOS).
        return list(self._llama.tokenize(text.encode(), add_bos=True, special=True))

    def embed(self, batch: Sequence[Sequence[int]]) -> list[list[float]]:
        llama = self._llama
        vectors: list[list[float]] = []
        try:
            for group in self._groups(batch):
                llama._batch.reset()
                for seq, tokens in enumerate(group):
                    llama._batch.add_sequence(list(tokens), seq, True)
                llama._ctx.kv_cache_clear()
                llama._ctx.decode(llama._batch)
                for seq in range(len(group)):
                    pointer = self._lib.llama_get_embeddings_seq(llama._ctx.ctx, seq)
                    vectors.append([float(v) for v in pointer[: self._width]])
        finally:
            llama._batch.reset()
            llama._ctx.kv_cache_clear()
        return vectors

    def _groups(self, batch: Sequence[Sequence[int]]) -> Iterator[Sequence[Sequence[int]]]:
        """``batch`` in runs that fit one decode: the window's tokens and the context's sequences."""
        start, tokens = 0, 0
        for i, item in enumerate(batch):
            if i > start and (tokens + len(item) > self.info.context_length or i - start >= self._sequences):
                yield batch[start:i]
                start, tokens = i, 0
            tokens += len(item)
        if start < len(batch):
            yield batch[start:]

    def close(self) -> None:
        self._llama.close()
