"""The OpenAI-compatible API through the official ``openai`` client against the real server.

:func:`rebuild` turns a stream back into the non-streamed shape while asserting the protocol's
rules, so every streaming test also checks the framing.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.conftest import Server
from tests.support.tiny_model import ASK_PARIS, ASK_SKY, SCRIPT, WEATHER_TOOL

pytestmark = [pytest.mark.mlx, pytest.mark.both_backends]
HELLO, HELLO_REPLY = SCRIPT[0]


def client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


async def rebuild(stream: Any) -> dict[str, Any]:
    """Reassemble chunks into one message, asserting the invariants along the way."""
    ids, content, reasoning, calls = set(), "", "", []
    finish, usage, saw_role = None, None, False
    async for chunk in stream:
        ids.add(chunk.id)
        if not chunk.choices:
            assert chunk.usage is not None, "a chunk without choices is the usage chunk"
            usage = chunk.usage
            continue
        assert finish is None, "nothing but usage after the finish chunk"
        delta = chunk.choices[0].delta
        if delta.role:
            assert not saw_role, "role only in the first chunk"
            saw_role = True
        assert saw_role, "the first chunk carries the role"
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for call in delta.tool_calls or []:
            assert call.id and call.id.startswith("call_") and call.type == "function" and call.function.name
            calls.append({"name": call.function.name, "arguments": json.loads(call.function.arguments)})
        finish = chunk.choices[0].finish_reason
    assert len(ids) == 1, "one id for the whole stream"
    return {"content": content, "reasoning": reasoning, "calls": calls, "finish": finish, "usage": usage}


async def test_chat_streaming_matches_non_streaming(server: Server) -> None:
    api = client(server)
    messages = [{"role": "user", "content": HELLO}]
    whole = await api.chat.completions.create(model="tiny", messages=messages, temperature=0)
    assert whole.choices[0].message.content == HELLO_REPLY
    assert whole.choices[0].finish_reason == "stop"
    assert (
        whole.usage
        and whole.usage.completion_tokens > 0
        and whole.usage.total_tokens > whole.usage.prompt_tokens
    )
    stream = await api.chat.completions.create(
        model="tiny", messages=messages, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    rebuilt = await rebuild(stream)
    assert rebuilt["content"] == HELLO_REPLY and rebuilt["finish"] == "stop"
    assert (
        rebuilt["usage"] is not None and rebuilt["usage"].completion_tokens == whole.usage.completion_tokens
    )


async def test_max_tokens_and_length(server: Server) -> None:
    api = client(server)
    messages = [{"role": "user", "content": HELLO}]
    for field in ("max_tokens", "max_completion_tokens"):
        reply = await api.chat.completions.create(
            model="tiny", messages=messages, temperature=0, **{field: 3}
        )
        assert (
            reply.choices[0].finish_reason == "length" and reply.usage and reply.usage.completion_tokens == 3
        )


@pytest.mark.parametrize(
    "choice", ["auto", "required", {"type": "function", "function": {"name": "get_weather"}}]
)
async def test_tools_with_tool_choice(server: Server, choice: Any) -> None:
    api = client(server)
    reply = await api.chat.completions.create(
        model="agent", messages=[ASK_PARIS], tools=[WEATHER_TOOL], tool_choice=choice, temperature=0
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    stream = await api.chat.completions.create(
        model="agent",
        messages=[ASK_PARIS],
        tools=[WEATHER_TOOL],
        tool_choice=choice,
        temperature=0,
        stream=True,
    )
    rebuilt = await rebuild(stream)
    assert (
        rebuilt["calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
        and rebuilt["finish"] == "tool_calls"
    )
    assert rebuilt["content"] == ""


async def test_tool_choice_required_forces_a_call(server: Server) -> None:
    """Asked why the sky is blue, the model would answer in prose; "required" makes it call."""
    api = client(server)
    reply = await api.chat.completions.create(
        model="agent",
        messages=[ASK_SKY],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0,
        max_tokens=120,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)


async def test_tool_choice_none_offers_no_tools(server: Server) -> None:
    api = client(server)
    reply = await api.chat.completions.create(
        model="agent", messages=[ASK_SKY], tools=[WEATHER_TOOL], tool_choice="none", temperature=0
    )
    assert not reply.choices[0].message.tool_calls and reply.choices[0].finish_reason == "stop"


async def test_agent_loop_with_string_arguments(server: Server) -> None:
    api = client(server)
    first = await api.chat.completions.create(
        model="agent", messages=[ASK_PARIS], tools=[WEATHER_TOOL], temperature=0
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages = [
        ASK_PARIS,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22 degrees and sunny"},
    ]
    second = await api.chat.completions.create(
        model="agent", messages=messages, tools=[WEATHER_TOOL], temperature=0
    )
    assert second.choices[0].message.content == "It is 22 degrees and sunny in Paris."


async def test_reasoning(server: Server) -> None:
    api = client(server)
    reply = await api.chat.completions.create(model="agent", messages=[ASK_SKY], temperature=0)
    message = reply.choices[0].message
    assert message.content == "Because of Rayleigh scattering."
    assert getattr(message, "reasoning_content", None) == "Light scatters off air."
    rebuilt = await rebuild(
        await api.chat.completions.create(model="agent", messages=[ASK_SKY], temperature=0, stream=True)
    )
    assert (rebuilt["reasoning"], rebuilt["content"]) == (
        "Light scatters off air.",
        "Because of Rayleigh scattering.",
    )
    plain = await api.chat.completions.create(
        model="agent", messages=[ASK_SKY], temperature=0, reasoning_effort="none"
    )  # type: ignore[arg-type]
    assert plain.choices[0].message.content == "Rayleigh scattering."


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(max_length=6)
    qty: int = Field(ge=1, le=9)


async def test_parse_with_a_pydantic_model(server: Server) -> None:
    api = client(server)
    completion = await api.chat.completions.parse(
        model="jsonrandom",
        messages=[{"role": "user", "content": "item"}],
        response_format=Item,
        temperature=1.0,
        seed=1,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Item) and 1 <= parsed.qty <= 9


async def test_completions_and_models(server: Server) -> None:
    api = client(server)
    templated = "<|im_start|>user\n" + HELLO + "<|im_end|>\n<|im_start|>assistant\n"
    done = await api.completions.create(model="tiny", prompt=templated, temperature=0)
    assert done.choices[0].text == HELLO_REPLY and done.object == "text_completion"
    parts = [
        c
        async for c in await api.completions.create(
            model="tiny", prompt=templated, temperature=0, stream=True
        )
    ]
    assert "".join(c.choices[0].text for c in parts if c.choices) == HELLO_REPLY
    ids = [m.id async for m in api.models.list()]
    assert "tiny:latest" in ids and "agent:latest" in ids
    assert (await api.models.retrieve("tiny")).id == "tiny:latest"


async def test_error_classes(server: Server) -> None:
    api = client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        await api.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["message"] == "model 'nope' not found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        await api.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        await api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=2)
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        await api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL]
        )  # type: ignore[list-item]
    with pytest.raises(openai.UnprocessableEntityError):
        await api.chat.completions.create(
            model="jsonrandom",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_object"},
            max_tokens=2,
            temperature=1.0,
            seed=1,
        )
    async with httpx.AsyncClient(base_url=server.url) as raw:
        r = await raw.post("/v1/chat/completions", content=b"{oops")
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = await raw.post("/v1/embeddings", json={"model": "tiny", "input": "x"})
        assert r.status_code == 400 and "does not support embeddings" in r.json()["error"]["message"]


async def test_disconnect_cancels_like_the_native_api(server: Server) -> None:
    async with (
        server.client() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "slow", "messages": [{"role": "user", "content": "go"}], "stream": True},
        ) as r,
    ):
        seen = 0
        async for line in r.aiter_lines():
            seen += line.startswith("data: ")
            if seen == 4:
                break
    from tests.http.test_cancellation import last_report, wait_idle

    await wait_idle(server)
    report = last_report(server, "slow:latest")
    assert report.outcome == "cancelled" and report.steps_after_cancel <= 1


async def test_logprobs(server: Server) -> None:
    api = client(server)
    prompt, reply = SCRIPT[1]
    messages = [{"role": "user", "content": prompt}]
    whole = await api.chat.completions.create(
        model="tiny", messages=messages, temperature=0, logprobs=True, top_logprobs=2
    )
    content = whole.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and whole.usage and len(content) == whole.usage.completion_tokens
    assert "".join(t.token for t in content[:-1]) == reply
    assert all(len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in content)
    stream = await api.chat.completions.create(
        model="tiny", messages=messages, temperature=0, logprobs=True, stream=True
    )
    count = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            count += len(chunk.choices[0].logprobs.content)
    assert count == len(content)


async def test_error_after_the_stream_began_is_an_sse_event(server: Server) -> None:
    body = {"model": "failing", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with server.client() as http:
        r = await http.post("/v1/chat/completions", json=body)
    events = [line.removeprefix("data: ") for line in r.text.split("\n\n") if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["message"] == "an error was encountered while running the model: injected failure"
    assert error["type"] == "api_error"
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert "".join(c or "" for c in contents) == "abc"


async def test_legacy_completions_logprobs(server: Server) -> None:
    """``/v1/completions`` takes ``logprobs`` as the integer of the legacy API, streamed or not."""
    api = client(server)
    reply = await api.completions.create(model="tiny", prompt=HELLO, logprobs=2, max_tokens=5, temperature=0)
    choice = reply.choices[0]
    scores = choice.logprobs
    assert scores is not None and scores.tokens and len(scores.tokens) == 5
    assert "".join(scores.tokens).strip() == choice.text.strip()  # MLX spells a first token apart
    assert scores.text_offset == [sum(len(t) for t in scores.tokens[:i]) for i in range(5)]
    assert scores.token_logprobs and all(lp <= 0 for lp in scores.token_logprobs)
    assert scores.top_logprobs and all(len(top) == 2 for top in scores.top_logprobs)
    stream = await api.completions.create(
        model="tiny", prompt=HELLO, logprobs=0, max_tokens=5, temperature=0, stream=True
    )
    tokens = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs:
            tokens += chunk.choices[0].logprobs.tokens or []
    assert tokens == scores.tokens
