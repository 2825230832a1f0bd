"""Disconnects stop generation at the next step: streaming, non-streaming, queued and in prefill.

Each test states its invariant. The fake backend's per-token delay makes "the next step"
observable; the engine's job reports count the steps pulled after the cancel flag was set.
"""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
import trio

from app.config import Settings
from inference.engine.job import JobReport
from tests.conftest import Server, running_server, wait_until

CHAT = {"messages": [{"role": "user", "content": "go"}]}


async def wait_idle(server: Server) -> None:
    stats = server.services.engine.statistics
    await wait_until(lambda: not stats().active and not stats().queued, 10)


def last_report(server: Server, model: str) -> JobReport:
    return [r for r in server.services.engine.history if r.model == model][-1]


async def assert_serves_next_at_once(server: Server) -> None:
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.post("/api/chat", json={"model": "fake", "stream": False} | CHAT)
    assert r.json()["message"]["content"] == "Hello, world!"


async def read_lines_then_disconnect(server: Server, body: dict[str, object], lines: int) -> None:
    async with server.client() as client, client.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200
        seen = 0
        async for _ in r.aiter_lines():
            seen += 1
            if seen == lines:
                break


async def test_streaming_disconnect_stops_within_one_step(server: Server) -> None:
    """After the client leaves mid-stream, at most one more decode step completes."""
    await read_lines_then_disconnect(server, {"model": "slow"} | CHAT, lines=3)
    await wait_idle(server)
    report = last_report(server, "slow:latest")
    assert report.outcome == "cancelled"
    assert report.steps_after_cancel <= 1
    assert report.decode_steps < 10
    await assert_serves_next_at_once(server)


async def test_non_streaming_disconnect_stops_generation(server: Server) -> None:
    """A stream:false request whose client times out is cancelled just like a stream."""
    async with server.client() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/api/chat", json={"model": "slow", "stream": False} | CHAT, timeout=0.3)
    await wait_idle(server)
    report = last_report(server, "slow:latest")
    assert report.outcome == "cancelled"
    assert report.steps_after_cancel <= 1
    assert report.decode_steps < 40
    await assert_serves_next_at_once(server)


async def test_queued_request_leaves_the_queue_at_once(settings: Settings) -> None:
    """A request cancelled while waiting never starts and leaves the queue immediately."""
    settings.num_parallel = 1  # one at a time, so that the second request waits
    async with running_server(settings) as server:
        engine = server.services.engine
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_lines_then_disconnect, server, {"model": "slow"} | CHAT, 25)
            await wait_until(lambda: engine.statistics().active)
            with trio.move_on_after(0.2):
                async with server.client() as client:
                    await client.post("/api/chat", json={"model": "slow", "stream": False} | CHAT)
            await wait_until(lambda: not engine.statistics().queued, 1)
            assert engine.statistics().active == 1, "the running request is not disturbed"
        queued = [r for r in engine.history if r.outcome == "cancelled while queued"]
        assert len(queued) == 1 and not queued[0].started
        await wait_idle(server)
        await assert_serves_next_at_once(server)


async def test_disconnect_during_prefill_stops_between_chunks(server: Server) -> None:
    """A long prompt is abandoned at the next prefill chunk boundary, before any decoding."""
    body = {
        "model": "prefill",
        "messages": [{"role": "user", "content": "x" * 2000}],
        "options": {"num_batch": 50},  # 50 tokens x 10 ms = 0.5 s a chunk, ~41 chunks
    }
    async with server.client() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/api/chat", json=body, timeout=1.2)
    await wait_idle(server)
    report = last_report(server, "prefill:latest")
    assert report.outcome == "cancelled"
    assert report.decode_steps == 0
    assert report.checks_after_cancel <= 1  # the engine may see the flag first
    assert report.prefill_checks < 10
    await assert_serves_next_at_once(server)


@pytest.mark.mlx
@pytest.mark.both_backends
async def test_real_backend_stream_stops_on_disconnect(server: Server) -> None:
    """MLX and llama.cpp stop within a step too, and the model keeps serving afterwards."""
    body = {"model": "random", "options": {"num_predict": 100000, "temperature": 0}} | CHAT
    await read_lines_then_disconnect(server, body, lines=5)
    await wait_idle(server)
    report = last_report(server, "random:latest")
    assert report.outcome == "cancelled"
    assert report.steps_after_cancel <= 1
    assert report.decode_steps < 100000
    async with server.client() as client:
        r = await client.post(
            "/api/chat",
            json={"model": "tiny", "stream": False, "options": {"temperature": 0}}
            | {"messages": [{"role": "user", "content": "Say hello"}]},
        )
    assert r.json()["message"]["content"] == "Hello! 你好 🎉 Grüße."


@pytest.mark.mlx
@pytest.mark.parametrize("backend_kind", ["llamacpp"], indirect=True)
async def test_llamacpp_prefill_stops_between_batches(server: Server) -> None:
    """llama.cpp reads a prompt in ``num_batch`` chunks and is abandoned at the next boundary."""
    body = {
        "model": "random",
        "messages": [{"role": "user", "content": "One two three four five. " * 250}],
        "options": {"num_batch": 1, "num_predict": 1},
    }
    async with server.client() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/api/chat", json=body, timeout=0.3)
    await wait_idle(server)
    report = last_report(server, "random:latest")
    assert report.outcome == "cancelled"
    assert report.decode_steps == 0
    assert report.checks_after_cancel <= 1
    assert 0 < report.prefill_checks < report.prompt_tokens - 1
    await assert_serves_next_at_once(server)


@pytest.mark.mlx
@pytest.mark.both_backends
async def test_prompt_abandoned_in_prefill_leaves_the_cache_consistent(settings: Settings) -> None:
    """The plan's prefill cancel: a long prompt abandoned between chunks is stopped at the next
    boundary, and a later request for a prompt sharing its prefix answers exactly as it does
    without any cache (the abandoned prefill left no partial state behind)."""
    long = {"role": "user", "content": "One two three four five. " * 250}
    shorter = {"role": "user", "content": "One two three four five. " * 200 + "Six?"}
    greedy = {"temperature": 0, "num_predict": 8}

    async def answers(server: Server) -> list[str]:
        async with server.client() as client:
            out = []
            for message in (long, shorter):
                body = {"model": "random", "messages": [message], "stream": False, "options": greedy}
                out.append((await client.post("/api/chat", json=body)).json()["message"]["content"])
            return out

    async with running_server(replace(settings, prefix_cache_entries=0)) as plain:
        expected = await answers(plain)
    async with running_server(settings) as server:
        body = {"model": "random", "messages": [long], "options": {"num_batch": 1, "num_predict": 1}}
        async with server.client() as client:
            await client.post("/api/chat", json={"model": "random", "messages": []})  # load
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/api/chat", json=body, timeout=0.3)
        await wait_idle(server)
        report = last_report(server, "random:latest")
        assert report.outcome == "cancelled" and report.decode_steps == 0
        assert report.checks_after_cancel <= 1  # llama.cpp polls between chunks; MLX's engine
        assert report.prefill_checks < report.prompt_tokens - 1  # steps one chunk at a time
        assert await answers(server) == expected
