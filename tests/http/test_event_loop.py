"""Heavy request checking stays off the event loop: other streams keep their pace meanwhile.

A request with 200 tools, or a large schema, takes tens to hundreds of milliseconds to check and
compile. All streams share one Trio thread; were that work done on it, every other stream would
stall for as long. Here a stream's token gaps are measured while such requests arrive.

Measured on 2 cores (the decoding thread stalls too, not only the loop): with the checks on a
worker thread of the server's process, the worst gap grew by 80-170 ms over the stream's normal
pace, since pure-Python checks hold the interpreter lock the decoding thread needs; with new
schemas and tools checked in a worker process (their verdicts remembered here) and tool grammars
remembered by their tools, by 10-15 ms. A repeated tool set costs nothing.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Any

import trio

from tests.conftest import Server


def many_tools(count: int) -> list[dict[str, Any]]:
    salt = secrets.token_hex(4)  # nothing cached: each request's schemas are new
    properties = {
        f"p{j}": {"type": ["string", "integer"][j % 2], "description": f"{salt} {j}"} for j in range(8)
    }
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{salt}_{i}",
                "description": "does one thing " * 5,
                "parameters": {"type": "object", "properties": properties, "required": ["p0"]},
            },
        }
        for i in range(count)
    ]


def large_schema() -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "maxLength": 20},
            "b": {"type": "integer", "minimum": 0},
            "c": {"enum": ["x", "y", "z"]},
        },
        "required": ["a", "b"],
    }
    fields = {f"field_{i}": item for i in range(50)}
    return {"type": "object", "title": secrets.token_hex(4), "properties": fields}


async def test_a_heavy_request_does_not_stall_another_stream(server: Server) -> None:
    stream_body = {
        "model": "slow",
        "messages": [{"role": "user", "content": "go"}],
        "options": {"num_predict": 400},
    }
    arrivals: list[float] = []
    heavy_window: list[float] = []
    user = [{"role": "user", "content": "hi"}]
    async with server.client() as streamer, server.client() as other:

        async def heavy() -> None:
            await trio.sleep(0.3)  # the stream's normal pace is measured first
            heavy_window.append(trio.current_time())
            for _ in range(3):
                tools = {"model": "faketools", "messages": user, "tools": many_tools(200), "stream": False}
                called = await other.post("/api/chat", json=tools)
                assert called.status_code == 422  # the script calls a tool it was not given
                fmt = {"model": "fakejson", "messages": user, "format": large_schema(), "stream": False}
                assert (await other.post("/api/chat", json=fmt)).status_code == 200
            heavy_window.append(trio.current_time())

        async with streamer.stream("POST", "/api/chat", json=stream_body) as response:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(heavy)
                async for line in response.aiter_lines():
                    arrivals.append(trio.current_time())
                    if json.loads(line)["done"] or (
                        len(heavy_window) == 2 and arrivals[-1] > heavy_window[1] + 0.2
                    ):
                        break
    start, end = heavy_window
    gaps = [(b - a, b) for a, b in itertools.pairwise(arrivals)]
    normal = sorted(gap for gap, at in gaps[1:] if at < start)
    during = sorted(gap for gap, at in gaps if start <= at <= end)
    assert len(normal) >= 5 and len(during) >= 5, (len(normal), len(during))
    p90 = normal[int(len(normal) * 0.9)]
    print(f"stream gaps: normal p90 {p90 * 1e3:.1f} ms; during heavy requests max {during[-1] * 1e3:.1f} ms")
    assert during[-1] < p90 + 0.040, (p90, during[-5:])  # measured: 10-15 ms over p90
