"""NDJSON streaming on the wire: framing, timestamps, incremental delivery, the final chunk."""

from __future__ import annotations

import json
import re

import trio

from app.config import Settings
from tests.conftest import Server, start_server, wait_until

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
MSG = [{"role": "user", "content": "hi"}]
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


async def test_ndjson_framing_and_final_chunk(server: Server) -> None:
    async with server.client() as client:
        r = await client.post("/api/chat", json={"model": "fake", "messages": MSG})
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.text.endswith("\n") and "\n\n" not in r.text
    lines = r.text.splitlines()
    chunks = [json.loads(x) for x in lines]
    for raw, chunk in zip(lines, chunks, strict=True):
        assert raw == json.dumps(chunk, ensure_ascii=False, separators=(",", ":")), "compact JSON"
        assert RFC3339_UTC.match(chunk["created_at"])
        assert chunk["model"] == "fake" and chunk["message"]["role"] == "assistant"
    *body, last = chunks
    assert all(c["done"] is False and not set(METRICS) & c.keys() for c in body)
    assert last["done"] is True and last["done_reason"] == "stop" and last["message"]["content"] == ""
    assert all(isinstance(last[m], int) and last[m] > 0 for m in METRICS)
    assert last["eval_count"] == 5  # four pieces and the end token
    assert list(last)[:5] == ["model", "created_at", "message", "done", "done_reason"]


async def test_tokens_arrive_while_generation_continues(server: Server) -> None:
    """The first chunk reaches the client long before a slow generation could have finished."""
    async with server.client() as client:
        body = {"model": "slow", "messages": MSG, "options": {"num_predict": 50}}
        async with client.stream("POST", "/api/chat", json=body) as r:
            start = trio.current_time()
            lines = r.aiter_lines()
            first = json.loads(await lines.__anext__())
            assert first["message"]["content"] == "tick "
            assert trio.current_time() - start < 0.5  # 50 tokens take >= 1 s
            rest = [json.loads(x) async for x in lines]
    assert len(rest) == 50 and rest[-1]["done_reason"] == "length" and rest[-1]["eval_count"] == 50


async def test_stop_strings_across_pieces_on_both_endpoints(server: Server) -> None:
    async with server.client() as client:
        for stream in (True, False):
            r = await client.post(
                "/api/generate",
                json={"model": "fake", "prompt": "x", "stream": stream, "options": {"stop": ["o, w"]}},
            )
            chunks = [json.loads(x) for x in r.text.splitlines()]
            assert "".join(c["response"] for c in chunks) == "Hell"
            assert chunks[-1]["done_reason"] == "stop"


async def test_generate_context_round_trips(server: Server) -> None:
    async with server.client() as client:
        first = (
            await client.post("/api/generate", json={"model": "fake", "prompt": "ab", "stream": False})
        ).json()
        assert first["context"][-1] == 0  # the fake's end token
        await client.post(
            "/api/generate",
            json={"model": "fake", "prompt": "c", "context": first["context"], "stream": False},
        )
    prompts = server.fake.prompts
    assert prompts[-1][: len(first["context"])] == first["context"]


async def test_system_prompt_and_roles_reach_the_template(server: Server) -> None:
    async with server.client() as client:
        await client.post(
            "/api/generate", json={"model": "fake", "prompt": "p", "system": "be brief", "stream": False}
        )
        messages = [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
            {"role": "tool", "content": "T", "tool_name": "f"},
            {"role": "USER", "content": "U2"},
        ]
        await client.post("/api/chat", json={"model": "fake", "messages": messages, "stream": False})
    rendered = ["".join(map(chr, p)) for p in server.fake.prompts[-2:]]
    assert rendered[0] == "<system>be brief<user>p<assistant>"
    assert rendered[1] == "<system>S<user>U<assistant>A<tool>T<user>U2<assistant>"


async def test_keep_alive_expiry_unloads(server: Server) -> None:
    async with server.client() as client:
        r = await client.post("/api/generate", json={"model": "fake", "keep_alive": "300ms"})
        assert r.json()["done_reason"] == "load"
        assert [m["name"] for m in (await client.get("/api/ps")).json()["models"]] == ["fake:latest"]
        with trio.fail_after(5):
            while (await client.get("/api/ps")).json()["models"]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        r = await client.post("/api/generate", json={"model": "fake", "keep_alive": -1})
        ps = (await client.get("/api/ps")).json()["models"]
        assert int(ps[0]["expires_at"][:4]) > 2200, "negative keep_alive keeps it forever"


async def test_shutdown_ends_live_streams_and_the_engine(settings: Settings) -> None:
    """On shutdown a live stream ends with an error line and the server task returns promptly."""
    lines: list[dict[str, object]] = []
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            server, stop = await start_server(nursery, settings)

            async def listen() -> None:
                async with (
                    server.client() as client,
                    client.stream("POST", "/api/chat", json={"model": "slow", "messages": MSG}) as r,
                ):
                    async for raw in r.aiter_lines():
                        lines.append(json.loads(raw))

            nursery.start_soon(listen)
            await wait_until(lambda: len(lines) >= 3)
            stop.set()
    assert lines[-1] == {"error": "the server is shutting down"}
    assert server.services.engine.statistics().loaded == 0


async def test_unknown_options_are_ignored(server: Server) -> None:
    async with server.client() as client:
        options = {"mirostat": 0, "num_gpu": 1, "something_new": [1, 2], "temperature": None}
        r = await client.post(
            "/api/chat", json={"model": "fake", "messages": MSG, "stream": False, "options": options}
        )
    assert r.status_code == 200 and r.json()["message"]["content"] == "Hello, world!"
