"""The official ``ollama`` Python client against the real server and the tiny trained MLX model."""

from __future__ import annotations

import ollama
import pytest

from tests.conftest import Server
from tests.support.tiny_model import SCRIPT

pytestmark = [pytest.mark.mlx, pytest.mark.both_backends]

GREEDY = {"temperature": 0}
HELLO, HELLO_REPLY = SCRIPT[0]


async def test_chat_non_streaming_returns_the_trained_reply(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    response = await client.chat(model="tiny", messages=[{"role": "user", "content": HELLO}], options=GREEDY)
    assert response.message.role == "assistant"
    assert response.message.content == HELLO_REPLY
    assert response.done and response.done_reason == "stop"
    for metric in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert getattr(response, metric) > 0, metric
    assert response.prompt_eval_count and response.prompt_eval_count > 5
    assert response.eval_count and response.eval_count >= len(HELLO_REPLY.split())
    assert response.total_duration >= response.eval_duration + response.prompt_eval_duration


async def test_chat_streaming_matches_non_streaming(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    parts = []
    last = None
    async for part in await client.chat(
        model="tiny:latest", messages=[{"role": "user", "content": HELLO}], options=GREEDY, stream=True
    ):
        parts.append(part.message.content)
        last = part
    assert "".join(parts) == HELLO_REPLY
    assert len(parts) > 3, "tokens must arrive one by one"
    assert "\ufffd" not in "".join(parts), "no chunk may carry half a character"
    assert last is not None and last.done and last.eval_count and last.eval_count > 0


async def test_generate_streaming_and_not(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    whole = await client.generate(model="tiny", prompt=SCRIPT[1][0], options=GREEDY)
    assert whole.response == SCRIPT[1][1]
    assert whole.context and len(whole.context) == whole.prompt_eval_count + whole.eval_count
    streamed = [
        p async for p in await client.generate(model="tiny", prompt=SCRIPT[1][0], options=GREEDY, stream=True)
    ]
    assert "".join(p.response for p in streamed) == SCRIPT[1][1]
    assert streamed[-1].done and streamed[-1].context == whole.context
    assert all(not p.done for p in streamed[:-1])


async def test_list_show_ps(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    listed = {m.model: m for m in (await client.list()).models}
    assert "tiny:latest" in listed and "fake:latest" in listed
    tiny = listed["tiny:latest"]
    assert tiny.details and tiny.details.family == "qwen2" and tiny.size and tiny.size > 0
    assert (await client.ps()).models == [], "listing must not load weights"

    shown = await client.show("tiny")
    assert shown.modelinfo is not None and shown.modelinfo["qwen2.context_length"] == 2048
    assert shown.capabilities == ["completion"]
    assert shown.template and "im_start" in shown.template

    await client.generate(model="tiny", prompt=HELLO, options=GREEDY | {"num_predict": 2})
    loaded = (await client.ps()).models
    assert [m.model for m in loaded] == ["tiny:latest"]
    assert loaded[0].expires_at is not None and loaded[0].size and loaded[0].size > 0


async def test_options_seed_and_num_predict(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    sampled = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": 1234, "num_predict": 12}
    first = await client.generate(model="tiny", prompt="Grüße", options=sampled)
    second = await client.generate(model="tiny", prompt="Grüße", options=sampled)
    assert first.response == second.response and first.context == second.context
    capped = await client.generate(model="tiny", prompt=HELLO, options=GREEDY | {"num_predict": 3})
    assert capped.eval_count == 3 and capped.done_reason == "length"
    assert HELLO_REPLY.startswith(capped.response)


async def test_stop_string_spanning_tokens_never_leaks(server: Server) -> None:
    """'你好' is several byte-level tokens; the reply must end right before it."""
    client = ollama.AsyncClient(host=server.url)
    options = GREEDY | {"stop": ["你好"]}
    whole = await client.chat(model="tiny", messages=[{"role": "user", "content": HELLO}], options=options)
    assert whole.message.content == HELLO_REPLY.split("你好")[0]
    assert whole.done_reason == "stop"
    parts = [
        p.message.content
        async for p in await client.chat(
            model="tiny", messages=[{"role": "user", "content": HELLO}], options=options, stream=True
        )
    ]
    assert "".join(parts) == whole.message.content


async def test_raw_generate_skips_the_template(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    templated = "<|im_start|>user\n" + HELLO + "<|im_end|>\n<|im_start|>assistant\n"
    raw = await client.generate(model="tiny", prompt=templated, raw=True, options=GREEDY)
    assert raw.response == HELLO_REPLY
    assert raw.context is None


async def test_load_and_unload_with_empty_prompt(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    loaded = await client.generate(model="tiny")
    assert loaded.done_reason == "load" and loaded.response == ""
    assert [m.model for m in (await client.ps()).models] == ["tiny:latest"]
    unloaded = await client.chat(model="tiny", messages=[], keep_alive=0)
    assert unloaded.done_reason == "unload" and unloaded.message.role == "assistant"
    assert (await client.ps()).models == []


async def test_logprobs(server: Server) -> None:
    """Greedy decoding picks the most likely token, so it leads its own top list."""
    client = ollama.AsyncClient(host=server.url)
    prompt, reply = SCRIPT[1]
    messages = [{"role": "user", "content": prompt}]
    whole = await client.chat(model="tiny", messages=messages, options=GREEDY, logprobs=True, top_logprobs=3)
    scores = whole.logprobs or []
    assert len(scores) == whole.eval_count
    assert "".join(s.token for s in scores[:-1]) == reply
    for s in scores:
        assert s.logprob <= 0 and len(s.top_logprobs or []) == 3
        assert (s.top_logprobs or [])[0].logprob == pytest.approx(s.logprob)
    streamed = [
        p
        async for p in await client.chat(
            model="tiny", messages=messages, options=GREEDY, logprobs=True, stream=True
        )
    ]
    assert sum(len(p.logprobs or []) for p in streamed) == whole.eval_count
    async with server.client() as http:
        r = await http.post(
            "/api/generate", json={"model": "tiny", "prompt": "x", "top_logprobs": 21, "logprobs": True}
        )
        assert r.status_code == 400 and r.json()["error"] == "top_logprobs must be between 0 and 20"


async def test_context_ids_outside_the_vocabulary_are_refused(server: Server) -> None:
    async with server.client() as http:
        r = await http.post(
            "/api/generate", json={"model": "tiny", "prompt": "x", "context": [10**9], "stream": False}
        )
    assert r.status_code == 400 and "outside this model's vocabulary" in r.json()["error"]
