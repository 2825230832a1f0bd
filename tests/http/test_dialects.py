"""OpenAI's Responses API and Anthropic's Messages API on the fake backend, through the official
``openai`` and ``anthropic`` clients: shapes, streams, tools, errors (the real models' replies are
checked in tests/models/test_dialects.py)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from app.routes import anthropic_messages
from tests.conftest import Server
from tests.http.test_cancellation import last_report, wait_idle

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "description": "Get the weather",
    "input_schema": WEATHER["parameters"],
}


def oai(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def claude(server: Server) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="x", max_retries=0)


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) pairs of an SSE body."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines.get("event", ""), json.loads(lines["data"])))
    return out


def streamed_message(model: str) -> dict[str, Any]:
    """A streamed ``/v1/messages`` body saying "hi"."""
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "stream": True}


# -- /v1/responses -----------------------------------------------------------------------------


async def test_responses_create_and_stream(server: Server) -> None:
    client = oai(server)
    whole = await client.responses.create(model="fake", input="hi", instructions="Be brief.")
    assert whole.status == "completed" and whole.output_text == "Hello, world!"
    assert whole.output[0].type == "message" and whole.output[0].content[0].type == "output_text"
    assert whole.usage is not None and whole.usage.output_tokens == 5 and whole.usage.input_tokens > 0
    assert whole.instructions == "Be brief." and whole.store is False
    async with client.responses.stream(model="fake", input=[{"role": "user", "content": "hi"}]) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "Hello, world!" == final.output_text and len(deltas) == 4
    assert final.id.startswith("resp_") and final.status == "completed"


async def test_responses_event_sequence_on_the_wire(server: Server) -> None:
    async with server.client() as http:
        r = await http.post("/v1/responses", json={"model": "fake", "input": "hi", "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert names.count("response.output_text.delta") == 4


async def test_responses_function_calls_round_trip(server: Server) -> None:
    client = oai(server)
    first = await client.responses.create(model="faketools", input="weather in Rome?", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Rome"})]
    assert calls[0].call_id.startswith("call_")
    # The next turn sends the call and its output back (stateless): it renders and runs.
    history: list[Any] = [{"role": "user", "content": "weather in Rome?"}, *first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "22 C"})
    second = await client.responses.create(model="faketools", input=history, tools=[WEATHER])
    assert second.status == "completed"
    assert "22 C" in "".join(map(chr, server.fake.prompts[-1]))  # the fake's tokens are code points
    async with client.responses.stream(model="faketools", input="weather?", tools=[WEATHER]) as stream:
        kinds = [e.type async for e in stream]
        final = await stream.get_final_response()
    assert (
        "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    )
    streamed = [item for item in final.output if item.type == "function_call"]
    assert json.loads(streamed[0].arguments) == {"city": "Rome"}


async def test_responses_json_schema_and_limits(server: Server) -> None:
    client = oai(server)
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    fmt = {"format": {"type": "json_schema", "name": "ab", "schema": schema, "strict": True}}
    reply = await client.responses.create(model="fakejson", input="x", text=fmt)  # type: ignore[arg-type]
    assert json.loads(reply.output_text) == {"a": 1, "b": "x"}
    cut = await client.responses.create(model="slow", input="x", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens" and cut.usage and cut.usage.output_tokens == 3
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await client.responses.create(
            model="fake", input="x", text={"format": {"type": "json_schema", "name": "ab", "schema": schema}}
        )
    assert "partial" in refused.value.body  # type: ignore[operator]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"previous_response_id": "resp_1"}, "stateless"),
        ({"store": True}, "stateless"),
        ({"conversation": "conv_1"}, "stateless"),
        ({"tools": [{"type": "web_search"}]}, "only function tools"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "stateless"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "data URL"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}
                ]
            },
            "does not fetch URLs",
        ),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
        ({"input": []}, "input must be"),
        ({"max_output_tokens": 0}, "at least 1"),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"temperature": "hot"}, "temperature must be a number"),
    ],
)
async def test_responses_bad_requests_are_openai_400s(
    server: Server, extra: dict[str, Any], message: str
) -> None:
    async with server.client() as http:
        r = await http.post("/v1/responses", json={"model": "fake", "input": "hi"} | extra)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"], error


# -- /v1/messages ------------------------------------------------------------------------------


async def test_messages_create_and_stream(server: Server) -> None:
    client = claude(server)
    whole = await client.messages.create(
        model="fake", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "hi"}]
    )
    assert whole.type == "message" and whole.role == "assistant" and whole.stop_reason == "end_turn"
    assert [b.type for b in whole.content] == ["text"] and whole.content[0].text == "Hello, world!"  # type: ignore[union-attr]
    assert whole.usage.output_tokens == 5 and whole.usage.input_tokens > 0
    async with client.messages.stream(
        model="fake", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello, world!" and final.stop_reason == "end_turn" and final.usage.output_tokens == 5


async def test_messages_event_sequence_and_stop_reasons(server: Server) -> None:
    async with server.client() as http:
        body = streamed_message("fake")
        r = await http.post("/v1/messages", json=body)
        names = [name for name, _ in sse(r.text)]
        assert names[:3] == ["message_start", "ping", "content_block_start"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        stopped = await http.post("/v1/messages", json=body | {"stream": False, "stop_sequences": [", w"]})
        assert stopped.json()["stop_reason"] == "stop_sequence" and stopped.json()["stop_sequence"] == ", w"
        assert stopped.json()["content"][0]["text"] == "Hello"
        cut = await http.post("/v1/messages", json=body | {"stream": False, "max_tokens": 2})
        assert cut.json()["stop_reason"] == "max_tokens"


async def test_messages_output_config_format_is_enforced_and_validated(server: Server) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = {"model": "fakejson", "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
    async with server.client() as http:
        ok = await http.post(
            "/v1/messages",
            json=body | {"output_config": {"format": {"type": "json_schema", "schema": schema}}},
        )
        assert ok.status_code == 200 and json.loads(ok.json()["content"][0]["text"])["a"] == 1
        wrong = {"type": "object", "properties": {"a": {"type": "string"}}}
        refused = await http.post(
            "/v1/messages",
            json=body | {"output_config": {"format": {"type": "json_schema", "schema": wrong}}},
        )
        assert refused.status_code == 422 and refused.json()["error"]["type"] == "invalid_request_error"
        assert "partial" in refused.json()["error"]


async def test_messages_tool_use_round_trip(server: Server) -> None:
    client = claude(server)
    ask = {"role": "user", "content": "weather in Rome?"}
    first = await client.messages.create(
        model="faketools", max_tokens=64, messages=[ask], tools=[ANTHROPIC_WEATHER]
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Rome"})]
    result = {"type": "tool_result", "tool_use_id": uses[0].id, "content": "22 C"}
    history: list[Any] = [
        ask,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [result]},
    ]
    second = await client.messages.create(
        model="faketools", max_tokens=64, messages=history, tools=[ANTHROPIC_WEATHER]
    )
    assert second.type == "message"
    async with client.messages.stream(
        model="faketools", max_tokens=64, messages=[ask], tools=[ANTHROPIC_WEATHER]
    ) as stream:
        final = await stream.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert streamed and streamed[0].input == {"city": "Rome"} and final.stop_reason == "tool_use"
    named = await client.messages.create(
        model="faketools",
        max_tokens=64,
        messages=[ask],
        tools=[ANTHROPIC_WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert named.stop_reason == "tool_use"


async def test_a_claude_code_shaped_request(server: Server) -> None:
    """What Claude Code sends: ``?beta=true``, beta headers, system blocks and tools with
    ``cache_control``, metadata, adaptive thinking, a large ``max_tokens``, streaming."""
    body = {
        "model": "faketools",
        "max_tokens": 32000,
        "stream": True,
        "metadata": {"user_id": "user_abc_account_123"},
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be concise."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "weather?", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        "tools": [ANTHROPIC_WEATHER | {"cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "adaptive"},
        "temperature": 1,
    }
    headers = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "x-api-key": "unused",
    }
    async with server.client() as http:
        r = await http.post("/v1/messages?beta=true", json=body, headers=headers)
        assert r.status_code == 200, r.text
        events = sse(r.text)
        starts = [data["content_block"] for name, data in events if name == "content_block_start"]
        assert [b["type"] for b in starts] == ["text", "tool_use", "text"]  # "Sure.", the call, " Done."
        assert starts[1]["name"] == "get_weather"
        delta = next(data for name, data in events if name == "message_delta")
        assert delta["delta"]["stop_reason"] == "tool_use"
        counted = await http.post("/v1/messages/count_tokens?beta=true", json=body, headers=headers)
        assert counted.status_code == 200 and counted.json()["input_tokens"] > 0


async def test_count_tokens(server: Server) -> None:
    client = claude(server)
    short = await client.messages.count_tokens(model="fake", messages=[{"role": "user", "content": "hi"}])
    longer = await client.messages.count_tokens(
        model="fake",
        system="You are a careful assistant.",
        messages=[{"role": "user", "content": "hi there"}],
    )
    assert 0 < short.input_tokens < longer.input_tokens
    reply = await client.messages.create(
        model="fake", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) == short.input_tokens


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        (
            {"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            {"model": "nope", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
            404,
            "not_found_error",
            "not found",
        ),
        (
            {"model": "fake", "max_tokens": 8, "messages": []},
            400,
            "invalid_request_error",
            "at least one message",
        ),
        (
            {
                "model": "fake",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            400,
            "invalid_request_error",
            "only base64 image sources",
        ),
        (
            {
                "model": "fake",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            400,
            "invalid_request_error",
            "server tool",
        ),
        (
            {"model": "fake", "max_tokens": 8, "messages": [{"role": "robot", "content": "hi"}]},
            400,
            "invalid_request_error",
            "role",
        ),
    ],
)
async def test_messages_errors_take_anthropics_shape(
    server: Server, body: dict[str, Any], status: int, kind: str, message: str
) -> None:
    async with server.client() as http:
        r = await http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["type"] == "error" and payload["error"]["type"] == kind, payload
    assert message in payload["error"]["message"], payload


async def test_the_anthropic_client_raises_its_own_exceptions(server: Server) -> None:
    client = claude(server)
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError, match="does not support tools"):
        await client.messages.create(
            model="fake",
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            tools=[ANTHROPIC_WEATHER],
        )


async def test_a_failure_mid_stream_is_an_error_event(server: Server) -> None:
    async with server.client() as http:
        r = await http.post("/v1/messages", json=streamed_message("failing"))
        events = sse(r.text)
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
        responses = await http.post("/v1/responses", json={"model": "failing", "input": "hi", "stream": True})
        names = [name for name, _ in sse(responses.text)]
        assert names[-2:] == ["error", "response.failed"]


async def test_pings_keep_a_long_prompt_alive(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt that takes a while to read starts the stream with message_start and pings."""
    monkeypatch.setattr(anthropic_messages, "PING_AFTER", 0.05)
    monkeypatch.setattr(anthropic_messages, "PING_EVERY", 0.05)
    prompt = "word " * 40  # the fake reads 0.01 s per prompt token
    body = {
        "model": "prefill",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    async with server.client() as http:
        r = await http.post("/v1/messages", json=body)
    names = [name for name, _ in sse(r.text)]
    assert names[0] == "message_start" and names.count("ping") >= 3, names
    assert names[-1] == "message_stop" and "content_block_delta" in names


async def test_a_disconnect_stops_generation_on_both_routes(server: Server) -> None:
    """Leaving mid-stream cancels the job at the next step, as on every other route."""
    for path, body in (
        ("/v1/messages", {"max_tokens": 10_000, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi"}),
    ):
        async with (
            server.client() as http,
            http.stream("POST", path, json={"model": "slow", "stream": True} | body) as r,
        ):
            async for line in r.aiter_lines():
                if "delta" in line:
                    break
        await wait_idle(server)
        report = last_report(server, "slow:latest")
        assert report.outcome == "cancelled" and report.steps_after_cancel <= 1, report
