"""Embedding models on MLX, run by ``mlx-embeddings`` (BERT, XLM-RoBERTa, ModernBERT, Qwen3 and
the other architectures it implements), loaded from the same store as every model.

The library computes the token states; the pooling is the model's own, as its sentence-transformers
files declare it (``inference/backends/sentence_layout.py``): the mean over the input's tokens,
the first token's state, or the last token's (decoder models such as Qwen3-Embedding). A batch
of inputs is padded on the right and masked, so an input's vector does not depend on the others
beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.backends.base import ModelInfo, ModelLoadError
from inference.backends.model_kinds import EmbeddingOnly


class MlxEmbeddingModel(EmbeddingOnly):
    """An embedding model in memory; see the module docstring."""

    def __init__(self, path: Path, info: ModelInfo) -> None:
        try:
            from mlx_embeddings.utils import load_model
            from transformers import AutoTokenizer
        except ImportError as error:
            raise ModelLoadError(f"embedding models need mlx-embeddings ({error})") from error
        self.info = info
        self._model: Any = load_model(path)
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
        pad = self._tokenizer.pad_token_id
        self._pad = int(pad) if pad is not None else 0

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def embed(self, batch: Sequence[Sequence[int]]) -> list[list[float]]:
        import mlx.core as mx

        width = max(len(tokens) for tokens in batch)
        ids = mx.array([[*tokens, *[self._pad] * (width - len(tokens))] for tokens in batch])
        mask = mx.array([[1] * len(tokens) + [0] * (width - len(tokens)) for tokens in batch])
        states = self._model(ids, attention_mask=mask).last_hidden_state
        pooled = pool(states, mask, self.info.pooling)
        mx.eval(pooled)
        vectors: list[list[float]] = pooled.astype(mx.float32).tolist()
        return vectors

    def close(self) -> None:
        self._model = None


def pool(states: Any, mask: Any, mode: str) -> Any:
    """One vector per row of ``states`` (batch, tokens, width), over the tokens ``mask`` keeps."""
    import mlx.core as mx

    if mode == "cls":
        return states[:, 0]
    if mode == "last":
        last = mask.sum(axis=1) - 1
        return states[mx.arange(states.shape[0]), last]
    weights = mask[:, :, None].astype(states.dtype)
    return (states * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1e-9)
