"""Where real clients tripped: pull before use, list prompts, unknown names."""

from __future__ import annotations

import json

import ollama
import openai
import pytest

from tests.conftest import Server
from tests.http.test_cli import trillm


async def test_pulling_an_installed_model_succeeds_at_once(server: Server) -> None:
    """Scripts pull before use; a model already here must not need the hub (none is reachable)."""
    async with server.client() as client:
        r = await client.post("/api/pull", json={"model": "fake", "stream": False})
        assert r.status_code == 200 and r.json() == {"status": "success"}
        r = await client.post("/api/pull", json={"model": "fake:latest"})
        assert [json.loads(x) for x in r.text.splitlines()] == [{"status": "success"}]
    assert (await ollama.AsyncClient(host=server.url).pull("fake")).status == "success"


async def test_completions_take_a_list_of_prompts(server: Server) -> None:
    """langchain-openai's ``OpenAI`` LLM always sends ``prompt`` as a list."""
    api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    single = await api.completions.create(model="fake", prompt="one")
    assert single.usage is not None
    per_prompt = single.usage.completion_tokens
    reply = await api.completions.create(model="fake", prompt=["one", "two", "three"])
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.text == "Hello, world!" and c.finish_reason == "stop" for c in reply.choices)
    assert reply.usage and reply.usage.completion_tokens == 3 * per_prompt
    stream = await api.completions.create(
        model="fake", prompt=["one", "two"], stream=True, stream_options={"include_usage": True}
    )
    texts, finished, usage = {0: "", 1: ""}, set(), None
    async for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        choice = chunk.choices[0]
        texts[choice.index] += choice.text
        if choice.finish_reason:
            finished.add(choice.index)
    assert texts == {0: "Hello, world!", 1: "Hello, world!"} and finished == {0, 1}
    assert usage is not None and usage.completion_tokens == 2 * per_prompt
    for bad in ([], [""], ["a", 3]):
        with pytest.raises(openai.BadRequestError, match="prompt must be"):
            await api.completions.create(model="fake", prompt=bad)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="logprobs must be an integer"):
        await api.completions.create(model="fake", prompt="x", logprobs=99)


async def test_run_of_an_unknown_name_suggests_local_ones(server: Server) -> None:
    code, _, err = await trillm(server, "run", "fakee", "hi")
    assert code == 1 and "model 'fakee' not found" in err
    assert "closest local models are fake" in err and "Hugging Face repo id" in err
    assert "Traceback" not in err
