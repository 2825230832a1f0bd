"""Schemas the grammar cannot take whole, and schemas that take too long: clear answers, never a
stalled server (fake backend; the real models' replies are checked in tests/models)."""

from __future__ import annotations

import secrets

import pytest

from app.protocol import steering
from tests.conftest import Server
from validation.structured import compile_schema

USER = [{"role": "user", "content": "x"}]


def test_unimplemented_keywords_are_approximated_and_reported() -> None:
    fmt = compile_schema(
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                "home": {"type": "string", "format": "uri-reference"},
            },
            "dependencies": {"tags": ["home"]},
        }
    )
    assert set(fmt.approximated) == {
        'Unimplemented keys: ["uniqueItems"]',
        'Unimplemented keys: ["dependencies"]',
        "Unknown format: uri-reference",
    }
    assert compile_schema({"type": "object", "properties": {"a": {"type": "string"}}}).approximated == ()


async def test_the_header_says_when_enforcement_is_approximate(server: Server) -> None:
    fmt = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "minProperties": 1,
        "uniqueItems": True,
    }
    async with server.client() as http:
        reply = await http.post(
            "/api/chat", json={"model": "fakejson", "messages": USER, "format": fmt, "stream": False}
        )
        assert reply.status_code == 200 and "uniqueItems" in reply.headers["x-trillm-enforcement"]
        # What the grammar skipped, the validator still checks against the original schema.
        forbid_b = {"type": "object", "not": {"required": ["b"]}}
        body = {"model": "fakejson", "messages": USER, "format": forbid_b, "stream": False}
        refused = await http.post("/api/chat", json=body)
        assert refused.status_code == 422 and "not" in refused.headers["x-trillm-enforcement"], refused.text
        exact = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}
        plain = await http.post(
            "/api/chat", json={"model": "fakejson", "messages": USER, "format": exact, "stream": False}
        )
        assert plain.status_code == 200 and "x-trillm-enforcement" not in plain.headers


async def test_a_schema_that_takes_too_long_to_check_is_a_400(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(steering, "CHECK_SECONDS", 0.001)
    salt = secrets.token_hex(4)  # never seen: it must go to the worker process
    fmt = {"type": "object", "properties": {f"p{i}_{salt}": {"type": "string"} for i in range(50)}}
    async with server.client() as http:
        slow = await http.post(
            "/api/chat", json={"model": "fakejson", "messages": USER, "format": fmt, "stream": False}
        )
        assert slow.status_code == 400 and "take longer than" in slow.json()["error"]
        fine = await http.post("/api/chat", json={"model": "fake", "messages": USER, "stream": False})
        assert fine.status_code == 200


LENIENT_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            },
            "required": ["city"],
        },
    },
}


async def test_tool_schemas_are_approximated_and_reported(server: Server) -> None:
    """A tool whose parameters use a keyword the grammar cannot enforce is served (enforced in
    part, validated in full) and the response says so; a tool the model then calls wrongly is
    still the usual error."""
    async with server.client() as http:
        body = {"model": "faketools", "messages": USER, "tools": [LENIENT_TOOL], "stream": False}
        reply = await http.post("/api/chat", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Rome"}
        assert "uniqueItems" in reply.headers["x-trillm-enforcement"]
        openai = {"model": "faketools", "messages": USER, "tools": [LENIENT_TOOL]}
        also = await http.post("/v1/chat/completions", json=openai)
        assert also.status_code == 200 and "uniqueItems" in also.headers["x-trillm-enforcement"]
        # The validator holds the original schema: a required key the call lacks is refused.
        strict = {**LENIENT_TOOL["function"], "parameters": {**LENIENT_TOOL["function"]["parameters"]}}
        strict["parameters"]["required"] = ["city", "days"]
        body["tools"] = [{"type": "function", "function": strict}]
        refused = await http.post("/api/chat", json=body)
        assert refused.status_code == 422 and "days" in refused.json()["error"], refused.text
        plain = {**body, "tools": [{"type": "function", "function": {"name": "get_weather"}}]}
        exact = await http.post("/api/chat", json=plain)
        assert exact.status_code == 200 and "x-trillm-enforcement" not in exact.headers


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "llama3"])
@pytest.mark.parametrize("lenient", [False, True])
def test_every_call_grammar_compiles_with_referenced_definitions(fmt: str, lenient: bool) -> None:
    """Tool parameters with ``$defs`` (every pydantic model with an Enum or nested model) compile
    in each call framing, strict and lenient."""
    from llguidance import LLMatcher

    from validation.grammars import tool_grammar

    parameters = {
        "$defs": {"Unit": {"enum": ["c", "f"], "type": "string"}},
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/Unit"}},
        "required": ["city", "unit"],
    }
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": parameters}}]
    grammar = tool_grammar(fmt, tools, thinking=False, inside=False, required=True, lenient=lenient)
    assert grammar is not None
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    assert not failed and not messages, messages
