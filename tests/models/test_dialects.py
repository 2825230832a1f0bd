"""The Responses and Messages APIs on the real models, through the official ``openai`` and
``anthropic`` clients and the OpenAI Agents SDK's default model path.

The ``agent`` model is trained (tests/support/tiny_model.py) to call ``get_weather`` for Paris, to
answer from the tool's result, and to reason in ``<think>`` blocks, so greedy replies are exact;
``jsonrandom`` is untrained, so a valid structured reply is the grammar's doing.
"""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from typing import Any, Literal

import anthropic
import openai
import pytest
import trio
from pydantic import BaseModel, Field

from tests.conftest import Server
from tests.support.schema_corpus import Order, Person
from tests.support.tiny_model import ASK_PARIS, ASK_SKY, SCRIPT, WEATHER_TOOL

pytestmark = [pytest.mark.mlx, pytest.mark.both_backends]
HELLO, HELLO_REPLY = SCRIPT[0]
GREEDY = {"temperature": 0}  # the anthropic client no longer has sampling arguments
FUNCTION = WEATHER_TOOL["function"]
RESPONSES_TOOL = {"type": "function", **FUNCTION}
ANTHROPIC_TOOL = {
    "name": FUNCTION["name"],
    "description": FUNCTION["description"],
    "input_schema": FUNCTION["parameters"],
}


def oai(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def claude(server: Server) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="unused", max_retries=0)


# -- /v1/responses -----------------------------------------------------------------------------


async def test_responses_text_streamed_and_not(server: Server) -> None:
    client = oai(server)
    whole = await client.responses.create(model="tiny", input=HELLO, temperature=0)
    assert whole.output_text == HELLO_REPLY and whole.status == "completed"
    async with client.responses.stream(model="tiny", input=HELLO, temperature=0) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == HELLO_REPLY == final.output_text and len(deltas) > 1
    assert final.usage is not None and final.usage.input_tokens == whole.usage.input_tokens


async def test_responses_function_call_and_its_output(server: Server) -> None:
    client = oai(server)
    ask: list[Any] = [ASK_PARIS]
    first = await client.responses.create(model="agent", input=ask, tools=[RESPONSES_TOOL], temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    history = [
        *ask,
        *first.output,
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "22 degrees and sunny"},
    ]
    second = await client.responses.create(
        model="agent", input=history, tools=[RESPONSES_TOOL], temperature=0
    )
    assert second.output_text == "It is 22 degrees and sunny in Paris."
    async with client.responses.stream(
        model="agent", input=ask, tools=[RESPONSES_TOOL], temperature=0
    ) as stream:
        final = await stream.get_final_response()
    streamed = [item for item in final.output if item.type == "function_call"]
    assert [json.loads(c.arguments) for c in streamed] == [{"city": "Paris"}]


async def test_responses_reasoning_is_its_own_item(server: Server) -> None:
    client = oai(server)
    reply = await client.responses.create(
        model="agent", input=[ASK_SKY], temperature=0, reasoning={"effort": "medium"}
    )
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    assert reply.output[0].content[0].text.strip() == "Light scatters off air."
    assert reply.output_text == "Because of Rayleigh scattering."
    off = await client.responses.create(
        model="agent", input=[ASK_SKY], temperature=0, reasoning={"effort": "none"}
    )
    assert off.output_text == "Rayleigh scattering." and [i.type for i in off.output] == ["message"]


async def test_responses_parse_with_pydantic_models(server: Server) -> None:
    client = oai(server)
    for model in (Person, Order):
        parsed = await client.responses.parse(
            model="jsonrandom",
            input="Answer in JSON.",
            text_format=model,
            max_output_tokens=300,
            extra_body={"seed": 5},
        )
        assert isinstance(parsed.output_parsed, model), parsed.output_text
        assert list(json.loads(parsed.output_text)) == list(model.model_fields)


def weather_agent(server: Server, get_weather: Any) -> Any:
    """An Agents SDK agent on trillm's ``agent`` model, greedy, with the trained ``get_weather``
    (its exact schema and description, so the prompt is the one the model learned)."""
    import agents

    tool = agents.FunctionTool(
        name=FUNCTION["name"],
        description=FUNCTION["description"],
        params_json_schema=FUNCTION["parameters"],
        on_invoke_tool=get_weather,
        strict_json_schema=False,
    )
    model = agents.OpenAIResponsesModel(model="agent", openai_client=oai(server))
    settings = agents.ModelSettings(temperature=0)
    return agents.Agent(name="weather", model=model, tools=[tool], model_settings=settings)


async def test_the_agents_sdk_runs_an_agent_with_a_function_tool(server: Server) -> None:
    """The Agents SDK's default path (the Responses API) runs its loop against trillm: the model
    calls the tool, the SDK runs it and sends the result back, the model answers from it. The
    SDK runs on asyncio, so on a thread of its own here."""
    import agents

    ran: list[dict[str, Any]] = []

    async def get_weather(context: Any, arguments: str) -> str:
        ran.append(json.loads(arguments))
        return "22 degrees and sunny"

    async def run() -> Any:
        config = agents.RunConfig(tracing_disabled=True)
        return await agents.Runner.run(
            weather_agent(server, get_weather), ASK_PARIS["content"], run_config=config
        )

    result = await trio.to_thread.run_sync(lambda: asyncio.run(run()))
    assert ran == [{"city": "Paris"}]
    assert result.final_output == "It is 22 degrees and sunny in Paris."


async def test_the_agents_sdk_streams_an_agent_run(server: Server) -> None:
    """``Runner.run_streamed`` (the SDK's streaming path: ``responses.stream`` underneath) against
    trillm: the tool call, its output and the answer arrive as the SDK's run events."""
    import agents

    async def get_weather(context: Any, arguments: str) -> str:
        return "22 degrees and sunny"

    async def run() -> tuple[list[str], Any]:
        config = agents.RunConfig(tracing_disabled=True)
        agent = weather_agent(server, get_weather)
        result = agents.Runner.run_streamed(agent, ASK_PARIS["content"], run_config=config)
        kinds = [
            event.item.type async for event in result.stream_events() if event.type == "run_item_stream_event"
        ]
        return kinds, result.final_output

    kinds, answer = await trio.to_thread.run_sync(lambda: asyncio.run(run()))
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and "message_output_item" in kinds
    assert answer == "It is 22 degrees and sunny in Paris."


# -- /v1/messages ------------------------------------------------------------------------------


async def test_messages_text_streamed_and_not(server: Server) -> None:
    client = claude(server)
    ask = [{"role": "user", "content": HELLO}]
    whole = await client.messages.create(model="tiny", max_tokens=64, messages=ask, extra_body=GREEDY)
    assert whole.content[0].text == HELLO_REPLY and whole.stop_reason == "end_turn"
    async with client.messages.stream(model="tiny", max_tokens=64, messages=ask, extra_body=GREEDY) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == HELLO_REPLY and final.usage.output_tokens == whole.usage.output_tokens
    counted = await client.messages.count_tokens(model="tiny", messages=ask)
    assert counted.input_tokens == whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)


async def test_messages_tool_use_and_result(server: Server) -> None:
    client = claude(server)
    ask: list[Any] = [ASK_PARIS]
    first = await client.messages.create(
        model="agent", max_tokens=64, messages=ask, tools=[ANTHROPIC_TOOL], extra_body=GREEDY
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"})]
    result = {"type": "tool_result", "tool_use_id": uses[0].id, "content": "22 degrees and sunny"}
    history = [*ask, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = await client.messages.create(
        model="agent", max_tokens=64, messages=history, tools=[ANTHROPIC_TOOL], extra_body=GREEDY
    )
    assert (
        second.content[0].text == "It is 22 degrees and sunny in Paris." and second.stop_reason == "end_turn"
    )
    async with client.messages.stream(
        model="agent", max_tokens=64, messages=ask, tools=[ANTHROPIC_TOOL], extra_body=GREEDY
    ) as stream:
        final = await stream.get_final_message()
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Paris"})
    ]


async def test_messages_thinking_blocks(server: Server) -> None:
    client = claude(server)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    reply = await client.messages.create(
        model="agent",
        max_tokens=64,
        messages=[ASK_SKY],
        thinking=thinking,
        extra_body=GREEDY,
    )
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking.strip() == "Light scatters off air."
    assert reply.content[1].text == "Because of Rayleigh scattering."
    async with client.messages.stream(
        model="agent",
        max_tokens=64,
        messages=[ASK_SKY],
        thinking=thinking,
        extra_body=GREEDY,
    ) as stream:
        kinds = [e.delta.type async for e in stream if e.type == "content_block_delta"]
        final = await stream.get_final_message()
    assert "thinking_delta" in kinds and "text_delta" in kinds
    assert [b.type for b in final.content] == ["thinking", "text"]
    # A model that does not reason ignores thinking (Claude Code sends it to every model).
    plain = await client.messages.create(
        model="tiny",
        max_tokens=64,
        messages=[{"role": "user", "content": HELLO}],
        thinking=thinking,
        extra_body=GREEDY,
    )
    assert plain.content[0].text == HELLO_REPLY


class Unit(StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Reading(BaseModel):
    unit: Unit
    raining: bool


class Forecast(BaseModel):
    status: Literal["draft", "final"]
    now: Reading
    later: list[Reading] = Field(max_length=2)


async def test_messages_parse_with_pydantic_models(server: Server) -> None:
    """``messages.parse(output_format=Model)`` sends ``output_config.format`` (the SDK's strict
    transform of the schema: an Enum and a nested model, so ``$defs``): enforced and validated, so
    the untrained model's reply parses. (The transform moves string and number bounds into
    descriptions, so the model here is bounded by its enums and booleans.)"""
    client = claude(server)
    parsed = await client.messages.parse(
        model="jsonrandom",
        max_tokens=300,
        messages=[{"role": "user", "content": "Answer in JSON."}],
        output_format=Forecast,
        extra_body={"seed": 5, "temperature": 1.0},
    )
    assert isinstance(parsed.parsed_output, Forecast), parsed.content
    assert list(json.loads(parsed.content[0].text)) == ["status", "now", "later"]
