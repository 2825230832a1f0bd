"""OpenAI chat bodies translated into the native request model (no sockets)."""

from __future__ import annotations

import pytest

from app.protocol.errors import BadRequest
from app.protocol.openai_request import native_chat
from app.protocol.requests import ChatRequest


def test_a_chat_completion_becomes_a_typed_native_chat_request() -> None:
    native = native_chat(
        {
            "model": "m",
            "messages": [
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
                },
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "cold"},
            ],
            "max_completion_tokens": 9,
            "response_format": {"type": "json_object"},
            "reasoning_effort": "minimal",
        }
    )
    assert isinstance(native, ChatRequest)
    assert native.messages is not None and [m.role for m in native.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]
    assert native.messages[0].content == "Be brief."
    call = native.messages[2].tool_calls
    assert call is not None and call[0].function.arguments == {"city": "Oslo"}
    assert native.messages[3].tool_name == "w"  # found by the call it answers
    assert (
        native.options is not None and native.options.num_predict == 9 and native.options.temperature == 1.0
    )
    assert (native.format, native.think, native.truncate) == ("json", "low", False)


def test_arguments_that_are_json_but_not_an_object_are_a_400_naming_the_field() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "[1]"}}]}
        ],
    }
    with pytest.raises(BadRequest) as refused:
        native_chat(body)
    assert "messages[0].tool_calls[0].function.arguments" in refused.value.message
