"""An encoder embedding model (a tiny BERT in the sentence-transformers layout, mean pooling) on
MLX, against ``mlx-embeddings`` computing it directly. MLX only: a BERT GGUF would need llama.cpp's
WordPiece vocabulary, and the decoder's GGUF copy covers llama.cpp (tests/models/test_embeddings.py).
"""

from __future__ import annotations

from typing import Any

import ollama
import pytest

from tests.conftest import Server
from tests.models.test_embeddings import TEXTS, distance, library_vectors

pytestmark = [pytest.mark.mlx]


async def test_an_encoder_model_mean_pools(server: Server, embedding_dirs: dict[str, Any]) -> None:
    """A BERT in the sentence-transformers layout (MLX only: its GGUF would need llama.cpp's
    WordPiece vocabulary)."""
    reply = await ollama.AsyncClient(host=server.url).embed(model="minilm", input=TEXTS)
    expected = library_vectors("mlx", embedding_dirs["minilm"], TEXTS)
    assert max(distance(list(v), e) for v, e in zip(reply.embeddings, expected, strict=True)) < 1e-5
    assert (await ollama.AsyncClient(host=server.url).show("minilm")).capabilities == ["embedding"]
