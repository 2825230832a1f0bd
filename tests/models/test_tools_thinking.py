"""Tool calls and thinking end to end: a tiny model trained to call a tool and to reason first.

Greedy decoding makes its replies exact, so the assertions are on the exact extracted call and the
exact split between reasoning and answer, through the official client and raw httpx.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import ollama
import pytest

from tests.conftest import Server
from tests.support.tiny_model import ASK_OSLO, ASK_PARIS, ASK_SKY, PARIS_CALL, WEATHER_TOOL

pytestmark = [pytest.mark.mlx, pytest.mark.both_backends]
GREEDY = {"temperature": 0}


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
      city: The name of the city
    """
    return "22 degrees and sunny"


def test_the_python_function_is_the_trained_tool() -> None:
    from ollama._utils import convert_function_to_tool

    assert convert_function_to_tool(get_weather).model_dump(exclude_none=True) == WEATHER_TOOL


async def collect(stream: Any) -> list[Any]:
    return [part async for part in stream]


async def test_tool_call_extracted_streaming_and_not(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    whole = await client.chat(model="agent", messages=[ASK_PARIS], tools=[get_weather], options=GREEDY)
    assert whole.message.content == ""
    assert [(c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls or []] == [
        ("get_weather", {"city": "Paris"})
    ]
    parts = await collect(
        await client.chat(
            model="agent", messages=[ASK_PARIS], tools=[get_weather], options=GREEDY, stream=True
        )
    )
    with_calls = [p for p in parts if p.message.tool_calls]
    assert len(with_calls) == 1 and with_calls[0].message.content == "", (
        "the call comes whole, in its own chunk"
    )
    assert "".join(p.message.content or "" for p in parts) == "", "call text never leaks into content"


async def test_agent_loop_round_trips_calls_and_results(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    first = await client.chat(model="agent", messages=[ASK_PARIS], tools=[get_weather], options=GREEDY)
    assert first.message.tool_calls
    call = first.message.tool_calls[0]
    result = get_weather(**call.function.arguments)
    messages = [
        ASK_PARIS,
        first.message,
        {"role": "tool", "content": result, "tool_name": call.function.name},
    ]
    second = await client.chat(model="agent", messages=messages, tools=[get_weather], options=GREEDY)
    assert second.message.content == "It is 22 degrees and sunny in Paris."
    assert not second.message.tool_calls


async def test_call_shape_on_the_wire(server: Server) -> None:
    body = {"model": "agent", "messages": [ASK_PARIS], "tools": [WEATHER_TOOL], "options": GREEDY}
    async with server.client() as client:
        r = await client.post("/api/chat", json=body)
        lines = [json.loads(x) for x in r.text.splitlines()]
        whole = (await client.post("/api/chat", json=body | {"stream": False})).json()
    calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert len(calls) == 1
    call = calls[0]
    assert call["id"].startswith("call_") and len(call["id"]) == 13
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert lines[-1]["done"] and lines[-1]["done_reason"] == "stop"
    assert whole["message"]["tool_calls"][0]["function"] == call["function"]
    assert whole["message"]["content"] == ""


async def test_thinking_is_split_from_the_answer(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    whole = await client.chat(model="agent", messages=[ASK_SKY], options=GREEDY)
    assert whole.message.thinking == "Light scatters off air."
    assert whole.message.content == "Because of Rayleigh scattering."
    parts = await collect(await client.chat(model="agent", messages=[ASK_SKY], options=GREEDY, stream=True))
    kinds = [
        "thinking" if p.message.thinking else "content"
        for p in parts
        if p.message.thinking or p.message.content
    ]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking"), "all thinking chunks come before content"
    assert "".join(p.message.thinking or "" for p in parts) == "Light scatters off air."
    assert "".join(p.message.content or "" for p in parts) == "Because of Rayleigh scattering."
    generated = await client.generate(model="agent", prompt=ASK_SKY["content"], options=GREEDY)
    assert (generated.thinking, generated.response) == (
        "Light scatters off air.",
        "Because of Rayleigh scattering.",
    )


async def test_think_false_asks_the_template_not_to_think(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    reply = await client.chat(model="agent", messages=[ASK_SKY], think=False, options=GREEDY)
    assert reply.message.content == "Rayleigh scattering." and not reply.message.thinking


async def test_think_then_call(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    for stream in (False, True):
        if stream:
            parts = await collect(
                await client.chat(
                    model="agent", messages=[ASK_OSLO], tools=[get_weather], options=GREEDY, stream=True
                )
            )
            thinking = "".join(p.message.thinking or "" for p in parts)
            calls = [c for p in parts for c in p.message.tool_calls or []]
            content = "".join(p.message.content or "" for p in parts)
        else:
            reply = await client.chat(
                model="agent", messages=[ASK_OSLO], tools=[get_weather], think=True, options=GREEDY
            )
            thinking, calls, content = (
                reply.message.thinking,
                reply.message.tool_calls or [],
                reply.message.content,
            )
        assert thinking == "I need the weather tool."
        assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
            ("get_weather", {"city": "Oslo"})
        ]
        assert content == ""


async def test_sampled_calls_are_bound_to_the_declared_tools(server: Server) -> None:
    """At a high temperature the model wanders, but any call it opens names a real tool with
    arguments that validate: the call's JSON is constrained once ``<tool_call>`` appears."""
    client = ollama.AsyncClient(host=server.url)
    for seed in range(6):
        options = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": seed, "num_predict": 80}
        reply = await client.chat(model="agent", messages=[ASK_PARIS], tools=[get_weather], options=options)
        for call in reply.message.tool_calls or []:
            assert call.function.name == "get_weather"
            assert set(call.function.arguments) == {"city"} and isinstance(
                call.function.arguments["city"], str
            )


async def test_tool_schemas_the_grammar_cannot_take_whole_are_validated_in_full(server: Server) -> None:
    """Parameters with a keyword llguidance does not implement (``not``) are enforced in part and
    validated in full: the header says so, and every call that comes back validates."""
    parameters = {**WEATHER_TOOL["function"]["parameters"], "not": {"required": ["country"]}}
    tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "parameters": parameters}}
    async with server.client() as http:
        for seed in range(3):
            options = {"temperature": 1.0, "seed": seed, "num_predict": 80}
            body = {"model": "agent", "messages": [ASK_PARIS], "tools": [tool], "options": options}
            reply = await http.post("/api/chat", json=body | {"stream": False})
            assert '["not"]' in reply.headers["x-trillm-enforcement"], reply.headers
            if reply.status_code != 200:  # a call the validator refuses is an explicit error
                assert reply.status_code == 422 and "get_weather" in reply.json()["error"], reply.text
                continue
            for call in reply.json()["message"].get("tool_calls", []):
                assert call["function"]["name"] == "get_weather"
                jsonschema.validate(call["function"]["arguments"], parameters)


async def test_show_lists_capabilities(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    assert (await client.show("agent")).capabilities == ["completion", "tools", "thinking"]
    assert (await client.show("tiny")).capabilities == ["completion"]


async def test_calls_split_across_chunks_from_any_backend(server: Server) -> None:
    """The scripted fake splits the marker as ``<tool`` + ``_call>``; text around the call stays content."""
    async with server.client() as client:
        r = await client.post(
            "/api/chat", json={"model": "faketools", "messages": [ASK_PARIS], "tools": [WEATHER_TOOL]}
        )
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert "".join(x["message"]["content"] for x in lines) == "Sure.  Done."
    calls = [c["function"] for x in lines for c in x["message"].get("tool_calls", [])]
    assert calls == [{"index": 0, "name": "get_weather", "arguments": {"city": "Rome"}}]
    assert not any(x["message"]["content"] and x["message"].get("tool_calls") for x in lines)


async def test_an_invalid_call_is_a_clear_error_not_a_garbage_call(server: Server) -> None:
    body = {"model": "badtools", "messages": [ASK_PARIS], "tools": [WEATHER_TOOL]}
    expected = "the model produced an invalid tool call: the model called 'launch_rockets', which is not one of the tools (get_weather)"
    async with server.client() as client:
        r = await client.post("/api/chat", json=body | {"stream": False})
        assert r.status_code == 422 and r.json()["error"] == expected
        # The call that was refused comes back as written, so the client can show or retry it.
        partial = r.json()["partial"]
        assert partial["role"] == "assistant" and "launch_rockets" in partial["content"]
        assert "done_reason" not in r.json(), "the check cut the reply short: it did not end by itself"
        r = await client.post("/api/chat", json=body)
        last = json.loads(r.text.splitlines()[-1])
        assert last["error"] == expected and last["partial"] == partial


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "tiny", "tools": [WEATHER_TOOL]}, '"tiny" does not support tools'),
        ({"model": "tiny", "think": True}, '"tiny" does not support thinking'),
        ({"model": "tiny", "think": "high"}, '"tiny" does not support thinking'),
        ({"model": "agent", "think": "deep"}, 'invalid think value: "deep"'),
        (
            {"model": "agent", "tools": [WEATHER_TOOL], "format": "json"},
            "format and tools cannot be combined",
        ),
        (
            {
                "model": "agent",
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}],
            },
            "tools[0].function.parameters is not a valid JSON Schema",
        ),
    ],
)
async def test_documented_400s(server: Server, body: dict[str, Any], message: str) -> None:
    async with server.client() as client:
        r = await client.post("/api/chat", json=body | {"messages": [ASK_SKY], "stream": False})
    assert r.status_code == 400 and message in r.json()["error"]


def test_history_calls_render_through_the_template(agent_dir: Any) -> None:
    from transformers import PreTrainedTokenizerFast

    from inference.backends.chat_template import template_message

    hf = PreTrainedTokenizerFast.from_pretrained(str(agent_dir))
    messages = [
        ASK_PARIS,
        {"role": "assistant", "content": "", "tool_calls": [PARIS_CALL]},
        {"role": "tool", "content": "22", "tool_name": "get_weather"},
    ]
    text = hf.apply_chat_template(
        [template_message(m) for m in messages], tools=[WEATHER_TOOL], tokenize=False
    )
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response>\n22\n</tool_response>" in text


async def test_format_applies_from_the_start_of_the_answer(server: Server) -> None:
    """A thinking model reasons freely, then its answer is held to the schema, in one pass."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["a"],
        "additionalProperties": False,
    }
    client = ollama.AsyncClient(host=server.url)
    reply = await client.chat(model="agent", messages=[ASK_SKY], format=schema, options=GREEDY)
    assert reply.message.thinking == "Light scatters off air."
    answer = json.loads(reply.message.content)
    assert set(answer) == {"a"} and 0 <= answer["a"] <= 9
