"""Structured output and tool calls as real clients send them, on the real server and models.

The schemas come from pydantic (``$defs``, Enums, Optional, discriminated unions, recursion) through
the official ``openai`` and ``ollama`` clients and LangChain. The models are untrained (``jsonrandom``,
``jsontools``) except where a client needs the model to choose a call by itself (``agent``), so
every valid reply is the grammar's doing.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import ollama
import openai
import pytest
import trio
from pydantic import BaseModel, Field

from tests.conftest import Server
from tests.support.schema_corpus import Order, Owner, Person, Reasoned, corpus, declared_order_holds
from tests.unit.test_schema_decoding import Weather

pytestmark = [pytest.mark.mlx, pytest.mark.both_backends]

ASK = [{"role": "user", "content": "Answer in JSON."}]


def options(seed: int) -> dict[str, Any]:
    return {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": seed, "num_predict": 300}


async def test_a_corpus_of_real_schemas_streamed_and_not(server: Server) -> None:
    """Every 200 parses, validates and keeps the declared key order; the requests run together."""
    client = ollama.AsyncClient(host=server.url, timeout=300)
    schemas = corpus()
    outcomes: dict[tuple[str, bool], str] = {}

    async def one(name: str, stream: bool) -> None:
        schema = schemas[name]
        try:
            if stream:
                parts = await client.chat(
                    model="jsonrandom", messages=ASK, format=schema, options=options(3), stream=True
                )
                text = "".join([part.message.content or "" async for part in parts])
            else:
                reply = await client.chat(model="jsonrandom", messages=ASK, format=schema, options=options(3))
                text = reply.message.content or ""
        except ollama.ResponseError as error:
            # 422 before the first byte; -1 is how the client reports an error line mid-stream
            assert error.status_code in (-1, 422) and "done_reason: length" in error.error, error.error
            outcomes[name, stream] = "length"
            return
        value = json.loads(text)
        jsonschema.validate(value, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        assert declared_order_holds(value, schema, schema), (name, text)
        outcomes[name, stream] = "ok"

    async with trio.open_nursery() as nursery:
        for name in schemas:
            for stream in (False, True):
                nursery.start_soon(one, name, stream)
    assert len(outcomes) == 2 * len(schemas) >= 80
    ok = [key for key, outcome in outcomes.items() if outcome == "ok"]
    assert len(ok) >= 0.9 * len(outcomes), (len(ok), sorted(name for name, _ in set(outcomes) - set(ok)))


async def test_reason_first_schemas_answer_in_the_declared_order(server: Server) -> None:
    client = ollama.AsyncClient(host=server.url)
    for seed in range(4):
        reply = await client.chat(
            model="jsonrandom", messages=ASK, format=Reasoned.model_json_schema(), options=options(seed)
        )
        assert list(json.loads(reply.message.content or "")) == ["reasoning", "answer"]


def openai_client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


async def test_openai_parse_with_a_nested_pydantic_model(server: Server) -> None:
    api = openai_client(server)
    for model in (Person, Order, Owner):
        completion = await api.chat.completions.parse(
            model="jsonrandom", messages=ASK, response_format=model, seed=5, max_tokens=300
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, model), completion.choices[0].message.content
        text = completion.choices[0].message.content or ""
        assert list(json.loads(text)) == list(model.model_fields)


class Lookup(BaseModel):
    """Look the weather up."""

    query: Weather
    days: int = Field(ge=1, le=3)


@pytest.mark.parametrize("choice", ["required", "named"])
async def test_a_required_or_named_tool_is_always_a_valid_call(server: Server, choice: str) -> None:
    """An untrained model would ramble in prose; forced, it calls, with arguments that hold
    for pydantic's ``$defs`` / ``$ref`` and Enum, over several seeds, streamed and not."""
    api = openai_client(server)
    tools = [openai.pydantic_function_tool(Lookup), openai.pydantic_function_tool(Weather)]
    tool_choice: Any = (
        "required" if choice == "required" else {"type": "function", "function": {"name": "Weather"}}
    )
    for seed in range(4):
        common: dict[str, Any] = {
            "model": "jsontools",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "tools": tools,
            "tool_choice": tool_choice,
            "seed": seed,
            "max_tokens": 300,
            "parallel_tool_calls": False,
        }
        reply = await api.chat.completions.create(**common)
        message = reply.choices[0].message
        assert not message.content and message.tool_calls and len(message.tool_calls) == 1
        assert reply.choices[0].finish_reason == "tool_calls"
        call = message.tool_calls[0].function
        model = {"Lookup": Lookup, "Weather": Weather}[call.name]
        assert choice == "required" or call.name == "Weather"
        model.model_validate_json(call.arguments)
        stream = await api.chat.completions.create(**common, stream=True)
        content, streamed = "", []
        async for chunk in stream:
            if chunk.choices:
                content += chunk.choices[0].delta.content or ""
                streamed += chunk.choices[0].delta.tool_calls or []
        assert content == "" and len(streamed) == 1
        assert streamed[0].function and streamed[0].function.name in ("Lookup", "Weather")


async def test_ollama_clients_can_require_a_call_too(server: Server) -> None:
    """``tool_choice`` on ``/api/chat`` (a trillm extension), as Ollama-side clients emulate it."""
    tool = openai.pydantic_function_tool(Weather)
    async with server.client() as client:
        r = await client.post(
            "/api/chat",
            json={
                "model": "jsontools",
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [tool],
                "tool_choice": "required",
                "stream": False,
                "options": options(1),
            },
        )
    assert r.status_code == 200, r.text
    message = r.json()["message"]
    assert message["content"] == "" and message["tool_calls"][0]["function"]["name"] == "Weather"
    Weather.model_validate(message["tool_calls"][0]["function"]["arguments"])


async def test_a_reply_cut_by_the_limit_comes_back_with_the_error(server: Server) -> None:
    """instructor-style retry: the 422 says the limit ended it and carries the text and usage."""
    api = openai_client(server)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await api.chat.completions.parse(
            model="jsonrandom", messages=ASK, response_format=Person, seed=1, max_tokens=5
        )
    body = caught.value.body
    assert isinstance(body, dict) and "done_reason: length" in body["message"]
    partial = body["partial"]
    assert partial["finish_reason"] == "length" and partial["message"]["content"].startswith('{"name":')
    assert body["usage"]["completion_tokens"] == 5


class get_weather(BaseModel):
    """Get the current weather for a city."""

    city: str = Field(description="The name of the city")


@pytest.mark.parametrize("method", ["json_schema", "json_mode", "function_calling"])
async def test_langchain_with_structured_output(server: Server, method: str) -> None:
    from langchain_ollama import ChatOllama

    def invoke(llm: ChatOllama, schema: Any, prompt: str) -> Any:
        # LangChain's async path needs asyncio; its sync one runs in a thread beside Trio.
        return llm.with_structured_output(schema, method=method).invoke(prompt)

    if method == "function_calling":  # the model must choose the call itself: the trained one
        llm = ChatOllama(model="agent", base_url=server.url, temperature=0)
        out = await trio.to_thread.run_sync(invoke, llm, get_weather, "What is the weather in Paris?")
        assert isinstance(out, get_weather) and out.city == "Paris"
        return
    llm = ChatOllama(model="jsonrandom", base_url=server.url, temperature=1.0, seed=2, num_predict=300)
    if method == "json_schema":
        answer = await trio.to_thread.run_sync(invoke, llm, Person, "Describe someone.")
        assert isinstance(answer, Person)
    else:  # "json" alone leaves keys unbounded: an untrained model closes one within a few seeds
        for seed in range(8):
            llm = ChatOllama(
                model="jsonrandom", base_url=server.url, temperature=1.0, seed=seed, num_predict=400
            )
            try:
                value = await trio.to_thread.run_sync(invoke, llm, Reasoned.model_json_schema(), "Answer.")
            except ollama.ResponseError as error:
                assert "done_reason: length" in error.error
                continue
            assert isinstance(value, dict)
            break
        else:
            pytest.fail("no seed gave a complete JSON object")


async def test_keys_templates_do_not_know_stay_out_of_the_prompt(server: Server) -> None:
    """OpenAI's ``strict`` (and other extra keys) would change the prompt the model sees."""
    from tests.support.tiny_model import ASK_PARIS, WEATHER_TOOL

    api = openai_client(server)
    counts = []
    for extra in ({}, {"strict": True}, {"strict": False, "x-vendor": {"a": 1}}):
        tool = {"type": "function", "function": WEATHER_TOOL["function"] | extra}
        reply = await api.chat.completions.create(
            model="agent",
            messages=[ASK_PARIS],
            tools=[tool],
            temperature=0,  # type: ignore[list-item]
        )
        assert reply.usage is not None
        counts.append(reply.usage.prompt_tokens)
        calls = reply.choices[0].message.tool_calls
        assert calls and json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert counts[0] == counts[1] == counts[2]
