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
