"""Smoke: the server answers its probes and streams from the fake and the tiny MLX model."""

from __future__ import annotations

import json

from tests.conftest import Server


async def test_probe(server: Server) -> None:
    async with server.client() as client:
        r = await client.get("/")
        assert r.status_code == 200 and r.text == "Ollama is running"
        r = await client.post("/api/chat", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert "".join(x["message"]["content"] for x in lines) == "Hello, world!"
        r = await client.post("/api/chat", json={"model": "tiny", "stream": False, "options": {"temperature": 0},
                                                 "messages": [{"role": "user", "content": "Say hello"}]})
        print(r.json())
        assert r.json()["message"]["content"] == "Hello! 你好 🎉 Grüße."
