"""The Responses and Messages bodies as the native chat requests they ask for (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from app.protocol import anthropic_request, responses_request
from app.protocol.errors import BadRequest

PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}}


def responses(body: dict[str, Any]) -> dict[str, Any]:
    return responses_request.native_chat({"model": "m"} | body).model_dump(exclude_none=True)


def messages(body: dict[str, Any], can_think: bool = True) -> dict[str, Any]:
    full = {"model": "m", "max_tokens": 16} | body
    return anthropic_request.native_chat(full, can_think=can_think).model_dump(exclude_none=True)


def test_a_responses_conversation_becomes_native_turns() -> None:
    native = responses(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "Need a tool."}],
                },
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city": "Rome"}',
                },
                {
                    "type": "function_call",
                    "call_id": "c2",
                    "name": "get_weather",
                    "arguments": '{"city": "Oslo"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": "22 C"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "3 C"}],
                },
                {"role": "assistant", "content": [{"type": "output_text", "text": "Warm and cold."}]},
                {"role": "developer", "content": "Shorter."},
            ],
            "max_output_tokens": 9,
            "temperature": 0.5,
        }
    )
    roles = [m["role"] for m in native["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "system"]
    calls = native["messages"][2]
    assert calls["thinking"] == "Need a tool." and [
        c["function"]["arguments"] for c in calls["tool_calls"]
    ] == [
        {"city": "Rome"},
        {"city": "Oslo"},
    ]
    assert native["messages"][3] == {
        "role": "tool",
        "content": "22 C",
        "tool_call_id": "c1",
        "tool_name": "get_weather",
    }
    assert native["messages"][4]["content"] == "3 C"
    assert native["options"]["num_predict"] == 9 and native["options"]["temperature"] == 0.5
    assert native["options"]["top_p"] == 1.0 and native["truncate"] is False


def test_responses_tools_choice_format_and_effort() -> None:
    native = responses(
        {
            "input": "x",
            "tools": [{"type": "function", "name": "get_weather", "parameters": PARAMS, "strict": True}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "reasoning": {"effort": "high"},
        }
    )
    assert native["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": PARAMS}}
    ]
    assert native["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert native["parallel_tool_calls"] is False and native["think"] == "high"
    schema = {"type": "object"}
    assert (
        responses({"input": "x", "text": {"format": {"type": "json_schema", "name": "s", "schema": schema}}})[
            "format"
        ]
        == schema
    )
    assert responses({"input": "x", "text": {"format": {"type": "json_object"}}})["format"] == "json"
    assert "format" not in responses({"input": "x", "text": {"format": {"type": "text"}}})


def test_an_anthropic_conversation_becomes_native_turns() -> None:
    native = messages(
        {
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Need a tool.", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Rome"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "22 C"}],
                        },
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
            "stop_sequences": ["END"],
            "top_k": 5,
        }
    )
    assert [m["role"] for m in native["messages"]] == ["system", "user", "assistant", "tool", "user"]
    turn = native["messages"][2]
    assert turn["content"] == "Checking." and turn["thinking"] == "Need a tool."
    assert turn["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert native["messages"][3] == {
        "role": "tool",
        "content": "22 C",
        "tool_call_id": "t1",
        "tool_name": "get_weather",
    }
    assert native["options"] == {"num_predict": 16, "temperature": 1.0, "top_k": 5, "stop": ["END"]}


@pytest.mark.parametrize(
    ("choice", "tool_choice", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            {"type": "function", "function": {"name": "f"}},
            False,
        ),
    ],
)
def test_anthropic_tool_choice(choice: dict[str, Any], tool_choice: object, parallel: bool | None) -> None:
    native = messages(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": PARAMS}],
            "tool_choice": choice,
        }
    )
    assert native["tool_choice"] == tool_choice and native.get("parallel_tool_calls") == parallel
    assert native["tools"][0]["function"] == {"name": "f", "parameters": PARAMS}


def test_anthropic_thinking_only_for_models_that_reason() -> None:
    ask = {"messages": [{"role": "user", "content": "x"}]}
    assert messages(ask | {"thinking": {"type": "enabled", "budget_tokens": 2048}})["think"] is True
    assert messages(ask | {"thinking": {"type": "disabled"}})["think"] is False
    assert messages(ask | {"output_config": {"effort": "xhigh"}})["think"] == "high"
    assert "think" not in messages(
        ask | {"thinking": {"type": "enabled", "budget_tokens": 2048}}, can_think=False
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": None}, "max_tokens: field required"),
        ({"max_tokens": 0}, "at least 1"),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]},
            "not supported",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "document blocks are not supported",
        ),
    ],
)
def test_anthropic_refusals(body: dict[str, Any], message: str) -> None:
    full = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]} | body
    with pytest.raises(BadRequest, match=message):
        anthropic_request.native_chat({k: v for k, v in full.items() if v is not None}, can_think=True)
