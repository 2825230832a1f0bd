"""Embeddings from real models on both backends, through the official ``ollama`` and ``openai``
clients and LangChain, against the vectors the backend's library computes directly.

``qwen3embed`` is a tiny Qwen3 in the Qwen3-Embedding layout (last-token pooling) on MLX and its
GGUF copy on llama.cpp; ``minilm`` a tiny BERT in the sentence-transformers layout (mean pooling),
MLX only (tests/support/tiny_embedding.py).
"""

from __future__ import annotations

import math
from typing import Any

import ollama
import openai
import pytest
from langchain_ollama import OllamaEmbeddings

from tests.conftest import Server

pytestmark = [pytest.mark.mlx, pytest.mark.both_backends]
TEXTS = ["Why is the sky blue?", "hello", "Light scatters off the air.", "hello"]


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def distance(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def library_vectors(backend_kind: str, source: Any, texts: list[str]) -> list[list[float]]:
    """What the backend's own library computes for ``texts``, one at a time."""
    if backend_kind == "llamacpp":
        import llama_cpp

        model = llama_cpp.Llama(model_path=str(source), embedding=True, n_ctx=512, verbose=False)
        try:
            return [list(model.embed(text, normalize=True)) for text in texts]
        finally:
            model.close()
    import mlx.core as mx
    from mlx_embeddings.utils import load

    model, tokenizer = load(str(source))
    out = []
    for text in texts:
        ids = mx.array([tokenizer.encode(text)])
        out.append(model(ids).text_embeds[0].tolist())
    return out


def source_of(backend_kind: str, embedding_dirs: dict[str, Any], name: str) -> Any:
    return embedding_dirs[f"{name}.gguf" if backend_kind == "llamacpp" else name]


async def test_embed_matches_the_library(
    server: Server, backend_kind: str, embedding_dirs: dict[str, Any]
) -> None:
    client = ollama.AsyncClient(host=server.url)
    reply = await client.embed(model="qwen3embed", input=TEXTS)
    assert (
        len(reply.embeddings) == len(TEXTS)
        and reply.prompt_eval_count
        and reply.prompt_eval_count > len(TEXTS)
    )
    expected = library_vectors(backend_kind, source_of(backend_kind, embedding_dirs, "qwen3embed"), TEXTS)
    for vector, direct in zip(reply.embeddings, expected, strict=True):
        assert abs(math.sqrt(sum(v * v for v in vector)) - 1) < 1e-5
        assert distance(list(vector), direct) < 1e-4
    assert distance(list(reply.embeddings[1]), list(reply.embeddings[3])) < 1e-6
    alone = await client.embed(model="qwen3embed", input=TEXTS[2])
    assert distance(list(alone.embeddings[0]), list(reply.embeddings[2])) < 1e-5  # alone = in a batch


async def test_dimensions_truncate_and_the_legacy_route(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    full = (await client.embed(model="qwen3embed", input="hello")).embeddings[0]
    short = (await client.embed(model="qwen3embed", input="hello", dimensions=8)).embeddings[0]
    assert len(short) == 8 and distance(list(short), unit(list(full[:8]))) < 1e-5
    legacy = (await client.embeddings(model="qwen3embed", prompt="hello")).embedding
    assert distance(unit(list(legacy)), list(full)) < 1e-5  # the same vector, as the model pools it
    long = "the sky is blue because light scatters " * 200  # past the 512-token window
    cut = await client.embed(model="qwen3embed", input=long)
    assert len(cut.embeddings[0]) == len(full) and cut.prompt_eval_count == 512
    with pytest.raises(ollama.ResponseError, match="exceeds the context length"):
        await client.embed(model="qwen3embed", input=long, truncate=False)


async def test_openai_and_langchain_clients(server: Server) -> None:
    api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = await api.embeddings.create(model="qwen3embed", input=TEXTS[:2])
    native = (await ollama.AsyncClient(host=server.url).embed(model="qwen3embed", input=TEXTS[:2])).embeddings
    assert [d.index for d in reply.data] == [0, 1]
    assert distance(reply.data[0].embedding, list(native[0])) < 1e-6  # the client's base64, decoded
    assert reply.usage.prompt_tokens > 0
    embedder = OllamaEmbeddings(model="qwen3embed", base_url=server.url)
    documents = await embedder.aembed_documents(TEXTS[:2])
    assert distance(documents[1], list(native[1])) < 1e-6


async def test_kinds_are_kept_apart(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    assert (await client.show("qwen3embed")).capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError, match='"qwen3embed" does not support chat'):
        await client.chat(model="qwen3embed", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ollama.ResponseError, match='"tiny" does not support embeddings'):
        await client.embed(model="tiny", input="hi")
