"""The error table: every invalid request gets the right status and ``{"error": ...}``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from app.config import Settings
from tests.conftest import Server, start_server, wait_until, write_fake

MSG = [{"role": "user", "content": "hi"}]

CASES: list[tuple[str, str, object, int, str]] = [
    (
        "/api/chat",
        "repeat_penalty zero",
        {"model": "fake", "messages": MSG, "options": {"repeat_penalty": 0}},
        400,
        'option "repeat_penalty" must be greater than 0',
    ),
    # (route, case, body, status, message fragment)
    ("/api/chat", "empty body", b"", 400, "missing request body"),
    ("/api/chat", "malformed JSON", b'{"model": "fake",}', 400, "invalid JSON"),
    ("/api/chat", "invalid UTF-8", b'{"model": "\xff"}', 400, "not valid UTF-8"),
    ("/api/chat", "not an object", [1, 2], 400, "must be a JSON object"),
    ("/api/chat", "missing model", {"messages": MSG}, 400, "model is required"),
    ("/api/generate", "missing model", {"prompt": "hi"}, 404, "model '' not found"),
    ("/api/chat", "malformed name", {"model": "../etc/passwd", "messages": MSG}, 400, "invalid model name"),
    ("/api/generate", "malformed name", {"model": "a:b:c", "prompt": "x"}, 400, "invalid model name"),
    ("/api/chat", "unknown model", {"model": "nope", "messages": MSG}, 404, "model 'nope' not found"),
    ("/api/generate", "unknown model", {"model": "nope:7b", "prompt": "x"}, 404, "model 'nope:7b' not found"),
    ("/api/show", "unknown model", {"model": "nope"}, 404, "model 'nope' not found"),
    ("/api/show", "missing model", {}, 400, "model is required"),
    ("/api/chat", "model not a string", {"model": 5, "messages": MSG}, 400, 'field "model"'),
    (
        "/api/chat",
        "bad option type",
        {"model": "fake", "messages": MSG, "options": {"temperature": "hot"}},
        400,
        'option "temperature" must be of type float32',
    ),
    (
        "/api/chat",
        "bad int option",
        {"model": "fake", "messages": MSG, "options": {"num_predict": "5"}},
        400,
        'option "num_predict" must be of type integer',
    ),
    (
        "/api/chat",
        "stop not array",
        {"model": "fake", "messages": MSG, "options": {"stop": "x"}},
        400,
        'option "stop" must be of type array',
    ),
    (
        "/api/chat",
        "options not object",
        {"model": "fake", "messages": MSG, "options": [1]},
        400,
        '"options" must be an object',
    ),
    (
        "/api/chat",
        "keep_alive without unit",
        {"model": "fake", "messages": MSG, "keep_alive": "300"},
        400,
        'time: missing unit in duration "300"',
    ),
    (
        "/api/chat",
        "keep_alive bool",
        {"model": "fake", "messages": MSG, "keep_alive": True},
        400,
        "Unsupported type: 'bool'",
    ),
    (
        "/api/chat",
        "stream not bool",
        {"model": "fake", "messages": MSG, "stream": "yes"},
        400,
        'field "stream" must be of type boolean',
    ),
    (
        "/api/chat",
        "unknown role",
        {"model": "fake", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages[0].role",
    ),
    ("/api/chat", "messages not list", {"model": "fake", "messages": "hi"}, 400, 'field "messages"'),
    (
        "/api/chat",
        "format bad value",
        {"model": "fake", "messages": MSG, "format": 12},
        400,
        "invalid format: 12",
    ),
    (
        "/api/chat",
        "format schema invalid",
        {"model": "fake", "messages": MSG, "format": {"type": "object", "required": "a"}},
        400,
        "invalid JSON Schema in format at $.required",
    ),
    (
        "/api/chat",
        "think bad value",
        {"model": "fake", "messages": MSG, "think": "very"},
        400,
        'invalid think value: "very"',
    ),
    (
        "/api/chat",
        "think unsupported",
        {"model": "fake", "messages": MSG, "think": True},
        400,
        '"fake" does not support thinking',
    ),
    (
        "/api/chat",
        "tools malformed",
        {"model": "fake", "messages": MSG, "tools": [{"type": "function"}]},
        400,
        "tools[0].function must be an object",
    ),
    (
        "/api/chat",
        "tools unsupported",
        {"model": "fake", "messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}]},
        400,
        '"fake" does not support tools',
    ),
    (
        "/api/generate",
        "raw with system",
        {"model": "fake", "prompt": "x", "raw": True, "system": "s"},
        400,
        "raw mode does not support template, system, or context",
    ),
    (
        "/api/generate",
        "context not ids",
        {"model": "fake", "prompt": "x", "context": ["a"]},
        400,
        '"context"',
    ),
    (
        "/api/generate",
        "prompt too long, truncate off",
        {"model": "fake", "prompt": "x" * 100, "truncate": False, "options": {"num_ctx": 50}},
        400,
        "longer than the context length",
    ),
    (
        "/api/chat",
        "model fails to load",
        {"model": "unloadable", "messages": MSG},
        500,
        "failed to load model 'unloadable:latest': weights are corrupt",
    ),
    (
        "/api/chat",
        "corrupt weights",
        {"model": "broken", "messages": MSG},
        500,
        "failed to load model 'broken:latest'",
    ),
]


@pytest.mark.parametrize(
    ("route", "case", "body", "status", "message"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES]
)
async def test_error_table(
    server: Server, route: str, case: str, body: object, status: int, message: str
) -> None:
    async with server.client() as client:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = await client.post(route, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert message in r.json()["error"]


async def test_errors_do_not_disturb_other_models(server: Server) -> None:
    """After load failures, other models (and the same request again) still behave."""
    async with server.client() as client:
        for _ in range(2):
            r = await client.post("/api/chat", json={"model": "unloadable", "messages": MSG})
            assert r.status_code == 500
        r = await client.post("/api/chat", json={"model": "fake", "messages": MSG, "stream": False})
        assert r.status_code == 200 and r.json()["message"]["content"] == "Hello, world!"


async def test_failure_mid_stream_ends_with_one_error_line(server: Server) -> None:
    async with server.client() as client:
        r = await client.post("/api/chat", json={"model": "failing", "messages": MSG})
        assert r.status_code == 200
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x["message"]["content"] for x in lines[:-1]] == ["a", "b", "c"]
        assert lines[-1] == {"error": "an error was encountered while running the model: injected failure"}
        r = await client.post("/api/chat", json={"model": "failing", "messages": MSG, "stream": False})
        assert r.status_code == 500 and "injected failure" in r.json()["error"]
        r = await client.post("/api/chat", json={"model": "fake", "messages": MSG, "stream": False})
        assert r.status_code == 200


async def test_unknown_route_and_method(server: Server) -> None:
    async with server.client() as client:
        r = await client.get("/api/nothing")
        assert r.status_code == 404 and r.json() == {"error": "404 page not found"}
        r = await client.get("/api/chat")
        assert r.status_code == 405 and "error" in r.json()


async def test_queue_full_gets_503_with_retry_after(settings: Settings) -> None:
    """The reliability plan's burst: one slot, four places in the queue, fifty requests."""
    settings.max_queue = 4
    settings.num_parallel = 1
    busy = "server busy, please try again.  maximum pending requests exceeded"
    write_fake(settings.models, "steady", pieces=["tick "], loop=True, delay=0.01)
    body = {"model": "steady", "messages": MSG, "options": {"num_predict": 100}}  # 1 s each
    async with trio.open_nursery() as nursery:
        server, stop = await start_server(nursery, settings)
        engine = server.services.engine
        answers: list[tuple[int, float]] = []

        async def one(client: httpx.AsyncClient) -> None:
            start = trio.current_time()
            async with client.stream("POST", "/api/chat", json=body) as r:
                if r.status_code == 503:
                    answers.append((503, trio.current_time() - start))
                    await r.aread()
                    assert r.json()["error"] == busy
                    assert r.headers["Retry-After"] == "1" and r.headers["x-should-retry"] == "true"
                    return
                lines = [json.loads(line) async for line in r.aiter_lines()]
                assert lines[-1]["done"] and lines[-1]["eval_count"] == 100
                answers.append((r.status_code, trio.current_time() - start))

        limits = httpx.Limits(max_connections=None)
        async with (
            server.client() as first,
            httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as burst,
        ):
            async with trio.open_nursery() as clients:
                clients.start_soon(one, first)
                await wait_until(lambda: engine.statistics().active)
                for _ in range(49):
                    clients.start_soon(one, burst)
                await wait_until(lambda: len(answers) >= 45)
                # While the queue stays full: one rejected request at a time.
                alone = []
                for _ in range(20):
                    start = trio.current_time()
                    r = await first.post("/api/chat", json=body)
                    assert r.status_code == 503
                    alone.append(trio.current_time() - start)
        statuses = [status for status, _ in answers]
        assert statuses.count(503) == 45 and statuses.count(200) == 5, statuses
        rejected = sorted(seconds for status, seconds in answers if status == 503)
        alone.sort()
        print(
            f"queue full: 45 answers 503 in the burst, p50 {rejected[22] * 1e3:.1f} ms, max"
            f" {rejected[-1] * 1e3:.1f} ms; one at a time p50 {alone[10] * 1e3:.1f} ms, max {alone[-1] * 1e3:.1f} ms"
        )
        stop.set()


async def test_body_over_the_cap_gets_413(settings: Settings) -> None:
    settings.max_body_bytes = 1000
    async with trio.open_nursery() as nursery:
        server, stop = await start_server(nursery, settings)
        async with server.client() as client:
            r = await client.post(
                "/api/chat", json={"model": "fake", "messages": [{"role": "user", "content": "x" * 5000}]}
            )
            assert r.status_code == 413 and "error" in r.json()
            r = await client.post("/api/chat", json={"model": "fake", "messages": MSG, "stream": False})
            assert r.status_code == 200
        stop.set()


def test_unreadable_metadata_is_listed_so_loading_explains(tmp_path: Path) -> None:
    from inference.backends.mlx.backend import MlxBackend
    from inference.store.model_store import ModelStore

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    (tmp_path / "no such name!").mkdir()
    listed = ModelStore(tmp_path, [MlxBackend()]).list()
    assert [m.name for m in listed] == ["bad:latest"]
    assert listed[0].info.family == "unknown"
