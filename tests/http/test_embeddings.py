"""The embedding routes on the fake backend, through the official ``ollama`` and ``openai`` clients
and LangChain: shapes, order, normalisation, ``dimensions``, ``truncate``, batching, cancellation,
and the errors that say which kind a model is (the real models are in tests/models/test_embeddings.py).

The fake embedding model's vector of an input is the mean of a fixed vector per character
(``inference/backends/fake.py``), so every expected vector can be computed here.
"""

from __future__ import annotations

import base64
import math
import struct

import httpx
import ollama
import openai
import pytest
import trio
from langchain_ollama import OllamaEmbeddings

from inference.backends.fake import token_vector
from inference.engine import embedding
from tests.conftest import Server
from tests.http.test_cancellation import last_report, wait_idle


def pooled(text: str, width: int = 8) -> list[float]:
    vectors = [token_vector(ord(c), width) for c in text]
    return [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


async def test_embed_through_the_ollama_client(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    texts = ["hello", "a much longer sentence", "hello"]
    reply = await client.embed(model="fakeembed", input=texts)
    assert len(reply.embeddings) == 3
    for text, vector in zip(texts, reply.embeddings, strict=True):
        assert close(list(vector), unit(pooled(text)))
        assert abs(math.sqrt(sum(v * v for v in vector)) - 1) < 1e-6
    assert reply.embeddings[0] == reply.embeddings[2]
    assert reply.prompt_eval_count == sum(map(len, texts)) and reply.total_duration
    alone = await client.embed(model="fakeembed", input="a much longer sentence")
    assert close(list(alone.embeddings[0]), list(reply.embeddings[1]))  # alone = inside a batch
    short = await client.embed(model="fakeembed", input="hello", dimensions=3)
    assert close(list(short.embeddings[0]), unit(pooled("hello")[:3]))
    legacy = await client.embeddings(model="fakeembed", prompt="hello")
    assert close(list(legacy.embedding), pooled("hello"))  # the older route: as the model pools it


async def test_empty_input_loads_the_model(server: Server) -> None:
    async with server.client() as http:
        for body in ({"input": ""}, {"input": []}, {}):
            r = await http.post("/api/embed", json={"model": "fakeembed"} | body)
            assert r.status_code == 200 and r.json()["embeddings"] == [], r.text
        legacy = await http.post("/api/embeddings", json={"model": "fakeembed", "prompt": ""})
        assert legacy.json() == {"embedding": []}
        ps = (await http.get("/api/ps")).json()["models"]
        assert any(m["name"] == "fakeembed:latest" for m in ps)
        gone = await http.post("/api/embed", json={"model": "fakeembed", "input": [], "keep_alive": 0})
        assert gone.json()["embeddings"] == []
        ps = (await http.get("/api/ps")).json()["models"]
        assert not any(m["name"] == "fakeembed:latest" for m in ps)


async def test_truncate(server: Server) -> None:
    long = "x" * 40  # the model's window is 16
    async with server.client() as http:
        cut = await http.post("/api/embed", json={"model": "shortembed", "input": [long, "ab"]})
        assert cut.status_code == 200 and cut.json()["prompt_eval_count"] == 16 + 2
        assert close(cut.json()["embeddings"][0], unit(pooled("x" * 16)))
        refused = await http.post(
            "/api/embed", json={"model": "shortembed", "input": [long], "truncate": False}
        )
        assert refused.status_code == 400
        assert refused.json()["error"].startswith("the input length exceeds the context length")
        openai_too = await http.post("/v1/embeddings", json={"model": "shortembed", "input": long})
        assert openai_too.status_code == 400 and "context length" in openai_too.json()["error"]["message"]


async def test_openai_embeddings(server: Server) -> None:
    api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = await api.embeddings.create(model="fakeembed", input=["hello", "world"], encoding_format="float")
    assert [d.index for d in reply.data] == [0, 1]
    assert close(reply.data[1].embedding, unit(pooled("world")))
    assert reply.usage.prompt_tokens == 10 == reply.usage.total_tokens and reply.model == "fakeembed"
    tokens = await api.embeddings.create(model="fakeembed", input=[[104, 105]], encoding_format="float")
    assert close(tokens.data[0].embedding, unit(pooled("hi")))
    short = await api.embeddings.create(
        model="fakeembed", input="hello", dimensions=4, encoding_format="float"
    )
    assert close(short.data[0].embedding, unit(pooled("hello")[:4]))
    async with httpx.AsyncClient(base_url=server.url) as http:
        packed = await http.post(
            "/v1/embeddings", json={"model": "fakeembed", "input": "hello", "encoding_format": "base64"}
        )
    raw = base64.b64decode(packed.json()["data"][0]["embedding"])
    assert close(list(struct.unpack(f"<{len(raw) // 4}f", raw)), unit(pooled("hello")))
    # The client's default asks for base64 and decodes it.
    default = await api.embeddings.create(model="fakeembed", input="hello")
    assert close(default.data[0].embedding, unit(pooled("hello")))


async def test_langchain_ollama_embeddings(server: Server) -> None:
    embedder = OllamaEmbeddings(model="fakeembed", base_url=server.url)
    documents = await embedder.aembed_documents(["hello", "world"])
    query = await embedder.aembed_query("hello")
    assert close(documents[0], query) and close(documents[1], unit(pooled("world")))


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/api/chat",
            {"model": "fakeembed", "messages": [{"role": "user", "content": "x"}]},
            '"fakeembed" does not support chat',
        ),
        ("/api/generate", {"model": "fakeembed", "prompt": "x"}, '"fakeembed" does not support generate'),
        ("/api/embed", {"model": "fake", "input": "x"}, '"fake" does not support embeddings'),
        ("/api/embeddings", {"model": "fake", "prompt": "x"}, '"fake" does not support embeddings'),
        ("/v1/embeddings", {"model": "fake", "input": "x"}, '"fake" does not support embeddings'),
        (
            "/v1/chat/completions",
            {"model": "fakeembed", "messages": [{"role": "user", "content": "x"}]},
            "does not support chat",
        ),
        ("/api/embed", {"model": "fakeembed", "input": 3}, "input"),
        (
            "/api/embed",
            {"model": "fakeembed", "input": "x", "dimensions": 0},
            "dimensions must be at least 1",
        ),
        ("/v1/embeddings", {"model": "fakeembed", "input": []}, "input must be"),
        ("/v1/embeddings", {"model": "fakeembed", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
async def test_the_wrong_kind_of_model_or_input_is_a_400(
    server: Server, path: str, body: dict[str, object], message: str
) -> None:
    async with server.client() as http:
        r = await http.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert message in (error["message"] if isinstance(error, dict) else error)


async def test_missing_models_are_404(server: Server) -> None:
    async with server.client() as http:
        r = await http.post("/api/embed", json={"model": "nope", "input": "x"})
        assert r.status_code == 404 and "not found" in r.json()["error"]


async def test_show_lists_the_embedding_capability(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    assert (await client.show("fakeembed")).capabilities == ["embedding"]
    assert "embedding" not in ((await client.show("fake")).capabilities or [])


async def test_many_inputs_are_computed_in_batches(server: Server) -> None:
    texts = [f"input number {i}" for i in range(200)]
    reply = await ollama.AsyncClient(host=server.url).embed(model="fakeembed", input=texts)
    assert [close(list(v), unit(pooled(t))) for v, t in zip(reply.embeddings, texts, strict=True)] == [
        True
    ] * 200
    batches = server.fake.embed_batches
    assert sum(map(len, batches)) == 200 and len(batches) <= -(-200 // embedding.STEP_INPUTS)


async def test_a_disconnect_cancels_the_rest(server: Server) -> None:
    texts = [f"text {i}" for i in range(embedding.STEP_INPUTS * 20)]  # 20 batches of 0.05 s
    async with server.client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/api/embed", json={"model": "slowembed", "input": texts}, timeout=0.3)
    await wait_idle(server)
    report = last_report(server, "slowembed:latest")
    assert report.outcome == "cancelled" and report.decode_steps < 15, report


async def test_embeddings_run_beside_a_chat_stream(server: Server) -> None:
    """A long embedding request shares the engine's loop a batch at a time: a chat stream of
    another model keeps getting tokens while it runs."""
    texts = [f"text {i}" for i in range(embedding.STEP_INPUTS * 12)]  # 12 batches of 0.05 s
    gaps: list[float] = []
    done = trio.Event()

    async def chat() -> None:
        body = {
            "model": "slow",
            "messages": [{"role": "user", "content": "x"}],
            "options": {"num_predict": 400},
        }
        async with server.client() as http, http.stream("POST", "/api/chat", json=body) as r:
            last = trio.current_time()
            async for _ in r.aiter_lines():
                now = trio.current_time()
                gaps.append(now - last)
                last = now
                if done.is_set():
                    break

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chat)
        await trio.sleep(0.2)
        before = len(gaps)
        async with server.client() as http:
            r = await http.post("/api/embed", json={"model": "slowembed", "input": texts})
        assert r.status_code == 200 and len(r.json()["embeddings"]) == len(texts)
        during = len(gaps) - before
        done.set()
    assert during >= 8, during  # the stream went on (12 batches: at least a token between most)
    assert max(gaps[before:]) < 0.5
